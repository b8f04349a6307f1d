//! ccci-janitor (SPEC §4) and SPEC §7 cases 5-12: real holders (ccci-lock),
//! a real reap script, real flocks and signals. Cases 5-10 run on both
//! backends (see `ccci_tests::both_backends`).
//!
//! One file, as the suite has one module per tool (see `main.rs`): its
//! tests share the orphan, reap-script and janitor helpers defined in it.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use ccci_tests::{alive, both_backends, mkfifo, wait_until, Backend, Cmd, Proc, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";

/// A holder of `domain` whose COMMAND says "ready" and then waits for a line
/// on stdin; release it with `p.send("")`.
fn hold(sb: &Sandbox, domain: &str, run_id: &str) -> Proc {
    ccci_tests::hold_until_told(sb.tool("ccci-lock"), domain, &["--run-id", run_id]).0
}

/// Leaves an orphaned lockfile for `domain`: its holder's COMMAND is killed
/// by a signal, so ccci-lock keeps the lockfile and releases the lock.
fn orphan(sb: &Sandbox, domain: &str) {
    sb.tool("ccci-lock")
        .args(ccci_tests::orphaning("dead-run", domain))
        .run()
        .expect_code(143);
    assert!(sb.lockfile(domain).is_file());
}

/// `cmd` pointed at `b`'s backend.
fn on(b: &Backend, cmd: Cmd) -> Cmd {
    b.setup(cmd)
}

/// Leaves an orphaned claim for `domain` on `b`'s backend: its holder's
/// COMMAND is killed by a signal, so ccci-lock keeps the claim and releases
/// the lock.
fn orphan_on(b: &Backend, domain: &str) {
    b.tool("ccci-lock")
        .args(ccci_tests::orphaning("dead-run", domain))
        .run()
        .expect_code(143);
    assert!(b.has_claim(domain));
}

/// Sets the mtime of `path` to `when` (touch -d syntax), as if it were
/// stamped then.
fn touch(sb: &Sandbox, path: &Path, when: &str) {
    sb.command("touch")
        .args(["-d", when])
        .arg(path)
        .run()
        .expect_code(0);
}

/// `stderr` without the summary line every pass ends with (SPEC §4).
fn without_summary(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.contains("ccci-janitor: pass done: "))
        .collect()
}

/// A reap script, run as `sh SCRIPT`: it records `$*|$CCCI_DOMAIN` in
/// `calls`, then runs `then`.
fn reap_script(sb: &Sandbox, then: &str) -> PathBuf {
    let script = sb.path("reap.sh");
    let calls = sb.path("calls");
    std::fs::write(
        &script,
        format!(
            "echo \"$*|$CCCI_DOMAIN\" >> '{}'\n{then}\n",
            calls.display()
        ),
    )
    .unwrap();
    script
}

