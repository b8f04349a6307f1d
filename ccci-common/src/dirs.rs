//! Where each tool keeps its files (SPEC §1 "Directories").
//!
//! A directory comes from its flag, else its environment variable (clap reads
//! both), else the default below. Defaults depend only on the effective uid
//! and on whether `/run/lock` exists, never on session variables such as
//! `XDG_RUNTIME_DIR` or `TMPDIR`: a cron job and a CI shell of the same user
//! must agree on the lock dir, or they would not see each other's locks.

use std::path::{Path, PathBuf};

/// What a directory is for, and how a user chooses another one; used in
/// messages so that every refusal names the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Words for messages: "lock dir".
    pub what: &'static str,
    /// The flag that sets it.
    pub flag: &'static str,
    /// The environment variable that sets it.
    pub env: &'static str,
}

/// The lock dir of `ccci-lock` and `ccci-janitor`.
pub const LOCK_DIR: Role = Role {
    what: "lock dir",
    flag: "--lock-dir",
    env: "CCCI_APP_LOCK_DIR",
};
/// The state dir of `ccci-state`.
pub const STATE_DIR: Role = Role {
    what: "state dir",
    flag: "--state-dir",
    env: "CCCI_STATE_DIR",
};
/// The runs dir of `ccci-abradir`.
pub const RUNS_DIR: Role = Role {
    what: "runs dir",
    flag: "--runs-dir",
    env: "CCCI_RUNS_DIR",
};
/// The canonical abra dir that `ccci-abradir` links to and clones from.
pub const CANONICAL_ABRA_DIR: Role = Role {
    what: "canonical abra dir",
    flag: "--canonical",
    env: "CCCI_CANONICAL_ABRA_DIR",
};

fn uid() -> u32 {
    euid()
}

/// This process's effective user id, asked of the kernel once: no ccci tool
/// changes it, and every directory check on a path's way compares owners
/// with it.
pub fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| nix::unistd::geteuid().as_raw())
}

/// `/run/lock/ccci-<uid>` when `/run/lock` is a directory, else
/// `/tmp/ccci-<uid>/locks`.
pub fn default_lock_dir() -> PathBuf {
    default_lock_dir_under(Path::new("/run/lock"))
}

fn default_lock_dir_under(run_lock: &Path) -> PathBuf {
    if run_lock.is_dir() {
        run_lock.join(format!("ccci-{}", uid()))
    } else {
        PathBuf::from(format!("/tmp/ccci-{}/locks", uid()))
    }
}

/// `/tmp/ccci-<uid>/state`.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/ccci-{}/state", uid()))
}

/// `/tmp/ccci-<uid>/runs`.
pub fn default_runs_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/ccci-{}/runs", uid()))
}

/// `$HOME/.abra`; `None` when `HOME` is unset or empty.
pub fn default_canonical_abra_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".abra"))
}

/// `path` made absolute against the current directory, without resolving
/// symlinks; children get these paths, and they may run elsewhere.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_dir_prefers_run_lock_when_it_is_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let under = default_lock_dir_under(tmp.path());
        assert_eq!(under, tmp.path().join(format!("ccci-{}", uid())));
        let missing = default_lock_dir_under(&tmp.path().join("missing"));
        assert_eq!(missing, PathBuf::from(format!("/tmp/ccci-{}/locks", uid())));
    }

    #[test]
    fn defaults_ignore_session_variables() {
        // TMPDIR and XDG_RUNTIME_DIR differ between cron and CI shells.
        let expect = format!("/tmp/ccci-{}/state", uid());
        assert_eq!(default_state_dir(), PathBuf::from(expect));
        assert!(default_runs_dir().ends_with("runs"));
    }
}
