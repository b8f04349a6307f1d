//! A hostile local user and a hostile file system (SPEC §1 "Directories",
//! §7 case 28): squatted and renamed parents, trailing-`/` symlinks,
//! hard-linked, FIFO, socket and directory files where our files belong,
//! world-writable and foreign-owned directories. Each is refused (125) or
//! skipped as SPEC says; link targets are never created, truncated or
//! written, and nothing hangs.
//!
//! Ownership attacks need a real second user: when the suite runs as root
//! and `ccci-test-other` does not exist, it is created (`useradd`), and its
//! commands run through `setpriv --reuid/--regid --clear-groups`. Not as
//! root, those tests say so and pass without testing anything.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the second user and the attack helpers defined in it.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ccci_tests::{Output, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";
const OTHER: &str = "ccci-test-other";

/// The second local user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Other {
    pub uid: u32,
    pub gid: u32,
}

fn lookup(name: &str) -> Option<Other> {
    let out = std::process::Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    Some(Other {
        uid: fields.get(2)?.parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
    })
}

/// `ccci-test-other`, created when missing; `None` when not running as root
/// (only root can create a user and act as it).
pub(crate) fn other_user() -> Option<Other> {
    static USER: OnceLock<Option<Other>> = OnceLock::new();
    *USER.get_or_init(|| {
        if euid() != 0 {
            eprintln!("not root: the attacks by another uid are not tested");
            return None;
        }
        for _ in 0..20 {
            if let Some(user) = lookup(OTHER) {
                return Some(user);
            }
            // Several test processes may race here; useradd locks
            // /etc/passwd, and the loser finds the winner's user.
            let created = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    OTHER,
                ])
                .output()
                .is_ok_and(|out| out.status.success());
            if created {
                // The suite leaves nothing behind: the user it created goes
                // when the test process exits, also after a failed test
                // (libtest exits through exit(3)). `make check` removes it
                // too if this process could not (killed, or the user busy).
                // SAFETY: registers a plain function with no captured state.
                unsafe {
                    libc::atexit(remove_other_user);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("cannot create the user {OTHER}");
    })
}

/// Removes `ccci-test-other` (and its group); registered by [`other_user`]
/// when this process created it.
extern "C" fn remove_other_user() {
    let _ = std::process::Command::new("userdel")
        .arg(OTHER)
        .stdout(std::process::Stdio::null())
        .status();
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// `argv` run as `user` in the sandbox.
pub(crate) fn as_other(sb: &Sandbox, user: Other, argv: &[&str]) -> Output {
    sb.command("setpriv")
        .args([
            format!("--reuid={}", user.uid),
            format!("--regid={}", user.gid),
            "--clear-groups".into(),
            "--".into(),
        ])
        .args(argv)
        .run()
}

/// Lets another user reach directories inside the sandbox (search only).
/// A TMPDIR (or a parent of it) that others cannot search makes every
/// command of the second user fail with a bare "Permission denied": it is
/// named instead, with what to do.
fn open_sandbox_for_others(sb: &Sandbox) {
    std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    for dir in sb.root().ancestors().skip(1) {
        let meta = std::fs::metadata(dir).unwrap();
        assert!(
            meta.mode() & 0o001 != 0,
            "{} (mode {:o}) cannot be searched by other users, so the second user {OTHER} \
             cannot reach this test's directory {}: run the suite with a TMPDIR that every \
             user can traverse (e.g. TMPDIR=/tmp), or chmod o+x {}",
            dir.display(),
            meta.mode() & 0o7777,
            sb.root().display(),
            dir.display()
        );
    }
}

/// Every path under `root` with its type, mode, owner, links and content:
/// taken before and after a command to show it created, changed or
/// removed nothing.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ccci_tests::is_place_record(&name) || ccci_tests::is_janitor_record(&name) {
                continue; // written once per lock dir: before any claim, by the first pass
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let what = if meta.file_type().is_symlink() {
                format!("link -> {:?}", std::fs::read_link(&path).ok())
            } else if meta.is_file() {
                format!("file {:?}", std::fs::read(&path).ok())
            } else if meta.is_dir() {
                "dir".to_string()
            } else {
                "special".to_string()
            };
            out.insert(
                path.clone(),
                format!(
                    "{what} mode {:o} uid {} nlink {}",
                    meta.mode(),
                    meta.uid(),
                    meta.nlink()
                ),
            );
            if meta.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Panics with the difference unless `root` looks as in `before`.
#[track_caller]
pub(crate) fn assert_unchanged(before: &BTreeMap<PathBuf, String>, root: &Path, what: &str) {
    let after = snapshot(root);
    if &after != before {
        let mut diff = String::new();
        for (path, meta) in &after {
            match before.get(path) {
                None => diff.push_str(&format!("+ {} {meta}\n", path.display())),
                Some(old) if old != meta => {
                    diff.push_str(&format!("~ {} {old} => {meta}\n", path.display()))
                }
                _ => {}
            }
        }
        for path in before.keys().filter(|p| !after.contains_key(*p)) {
            diff.push_str(&format!("- {}\n", path.display()));
        }
        panic!("{what} changed the sandbox:\n{diff}");
    }
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The canonical abra dir with the only part `ccci-abradir` needs without
/// `--recipe`.
fn canonical(sb: &Sandbox) {
    mkdir(&sb.canonical_dir().join("servers"), 0o700);
}

fn lock(sb: &Sandbox, dir: &Path) -> Output {
    sb.tool("ccci-lock")
        .arg("--lock-dir")
        .arg(dir)
        .args([D, "--", "touch", "ran"])
        .run()
}

/// SPEC §7 case 28, and the issue's rename-under-a-holder attack: another
/// uid creates the parent of the lock dir in a sticky `/tmp`-style dir
/// first. Before the whole-path rule, the holder took the lock in it, the
/// other uid renamed the lock dir away, and a second `ccci-lock` created a
/// new lock dir and held the same domain: two holders. Now the first
/// `ccci-lock` is refused (125) naming the squatted dir and its owner.
#[test]
fn case_28_a_squatted_parent_in_a_sticky_dir_is_refused_never_two_holders() {
    let Some(other) = other_user() else { return };
    let sb = Sandbox::new();
    open_sandbox_for_others(&sb);
    let tmp = sb.path("tmp");
    mkdir(&tmp, 0o1777);
    let squat = tmp.join(format!("ccci-{}", euid()));
    as_other(
        &sb,
        other,
        &["mkdir", "-m", "0755", squat.to_str().unwrap()],
    )
    .expect_code(0);
    let lock_dir = squat.join("locks");

    let mut first = sb
        .tool("ccci-lock")
        .arg("--lock-dir")
        .arg(&lock_dir)
        .args([D, "--", "sh", "-c", "echo held; exec sleep 60"])
        .spawn();
    ccci_tests::wait_until("the first ccci-lock ends or holds", || {
        first.has_exited() || first.stdout_so_far().contains("held")
    });
    if first.stdout_so_far().contains("held") {
        // The attack: rename the lock dir away, then a second run.
        let old = squat.join("old");
        as_other(
            &sb,
            other,
            &["mv", lock_dir.to_str().unwrap(), old.to_str().unwrap()],
        );
        let second = sb
            .tool("ccci-lock")
            .arg("--lock-dir")
            .arg(&lock_dir)
            .args(["-n", D, "--", "true"])
            .run();
        panic!(
            "a lock dir under a squatted parent was used; second holder's status {}\n{}",
            second.code(),
            first.report()
        );
    }
    let out = first.wait();
    out.expect_code(125)
        .expect_stderr(&format!(
            "{} is owned by uid {}",
            squat.display(),
            other.uid
        ))
        .expect_stderr(OTHER)
        .expect_stderr("sticky");
    // Their directory is not ours to remove: never advised.
    let said = &out.stderr;
    assert!(!said.contains("rm ") && !said.contains("remove"), "{said}");
    assert!(!lock_dir.exists(), "nothing created in the squatted dir");

    // The same squat refuses the janitor, the state dir and the runs dir.
    sb.tool("ccci-janitor")
        .arg("--lock-dir")
        .arg(&lock_dir)
        .args(["--", "true"])
        .run()
        .expect_code(125);
    sb.tool("ccci-state")
        .env("CCCI_STATE_DIR", squat.join("state"))
        .arg("env")
        .run()
        .expect_code(125)
        .expect_stderr(OTHER);
    canonical(&sb);
    sb.tool("ccci-abradir")
        .env("CCCI_RUNS_DIR", squat.join("runs"))
        .run()
        .expect_code(125)
        .expect_stderr(OTHER);
    assert_eq!(std::fs::read_dir(&squat).unwrap().count(), 0);
    assert!(!sb.path("ran").exists());
}

/// SPEC §1 "Directories": below a sticky directory, an entry owned by root
/// is accepted (only root or the entry's owner can have made it there), for
/// a user who is not root too: here the other user's lock dir is
/// `<sticky>/shared/ccci-<uid>/locks` with `shared` made by root. Before,
/// only an entry owned by the user itself was accepted, and this was 125.
#[test]
fn a_root_owned_entry_below_a_sticky_dir_is_accepted_for_another_user() {
    let Some(other) = other_user() else { return };
    if euid() != 0 {
        return;
    }
    let sb = Sandbox::new();
    open_sandbox_for_others(&sb);
    let tmp = sb.path("tmp");
    mkdir(&tmp, 0o1777);
    let shared = tmp.join("shared");
    mkdir(&shared, 0o755);
    let theirs = shared.join(format!("ccci-{}", other.uid));
    mkdir(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(other.uid), Some(other.gid)).unwrap();
    let lock_dir = theirs.join("locks");
    let ccci_lock = ccci_tests::bin("ccci-lock");
    let out = as_other(
        &sb,
        other,
        &[
            ccci_lock.to_str().unwrap(),
            "--lock-dir",
            lock_dir.to_str().unwrap(),
            D,
            "--",
            "true",
        ],
    );
    out.expect_code(0);
    assert_eq!(std::fs::metadata(&lock_dir).unwrap().uid(), other.uid);
    // Another user's entry at the same place is still refused.
    let squat = tmp.join("squat");
    mkdir(&squat, 0o755);
    std::os::unix::fs::chown(&squat, Some(other.uid), Some(other.gid)).unwrap();
    lock(&sb, &squat.join("locks"))
        .expect_code(125)
        .expect_stderr("in the sticky directory");
}

/// A parent owned by another uid anywhere on the path (not only in a sticky
/// dir), and a parent writable by others without the sticky bit: 125,
/// naming the parent; nothing is created below it.
#[test]
fn foreign_owned_and_world_writable_parents_are_refused() {
    let sb = Sandbox::new();
    let open = sb.path("open");
    mkdir(&open, 0o777);
    let out = lock(&sb, &open.join("a/locks"));
    out.expect_code(125)
        .expect_stderr(&format!(
            "{} is writable by group or others (mode 0777) and not sticky",
            open.display()
        ))
        .expect_stderr(&format!("chmod go-w {}", open.display()));
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);

    let Some(other) = other_user() else { return };
    open_sandbox_for_others(&sb);
    let theirs = sb.path("theirs");
    mkdir(&theirs, 0o755);
    std::os::unix::fs::chown(&theirs, Some(other.uid), Some(other.gid)).unwrap();
    // Our own, safe lock dir inside their dir: they could rename it.
    let ours = theirs.join("locks");
    mkdir(&ours, 0o700);
    lock(&sb, &ours).expect_code(125).expect_stderr(&format!(
        "{} is owned by uid {} ({OTHER}), not by root or uid {}",
        theirs.display(),
        other.uid,
        euid()
    ));
    // Their dir as the lock, state and runs dir itself.
    lock(&sb, &theirs).expect_code(125).expect_stderr(OTHER);
    sb.tool("ccci-state")
        .arg("--state-dir")
        .arg(&theirs)
        .arg("env")
        .run()
        .expect_code(125);
    canonical(&sb);
    sb.tool("ccci-abradir")
        .arg("--runs-dir")
        .arg(&theirs)
        .run()
        .expect_code(125);
    assert_eq!(std::fs::read_dir(&ours).unwrap().count(), 0);
    assert!(!sb.path("ran").exists());
}

/// SPEC §7 case 28: a lock, state or runs dir given with a trailing `/`,
/// `//` or `/.` that is a symlink is refused (125), by flag and by
/// variable, and the link's target is never created or written.
#[test]
fn case_28_trailing_slash_symlinks_are_refused_for_every_dir() {
    let sb = Sandbox::new();
    canonical(&sb);
    let real = sb.path("real");
    mkdir(&real, 0o700);
    symlink(&real, sb.path("link")).unwrap();
    symlink(sb.path("nowhere"), sb.path("dangling")).unwrap();
    let before = snapshot(sb.root());
    let mut tried = 0;
    for target in ["link", "dangling"] {
        for tail in ["/", "//", "/.", "/./"] {
            let dir = format!("{}{tail}", sb.path(target).display());
            let runs: Vec<(&str, Output)> = vec![
                (
                    "ccci-lock --lock-dir",
                    sb.tool("ccci-lock")
                        .args(["--lock-dir", &dir, D, "--", "touch", "ran"])
                        .run(),
                ),
                (
                    "ccci-lock CCCI_APP_LOCK_DIR",
                    sb.tool("ccci-lock")
                        .env("CCCI_APP_LOCK_DIR", &dir)
                        .args([D, "--", "touch", "ran"])
                        .run(),
                ),
                (
                    "ccci-janitor --lock-dir",
                    sb.tool("ccci-janitor")
                        .args(["--lock-dir", &dir, "--", "true"])
                        .run(),
                ),
                (
                    "ccci-state --state-dir",
                    sb.tool("ccci-state")
                        .args(["--state-dir", &dir, "env"])
                        .run(),
                ),
                (
                    "ccci-state CCCI_STATE_DIR",
                    sb.tool("ccci-state")
                        .env("CCCI_STATE_DIR", &dir)
                        .args(["incr", "deploys"])
                        .run(),
                ),
                (
                    "ccci-abradir --runs-dir",
                    sb.tool("ccci-abradir").args(["--runs-dir", &dir]).run(),
                ),
                (
                    "ccci-abradir CCCI_RUNS_DIR",
                    sb.tool("ccci-abradir").env("CCCI_RUNS_DIR", &dir).run(),
                ),
            ];
            for (how, out) in runs {
                tried += 1;
                // The janitor may treat a missing (dangling) lock dir as
                // "nothing to do"; a symlink it must refuse.
                if how.starts_with("ccci-janitor") && target == "dangling" && out.code() == 0 {
                    continue;
                }
                assert_eq!(out.code(), 125, "{how} {dir:?}\n{out}");
                assert!(out.stderr.contains("is a symlink"), "{how} {dir:?}\n{out}");
            }
        }
    }
    assert_eq!(tried, 56);
    assert_unchanged(&before, sb.root(), "a symlinked dir");
}

/// SPEC §7 case 28: a lockfile hard-linked to another file is refused
/// (125) by ccci-lock, skipped and logged by the janitor, and the other
/// file is never written; the same for state files.
#[test]
fn case_28_a_hard_linked_lockfile_is_refused_and_the_other_file_unchanged() {
    let sb = Sandbox::new();
    mkdir(&sb.lock_dir(), 0o700);
    let precious = sb.path("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    std::fs::hard_link(&precious, sb.lockfile(D)).unwrap();
    let before = snapshot(sb.root());
    for args in [
        &[D, "--", "touch", "ran"][..],
        &["-n", D, "--", "touch", "ran"],
    ] {
        sb.tool("ccci-lock")
            .args(args)
            .run()
            .expect_code(125)
            .expect_stderr("more than one hard link");
    }
    let out = sb
        .tool("ccci-janitor")
        .args(["--", "sh", "-c", "touch reaped"])
        .run();
    out.expect_code(0).expect_stderr("more than one hard link");
    assert_unchanged(&before, sb.root(), "a hard-linked lockfile");

    // State files: never written through the other name.
    let env = sb
        .tool("ccci-state")
        .args(["--run-id", "r", "--pid", "1", "env"])
        .run();
    env.expect_code(0);
    let run_dir = sb.state_dir().join("r-1");
    std::fs::write(&precious, "7\n").unwrap();
    std::fs::hard_link(&precious, run_dir.join("deploys")).unwrap();
    for args in [
        &["incr", "deploys"][..],
        &["append", "deploys", "x"],
        &["get", "deploys"],
    ] {
        let out = sb
            .tool("ccci-state")
            .args(["--run-id", "r", "--pid", "1"])
            .args(args)
            .run();
        assert_eq!(out.code(), 125, "{out}");
        assert!(out.stderr.contains("more than one hard link"), "{out}");
    }
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "7\n");
    assert!(!sb.path("ran").exists() && !sb.path("reaped").exists());
}

/// FIFOs, sockets and directories where a lockfile or a state file belongs:
/// refused (125) or skipped by the janitor, and nothing hangs (a FIFO
/// opened without O_NONBLOCK would block forever).
#[test]
fn fifos_sockets_and_dirs_where_files_belong_are_refused_without_hanging() {
    let sb = Sandbox::new();
    mkdir(&sb.lock_dir(), 0o700);
    let kinds = ["fifo", "socket", "dir"];
    let mut listeners = Vec::new();
    let make = |path: &Path, kind: &str, listeners: &mut Vec<_>| match kind {
        "fifo" => ccci_tests::mkfifo(path),
        "socket" => listeners.push(std::os::unix::net::UnixListener::bind(path).unwrap()),
        _ => mkdir(path, 0o700),
    };
    for (i, kind) in kinds.iter().enumerate() {
        let domain = format!("d{i}.example.org");
        make(&sb.lockfile(&domain), kind, &mut listeners);
        for flags in [&[][..], &["-n"], &["-w", "1s"]] {
            sb.tool("ccci-lock")
                .args(flags)
                .args([domain.as_str(), "--", "touch", "ran"])
                .run()
                .expect_code(125);
        }
    }
    let out = sb
        .tool("ccci-janitor")
        .args(["--", "sh", "-c", "touch reaped"])
        .run();
    out.expect_code(0);
    for i in 0..kinds.len() {
        assert!(out.stderr.contains(&format!("d{i}.example.org")), "{out}");
    }
    sb.tool("ccci-lock").arg("--list").run().expect_code(0);

    sb.tool("ccci-state")
        .args(["--run-id", "r", "--pid", "1", "env"])
        .run()
        .expect_code(0);
    let run_dir = sb.state_dir().join("r-1");
    for kind in kinds {
        let name = format!("x-{kind}");
        make(&run_dir.join(&name), kind, &mut listeners);
        for args in [
            &["incr", name.as_str()][..],
            &["set", &name, "1"],
            &["append", &name, "l"],
            &["get", &name],
        ] {
            let out = sb
                .tool("ccci-state")
                .args(["--run-id", "r", "--pid", "1"])
                .args(args)
                .run();
            // `set` replaces by rename: over a FIFO or socket that is a
            // new file (fine); over a directory it must fail.
            if args[0] == "set" && kind != "dir" {
                continue;
            }
            assert_eq!(out.code(), 125, "{kind}: {out}");
        }
    }
    assert!(!sb.path("ran").exists() && !sb.path("reaped").exists());
}

/// A symlinked lockfile or state file whose target does not exist: the
/// target is never created, and one that exists is never truncated.
#[test]
fn link_targets_are_never_created_truncated_or_written() {
    let sb = Sandbox::new();
    mkdir(&sb.lock_dir(), 0o700);
    let existing = sb.path("existing");
    std::fs::write(&existing, "keep\n").unwrap();
    symlink(sb.path("created"), sb.lockfile("a.example.org")).unwrap();
    symlink(&existing, sb.lockfile("b.example.org")).unwrap();
    let before = snapshot(sb.root());
    for domain in ["a.example.org", "b.example.org"] {
        sb.tool("ccci-lock")
            .args([domain, "--", "touch", "ran"])
            .run()
            .expect_code(125)
            .expect_stderr("is a symlink");
    }
    sb.tool("ccci-janitor")
        .args(["--", "sh", "-c", "touch reaped"])
        .run()
        .expect_code(0);
    assert_unchanged(&before, sb.root(), "a symlinked lockfile");
    assert!(!sb.path("created").exists());
}