/// The reap invocations recorded so far.
fn calls(sb: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(sb.path("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `ccci-janitor FLAGS -- sh SCRIPT`.
fn janitor(sb: &Sandbox, flags: &[&str], script: &Path) -> Cmd {
    sb.tool("ccci-janitor")
        .args(flags)
        .args(["--", "sh"])
        .arg(script)
}

/// A reap that says `reaping-<domain>` (on the janitor's stderr) and then
/// waits until the test writes a line into the FIFO `release`.
fn slow_reap(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let release = sb.path("release");
    mkfifo(&release);
    let script = reap_script(
        sb,
        &format!("echo \"reaping-$1\"; read _ < '{}'", release.display()),
    );
    (script, release)
}

/// Lets one waiting slow reap finish.
fn release(fifo: &Path) {
    std::fs::write(fifo, "go\n").unwrap();
}

fn make_lock_dir(sb: &Sandbox) {
    std::fs::create_dir(sb.lock_dir()).unwrap();
    std::fs::set_permissions(sb.lock_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

both_backends!(
    case_05_an_orphan_is_reaped_exactly_once_and_its_lockfile_unlinked,
    |b: &Backend| {
        let sb = b.sb();
        orphan_on(b, D);
        let script = reap_script(sb, "exit 0");
        let out = b
            .tool("ccci-janitor")
            .args(["--", "sh"])
            .arg(&script)
            .arg("--force")
            .run();
        out.expect_code(0)
            .expect_stderr(&format!("ccci-janitor: {D}: reaped"))
            .expect_stderr("'dead-run'");
        assert_eq!(
            calls(sb),
            [format!("--force {D}|{D}")],
            "domain is the last argument"
        );
        assert!(!b.has_claim(D), "the claim stays after a reap\n{out}");
        assert_eq!(b.leftovers(), Vec::<String>::new(), "{out}");
        assert_eq!(out.stdout, "", "stdout is for --json only");

        on(b, janitor(sb, &[], &script)).run().expect_code(0);
        assert_eq!(calls(sb).len(), 1, "reaped a second time");
    }
);

both_backends!(
    case_06_a_live_holder_is_never_reaped_and_is_logged,
    |b: &Backend| {
        let sb = b.sb();
        let (mut holder, _) = b.hold(D, &["--run-id", "live-run"]);
        b.backdate_claim(D, 10 * 60);
        let script = reap_script(sb, "exit 0");

        let quiet = on(b, janitor(sb, &[], &script)).run();
        quiet.expect_code(0);
        // Quiet by default but for the summary line: a live run is not news.
        assert_eq!(
            without_summary(&quiet.stderr),
            Vec::<&str>::new(),
            "quiet by default: {quiet}"
        );
        quiet.expect_stderr("pass done: 0 reaped, 0 would-reap, 1 live");

        let out = on(b, janitor(sb, &["-v"], &script)).run();
        out.expect_code(0)
            .expect_stderr(&format!("{D}: live: locked by pid {}", holder.pid()))
            .expect_stderr("'live-run'");
        assert!(calls(sb).is_empty(), "a live run was reaped");
        assert!(b.has_claim(D));
        assert_eq!(b.try_lock(D), 75, "the holder lost its lock");
        holder.send("");
        holder.wait().expect_code(0);
    }
);

both_backends!(
    case_07_a_new_run_blocks_until_the_slow_reap_completes,
    |b: &Backend| {
        let sb = b.sb();
        orphan_on(b, D);
        let (script, fifo) = slow_reap(sb);
        let done = sb.path("reap-done");
        std::fs::write(
            &script,
            std::fs::read_to_string(&script).unwrap() + &format!("touch '{}'\n", done.display()),
        )
        .unwrap();
        let mut jan = on(b, janitor(sb, &[], &script)).spawn();
        jan.expect_stderr(&format!("reaping-{D}"));

        let mut run = b
            .tool("ccci-lock")
            .args(["-v", D, "--", "sh", "-c"])
            .arg(format!(
                "test -e '{}' && echo run-in-after-reap || echo run-in-during-reap",
                done.display()
            ))
            .spawn();
        b.wait_blocked(&mut run);
        assert!(!run.has_exited(), "{}", run.report());
        assert_eq!(run.stdout_so_far(), "", "the run started during the reap");

        release(&fifo);
        jan.expect_stderr(&format!("{D}: reaped"));
        jan.wait().expect_code(0);
        run.expect_stdout("run-in-after-reap");
        run.wait().expect_code(0);
        assert!(!b.has_claim(D));
    }
);

both_backends!(
    case_08_two_overlapping_janitors_exactly_one_reaps,
    |b: &Backend| {
        let sb = b.sb();
        orphan_on(b, D);
        let (script, fifo) = slow_reap(sb);
        let mut first = on(b, janitor(sb, &[], &script)).spawn();
        first.expect_stderr(&format!("reaping-{D}"));

        // The second pass runs entirely while the first one reaps: it examines
        // nothing (one pass at a time, SPEC §4).
        let second = on(b, janitor(sb, &["-v", "--json"], &script)).run();
        second
            .expect_code(0)
            .expect_stderr("another janitor pass is running");
        assert_eq!(second.stdout, "", "the second pass examined a domain");
        // While it reaps, the claim carries the janitor's own record.
        let record = b.claim_record(D);
        assert!(record.contains(r#""reaper":true"#), "{record}");
        assert!(
            record.contains(&format!(r#""pid":{}"#, first.pid())),
            "{record}"
        );
        b.tool("ccci-lock")
            .args(["-n", "-v", D, "--", "true"])
            .run()
            .expect_code(75);

        release(&fifo);
        first
            .wait()
            .expect_code(0)
            .expect_stderr(&format!("{D}: reaped"));
        assert_eq!(calls(sb).len(), 1, "reaped twice: {:?}", calls(sb));
        assert!(!b.has_claim(D));
        assert_eq!(b.leftovers(), Vec::<String>::new());
    }
);

#[test]
fn case_08_racing_janitors_reap_each_orphan_exactly_once() {
    let sb = Sandbox::new();
    let domains: Vec<String> = (0..12).map(|i| format!("app-{i:02}.example")).collect();
    for d in &domains {
        orphan(&sb, d);
    }
    let script = reap_script(&sb, "exit 0");
    let janitors: Vec<Proc> = (0..3).map(|_| janitor(&sb, &[], &script).spawn()).collect();
    for j in janitors {
        j.wait().expect_code(0);
    }
    let mut reaped: Vec<String> = calls(&sb)
        .iter()
        .map(|c| c.split('|').next().unwrap().to_string())
        .collect();
    reaped.sort();
    assert_eq!(reaped, domains, "each orphan must be reaped exactly once");
    assert_eq!(
        ccci_tests::lock_dir_entries(&sb.lock_dir()),
        Vec::<String>::new()
    );
}

both_backends!(
    /// On files the host rebooted: the lock dir is back, its lockfiles are
    /// not. The reap runs holding the domain: its new lockfile exists, or
    /// on etcd COMMAND has a fencing token.
    case_09_a_deployed_domain_without_a_lockfile_is_reaped_at_once,
    |b: &Backend| {
        let sb = b.sb();
        let held = if b.is_etcd() {
            "test -n \"$CCCI_LOCK_REVISION\" || exit 9"
        } else {
            make_lock_dir(sb);
            "test -e \"$CCCI_LOCK_FILE\" || exit 9"
        };
        let script = reap_script(sb, held);
        let out = on(
            b,
            janitor(
                sb,
                &["--deployed", "-", "--only", "*", "--min-age", "1h"],
                &script,
            ),
        )
        .stdin_bytes(format!("# from abra app ls\n\n{D}\n"))
        .run();
        out.expect_code(0)
            .expect_stderr(&format!("{D}: reaped (deployed, no lockfile)"));
        assert_eq!(calls(sb), [format!("{D}|{D}")]);
        assert!(
            !b.has_claim(D),
            "the new claim is removed after the reap\n{out}"
        );
        assert_eq!(b.leftovers(), Vec::<String>::new(), "{out}");
    }
);

both_backends!(
    case_10_a_lock_held_past_leak_after_is_flagged_and_not_stolen,
    |b: &Backend| {
        let sb = b.sb();
        let (mut holder, _) = b.hold(D, &["--run-id", "stuck-run"]);
        b.backdate_claim(D, 3 * 3600);
        let script = reap_script(sb, "exit 0");

        let out = on(b, janitor(sb, &["--json"], &script)).run();
        out.expect_code(0)
            .expect_stderr(&format!("{D}: possible leaked run"))
            .expect_stderr(&format!("pid {}", holder.pid()))
            .expect_stderr("'stuck-run'");
        let lines = json_lines(&out.stdout);
        assert_eq!(lines[0]["outcome"], "leaked");
        assert_eq!(lines[0]["holder_pid"], holder.pid());
        assert_eq!(lines[0]["run_id"], "stuck-run");
        assert!(lines[0]["age_s"].as_u64().unwrap() >= 3 * 3600 - 60);
        assert!(calls(sb).is_empty(), "a leaked run was reaped");
        assert_eq!(b.try_lock(D), 75, "the lock was stolen");

        let later = on(b, janitor(sb, &["--leak-after", "4h"], &script)).run();
        later.expect_code(0);
        assert_eq!(
            without_summary(&later.stderr),
            Vec::<&str>::new(),
            "held for 3h is not a leak with --leak-after 4h"
        );

        holder.send("");
        holder.wait().expect_code(0);
    }
);

#[test]
fn case_11_warm_names_are_never_probed() {
    let sb = Sandbox::new();
    orphan(&sb, "warm-old.example");
    orphan(&sb, "cold.example");
    make_warm_traps(&sb);
    std::fs::write(sb.path("warm.list"), "# kept warm\nwarm-file-*\n").unwrap();
    let script = reap_script(&sb, "exit 0");
    let watch = OpenWatch::new(&sb.lock_dir());
    let out = janitor(
        &sb,
        &[
            "--warm",
            "warm-*",
            "--warm-file",
            "warm.list",
            "--deployed",
            "-",
            "--only",
            "*",
            "--json",
        ],
        &script,
    )
    .stdin_bytes("warm-new.example\nwarm-file-new.example\ncold.example\n")
    .run();
    out.expect_code(0).expect_stderr("cold.example: reaped");
    let opened = watch.names();
    assert!(
        opened.iter().all(|name| !name.starts_with("warm-")),
        "warm lockfiles were opened or created: {opened:?}"
    );
    assert!(
        opened.contains(&"cold.example.lock".to_string()),
        "the watch sees the janitor's opens: {opened:?}"
    );
    assert_eq!(
        without_summary(&out.stderr).len(),
        1,
        "a warm name was opened and found unusable:\n{out}"
    );
    assert_eq!(
        calls(&sb),
        ["cold.example|cold.example"],
        "a warm domain was reaped"
    );
    assert!(
        !sb.lockfile("warm-new.example").exists(),
        "a lockfile was created"
    );
    assert!(!sb.lockfile("warm-file-new.example").exists());
    assert!(sb.lockfile("warm-old.example").exists());
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 7, "{out}");
    for line in lines.iter().filter(|l| l["domain"] != "cold.example") {
        assert_eq!(line["outcome"], "skipped", "{line}");
        assert!(
            line["detail"].as_str().unwrap().starts_with("warm"),
            "{line}"
        );
    }
    let verbose = janitor(&sb, &["-v", "--warm", "warm-*"], &script).run();
    verbose
        .expect_code(0)
        .expect_stderr("warm-old.example: warm");
}

/// The names opened or created in a directory (inotify `IN_OPEN|IN_CREATE`)
/// since the watch was set: the kernel's own record of what was touched.
struct OpenWatch {
    fd: std::os::fd::OwnedFd,
}

impl OpenWatch {
    fn new(dir: &Path) -> OpenWatch {
        use std::os::fd::FromRawFd;
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: inotify_init1 returns a new descriptor (or -1), which the
        // OwnedFd then owns; `path` is a valid NUL-terminated string.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(
                fd >= 0,
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            );
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let wd = libc::inotify_add_watch(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                path.as_ptr(),
                libc::IN_OPEN | libc::IN_CREATE,
            );
            assert!(
                wd >= 0,
                "inotify_add_watch: {}",
                std::io::Error::last_os_error()
            );
            OpenWatch { fd }
        }
    }

    /// The names of the events queued so far (the directory's own are left out).
    fn names(&self) -> Vec<String> {
        use std::io::Read;
        let mut file = std::fs::File::from(self.fd.try_clone().unwrap());
        let mut names = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading inotify events: {e}"),
            };
            // struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buf[at + 16..at + 16 + len];
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                if !name.is_empty() {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
                at += 16 + len;
            }
        }
        names
    }
}

/// Non-regular files where warm lockfiles would be: opening any of them
/// would be reported as unusable, so silence proves they were not opened.
fn make_warm_traps(sb: &Sandbox) {
    std::fs::create_dir(sb.lockfile("warm-dir.example")).unwrap();
    mkfifo(&sb.lockfile("warm-fifo.example"));
    symlink(sb.path("nowhere"), sb.lockfile("warm-link.example")).unwrap();
}

#[test]
fn case_12_a_directory_as_lockfile_is_skipped_and_logged() {
    let sb = Sandbox::new();
    make_lock_dir(&sb);
    std::fs::create_dir(sb.lockfile(D)).unwrap();
    orphan(&sb, "other.example");
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &[], &script).run();
    out.expect_code(0)
        .expect_stderr(&format!("{D}: skipped"))
        .expect_stderr(&format!("{} is a directory", sb.lockfile(D).display()))
        .expect_stderr("other.example: reaped");
    assert!(sb.lockfile(D).is_dir());
    assert_eq!(calls(&sb), ["other.example|other.example"]);
}

/// The type of the file system `path` is on (`stat -f`): "tmpfs", "ext2/ext3"…
fn fs_type(path: &Path) -> String {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "stat -f {}: {out:?}", path.display());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A fresh directory on a disk file system (not a tmpfs), removed on drop.
fn disk_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_ne!(
        fs_type(dir.path()),
        "tmpfs",
        "the target dir {} is on a tmpfs; this test needs a disk there",
        dir.path().display()
    );
    dir
}

/// A fresh directory on a tmpfs (under /dev/shm), removed on drop.
fn tmpfs_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ccci-test-")
        .tempdir_in("/dev/shm")
        .unwrap();
    assert_eq!(fs_type(dir.path()), "tmpfs", "{}", dir.path().display());
    dir
}

/// Each line of `stderr` starts with an RFC 3339 timestamp (SPEC §4), the
/// first one then with the tool's name.
#[track_caller]
fn assert_stamped(stderr: &str) {
    assert!(!stderr.is_empty());
    for (i, line) in stderr.lines().enumerate() {
        let (stamp, rest) = line.split_at(line.find(' ').unwrap_or(0));
        let shape = stamp
            .bytes()
            .map(|b| if b.is_ascii_digit() { b'9' } else { b })
            .collect::<Vec<u8>>();
        assert!(
            shape == b"9999-99-99T99:99:99Z",
            "line {i} has no timestamp: {line:?}\n{stderr}"
        );
        if i == 0 {
            assert!(rest.starts_with(" ccci-janitor: "), "{stderr}");
        }
    }
}

/// SPEC §7 cases 12, 25 and 34: a missing lock dir on a disk file system
/// (a typo, an unmounted disk) reaps nothing, creates nothing, and fails
/// the pass (125), so a timer or cron shows it.
#[test]
fn case_12_and_25_a_missing_lock_dir_on_a_disk_is_logged_and_nothing_is_created() {
    let sb = Sandbox::new();
    let disk = disk_dir();
    let lock_dir = disk.path().join("locks");
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &["--deployed", "-", "--only", "*", "--json"], &script)
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .stdin_bytes(format!("{D}\n"))
        .run();
    out.expect_code(125)
        .expect_stderr(&format!("lock dir {} does not exist", lock_dir.display()))
        .expect_stderr("not on a tmpfs")
        .expect_stderr("nothing probed, nothing reaped");
    assert_eq!(out.stdout, "");
    assert!(!lock_dir.exists(), "the janitor created the lock dir");
    assert!(calls(&sb).is_empty());
}

