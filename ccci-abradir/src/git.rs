//! The one git operation: a private local clone of a canonical recipe.
//!
//! Cloning from a local path is git's local clone (what `--local` names):
//! it copies `HEAD` and the refs, sets `origin` to the path, and hardlinks
//! the object files. It writes nothing into the source. Git never rewrites
//! an object file in place (objects are named by their content, written once
//! and only ever unlinked), so sharing their inodes cannot let one clone
//! change another. What a checkout changes — `HEAD`, the index, the refs, the
//! working tree — is the clone's own. Unlike `--shared` there is no
//! `objects/info/alternates` file, so a `gc` or `prune` in the canonical
//! clone can never take objects away from a run, and unlike `git worktree`
//! nothing is recorded in the canonical repository.
//!
//! The flag itself is not passed: with an explicit `--local` git treats a
//! failed hardlink as fatal ("Invalid cross-device link"), which is the
//! common case of a runs dir on tmpfs and `~/.abra` on disk. Given a plain
//! absolute path, git makes the same local clone and copies the objects
//! where it cannot link them (another file system or mount point,
//! `fs.protected_hardlinks`). The source path is always absolute, so git
//! never reads it as a URL or as `host:path`.

use ccci_common::names::quote_path;
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

/// `git clone --quiet -- SRC DEST` (a local clone; see the module doc);
/// SRC is absolute and DEST must not exist. Git's own messages go into the
/// error; nothing reaches our stdout.
pub fn clone_local(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("git");
    debug_assert!(src.is_absolute(), "{}", quote_path(src));
    cmd.args(["clone", "--quiet", "--"])
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
            quote_path(src)
        ),
        Err(e) => bail!("cannot run git to clone {}: {e}", quote_path(src)),
    };
    if !out.status.success() {
        let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if said.is_empty() {
            said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        bail!(
            "git clone {} {} failed ({}): {}",
            quote_path(src),
            quote_path(dest),
            out.status,
            said.replace('\n', "; ")
        );
    }
    Ok(())
}
