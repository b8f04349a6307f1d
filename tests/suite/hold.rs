//! `ccci-lock --hold` / `--release` (SPEC §2) and SPEC §7 case 26: real
//! harness processes, a real keeper, real flocks, real signals, a real
//! janitor pass and a Python harness.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the harness, keeper and release helpers defined in it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccci_tests::{alive, blocked_in_flock, kill, stat_field, wait_until, Proc, Sandbox};

const DEP: &str = "mari-5c1d0e.ci.example.org";
const DEP2: &str = "redi-77a0b1.ci.example.org";
const RECIPE: &str = "wp-3f2a9c.ci.example.org";

/// A stand-in harness: a shell that prints its pid and then waits for a line
/// on stdin. Its pid is the PID locks are held for.
fn harness(sb: &Sandbox) -> (Proc, u32) {
    let mut p = sb.sh("echo pid=$$; read _").piped_stdin().spawn();
    let line = p.expect_stdout("pid=");
    let pid = line.trim_start_matches("pid=").parse().unwrap();
    (p, pid)
}

/// `ccci-lock --hold --parent PID FLAGS... DOMAINS...`, run to its end.
fn hold(sb: &Sandbox, parent: u32, args: &[&str]) -> ccci_tests::Output {
    sb.tool("ccci-lock")
        .args(["--hold", "--parent", &parent.to_string()])
        .args(args)
        .run()
}

/// `ccci-lock --release --parent PID DOMAINS...`, run to its end.
fn release(sb: &Sandbox, parent: u32, domains: &[&str]) -> ccci_tests::Output {
    sb.tool("ccci-lock")
        .args(["--release", "--parent", &parent.to_string()])
        .args(domains)
        .run()
}

fn record(sb: &Sandbox, domain: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(sb.lockfile(domain))
        .unwrap_or_else(|e| panic!("{domain}: {e}\n{}", sb.listing()));
    serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

/// The keeper holding `domain`, from its record.
fn keeper_of(sb: &Sandbox, domain: &str) -> u32 {
    record(sb, domain)["pid"].as_u64().unwrap() as u32
}

/// The names in the lock dir (lockfiles and sockets alike), sorted.
fn lock_dir_names(sb: &Sandbox) -> Vec<String> {
    ccci_tests::lock_dir_entries(&sb.lock_dir())
}

fn lock_names(domains: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = domains.iter().map(|d| format!("{d}.lock")).collect();
    names.sort();
    names
}

/// Whether `pid`'s descriptor `fd` is close-on-exec (`flags` in fdinfo).
fn cloexec(pid: u32, fd: &str) -> bool {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap() & libc::O_CLOEXEC as u32 != 0
}

/// The lockfiles `pid` has open, also unlinked ones: (descriptor, path).
fn open_lockfiles(pid: u32) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let shown = target.to_string_lossy();
            (shown.ends_with(".lock") || shown.ends_with(".lock (deleted)"))
                .then(|| (fd.file_name().to_string_lossy().into_owned(), target))
        })
        .collect()
}

