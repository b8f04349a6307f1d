//! Tests of [`super::SafeDir`] and the files opened through it.

use super::*;
use crate::dirs::LOCK_DIR;
use std::os::unix::fs::{symlink, PermissionsExt};

use super::testing::private_tempdir as tmp;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn creates_missing_dirs_0700_with_parents() {
    let t = tmp();
    let path = t.path().join("a/b/c");
    let dir = SafeDir::create(&LOCK_DIR, &path).unwrap();
    assert_eq!(dir.path(), path);
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&t.path().join("a")), 0o700);
}

#[test]
fn missing_dir_without_create_is_none_and_stays_missing() {
    let t = tmp();
    let path = t.path().join("nope");
    assert!(SafeDir::open(&LOCK_DIR, &path, false).unwrap().is_none());
    assert!(!path.exists());
}

#[test]
fn refuses_symlinked_and_world_writable_dirs() {
    let t = tmp();
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = t.path().join("link");
    symlink(&real, &link).unwrap();
    let e = SafeDir::open(&LOCK_DIR, &link, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a symlink"), "{e}");
    assert!(e.contains("CCCI_APP_LOCK_DIR"), "{e}");

    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = SafeDir::open(&LOCK_DIR, &real, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("writable by group or others (mode 0777)"), "{e}");
    assert!(e.contains(&format!("chmod 700 {}", real.display())), "{e}");
}

#[test]
fn refuses_a_file_where_the_dir_should_be() {
    let t = tmp();
    let file = t.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = SafeDir::open(&LOCK_DIR, &file, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a directory"), "{e}");
}

#[test]
fn open_file_refuses_symlinks_fifos_and_dirs() {
    let t = tmp();
    let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
    let target = t.path().join("target");
    symlink(&target, t.path().join("link")).unwrap();
    nix::unistd::mkfifo(&t.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir(t.path().join("sub")).unwrap();

    let kind = |name, how| dir.open_file(name, how).unwrap_err().kind;
    assert!(matches!(
        kind("link", OpenHow::Create),
        FileErrorKind::Symlink
    ));
    assert!(!target.exists(), "the symlink was followed");
    assert!(matches!(
        kind("fifo", OpenHow::Create),
        FileErrorKind::NotRegular(_)
    ));
    assert!(matches!(
        kind("fifo", OpenHow::Read),
        FileErrorKind::NotRegular(_)
    ));
    assert!(matches!(
        kind("sub", OpenHow::Create),
        FileErrorKind::NotRegular(_)
    ));
    assert!(matches!(
        kind("missing", OpenHow::Read),
        FileErrorKind::Missing
    ));
    dir.open_file("new", OpenHow::CreateNew).unwrap();
    assert!(matches!(
        kind("new", OpenHow::CreateNew),
        FileErrorKind::Exists
    ));
    assert_eq!(mode(&t.path().join("new")), 0o600);
}

#[test]
fn open_file_refuses_a_hard_linked_file_and_leaves_it_alone() {
    let t = tmp();
    let dir = SafeDir::create(&LOCK_DIR, &t.path().join("locks")).unwrap();
    let other = t.path().join("precious");
    std::fs::write(&other, "keep\n").unwrap();
    std::fs::hard_link(&other, t.path().join("locks/d.lock")).unwrap();
    for how in [
        OpenHow::Read,
        OpenHow::ReadWrite,
        OpenHow::Create,
        OpenHow::CreateNew,
    ] {
        let e = dir.open_file("d.lock", how).unwrap_err();
        assert!(
            matches!(
                e.kind,
                FileErrorKind::NotRegular(HARD_LINKED) | FileErrorKind::Exists
            ),
            "{e}"
        );
    }
    let e = dir.open_file("d.lock", OpenHow::Create).unwrap_err();
    assert!(e.to_string().contains("more than one hard link"), "{e}");
    assert!(
        dir.replace("d.lock", b"x").is_ok(),
        "replace makes a new file"
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"keep\n");
}

#[test]
fn a_trailing_slash_or_dot_never_follows_a_symlink() {
    let t = tmp();
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&real, t.path().join("link")).unwrap();
    for tail in ["link/", "link//", "link/.", "link/./", "link/x/.."] {
        let path = PathBuf::from(format!("{}/{tail}", t.path().display()));
        for create in [false, true] {
            let e = SafeDir::open(&LOCK_DIR, &path, create)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is a symlink"), "{tail}: {e}");
        }
    }
    // A symlink in the middle of the path, too; nothing made through it.
    let deep = t.path().join("link/sub/locks");
    let e = SafeDir::open(&LOCK_DIR, &deep, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{}/link is a symlink", t.path().display())),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn dot_dot_is_lexical_and_relative_paths_start_at_the_cwd() {
    let t = tmp();
    let path = t.path().join("a/../b/./c/");
    let dir = SafeDir::create(&LOCK_DIR, &path).unwrap();
    assert!(t.path().join("b/c").is_dir());
    assert!(!t.path().join("a").exists(), "a/.. creates nothing");
    assert_eq!(dir.path(), path, "the path given is kept for messages");
    assert_eq!(
        walk_components(Path::new("x/../y")).unwrap(),
        walk_components(&std::env::current_dir().unwrap().join("y")).unwrap()
    );
    assert_eq!(walk_components(Path::new("/../..//")).unwrap().len(), 0);
}

#[test]
fn a_writable_ancestor_is_refused_unless_sticky() {
    let t = tmp();
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = SafeDir::open(&LOCK_DIR, &open.join("locks"), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "{} is writable by group or others (mode 0777) and not sticky",
            open.display()
        )),
        "{e}"
    );
    assert!(e.contains(&format!("chmod go-w {}", open.display())), "{e}");
    assert!(!open.join("locks").exists(), "nothing created under it");

    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let dir = SafeDir::create(&LOCK_DIR, &open.join("mine/locks")).unwrap();
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&open.join("mine")), 0o700);
}