#[test]
fn a_symlinked_lockfile_is_never_followed() {
    let sb = Sandbox::new();
    make_lock_dir(&sb);
    let victim = sb.path("victim.lock");
    std::fs::write(&victim, "precious\n").unwrap();
    touch(&sb, &victim, "5 hours ago");
    symlink(&victim, sb.lockfile(D)).unwrap();
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
        .stdin_bytes(format!("{D}\n"))
        .run();
    out.expect_code(0)
        .expect_stderr(&format!("{D}: skipped"))
        .expect_stderr("symlink");
    assert!(calls(&sb).is_empty());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(sb.lockfile(D))
        .unwrap()
        .is_symlink());
}

#[test]
fn a_failed_reap_is_status_1_and_keeps_the_lockfile_for_the_next_pass() {
    let sb = Sandbox::new();
    orphan(&sb, D);
    orphan(&sb, "fine.example");
    let script = reap_script(&sb, &format!("test \"$1\" != {D} || exit 3"));
    let out = janitor(&sb, &[], &script).run();
    out.expect_code(1)
        .expect_stderr(&format!("{D}: reap failed: exited with status 3"))
        .expect_stderr("lockfile kept")
        .expect_stderr("fine.example: reaped");
    assert!(sb.lockfile(D).exists());
    assert!(!sb.lockfile("fine.example").exists());
    assert_eq!(sb.try_lock(D), 0, "the janitor kept the lock");

    // The run that just took the lock removed the lockfile; leave a new orphan.
    orphan(&sb, D);
    let script = reap_script(&sb, "exit 0");
    janitor(&sb, &[], &script)
        .run()
        .expect_code(0)
        .expect_stderr(&format!("{D}: reaped"));
}