#[test]
fn hold_and_release_round_trip_leaves_nothing() {
    let sb = Sandbox::new();
    let (mut h, pid) = harness(&sb);
    let started = Instant::now();
    hold(&sb, pid, &["--run-id", "build-7", DEP2, DEP]).expect_code(0);
    // `run` waits for stdout and stderr to close: had the keeper kept them,
    // this would have taken a sixth of the deadline.
    assert!(started.elapsed() < ccci_tests::deadline() / 6);

    // Held and stamped when --hold returns, by one keeper for PID.
    assert_eq!(sb.try_lock(DEP), 75);
    assert_eq!(sb.try_lock(DEP2), 75);
    let keeper = keeper_of(&sb, DEP);
    assert_eq!(keeper_of(&sb, DEP2), keeper);
    let rec = record(&sb, DEP);
    assert_eq!(rec["parent"], pid);
    assert_eq!(rec["run_id"], "build-7");
    assert!(alive(keeper));

    // The keeper: its own session and group, no terminal, stdio on
    // /dev/null, lock descriptors close-on-exec.
    assert_eq!(stat_field(keeper, 6), Some(keeper.to_string()), "session");
    assert_eq!(stat_field(keeper, 5), Some(keeper.to_string()), "group");
    assert_eq!(stat_field(keeper, 7).as_deref(), Some("0"), "tty");
    assert_ne!(stat_field(keeper, 5), stat_field(pid, 5));
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{keeper}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    let locks = open_lockfiles(keeper);
    assert_eq!(locks.len(), 2, "{locks:?}");
    for (fd, path) in &locks {
        assert!(
            cloexec(keeper, fd),
            "{} is inherited by exec",
            path.display()
        );
    }

    // --list shows both as held by the keeper.
    let list = sb.tool("ccci-lock").arg("--list").run();
    list.expect_code(0);
    for d in [DEP, DEP2] {
        list.expect_stdout(&format!("{d}\theld\t{keeper}\tbuild-7\t"));
    }
    let json = sb.tool("ccci-lock").args(["--list", "--json"]).run();
    json.expect_code(0);
    for line in json.stdout.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["parent"], pid, "{line}");
        assert_eq!(entry["pid"], keeper, "{line}");
    }
    assert_eq!(json.stdout.lines().count(), 2, "{json}");

    // A subset first: the other stays held.
    release(&sb, pid, &[DEP]).expect_code(0);
    assert!(!sb.lockfile(DEP).exists(), "{}", sb.listing());
    assert_eq!(sb.try_lock(DEP2), 75);
    assert_eq!(sb.try_lock(DEP), 0);
    release(&sb, pid, &[DEP2]).expect_code(0);
    assert_eq!(
        lock_dir_names(&sb),
        Vec::<String>::new(),
        "{}",
        sb.listing()
    );
    wait_until("the keeper has exited", || !alive(keeper));
    assert_eq!(sb.try_lock(DEP2), 0);
    h.send("");
    h.wait().expect_code(0);
}

#[test]
fn the_keeper_keeps_no_descriptor_its_caller_leaked() {
    // Inside `$(...)`, fd 7 is the substitution's pipe, open without
    // close-on-exec: the shell waits until every writer has closed it. A
    // keeper that kept it would hang the harness until the hold ends.
    let sb = Sandbox::new();
    let mut h = sb
        .sh(&format!(
            "x=$(ccci-lock --hold --parent $$ {DEP} 7>&1 >/dev/null) || exit 9\n\
             echo held; read _; ccci-lock --release --parent $$ {DEP}"
        ))
        .piped_stdin()
        .spawn();
    h.expect_stdout("held");
    let keeper = keeper_of(&sb, DEP);
    // Its own descriptors may take the number 7; the pipe must not be there.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_link(e.path())
                .unwrap_or_default()
                .display()
                .to_string()
        })
        .collect();
    assert!(!fds.iter().any(|fd| fd.starts_with("pipe:")), "{fds:?}");
    h.send("");
    h.wait().expect_code(0);
    assert_eq!(lock_dir_names(&sb), Vec::<String>::new());
}

#[test]
fn sigkill_of_the_parent_frees_the_locks_and_keeps_the_lockfiles() {
    let sb = Sandbox::new();
    let (h, pid) = harness(&sb);
    hold(&sb, pid, &[DEP, DEP2]).expect_code(0);
    let keeper = keeper_of(&sb, DEP);
    h.signal(libc::SIGKILL);
    // Not reaped yet: the harness is a zombie that still has its pid, so
    // a keeper that looked at the number would see it "alive" forever. The
    // pidfd says it has exited.
    wait_until("the keeper notices its parent died", || !alive(keeper));
    assert!(!alive(pid) && stat_field(pid, 3).as_deref() == Some("Z"));
    assert_eq!(
        lock_dir_names(&sb),
        lock_names(&[DEP, DEP2]),
        "lockfiles kept, socket removed"
    );
    assert_eq!(record(&sb, DEP)["parent"], pid);
    // Free at once (this try also removes the lockfiles: it exits normally).
    assert_eq!(sb.try_lock(DEP), 0);
    assert_eq!(sb.try_lock(DEP2), 0);
    h.wait().expect_code(137);
}