#[test]
fn a_foreign_entry_below_a_sticky_dir_is_refused() {
    if nix::unistd::geteuid().as_raw() != 0 {
        return; // chown needs root; the integration suite covers it with a real user
    }
    let t = tmp();
    let sticky = t.path().join("tmp");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let squat = sticky.join("ccci-0");
    std::fs::create_dir(&squat).unwrap();
    std::fs::set_permissions(&squat, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&squat, Some(65534), Some(65534)).unwrap();
    for create in [false, true] {
        let e = SafeDir::open(&LOCK_DIR, &squat.join("locks"), create)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{} is owned by uid 65534", squat.display())),
            "{e}"
        );
        assert!(e.contains("in the sticky directory"), "{e}");
        assert!(!e.contains("rm ") && !e.contains("remove"), "{e}");
    }
    assert!(!squat.join("locks").exists());
    // The same foreign dir anywhere else on the path is refused too.
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o700)).unwrap();
    let e = SafeDir::open(&LOCK_DIR, &squat.join("locks"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not by root or uid 0"), "{e}");
}

#[test]
fn a_symlink_swapped_in_while_opening_is_reported_as_a_symlink() {
    // Another process swaps a symlink and a real directory back and forth
    // (renameat2 RENAME_EXCHANGE, atomic), as an attacker would. Every
    // refusal must say what was opened: a symlink. Before, the type was
    // looked up again after the open failed and was often the directory
    // by then: "is not a directory".
    let t = tmp();
    let (dir, link) = (t.path().join("dir"), t.path().join("link"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("dir", &link).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, parent) = (stop.clone(), t.path().to_path_buf());
        std::thread::spawn(move || {
            let at = std::fs::File::open(&parent).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    &at,
                    "dir",
                    &at,
                    "link",
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
            }
        })
    };
    let mut wrong = Vec::new();
    let mut refused = 0;
    let parent = SafeDir::open(&LOCK_DIR, t.path(), false).unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let tries = [
            SafeDir::open(&LOCK_DIR, &link, false).map(drop),
            SafeDir::open(&LOCK_DIR, &link.join("sub"), false).map(drop),
            parent.subdir(&LOCK_DIR, "link", false).map(drop),
        ];
        for e in tries.into_iter().filter_map(Result::err) {
            refused += 1;
            let e = e.to_string();
            if !e.contains("is a symlink") {
                wrong.push(e);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(refused > 0, "the swap never hit");
    assert!(
        wrong.is_empty(),
        "{} of {refused} refusals misnamed the symlink, e.g. {}",
        wrong.len(),
        wrong[0]
    );
}

#[test]
fn identity_check_sees_unlink_and_replacement() {
    let t = tmp();
    let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
    let file = dir.open_file("x.lock", OpenHow::Create).unwrap();
    assert!(dir.names_file("x.lock", &file).unwrap());
    dir.remove_file("x.lock").unwrap();
    assert!(!dir.names_file("x.lock", &file).unwrap());
    let _other = dir.open_file("x.lock", OpenHow::Create).unwrap();
    assert!(!dir.names_file("x.lock", &file).unwrap());
}

#[test]
fn replace_is_whole_and_leaves_no_temporary() {
    let t = tmp();
    let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
    dir.replace("v", b"1\n").unwrap();
    dir.replace("v", b"22\n").unwrap();
    assert_eq!(std::fs::read(t.path().join("v")).unwrap(), b"22\n");
    assert_eq!(dir.names().unwrap(), vec![std::ffi::OsString::from("v")]);
}

#[test]
fn subdir_is_checked_like_a_top_dir() {
    let t = tmp();
    let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
    let sub = dir.subdir(&LOCK_DIR, "run-1", true).unwrap().unwrap();
    assert_eq!(mode(sub.path()), 0o700);
    symlink("/", t.path().join("evil")).unwrap();
    let e = dir
        .subdir(&LOCK_DIR, "evil", false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a symlink"), "{e}");
    assert!(dir.subdir(&LOCK_DIR, "absent", false).unwrap().is_none());
}

#[test]
fn each_name_sees_every_entry_of_a_directory_larger_than_one_read() {
    let t = tmp();
    let path = t.path().join("many");
    let dir = SafeDir::create(&LOCK_DIR, &path).unwrap();
    // About 60 bytes a record: 2,000 of them fill the 32 KiB buffer thrice.
    let mut made: Vec<String> = (0..2000)
        .map(|i| format!("app-{i:05}.a-rather-long-ci-domain.example.org.lock"))
        .collect();
    for name in &made {
        std::fs::write(path.join(name), b"").unwrap();
    }
    let mut seen = Vec::new();
    dir.each_name(|name| seen.push(name.to_str().unwrap().to_string()))
        .unwrap();
    seen.sort();
    made.sort();
    assert_eq!(seen, made);
}