#[test]
fn a_missing_reap_command_fails_the_reap_and_keeps_the_lockfile() {
    let sb = Sandbox::new();
    orphan(&sb, D);
    let out = sb
        .tool("ccci-janitor")
        .args(["--", "/nonexistent/reap"])
        .run();
    out.expect_code(1)
        .expect_stderr("cannot run '/nonexistent/reap'");
    assert!(sb.lockfile(D).exists());
}

#[test]
fn the_reap_timeout_kills_the_reaps_process_group() {
    let sb = Sandbox::new();
    orphan(&sb, D);
    let sleeper = sb.path("sleeper");
    let script = reap_script(
        &sb,
        &format!(
            "sleep 1000 & echo $! > '{0}.tmp'; mv '{0}.tmp' '{0}'; wait",
            sleeper.display()
        ),
    );
    let out = janitor(&sb, &["--reap-timeout", "300ms"], &script).run();
    out.expect_code(1)
        .expect_stderr(&format!("{D}: reap failed: timed out after"))
        .expect_stderr("process group was killed");
    assert!(
        sb.lockfile(D).exists(),
        "a timed-out reap removed the lockfile"
    );
    let pid: u32 = std::fs::read_to_string(&sleeper)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the reap's background child is gone", || !alive(pid));
}

#[test]
fn a_stopped_janitor_stops_the_reap_keeps_the_lockfile_and_ends_by_the_signal() {
    let sb = Sandbox::new();
    orphan(&sb, "a.example");
    orphan(&sb, "b.example");
    let script = reap_script(&sb, "echo \"reaping-$1\"; sleep 1000 & wait");
    let mut jan = janitor(&sb, &[], &script).spawn();
    jan.expect_stderr("reaping-a.example");
    jan.signal(libc::SIGTERM);
    let out = jan.wait();
    out.expect_code(143)
        .expect_stderr("a.example: reap failed: killed by SIGTERM")
        .expect_stderr("stopped by SIGTERM");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGTERM),
        "the janitor must end by the signal itself (SPEC §1)\n{out}"
    );
    assert!(
        !sb.lock_dir().join(".janitor.lock").exists(),
        "the pass lock outlived the pass"
    );
    assert_eq!(calls(&sb).len(), 1, "the pass went on after being stopped");
    assert!(sb.lockfile("a.example").exists());
    assert!(sb.lockfile("b.example").exists());
}

#[test]
fn a_dry_run_changes_nothing() {
    let sb = Sandbox::new();
    orphan(&sb, "orphan.example");
    orphan(&sb, "stale.example");
    let script = reap_script(&sb, "exit 0");
    let before = listing(&sb.lock_dir());
    let out = janitor(
        &sb,
        &["--dry-run", "--deployed", "-", "--only", "*", "--json"],
        &script,
    )
    .stdin_bytes("orphan.example\nrebooted.example\n")
    .run();
    out.expect_code(0)
        .expect_stderr("orphan.example: dry run: would reap")
        .expect_stderr("rebooted.example: dry run: would reap")
        .expect_stderr("stale.example: dry run: would unlink stale lockfile");
    let outcomes: Vec<String> = json_lines(&out.stdout)
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["would-reap", "would-reap", "skipped"]);
    assert!(calls(&sb).is_empty(), "a dry run reaped");
    assert_eq!(
        listing(&sb.lock_dir()),
        before,
        "a dry run changed the lock dir"
    );

    // Without a REAP_COMMAND, too.
    sb.tool("ccci-janitor")
        .arg("--dry-run")
        .run()
        .expect_code(0)
        .expect_stderr("would reap");
    assert_eq!(listing(&sb.lock_dir()), before);
}

/// Every entry under `dir` with its size and mtime, sorted: a snapshot to
/// show that nothing was created, removed or written.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        if meta.is_dir() {
            out.extend(tree(&entry.path()));
        }
    }
    out.sort();
    out
}

fn listing(dir: &Path) -> Vec<(String, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mtime = e.metadata().unwrap().modified().unwrap();
            (e.file_name().to_string_lossy().into_owned(), mtime)
        })
        .filter(|(name, _)| !ccci_tests::is_place_record(name))
        .collect();
    out.sort();
    out
}

