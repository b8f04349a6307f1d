//! A missing lock dir: created only under a tmpfs parent, and passed over
//! as [`NoClaims`] by a dry run.

use super::*;

#[test]
fn a_missing_lock_dir_is_created_only_under_a_tmpfs_parent() {
    // The test binary lives in the target dir, on a disk.
    let exe = std::env::current_exe().unwrap();
    let disk = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
    match missing_lock_dir(&disk.path().join("locks")) {
        MissingLockDir::Leave(why) => assert!(why.contains("not on a tmpfs"), "{why}"),
        other => panic!("{} is not a tmpfs: {other:?}", disk.path().display()),
    }
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_eq!(
        missing_lock_dir(&shm.path().join("locks")),
        MissingLockDir::Rebooted
    );
    // Only the direct parent counts.
    assert!(matches!(
        missing_lock_dir(&shm.path().join("gone/locks")),
        MissingLockDir::Leave(_)
    ));
}

#[test]
fn a_dry_run_after_a_reboot_would_reap_every_deployed_ci_app() {
    let settings = Settings {
        deployed: deployed(&["proxy.example", "wp-1.ci.example"]),
        only: Some(globs(&["*.ci.example"])),
        dry_run: true,
        ..exact()
    };
    let seen = pass_reaping_nothing(&NoClaims, &settings);
    assert_eq!(
        outcomes(&seen),
        [
            ("proxy.example", Outcome::Skipped),
            ("wp-1.ci.example", Outcome::WouldReap)
        ]
    );
}