#[test]
fn sigkill_of_the_keeper_frees_the_locks_and_keeps_the_lockfiles() {
    let sb = Sandbox::new();
    let (mut h, pid) = harness(&sb);
    hold(&sb, pid, &[DEP]).expect_code(0);
    let keeper = keeper_of(&sb, DEP);
    kill(keeper, libc::SIGKILL);
    wait_until("the keeper is gone", || !alive(keeper));
    assert!(sb.lockfile(DEP).is_file(), "{}", sb.listing());
    // Releasing now is "not held", and says why; the lockfile stays for
    // the janitor.
    release(&sb, pid, &[DEP])
        .expect_code(1)
        .expect_stderr("is gone");
    assert!(sb.lockfile(DEP).is_file());
    // The orphan is not forgotten: the next janitor pass reaps it, once.
    let script = reap_script(&sb);
    janitor_pass(&sb, &script);
    assert_eq!(reaped(&sb), vec![DEP.to_string()]);
    assert!(!sb.lockfile(DEP).exists());
    assert_eq!(sb.try_lock(DEP), 0);
    // A new hold for the same parent works (the stale socket is replaced
    // when a keeper reuses the pid; here it is simply another keeper).
    hold(&sb, pid, &[DEP]).expect_code(0);
    release(&sb, pid, &[DEP]).expect_code(0);
    h.send("");
    h.wait().expect_code(0);
}