#[test]
fn json_has_one_parseable_object_per_examined_domain() {
    let sb = Sandbox::new();
    orphan(&sb, "a-orphan.example");
    touch(&sb, &sb.lockfile("a-orphan.example"), "2 hours ago");
    orphan(&sb, "b-young.example");
    let mut holder = hold(&sb, "c-live.example", "r-live");
    orphan(&sb, "d-warm.example");
    let script = reap_script(&sb, "echo reap output on stdout; exit 0");
    let out = janitor(
        &sb,
        &["--json", "--min-age", "1h", "--warm", "d-*"],
        &script,
    )
    .run();
    out.expect_code(0).expect_stderr("reap output on stdout");
    let lines = json_lines(&out.stdout);
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["domain"].as_str().unwrap(),
                l["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a-orphan.example", "reaped"),
            ("b-young.example", "young"),
            ("c-live.example", "live"),
            ("d-warm.example", "skipped"),
        ],
        "{out}"
    );
    for line in &lines {
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{line}");
        for key in [
            "domain",
            "outcome",
            "holder_pid",
            "run_id",
            "age_s",
            "detail",
        ] {
            assert!(line.get(key).is_some(), "{key} missing: {line}");
        }
    }
    assert_eq!(lines[0]["run_id"], "dead-run");
    assert!(lines[0]["age_s"].as_u64().unwrap() >= 7200 - 60);
    assert_eq!(lines[2]["holder_pid"], holder.pid());
    assert!(lines[3]["age_s"].is_null(), "a warm lockfile was looked at");
    holder.send("");
    holder.wait().expect_code(0);
}

#[test]
fn a_stale_lockfile_of_an_undeployed_domain_is_unlinked_without_a_reap() {
    let sb = Sandbox::new();
    orphan(&sb, "gone.example");
    orphan(&sb, D);
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
        .stdin_bytes(format!("{D}\nnot/a/domain\n"))
        .run();
    out.expect_code(0)
        .expect_stderr("gone.example: unlinked stale lockfile")
        .expect_stderr("line 2: ignored: invalid domain 'not/a/domain'")
        .expect_stderr(&format!("{D}: reaped"));
    assert_eq!(calls(&sb), [format!("{D}|{D}")]);
    assert!(!sb.lockfile("gone.example").exists());
}

#[test]
fn bad_input_is_status_2_and_nothing_happens() {
    let sb = Sandbox::new();
    orphan(&sb, D);
    let script = reap_script(&sb, "exit 0");
    std::fs::write(sb.path("bad-warm"), "warm-*\nwarm-[0-9\n").unwrap();
    std::fs::write(sb.path("empty"), "# nothing\n").unwrap();
    let cases: [&[&str]; 14] = [
        &["--warm", "warm-[0-9"],
        &["--warm", "w[[:digits:]].x"],
        &["--only", "[z-a]*"],
        &["--only", "a\\"],
        &["--min-age", "5x"],
        &["--leak-after=-1m"],
        &["--reap-timeout", ""],
        &["--deployed", "/nonexistent/list", "--only", "*"],
        &["--warm-file", "bad-warm"],
        &["--only-file", "bad-warm"],
        &["--only-file", "empty"],
        &["--deployed", "-", "--only-file", "-"],
        &["--deployed", "-", "--only", "*", "--warm-file", "-"],
        &["--bogus"],
    ];
    let before = tree(sb.root());
    for flags in cases {
        let out = janitor(&sb, flags, &script).run();
        out.expect_code(2);
        assert_stamped(&out.stderr);
        assert_eq!(tree(sb.root()), before, "{flags:?} changed something");
    }
    janitor(&sb, &["--warm-file", "bad-warm"], &script)
        .run()
        .expect_stderr("'warm-[0-9'");
    janitor(&sb, &["--warm", "w[[:digits:]].x"], &script)
        .run()
        .expect_stderr("'w[[:digits:]].x'")
        .expect_stderr("unknown character class [:digits:]");
    janitor(&sb, &["--deployed", "-", "--only-file", "-"], &script)
        .run()
        .expect_stderr("--deployed and --only-file all read stdin");
    sb.tool("ccci-janitor").run().expect_code(2);
    assert!(calls(&sb).is_empty(), "bad input still reaped");
    assert!(sb.lockfile(D).exists());
}

