//! Temporary directories for unit tests, here and in the crates that use
//! this one (with the feature `testing`, which no tool's build turns on).
//!
//! The guarantee: a directory made here passes the safe-directory rule of
//! [`super::SafeDir`] whatever the umask (owned by the effective uid, mode
//! 0700, below a sticky `/tmp`), so a test that wants a refusal gets it from
//! what it changes, not from where it runs.

/// A new temporary directory of mode 0700, removed when dropped.
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}
