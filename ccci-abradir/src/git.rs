//! The one git operation: a private `git clone --local` of a canonical recipe.
//!
//! `--local` copies `HEAD`, the refs and the config's origin, and hardlinks
//! the object files (copying them when the two trees are on different file
//! systems). It writes nothing into the source. Git never rewrites an object
//! file in place (objects are named by their content, written once and only
//! ever unlinked), so sharing their inodes cannot let one clone change
//! another. What a checkout changes — `HEAD`, the index, the refs, the
//! working tree — is the clone's own. Unlike `--shared` there is no
//! `objects/info/alternates` file, so a `gc` or `prune` in the canonical
//! clone can never take objects away from a run, and unlike `git worktree`
//! nothing is recorded in the canonical repository.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::bail;
use ccci_common::sys;

/// Variables that point git at another repository or parts of one
/// (from `git rev-parse --local-env-vars`). A harness running inside a git
/// hook, or with `GIT_DIR` exported, must not redirect the clone.
const REPOSITORY_VARS: [&str; 13] = [
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_CONFIG",
    "GIT_DIR",
    "GIT_GRAFT_FILE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_OBJECT_DIRECTORY",
    "GIT_PREFIX",
    "GIT_REPLACE_REF_BASE",
    "GIT_SHALLOW_FILE",
    "GIT_WORK_TREE",
];

/// `git clone --local --quiet -- SRC DEST`; DEST must not exist. Git's own
/// messages go into the error; nothing reaches our stdout.
pub fn clone_local(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(["clone", "--local", "--quiet", "--"])
        .arg(src)
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in REPOSITORY_VARS {
        cmd.env_remove(var);
    }
    // If we are killed, git stops too instead of finishing a clone nobody uses.
    sys::prepare_command(&mut cmd, Some(libc::SIGTERM));
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot clone {}: git is not installed or not on PATH; install git",
            src.display()
        ),
        Err(e) => bail!("cannot run git to clone {}: {e}", src.display()),
    };
    if !out.status.success() {
        let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if said.is_empty() {
            said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        bail!(
            "git clone --local {} {} failed ({}): {}",
            src.display(),
            dest.display(),
            out.status,
            said.replace('\n', "; ")
        );
    }
    Ok(())
}