#[test]
fn an_unsafe_lock_dir_is_refused_with_125() {
    let sb = Sandbox::new();
    orphan(&sb, D);
    std::fs::set_permissions(sb.lock_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = reap_script(&sb, "exit 0");
    janitor(&sb, &[], &script)
        .run()
        .expect_code(125)
        .expect_stderr("writable by group or others");
    assert!(calls(&sb).is_empty());
}

const PROXY: &str = "traefik.example.org";
const WARM: &str = "wp-warm01.ci.example.org";
const CI: &str = "*-??????.ci.example.org";
const ORPHAN: &str = "wp-3f2a9c.ci.example.org";

#[test]
fn case_23_only_ci_apps_are_reaped() {
    let sb = Sandbox::new();
    orphan(&sb, ORPHAN);
    // Deployed without a lockfile, like every app after a reboot: the proxy
    // (no CI run deployed it), a warm CI app and the orphan.
    let deployed = format!("{PROXY}\n{WARM}\n{ORPHAN}\n");
    std::fs::write(sb.path("deployed.list"), &deployed).unwrap();
    let script = reap_script(&sb, "exit 0");

    let before = tree(sb.root());
    let refused = janitor(&sb, &["--deployed", "deployed.list"], &script).run();
    refused
        .expect_code(2)
        .expect_stderr("--deployed needs --only or --only-file")
        .expect_stderr("--only '*'");
    assert!(calls(&sb).is_empty(), "--deployed without --only reaped");
    assert_eq!(
        tree(sb.root()),
        before,
        "--deployed without --only changed something"
    );

    let watch = OpenWatch::new(&sb.lock_dir());
    let out = janitor(
        &sb,
        &[
            "--deployed",
            "deployed.list",
            "--only",
            CI,
            "--warm",
            "wp-warm*",
            "--json",
            "-v",
        ],
        &script,
    )
    .run();
    out.expect_code(0)
        .expect_stderr(&format!("{ORPHAN}: reaped"))
        .expect_stderr(&format!("{PROXY}: not a CI app"))
        .expect_stderr(&format!("{WARM}: warm"));
    assert_eq!(calls(&sb), [format!("{ORPHAN}|{ORPHAN}")], "{out}");
    let opened: Vec<String> = watch
        .names()
        .into_iter()
        .filter(|name| !ccci_tests::is_janitor_lock(name) && !ccci_tests::is_place_record(name))
        .collect();
    assert_eq!(
        opened,
        [format!("{ORPHAN}.lock")],
        "only the CI app's lockfile may be opened"
    );
    assert!(!sb.lockfile(PROXY).exists() && !sb.lockfile(WARM).exists());
    let outcomes: Vec<(String, String)> = json_lines(&out.stdout)
        .iter()
        .map(|l| (l["domain"].to_string(), l["outcome"].to_string()))
        .collect();
    assert_eq!(outcomes.len(), 3, "{out}");

    // A POSIX class protects w1.x; a domain it does not match is reaped.
    orphan(&sb, "w1.x");
    orphan(&sb, "wa.x");
    janitor(&sb, &["--warm", "w[[:digit:]].x"], &script)
        .run()
        .expect_code(0)
        .expect_stderr("wa.x: reaped");
    assert!(sb.lockfile("w1.x").exists(), "the warm app w1.x was reaped");
    assert_eq!(calls(&sb).len(), 2, "{:?}", calls(&sb));
    assert_eq!(calls(&sb)[1], "wa.x|wa.x");
}

#[test]
fn case_24_overlapping_passes_reap_each_deployed_domain_once() {
    let sb = Sandbox::new();
    make_lock_dir(&sb); // after a reboot: no lockfiles, apps still deployed
    let domains = ["a.ci.example.org", "b.ci.example.org", "c.ci.example.org"];
    std::fs::write(sb.path("deployed.list"), domains.join("\n")).unwrap();
    let release_fifo = sb.path("release");
    mkfifo(&release_fifo);
    // The reap of the first domain waits for the test; the others are quick.
    let script = reap_script(
        &sb,
        &format!(
            "case $1 in a.*) echo \"reaping-$1\"; read _ < '{}';; esac",
            release_fifo.display()
        ),
    );
    let flags = ["--deployed", "deployed.list", "--only", "*.ci.example.org"];
    let mut first = janitor(&sb, &flags, &script).spawn();
    first.expect_stderr("reaping-a.ci.example.org");

    // The deployed list still names every domain: without one pass at a
    // time, this pass would reap b and c now and the first pass again.
    let second = janitor(&sb, &flags, &script).run();
    second
        .expect_code(0)
        .expect_stderr("another janitor pass is running");
    assert_eq!(without_summary(&second.stderr).len(), 1, "{second}");
    assert_eq!(
        calls(&sb).len(),
        1,
        "the second pass reaped: {:?}",
        calls(&sb)
    );

    release(&release_fifo);
    first.wait().expect_code(0);
    let mut reaped: Vec<String> = calls(&sb)
        .iter()
        .map(|c| c.split('|').next().unwrap().to_string())
        .collect();
    reaped.sort();
    assert_eq!(reaped, domains, "each domain must be reaped exactly once");

    assert_eq!(
        ccci_tests::lock_dir_entries(&sb.lock_dir()).len(),
        0,
        "the pass lock is removed when the pass ends"
    );
}

#[test]
fn case_25_after_a_reboot_the_next_pass_recreates_the_tmpfs_lock_dir_and_reaps_at_once() {
    let sb = Sandbox::new();
    let shm = tmpfs_dir();
    let lock_dir = shm.path().join("locks");
    // A run deployed two apps and held one; then the host rebooted.
    sb.tool("ccci-lock")
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .args(["a.ci.example.org", "--", "true"])
        .run()
        .expect_code(0);
    std::fs::remove_dir_all(&lock_dir).unwrap();
    std::fs::write(
        sb.path("deployed.list"),
        "a.ci.example.org\nb.ci.example.org\nproxy.example.org\n",
    )
    .unwrap();
    let script = reap_script(&sb, "test -e \"$CCCI_LOCK_FILE\" || exit 9");
    let pass = |extra: &[&str]| {
        let mut flags = vec![
            "--deployed",
            "deployed.list",
            "--only",
            "*.ci.example.org",
            "--min-age",
            "1h",
        ];
        flags.extend(extra);
        janitor(&sb, &flags, &script).env("CCCI_APP_LOCK_DIR", &lock_dir)
    };

    let dry = pass(&["--dry-run", "--json"]).run();
    dry.expect_code(0)
        .expect_stderr("a.ci.example.org: dry run: would reap")
        .expect_stderr("b.ci.example.org: dry run: would reap");
    assert!(!lock_dir.exists(), "a dry run created the lock dir");
    assert!(calls(&sb).is_empty());

    let out = pass(&[]).run();
    out.expect_code(0)
        .expect_stderr("its parent is on a tmpfs")
        .expect_stderr("a.ci.example.org: reaped (deployed, no lockfile)")
        .expect_stderr("b.ci.example.org: reaped (deployed, no lockfile)");
    assert_stamped(&out.stderr);
    assert_eq!(
        calls(&sb),
        [
            "a.ci.example.org|a.ci.example.org",
            "b.ci.example.org|b.ci.example.org"
        ]
    );
    let meta = std::fs::symlink_metadata(&lock_dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    let left: Vec<String> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_pass_cut_short_by_a_write_error_says_so_and_exits_125() {
    let sb = Sandbox::new();
    orphan(&sb, "a.example");
    orphan(&sb, "b.example");
    let script = reap_script(&sb, "exit 0");
    // /dev/full: every write to stdout fails (ENOSPC).
    let out = sb
        .sh(&format!(
            "ccci-janitor --json -- sh '{}' > /dev/full",
            script.display()
        ))
        .run();
    out.expect_code(125)
        .expect_stderr("pass cut short after 1 of 2 domains")
        .expect_stderr("cannot write --json to stdout");
    assert_eq!(calls(&sb), ["a.example|a.example"], "the pass went on");
    assert!(sb.lockfile("b.example").exists());

    // A closed pipe (`| head -1` that has exited): EPIPE is no success either.
    orphan(&sb, "c.example");
    let fifo = sb.path("pipe");
    mkfifo(&fifo);
    let out = sb
        .sh(&format!(
            "exec 4<> \"$pipe\" 5> \"$pipe\" 4<&-; ccci-janitor --json -- sh '{}' >&5",
            script.display()
        ))
        .env("pipe", &fifo)
        .run();
    out.expect_code(125)
        .expect_stderr("pass cut short after 1 of 2 domains")
        .expect_stderr("Broken pipe");
    assert_eq!(calls(&sb).len(), 2, "{:?}", calls(&sb));
    assert!(sb.lockfile("c.example").exists());

    // The log itself cannot be written: no reap goes unreported.
    orphan(&sb, "d.example");
    let out = sb
        .sh(&format!(
            "ccci-janitor -- sh '{}' 2> /dev/full",
            script.display()
        ))
        .run();
    out.expect_code(125);
    assert_eq!(calls(&sb).len(), 3, "{:?}", calls(&sb));
    assert!(sb.lockfile("d.example").exists(), "the pass went on");
}

#[test]
fn stderr_lines_are_not_stamped_when_stderr_is_the_journal() {
    let sb = Sandbox::new();
    let script = reap_script(&sb, "exit 0");
    let log = sb.path("journal");
    std::fs::write(&log, "").unwrap();
    // JOURNAL_STREAM names the file stderr is: the journal stamps lines
    // itself. Naming another file changes nothing.
    for stream in ["$(stat -c %d:%i \"$log\")", "1:1"] {
        orphan(&sb, D);
        sb.sh(&format!(
            "JOURNAL_STREAM={stream} ccci-janitor -- sh \"$script\" 2>> \"$log\""
        ))
        .env("log", &log)
        .env("script", &script)
        .run()
        .expect_code(0);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = without_summary(&text);
    assert_eq!(lines.len(), 2, "{text}");
    // Under the journal: the sd-daemon priority instead of a time stamp.
    assert!(
        lines[0].starts_with(&format!("<6>ccci-janitor: {D}: reaped")),
        "{text}"
    );
    assert_stamped(lines[1]);
}

/// SPEC §2 "Looking never blocks anyone", §7 case 29: janitor passes that
/// report young claims (`-v`, `--json`) in a loop never make `ccci-lock -n`
/// on a free domain fail: whether a young claim is held is read from the
/// kernel's lock table, not found out by taking its lock.
#[test]
fn case_29_janitor_passes_in_a_loop_never_make_nonblock_fail() {
    let sb = Sandbox::new();
    make_lock_dir(&sb); // a missing lock dir on a disk fails every pass (125)
    let script = reap_script(&sb, "exit 0");
    let passes: Vec<Proc> = ["-v", "--json"]
        .iter()
        .map(|flag| {
            sb.sh(&format!(
                "while :; do ccci-janitor --min-age 1h {flag} -- sh '{}' >/dev/null 2>&1 \
                 || echo pass-failed; done",
                script.display()
            ))
            .spawn()
        })
        .collect();
    let out = sb
        .sh(&format!(
            "for i in $(seq 300); do \
               ccci-lock -n --keep {D} -- true || echo \"-n failed with $?\"; \
             done; echo done"
        ))
        .run();
    for pass in passes {
        pass.signal(libc::SIGKILL);
        let ended = pass.wait();
        assert!(!ended.stdout.contains("pass-failed"), "{ended}");
    }
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "done", "{out}");
    assert!(calls(&sb).is_empty(), "a young claim was reaped");
}

#[test]
fn a_lock_dir_that_is_the_state_dir_is_refused_with_125() {
    let sb = Sandbox::new();
    orphan(&sb, D);
    let script = reap_script(&sb, "exit 0");
    janitor(&sb, &[], &script)
        .env("CCCI_STATE_DIR", sb.lock_dir())
        .run()
        .expect_code(125)
        .expect_stderr("state dir");
    assert!(calls(&sb).is_empty());
    assert!(sb.lockfile(D).exists());
}

/// A lockfile without a holder record (its run was killed before it
/// stamped one) is described as such, free or held, never as "an unknown
/// holder".
#[test]
fn a_claim_without_a_record_is_described_as_having_none() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.lock_dir()).unwrap();
    std::fs::set_permissions(sb.lock_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let lockfile = sb.lockfile(D);
    std::fs::write(&lockfile, "").unwrap();
    std::fs::set_permissions(&lockfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Held by a process that never writes a record: a flock(1) user.
    let mut holder = sb
        .command("flock")
        .arg(&lockfile)
        .args(["-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    holder.expect_stdout("ready");
    let out = sb.tool("ccci-janitor").args(["-v", "--", "true"]).run();
    out.expect_code(0)
        .expect_stderr("has written no holder record (yet)");
    assert!(!out.stderr.contains("unknown holder"), "{out}");
    holder.send("");
    holder.wait().expect_code(0);
    let out = sb.tool("ccci-janitor").args(["--", "true"]).run();
    out.expect_code(0)
        .expect_stderr("no holder record: whoever made the lockfile ended before writing one");
    assert!(!out.stderr.contains("unknown holder"), "{out}");
    assert!(!lockfile.exists(), "reaped and unlinked");
}

/// A lock dir on a tmpfs removed by hand while a run holds a lockfile in it
/// is not a reboot: the run is alive (it still has its unlinked lockfile
/// open), so the pass reaps nothing, creates nothing and fails (125).
#[test]
fn a_tmpfs_lock_dir_removed_under_a_live_run_is_not_taken_for_a_reboot() {
    let sb = Sandbox::new();
    let shm = tmpfs_dir();
    let lock_dir = shm.path().join("locks");
    // The run ignores the TERM of its lost lock for long enough.
    let mut live = sb
        .tool("ccci-lock")
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .args(["--lost-grace", "60s", D, "--", "sh", "-c"])
        .arg("trap '' TERM; echo ready; read _")
        .piped_stdin()
        .spawn();
    live.expect_stdout("ready");
    std::fs::remove_dir_all(&lock_dir).unwrap();
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .stdin_bytes(format!("{D}\n"))
        .run();
    out.expect_code(125)
        .expect_stderr("removed under live runs, not by a reboot")
        .expect_stderr(&format!("pid {} still holds", live.pid()));
    assert!(calls(&sb).is_empty(), "a live run's app was reaped");
    assert!(!lock_dir.exists(), "the lock dir was recreated");
    live.signal(libc::SIGKILL);
    let _ = live.wait();
}

/// The same for a run that claims on etcd: it keeps its host's record of
/// where it claims open, so a janitor on files that finds the lock dir
/// gone does not take it for a reboot and reap the live app.
#[test]
fn a_tmpfs_lock_dir_removed_under_a_live_etcd_run_is_not_taken_for_a_reboot() {
    let etcd = ccci_tests::etcd::Etcd::start();
    let sb = Sandbox::new();
    let shm = tmpfs_dir();
    let lock_dir = shm.path().join("locks");
    let mut live = sb
        .tool("ccci-lock")
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .env("CCCI_ETCD_ENDPOINTS", etcd.endpoint())
        .args([D, "--", "sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    live.expect_stdout("ready");
    std::fs::remove_dir_all(&lock_dir).unwrap();
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .stdin_bytes(format!("{D}\n"))
        .run();
    out.expect_code(125)
        .expect_stderr("removed under live runs, not by a reboot");
    assert!(calls(&sb).is_empty(), "a live run's app was reaped");
    live.send("");
    live.wait().expect_code(0);
}

/// The janitor's record of the lock dir (`LOCK_DIR.janitor/seen`).
fn seen_record(lock_dir: &Path) -> PathBuf {
    let mut name = lock_dir.file_name().unwrap().to_os_string();
    name.push(".janitor");
    lock_dir.with_file_name(name).join("seen")
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// A tmpfs lock dir removed by hand when no process holds a file of it
/// any more (a run between two wraps, or one whose holder was killed) is
/// still no reboot: an earlier pass recorded this boot, so the pass reaps
/// nothing, creates nothing and fails (125), and says how to accept the
/// lock dir. Removing the record, as it says, lets the next pass go on.
#[test]
fn a_tmpfs_lock_dir_removed_without_a_reboot_is_refused_even_with_no_holder_left() {
    let sb = Sandbox::new();
    let shm = tmpfs_dir();
    let lock_dir = shm.path().join("locks");
    sb.tool("ccci-lock")
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .args([D, "--", "true"])
        .run()
        .expect_code(0);
    let script = reap_script(&sb, "exit 0");
    let pass = || {
        janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
            .env("CCCI_APP_LOCK_DIR", &lock_dir)
            .stdin_bytes(format!("{D}\n"))
    };
    // A pass while the lock dir is there: D is deployed, no lockfile: an
    // app whose run died, reaped. The pass records the boot.
    pass().run().expect_code(0);
    assert_eq!(calls(&sb).len(), 1);
    let record = seen_record(&lock_dir);
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(
        text.starts_with(&format!("boot_id={}\n", boot_id())),
        "{text}"
    );

    std::fs::remove_dir_all(&lock_dir).unwrap();
    let out = pass().run();
    out.expect_code(125)
        .expect_stderr("does not exist, and the host has not rebooted since")
        .expect_stderr("nothing probed, nothing reaped")
        .expect_stderr(&format!("rm {}", record.display()));
    assert_eq!(calls(&sb).len(), 1, "reaped after a removal: {out}");
    assert!(!lock_dir.exists(), "the lock dir was recreated");

    // The operator knows no run was live: the record goes, the pass goes on.
    std::fs::remove_file(&record).unwrap();
    pass()
        .run()
        .expect_code(0)
        .expect_stderr("its parent is on a tmpfs");
    assert_eq!(calls(&sb).len(), 2);
    assert!(lock_dir.is_dir());
}

/// `mv LOCK_DIR old; mkdir LOCK_DIR` while a run holds its lock in the old
/// one: the new lock dir holds no claim of it, and a pass that took it at
/// face value would reap the live app as "deployed, no lockfile". It is not
/// the directory the earlier pass used, and the host has not rebooted: 125,
/// nothing reaped.
#[test]
fn a_lock_dir_replaced_under_a_live_run_is_refused_and_nothing_is_reaped() {
    let sb = Sandbox::new();
    let mut live = sb
        .tool("ccci-lock")
        .args(["--lost-grace", "60s", D, "--", "sh", "-c"])
        .arg("trap '' TERM; echo ready; read _")
        .piped_stdin()
        .spawn();
    live.expect_stdout("ready");
    let script = reap_script(&sb, "exit 0");
    let pass = || {
        janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
            .stdin_bytes(format!("{D}\n"))
            .run()
    };
    pass().expect_code(0);
    assert!(calls(&sb).is_empty());

    let old = sb.path("locks.old");
    std::fs::rename(sb.lock_dir(), &old).unwrap();
    make_lock_dir(&sb);
    let out = pass();
    out.expect_code(125)
        .expect_stderr("is not the directory an earlier pass used")
        .expect_stderr("nothing probed, nothing reaped");
    assert!(calls(&sb).is_empty(), "a live run's app was reaped: {out}");
    live.send("");
    live.wait();
}

/// `rmdir LOCK_DIR; mkdir LOCK_DIR`: ext4 gives the new directory the inode
/// number of the one just removed, so device and inode alone took it for
/// the directory the earlier pass used (SPEC case 34 saw it now and then).
/// Its birth time tells them apart: 125, nothing reaped.
#[test]
fn a_lock_dir_remade_with_the_same_inode_number_is_still_refused() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    make_lock_dir(&sb);
    let script = reap_script(&sb, "exit 0");
    let pass = || {
        janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
            .stdin_bytes(format!("{D}\n"))
            .run()
    };
    // The first pass, over nothing, records the lock dir.
    janitor(&sb, &[], &script).run().expect_code(0);
    let ino = std::fs::metadata(sb.lock_dir()).unwrap().ino();
    let mut reused = false;
    for _ in 0..20 {
        std::fs::remove_dir(sb.lock_dir()).unwrap();
        make_lock_dir(&sb);
        if std::fs::metadata(sb.lock_dir()).unwrap().ino() == ino {
            reused = true;
            break;
        }
    }
    eprintln!("inode number reused: {reused}");
    let out = pass();
    out.expect_code(125)
        .expect_stderr("is not the directory an earlier pass used");
    assert!(calls(&sb).is_empty(), "reaped: {out}");
}

/// After a reboot the record names an earlier boot: the missing tmpfs lock
/// dir is the reboot's doing, so it is created and every deployed CI app
/// reaped at once (SPEC case 25), and the record names this boot again.
#[test]
fn a_record_of_an_earlier_boot_lets_the_pass_recreate_the_lock_dir_and_reap() {
    let sb = Sandbox::new();
    let shm = tmpfs_dir();
    let lock_dir = shm.path().join("locks");
    let record = seen_record(&lock_dir);
    std::fs::create_dir(record.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        record.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // As the previous boot's last pass left it.
    std::fs::write(
        &record,
        "boot_id=00000000-0000-4000-8000-000000000000\ndev=1\nino=2\n",
    )
    .unwrap();
    let script = reap_script(&sb, "exit 0");
    let out = janitor(&sb, &["--deployed", "-", "--only", "*"], &script)
        .env("CCCI_APP_LOCK_DIR", &lock_dir)
        .stdin_bytes(format!("{D}\n"))
        .run();
    out.expect_code(0)
        .expect_stderr("its parent is on a tmpfs")
        .expect_stderr(&format!("{D}: reaped (deployed, no lockfile)"));
    assert!(lock_dir.is_dir());
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(
        text.starts_with(&format!("boot_id={}\n", boot_id())),
        "{text}"
    );
}