#[test]
fn release_of_a_domain_held_for_another_pid_is_refused_and_changes_nothing() {
    let sb = Sandbox::new();
    let (mut a, pid_a) = harness(&sb);
    let (mut b, pid_b) = harness(&sb);
    hold(&sb, pid_a, &[DEP]).expect_code(0);
    hold(&sb, pid_b, &[DEP2]).expect_code(0);
    let before = std::fs::read(sb.lockfile(DEP)).unwrap();
    let ino = std::fs::metadata(sb.lockfile(DEP)).unwrap().ino();

    release(&sb, pid_b, &[DEP])
        .expect_code(125)
        .expect_stderr(&format!("not for pid {pid_b}"));
    // Nothing released, even the domain B does hold, when one is refused.
    release(&sb, pid_b, &[DEP, DEP2]).expect_code(125);
    assert_eq!(std::fs::read(sb.lockfile(DEP)).unwrap(), before);
    assert_eq!(std::fs::metadata(sb.lockfile(DEP)).unwrap().ino(), ino);
    assert_eq!(sb.try_lock(DEP), 75);
    assert_eq!(sb.try_lock(DEP2), 75);

    // A domain held by a plain `ccci-lock D -- COMMAND` is refused too.
    let mut run = sb
        .tool("ccci-lock")
        .args([RECIPE, "--", "sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    run.expect_stdout("ready");
    release(&sb, pid_a, &[RECIPE])
        .expect_code(125)
        .expect_stderr("refusing to release");
    assert!(sb.lockfile(RECIPE).is_file());
    run.send("");
    run.wait().expect_code(0);

    release(&sb, pid_a, &[DEP]).expect_code(0);
    release(&sb, pid_b, &[DEP2]).expect_code(0);
    a.send("");
    b.send("");
    a.wait();
    b.wait();
}

#[test]
fn release_of_a_domain_not_held_is_status_1() {
    let sb = Sandbox::new();
    let (mut h, pid) = harness(&sb);
    // No lock dir at all: nothing created.
    release(&sb, pid, &[DEP])
        .expect_code(1)
        .expect_stderr(&format!("{DEP} is not held"));
    assert!(!sb.lock_dir().exists());
    // A free lockfile (an orphan's claim) is not touched.
    sb.tool("ccci-lock")
        .args([DEP, "--", "sh", "-c", "kill -TERM $$"])
        .run()
        .expect_code(143);
    release(&sb, pid, &[DEP]).expect_code(1);
    assert!(
        sb.lockfile(DEP).is_file(),
        "the janitor's claim was removed"
    );
    // One held, one not: the held one is released, the status is 1.
    hold(&sb, pid, &[DEP2]).expect_code(0);
    release(&sb, pid, &[DEP2, RECIPE])
        .expect_code(1)
        .expect_stderr(&format!("{RECIPE} is not held"));
    assert!(!sb.lockfile(DEP2).exists());
    assert_eq!(sb.try_lock(DEP2), 0);
    h.send("");
    h.wait().expect_code(0);
}

#[test]
fn holding_twice_for_the_same_pid_is_0_and_changes_nothing() {
    let sb = Sandbox::new();
    let (mut h, pid) = harness(&sb);
    hold(&sb, pid, &["--run-id", "first", DEP]).expect_code(0);
    let before = std::fs::read(sb.lockfile(DEP)).unwrap();
    let keeper = keeper_of(&sb, DEP);
    hold(&sb, pid, &["--run-id", "second", "-n", DEP]).expect_code(0);
    assert_eq!(std::fs::read(sb.lockfile(DEP)).unwrap(), before);
    // The same again together with a new domain: only the new one is taken.
    hold(&sb, pid, &[DEP, DEP2]).expect_code(0);
    assert_eq!(std::fs::read(sb.lockfile(DEP)).unwrap(), before);
    assert_eq!(keeper_of(&sb, DEP), keeper);
    assert_ne!(keeper_of(&sb, DEP2), keeper, "a second keeper holds DEP2");
    assert_eq!(record(&sb, DEP2)["parent"], pid);
    // One release covers domains of both keepers.
    release(&sb, pid, &[DEP, DEP2]).expect_code(0);
    assert_eq!(lock_dir_names(&sb), Vec::<String>::new());
    h.send("");
    h.wait().expect_code(0);
}

#[test]
fn a_busy_domain_is_75_all_or_nothing_and_a_waiting_hold_gets_it() {
    let sb = Sandbox::new();
    let (mut a, pid_a) = harness(&sb);
    let (mut b, pid_b) = harness(&sb);
    hold(&sb, pid_a, &["--run-id", "run-a", DEP]).expect_code(0);

    hold(&sb, pid_b, &["-n", DEP, DEP2])
        .expect_code(75)
        .expect_stderr("'run-a'");
    assert_eq!(sb.try_lock(DEP2), 0, "DEP2 held although DEP was busy");
    let started = Instant::now();
    hold(&sb, pid_b, &["-w", "300ms", DEP]).expect_code(75);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A blocking hold waits (in its keeper) until A releases.
    let waiting = sb
        .tool("ccci-lock")
        .args(["--hold", "--parent", &pid_b.to_string(), DEP])
        .spawn();
    wait_until("the keeper blocks in flock", || {
        sb.processes().into_iter().any(blocked_in_flock)
    });
    release(&sb, pid_a, &[DEP]).expect_code(0);
    waiting.wait().expect_code(0);
    assert_eq!(record(&sb, DEP)["parent"], pid_b);
    assert_eq!(sb.try_lock(DEP), 75);
    release(&sb, pid_b, &[DEP]).expect_code(0);
    a.send("");
    b.send("");
    a.wait();
    b.wait();
}

#[test]
fn a_parent_that_dies_while_its_hold_waits_gets_nothing() {
    let sb = Sandbox::new();
    let (mut a, pid_a) = harness(&sb);
    let (b, pid_b) = harness(&sb);
    hold(&sb, pid_a, &[DEP]).expect_code(0);
    let waiting = sb
        .tool("ccci-lock")
        .args(["--hold", "--parent", &pid_b.to_string(), DEP])
        .spawn();
    wait_until("the keeper blocks in flock", || {
        sb.processes().into_iter().any(blocked_in_flock)
    });
    b.signal(libc::SIGKILL);
    waiting
        .wait()
        .expect_code(125)
        .expect_stderr(&format!("--parent {pid_b} exited while waiting"));
    release(&sb, pid_a, &[DEP]).expect_code(0);
    assert_eq!(
        sb.try_lock(DEP),
        0,
        "the dead parent's keeper took the lock"
    );
    a.send("");
    a.wait();
    b.wait();
}

#[test]
fn a_hold_whose_caller_is_killed_while_waiting_gets_nothing() {
    // The caller of `--hold` gives up (a timeout(1) around it, a Ctrl-C):
    // its keeper must not go on holding locks nobody will ever release.
    // B's keeper takes DEP (sorted first), then waits for DEP2.
    let sb = Sandbox::new();
    let (mut a, pid_a) = harness(&sb);
    let (mut b, pid_b) = harness(&sb);
    hold(&sb, pid_a, &[DEP2]).expect_code(0);
    let waiting = sb
        .tool("ccci-lock")
        .args(["-v", "--hold", "--parent", &pid_b.to_string(), DEP2, DEP])
        .spawn();
    wait_until("the keeper blocks in flock", || {
        sb.processes().into_iter().any(blocked_in_flock)
    });
    assert_eq!(sb.try_lock(DEP), 75, "DEP is taken first");
    waiting.signal(libc::SIGTERM);
    let out = waiting.wait();
    out.expect_code(143).expect_stderr(&format!(
        "waiting for {DEP2}: held by a keeper for pid {pid_a}"
    ));
    // Only the two harnesses and A's keeper are left.
    wait_until("B's keeper has given up", || sb.processes().len() == 3);
    assert_eq!(sb.try_lock(DEP), 0, "B's keeper kept DEP");
    release(&sb, pid_a, &[DEP2]).expect_code(0);
    assert_eq!(sb.try_lock(DEP2), 0, "B's keeper took DEP2 after all");
    a.send("");
    b.send("");
    a.wait();
    b.wait();
}

#[test]
fn bad_input_is_status_2_and_creates_nothing() {
    let sb = Sandbox::new();
    let (mut h, pid) = harness(&sb);
    let pid = pid.to_string();
    let lock = |args: &[&str]| sb.tool("ccci-lock").args(args).run();
    lock(&["--hold", DEP])
        .expect_code(2)
        .expect_stderr("--parent");
    lock(&["--release", DEP])
        .expect_code(2)
        .expect_stderr("--parent");
    lock(&["--hold", "--parent", "12x", DEP])
        .expect_code(2)
        .expect_stderr("'12x'");
    lock(&["--hold", "--parent", "-5", DEP])
        .expect_code(2)
        .expect_stderr("'-5'");
    lock(&["--hold", "--parent", &pid, DEP, "--", "true"]).expect_code(2);
    lock(&["--release", "--parent", &pid, DEP, "--", "true"]).expect_code(2);
    lock(&["--parent", &pid, DEP, "--", "true"]).expect_code(2);
    lock(&["--hold", "--parent", &pid])
        .expect_code(2)
        .expect_stderr("DOMAIN");
    lock(&["--hold", "--parent", &pid, "bad domain"])
        .expect_code(2)
        .expect_stderr("'bad domain'");
    lock(&["--hold", "--release", "--parent", &pid, DEP]).expect_code(2);
    assert!(!sb.lock_dir().exists(), "{}", sb.listing());

    // A parent that is not running: 125, nothing held.
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = child.id();
        child.wait().unwrap();
        id
    };
    lock(&["--hold", "--parent", &gone.to_string(), DEP])
        .expect_code(125)
        .expect_stderr("no such process");
    // `exec` makes PID the --hold process itself, which exits at once.
    sb.sh(&format!("exec ccci-lock --hold --parent $$ {DEP}"))
        .run()
        .expect_code(125)
        .expect_stderr("this ccci-lock itself");
    assert!(!sb.lockfile(DEP).exists());
    h.send("");
    h.wait().expect_code(0);
}

/// The Python harness of SPEC §2 and docs/adopting.md: `--hold` per deployed
/// app through `subprocess`, release after teardown; `capture_output` shows
/// that the keeper keeps no pipe of the caller open.
const PY_HARNESS: &str = r#"
import os, subprocess, sys

def lock(*args):
    return subprocess.run(["ccci-lock", *args], capture_output=True, text=True)

domains = sys.argv[2:]
me = str(os.getpid())
for domain in domains:  # deploy_app(): hold the app's domain first
    r = lock("--hold", "--parent", me, domain)
    assert r.returncode == 0, r
    assert lock("-n", domain, "--", "true").returncode == 75, "not held"
print("deployed", flush=True)
if sys.argv[1] == "crash":
    os._exit(3)  # no teardown, no release
for domain in domains:  # teardown, then release
    r = lock("--release", "--parent", me, domain)
    assert r.returncode == 0, r
print("released", flush=True)
"#;

fn python(sb: &Sandbox, mode: &str, domains: &[&str]) -> ccci_tests::Output {
    let script = sb.path("harness.py");
    std::fs::write(&script, PY_HARNESS).unwrap();
    sb.command("python3")
        .arg(&script)
        .arg(mode)
        .args(domains)
        .run()
}

#[test]
fn a_python_harness_holds_each_app_and_releases_after_teardown() {
    let sb = Sandbox::new();
    python(&sb, "ok", &[DEP, DEP2])
        .expect_code(0)
        .expect_stdout("released");
    assert_eq!(lock_dir_names(&sb), Vec::<String>::new());
    wait_until("no keeper is left", || sb.processes().is_empty());

    // A harness that dies without releasing: locks free, claims kept.
    python(&sb, "crash", &[DEP, DEP2])
        .expect_code(3)
        .expect_stdout("deployed");
    wait_until("no keeper is left", || sb.processes().is_empty());
    assert_eq!(lock_dir_names(&sb), lock_names(&[DEP, DEP2]));
    assert_eq!(sb.try_lock(DEP), 0);
}

/// SPEC §7 case 26: a reap script that logs each reap.
fn reap_script(sb: &Sandbox) -> PathBuf {
    let script = sb.path("reap.sh");
    let log = sb.path("reaped");
    std::fs::write(&script, format!("echo \"$1\" >> '{}'\n", log.display())).unwrap();
    script
}

fn reaped(sb: &Sandbox) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(sb.path("reaped"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn janitor_pass(sb: &Sandbox, script: &Path) -> ccci_tests::Output {
    let out = sb.tool("ccci-janitor").args(["--", "sh"]).arg(script).run();
    out.expect_code(0);
    out
}

/// The harness of case 26: holds its dependency for its own shell, then
/// runs the recipe under `ccci-lock`; with `release`, tears down and
/// releases the dependency at the end.
fn case_26_harness(sb: &Sandbox, release: bool) -> Proc {
    let mut script = format!(
        "ccci-lock --hold --parent $$ {DEP} || exit 9\n\
         ccci-lock {RECIPE} -- sh -c 'echo ready; read _' || exit 8\n"
    );
    if release {
        script.push_str(&format!(
            "ccci-lock --release --parent $$ {DEP} || exit 7\n"
        ));
    }
    let mut p = sb.sh(&script).piped_stdin().spawn();
    p.expect_stdout("ready");
    p
}

#[test]
fn case_26_held_dependencies_are_never_reaped_while_the_harness_lives() {
    let sb = Sandbox::new();
    let script = reap_script(&sb);
    let h = case_26_harness(&sb, false);
    let keeper = keeper_of(&sb, DEP);
    assert_eq!(record(&sb, DEP)["parent"], h.pid());

    janitor_pass(&sb, &script);
    assert_eq!(reaped(&sb), Vec::<String>::new(), "a live run was reaped");
    assert_eq!(lock_dir_names(&sb).len(), 3, "{}", sb.listing()); // 2 locks, 1 socket

    // SIGKILL of the whole harness (its process group, as a runner does):
    // the keeper is not in that group and ends by itself.
    kill_group(h.pid());
    wait_until("the keeper ends with its harness", || !alive(keeper));
    h.wait();
    assert_eq!(lock_dir_names(&sb), lock_names(&[DEP, RECIPE]));

    janitor_pass(&sb, &script);
    assert_eq!(reaped(&sb), vec![DEP.to_string(), RECIPE.to_string()]);
    assert_eq!(lock_dir_names(&sb), Vec::<String>::new());
    janitor_pass(&sb, &script);
    assert_eq!(reaped(&sb).len(), 2, "reaped twice: {:?}", reaped(&sb));
}

#[test]
fn case_26_a_harness_that_releases_its_dependency_leaves_nothing() {
    let sb = Sandbox::new();
    let script = reap_script(&sb);
    let mut h = case_26_harness(&sb, true);
    let keeper = keeper_of(&sb, DEP);
    janitor_pass(&sb, &script);
    h.send("");
    h.wait().expect_code(0);
    assert!(!alive(keeper));
    assert_eq!(
        lock_dir_names(&sb),
        Vec::<String>::new(),
        "{}",
        sb.listing()
    );
    janitor_pass(&sb, &script);
    assert_eq!(reaped(&sb), Vec::<String>::new());
}

/// SIGKILL to the process group `pgid` (the harness leads its own group).
fn kill_group(pgid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether `domain`'s record names `parent` (a record being written is
/// not parsed yet, which is fine: the wait goes on).
fn held_for(sb: &Sandbox, domain: &str, parent: u32) -> bool {
    std::fs::read_to_string(sb.lockfile(domain))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text.trim()).ok())
        .is_some_and(|rec| rec["parent"] == parent)
}

#[test]
fn release_unlinks_each_lockfile_while_the_keeper_still_holds_it() {
    // The keeper runs under strace, which delays each of its unlinkat calls
    // by 300 ms. A keeper that unlocked first and unlinked afterwards would
    // let the waiting run below take the lock of the old file, pass its
    // identity check (the path still names that file), and then see its
    // lockfile removed under it: a holder without a lockfile, and the next
    // run would create a second one. Unlinking while holding makes the
    // waiter wake on a nameless file and start over on a new one.
    let sb = Sandbox::new();
    let (mut h, pid) = harness(&sb);
    let _traced = sb
        .command("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=unlinkat"])
        .args(["-e", "inject=unlinkat:delay_enter=300000"])
        .arg(ccci_tests::bin("ccci-lock"))
        .args(["--hold", "--parent", &pid.to_string(), DEP])
        .spawn();
    wait_until("DEP is held for the harness", || held_for(&sb, DEP, pid));
    let mut run = sb
        .tool("ccci-lock")
        .args([DEP, "--", "sh", "-c", "echo in; read _"])
        .piped_stdin()
        .spawn();
    wait_until("the run waits for DEP", || blocked_in_flock(run.pid()));
    release(&sb, pid, &[DEP]).expect_code(0);
    run.expect_stdout("in");
    let held = open_lockfiles(run.pid());
    assert_eq!(held.len(), 1, "{held:?}");
    let at_path = std::fs::metadata(sb.lockfile(DEP))
        .unwrap_or_else(|e| panic!("the running holder has no lockfile: {e}\n{}", sb.listing()));
    let held_ino = std::fs::metadata(format!("/proc/{}/fd/{}", run.pid(), held[0].0))
        .unwrap()
        .ino();
    assert_eq!(
        at_path.ino(),
        held_ino,
        "the holder's file is not at the path"
    );
    run.send("");
    run.wait().expect_code(0);
    h.send("");
    h.wait().expect_code(0);
}

/// A slow client (same uid, one byte every second, never a whole request)
/// connected to the keeper's socket neither keeps the keeper from noticing
/// that its parent died (before, one client at a time with per-read
/// timeouts: a byte every 8 s kept a dead parent's lock held for 31.7 s)
/// nor from serving a `--release` meanwhile; and a request must be whole
/// within the keeper's deadline (10 s), or the client is dropped.
#[test]
fn a_slow_client_keeps_neither_a_release_waiting_nor_a_dead_parents_lock_held() {
    let sb = Sandbox::new();
    let (h, pid) = harness(&sb);
    hold(&sb, pid, &[DEP, DEP2]).expect_code(0);
    let keeper = keeper_of(&sb, DEP);
    let socket = sb.lock_dir().join(format!(".keeper-{keeper}.sock"));
    let slow = |seconds: u32| {
        let script = format!(
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.connect(sys.argv[1])\n\
             print('connected', flush=True)\n\
             for _ in range({seconds}):\n\
             \x20   try:\n\
             \x20       s.send(b'h')\n\
             \x20   except OSError:\n\
             \x20       print('dropped', flush=True); break\n\
             \x20   time.sleep(1)\n"
        );
        let mut p = sb
            .command("python3")
            .args(["-c", &script])
            .arg(&socket)
            .spawn();
        p.expect_stdout("connected");
        p
    };
    let dripping = slow(60);
    // Served meanwhile, at once.
    let started = std::time::Instant::now();
    release(&sb, pid, &[DEP2]).expect_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The whole-request deadline: the dripping client is dropped.
    wait_until(
        "the keeper drops a client that never sends a whole request",
        || dripping.stdout_so_far().contains("dropped"),
    );
    let dripped = std::time::Instant::now() - started;
    assert!(dripped < Duration::from_secs(20), "{dripped:?}");
    dripping.wait();
    // The parent dies while a slow client is connected: noticed at once.
    let another = slow(60);
    h.signal(libc::SIGKILL);
    let died = std::time::Instant::now();
    wait_until("the keeper notices its parent died", || !alive(keeper));
    assert!(
        died.elapsed() < Duration::from_secs(2),
        "{:?}",
        died.elapsed()
    );
    assert_eq!(sb.try_lock(DEP), 0);
    another.wait();
    h.wait().expect_code(137);
}
