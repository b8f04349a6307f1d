//! Chaos: many runs, random SIGKILLs, a janitor every 100 ms, and state
//! writers killed mid-write (issue 12). About a minute of CPU in all by
//! default (the parts run side by side: 20 s of wall time for each of the
//! two lock parts, 12 s for the state writers, 8 s for `gc`);
//! `CCCI_SOAK_S=600` makes each part run that many seconds instead.
//!
//! Overlaps and live reaps are seen by a kernel lock of their own: every
//! COMMAND is one process (this test binary, running [`chaos_witness`])
//! that takes a "witness" flock per domain it holds without waiting, and
//! records a violation if a witness is busy, i.e. if another live COMMAND
//! of that domain runs. The janitor's reap command does the same: a busy
//! witness means it was reaping a live holder. A SIGKILLed COMMAND releases
//! its witnesses with its last descriptor; being one process without
//! children, it leaves nobody behind who could keep one (a shell's
//! `flock(1)` child, orphaned by the kill, did, and showed false overlaps).
//!
//! The killer SIGKILLs a run's COMMAND, waits (on a pidfd) until it is
//! gone, and only then SIGKILLs the run's ccci-lock. `kill(2)` only queues
//! the signal: a COMMAND keeps its descriptors, and so its witnesses,
//! until it gets a CPU to die on, which on a loaded machine was seen to
//! take over 100 ms, long after its ccci-lock, killed second but gone
//! first, had released the domain to the next run. Such a COMMAND has
//! outlived its lock holder (SPEC §7 case 3: it is told to stop by
//! SIGTERM, and the lock is released anyway); it is not a second holder,
//! and this order never leaves one, so every busy witness is a real
//! overlap of two holders or a reap of a live one.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its parts share the witness and the run loops defined in it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccci_tests::{Proc, Sandbox};

/// How long each part runs: `CCCI_SOAK_S`, else `default` seconds.
fn soak(default: u64) -> Duration {
    let secs = std::env::var("CCCI_SOAK_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// Whether a chaos part may stop: after `limit`, once its minimum counts
/// are met (`met`), or after four times `limit` on a machine too loaded to
/// meet them, where the part's assertions then fail and say so.
fn enough(start: Instant, limit: Duration, met: impl Fn() -> bool) -> bool {
    let spent = start.elapsed();
    spent >= limit * 4 || (spent >= limit && met())
}

/// A small xorshift generator: random enough for picking victims, and
/// seeded from the clock (the seed is printed, to replay a failure's mix).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("chaos seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The processes being run, one slot per worker; a run is reaped only with
/// its slot locked, so the killer never signals a reaped (reusable) pid.
type Slot = Arc<Mutex<Option<Proc>>>;

/// Runs `cmd` in `slot` until it ends; `Some(code)`.
fn run_in_slot(slot: &Slot, proc: Proc) -> i32 {
    *slot.lock().unwrap() = Some(proc);
    loop {
        {
            let mut guard = slot.lock().unwrap();
            if guard.as_mut().unwrap().has_exited() {
                let proc = guard.take().unwrap();
                return proc.wait().code();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A pidfd of `pid` (`pidfd_open(2)`): it names that process, not its
/// number, so signalling and waiting never reach a later process that
/// reuses the number. `None`: no such process.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and touches no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Waits at most `limit` until the process of `pidfd` has ended: all its
/// threads have exited, so its descriptors (and their flocks) are closed.
fn ended_within(pidfd: &OwnedFd, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = until.saturating_duration_since(Instant::now());
        // SAFETY: one live pollfd, for the length of the call.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis() as libc::c_int) };
        if r > 0 {
            return true;
        }
        if left.is_zero() {
            return false;
        }
    }
}

/// SIGKILLs a random slot's run while it holds its domains: the run's
/// COMMAND first and, once it is gone, the run (see the module doc). A
/// `ccci-lock` run holds while its COMMAND runs (it has a child); a `--hold`
/// run (`held_alone`) while it has none (its keeper holds for it, and no
/// `ccci-lock --hold` or `--release` runs).
fn kill_one(slots: &[Slot], held_alone: &[bool], rng: &mut Rng) -> bool {
    let i = rng.below(slots.len() as u64) as usize;
    let slot = &slots[i];
    let mut guard = slot.lock().unwrap();
    let Some(proc) = guard.as_mut() else {
        return false;
    };
    if proc.has_exited() {
        return false;
    }
    let kids = children(proc.pid());
    if kids.is_empty() != held_alone[i] {
        return false; // not holding now
    }
    for kid in kids {
        // ccci-lock may have reaped it since it was listed: kill it only if
        // it is still running (so the pid was still its) as ccci-lock's child.
        let Some(fd) = pidfd(kid) else { continue };
        let parent = ccci_tests::stat_field(kid, 4);
        if parent != Some(proc.pid().to_string()) || ended_within(&fd, Duration::ZERO) {
            continue;
        }
        // SAFETY: pidfd_send_signal takes a live pidfd, a signal, no info
        // and no flags; it touches no memory.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        assert!(
            ended_within(&fd, Duration::from_secs(60)),
            "COMMAND {kid} still running 60 s after SIGKILL"
        );
    }
    proc.signal(libc::SIGKILL);
    true
}

/// The command line of [`chaos_witness`]: this test binary, running that
/// one test.
fn witness_command() -> Vec<std::ffi::OsString> {
    vec![
        std::env::current_exe().unwrap().into(),
        "--exact".into(),
        "chaos::chaos_witness".into(),
        "--ignored".into(),
        "--test-threads=1".into(),
        "-q".into(),
    ]
}

/// Not a test: the COMMAND of the chaos runs (see the module doc). With
/// `CHAOS_WITNESS=FILE[:FILE…]`, takes each file's flock without waiting,
/// appends to `CHAOS_VIOLATIONS` for each that is busy, holds them for a
/// few milliseconds, and exits.
#[test]
#[ignore = "the COMMAND of the chaos tests, run by them as a process"]
fn chaos_witness() {
    use std::io::Write;
    let Some(files) = std::env::var_os("CHAOS_WITNESS") else {
        return;
    };
    let bad = std::env::var_os("CHAOS_VIOLATIONS").expect("CHAOS_VIOLATIONS");
    let log = |line: String| {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&bad)
            .unwrap();
        writeln!(log, "{line}").unwrap();
    };
    // With CHAOS_HOLD, this process is a harness that takes its domains with
    // `ccci-lock --hold --parent <itself>` and releases them at the end.
    let hold = std::env::var("CHAOS_HOLD").ok();
    let me = std::process::id().to_string();
    let lock = |how: &str, domains: &str| {
        let out = std::process::Command::new("ccci-lock")
            .args([how, "--parent", &me])
            .args(domains.split(' '))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            log(format!(
                "unexpected: ccci-lock {how} {domains}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
            std::process::exit(1);
        }
    };
    if let Some(domains) = &hold {
        lock("--hold", domains);
    }
    let mut held = Vec::new();
    for path in std::env::split_paths(&files) {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // SAFETY: flock takes a descriptor that `file` keeps open.
        let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !got {
            log(format!("overlap on {} (pid {me})", path.display()));
        }
        held.push(file);
    }
    std::thread::sleep(Duration::from_millis(
        u64::from(std::process::id() % 4) * 5 + 5,
    ));
    // The witnesses go before the domains do.
    drop(held);
    if let Some(domains) = &hold {
        lock("--release", domains);
    }
}

/// Keeps the first few unexpected outcomes, and counts the rest.
fn note(list: &Mutex<Vec<String>>, what: String) {
    let mut list = list.lock().unwrap();
    if list.len() < 5 {
        list.push(what);
    } else if list.len() == 5 {
        list.push("and more".into());
    }
}

fn violations(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// 6 contenders on one domain (two of them with a second domain, in both
/// orders), a killer, a janitor every 100 ms. Invariants: 0 overlaps, 0
/// live reaps, every janitor pass exits 0, nothing left after a final pass,
/// at least 200 runs and 10 kills.
#[test]
fn chaos_contenders_killer_and_janitor_never_overlap_or_reap_a_live_run() {
    chaos_lock(false);
}

/// The same with two of the contenders holding through `ccci-lock --hold`
/// keepers (SPEC §2), killed while their keeper holds for them.
#[test]
fn chaos_with_hold_contenders_never_overlaps_or_reaps_a_live_run() {
    chaos_lock(true);
}

fn chaos_lock(with_hold: bool) {
    let sb = Sandbox::new();
    let limit = soak(20);
    let bad = sb.path("violations");
    let reaps = sb.path("reaps");
    let witness = |d: &str| sb.path(&format!("witness.{d}"));
    const D: &str = "chaos.ci.example.org";
    const E: &str = "dep.ci.example.org";
    let witnesses = |set: &[&str]| {
        let paths: Vec<String> = set
            .iter()
            .map(|d| witness(d).display().to_string())
            .collect();
        paths.join(":")
    };
    let reap = format!(
        r#"d=$1
exec 3>>'{root}/witness.'$d
flock -n 3 || echo "live reap of $d" >> '{bad}'
echo "$d" >> '{reaps}'
"#,
        root = sb.root().display(),
        bad = bad.display(),
        reaps = reaps.display()
    );
    for d in [D, E] {
        std::fs::write(witness(d), "").unwrap();
    }
    // Several domains per run (SPEC §2) where this ccci-lock has them.
    let multi = sb
        .tool("ccci-lock")
        .args(["-n", "a.example.org", "b.example.org", "--", "true"])
        .run()
        .code()
        == 0;
    if !multi {
        eprintln!("ccci-lock takes one DOMAIN: every contender locks {D} only");
    }
    // `--hold` (SPEC §2) where this ccci-lock has it: the run is then the
    // witness process itself, as a harness that holds its apps.
    let hold = with_hold
        && sb
            .tool("ccci-lock")
            .arg("--help")
            .run()
            .stdout
            .contains("--hold");
    if with_hold && !hold {
        eprintln!("ccci-lock has no --hold: no contender holds through a keeper");
    }
    let sets: [(&[&str], bool); 6] = if multi {
        [
            (&[D], false),
            (&[D], hold),
            (&[D, E], false),
            (&[E, D], hold),
            (&[D], false),
            (&[E], false),
        ]
    } else {
        [(&[D], false); 6]
    };
    let slots: Vec<Slot> = (0..sets.len())
        .map(|_| Arc::new(Mutex::new(None)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicU64::new(0));
    let other = Arc::new(Mutex::new(Vec::<String>::new()));

    std::thread::scope(|s| {
        for (&(set, hold), slot) in sets.iter().zip(&slots) {
            let (stop, runs, killed, other) = (&stop, &runs, &killed, &other);
            let (sb, witnesses, bad) = (&sb, &witnesses, &bad);
            s.spawn(move || {
                let mut rng = Rng::new();
                while !stop.load(Ordering::Relaxed) {
                    // A pause between runs now and then leaves a killed
                    // run's lockfile to the janitor instead of the next run.
                    if rng.below(4) == 0 {
                        std::thread::sleep(Duration::from_millis(rng.below(150)));
                    }
                    let cmd = if hold {
                        let argv = witness_command();
                        sb.command(&argv[0])
                            .args(&argv[1..])
                            .env("CHAOS_HOLD", set.join(" "))
                    } else {
                        sb.tool("ccci-lock")
                            .args(set.iter())
                            .arg("--")
                            .args(witness_command())
                    };
                    let proc = cmd
                        .env("CHAOS_WITNESS", witnesses(set))
                        .env("CHAOS_VIOLATIONS", bad)
                        .spawn();
                    match run_in_slot(slot, proc) {
                        0 => runs.fetch_add(1, Ordering::Relaxed),
                        137 => killed.fetch_add(1, Ordering::Relaxed),
                        code => {
                            let how = if hold { "--hold run" } else { "ccci-lock" };
                            note(other, format!("{how} {set:?} status {code}"));
                            0
                        }
                    };
                }
            });
        }
        let (stop_k, slots_k) = (&stop, &slots);
        let held_alone: Vec<bool> = sets.iter().map(|&(_, hold)| hold).collect();
        s.spawn(move || {
            let mut rng = Rng::new();
            while !stop_k.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
                kill_one(slots_k, &held_alone, &mut rng);
            }
        });
        let (stop_j, other_j, sb_j, reap_j) = (&stop, &other, &sb, &reap);
        s.spawn(move || {
            while !stop_j.load(Ordering::Relaxed) {
                let out = sb_j
                    .tool("ccci-janitor")
                    .args(["--", "sh", "-c", reap_j, "reap"])
                    .run();
                if out.code() != 0 {
                    note(other_j, format!("janitor pass:\n{out}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let start = Instant::now();
        while !enough(start, limit, || {
            runs.load(Ordering::Relaxed) >= 200 && killed.load(Ordering::Relaxed) >= 10
        }) {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });

    // Every run and every keeper of a killed harness has ended.
    ccci_tests::wait_until("every run and keeper has ended", || {
        sb.processes().is_empty()
    });
    // One last holder killed for certain: the final pass must reap it.
    let mut holder = sb
        .tool("ccci-lock")
        .args([D, "--", "sh", "-c", "echo held; exec sleep 60"])
        .spawn();
    holder.expect_stdout("held");
    let slot: Slot = Arc::new(Mutex::new(Some(holder)));
    assert!(kill_one(
        std::slice::from_ref(&slot),
        &[false],
        &mut Rng::new()
    ));
    let holder = slot.lock().unwrap().take().unwrap();
    let code = run_in_slot(&slot, holder);
    assert_eq!(code, 137);
    assert!(sb.lockfile(D).exists(), "a killed run keeps its lockfile");
    let last = sb
        .tool("ccci-janitor")
        .args(["--", "sh", "-c", &reap, "reap"])
        .run();
    last.expect_code(0);
    let left: Vec<String> = std::fs::read_dir(sb.lock_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !ccci_tests::is_janitor_lock(name) && !ccci_tests::is_place_record(name))
        .collect();
    let runs = runs.load(Ordering::Relaxed);
    let killed = killed.load(Ordering::Relaxed);
    let reaped = violations(&reaps).lines().count();
    eprintln!("chaos: {runs} runs, {killed} killed, {reaped} reaps in {limit:?}");
    let seen = violations(&bad);
    assert!(
        seen.is_empty(),
        "{} violations, the first:\n{}",
        seen.lines().count(),
        seen.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    assert!(
        other.lock().unwrap().is_empty(),
        "{:?}",
        other.lock().unwrap()
    );
    assert!(
        left.is_empty(),
        "left in the lock dir after a final pass: {left:?}"
    );
    assert!(runs >= 200, "only {runs} runs");
    assert!(killed >= 10, "only {killed} kills");
    assert!(reaped >= 1, "the janitor never reaped a killed run");
}

/// The counter of `file` as text; `None` while missing.
fn read_counter(file: &Path) -> Option<String> {
    std::fs::read_to_string(file).ok()
}

/// `ccci-state incr` and `append` under SIGKILL: the counter is always a
/// whole number, never more than the attempts and never less than the
/// successes; every appended line is whole; `gc` leaves no temporary.
#[test]
fn chaos_state_writers_killed_mid_write_never_tear_or_overcount() {
    let sb = Sandbox::new();
    let limit = soak(12);
    let me = std::process::id().to_string();
    let st = |args: &[&str]| {
        sb.tool("ccci-state")
            .args(["--run-id", "chaos", "--pid", &me])
            .args(args)
    };
    st(&["env"]).run().expect_code(0);
    let dir: PathBuf = sb.state_dir().join(format!("chaos-{me}"));
    let counter = dir.join("deploys");
    let lines = dir.join("deps");
    let slots: Vec<Slot> = (0..4).map(|_| Arc::new(Mutex::new(None))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = [AtomicU64::new(0), AtomicU64::new(0)];
    let done = [AtomicU64::new(0), AtomicU64::new(0)];
    let torn = Mutex::new(Vec::<String>::new());
    let killed = AtomicU64::new(0);

    std::thread::scope(|s| {
        for (i, slot) in slots.iter().enumerate() {
            let (stop, attempts, done, st) = (&stop, &attempts, &done, &st);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let kind = i % 2;
                    n += 1;
                    attempts[kind].fetch_add(1, Ordering::Relaxed);
                    let line = format!("line-{i}-{n}-end");
                    let cmd = if kind == 0 {
                        st(&["incr", "deploys"])
                    } else {
                        st(&["append", "deps", &line])
                    };
                    if run_in_slot(slot, cmd.spawn()) == 0 {
                        done[kind].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let (stop_r, torn_r, counter_r, lines_r) = (&stop, &torn, &counter, &lines);
        s.spawn(move || {
            while !stop_r.load(Ordering::Relaxed) {
                if let Some(text) = read_counter(counter_r) {
                    if text.trim_end().parse::<u64>().is_err() || !text.ends_with('\n') {
                        torn_r.lock().unwrap().push(format!("counter {text:?}"));
                    }
                }
                if let Ok(text) = std::fs::read_to_string(lines_r) {
                    if !text.is_empty() && !text.ends_with('\n') {
                        torn_r.lock().unwrap().push(format!("lines end {text:?}"));
                    }
                }
            }
        });
        let (stop_k, slots_k, killed_k) = (&stop, &slots, &killed);
        s.spawn(move || {
            let mut rng = Rng::new();
            while !stop_k.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
                let slot = &slots_k[rng.below(slots_k.len() as u64) as usize];
                let mut guard = slot.lock().unwrap();
                if let Some(proc) = guard.as_mut() {
                    if !proc.has_exited() {
                        proc.signal(libc::SIGKILL);
                        killed_k.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let start = Instant::now();
        while !enough(start, limit, || {
            done[0].load(Ordering::Relaxed) + done[1].load(Ordering::Relaxed) >= 100
                && killed.load(Ordering::Relaxed) >= 10
        }) {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let value: u64 = read_counter(&counter)
        .unwrap_or_else(|| "0\n".into())
        .trim_end()
        .parse()
        .unwrap();
    let (tries, oks) = (
        attempts[0].load(Ordering::Relaxed),
        done[0].load(Ordering::Relaxed),
    );
    let text = std::fs::read_to_string(&lines).unwrap_or_default();
    let count = text.lines().count() as u64;
    let (line_tries, line_oks) = (
        attempts[1].load(Ordering::Relaxed),
        done[1].load(Ordering::Relaxed),
    );
    eprintln!(
        "state chaos: incr {oks}/{tries} -> {value}, append {line_oks}/{line_tries} -> {count}, \
         {} kills",
        killed.load(Ordering::Relaxed)
    );
    assert!(
        torn.lock().unwrap().is_empty(),
        "{:?}",
        torn.lock().unwrap()
    );
    assert!(
        oks <= value && value <= tries,
        "counter {value}, {oks} ok of {tries}"
    );
    assert!(line_oks <= count && count <= line_tries, "{count} lines");
    for line in text.lines() {
        let parts: Vec<&str> = line.split('-').collect();
        assert!(
            parts.len() == 4 && parts[0] == "line" && parts[3] == "end",
            "torn line {line:?}"
        );
    }
    assert!(killed.load(Ordering::Relaxed) >= 10, "too few kills");
    assert!(oks + line_oks >= 100, "too few writes");

    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.ends_with(".tmp")
        })
        .count();
    eprintln!("state chaos: {leftovers} temporaries left by killed writers");
}

/// What a writer killed between its temporary and the rename leaves
/// (`.NAME.PID.tmp`, seen by the dozen in the chaos test above), `gc`
/// collects; the live run's own files stay.
#[test]
fn gc_collects_the_temporaries_of_killed_state_writers() {
    let sb = Sandbox::new();
    let me = std::process::id().to_string();
    let st = |args: &[&str]| crate::state::run_r(&sb, &me, args);
    st(&["env"]).expect_code(0);
    st(&["incr", "deploys"]).expect_code(0);
    let dir = sb.state_dir().join(format!("r-{me}"));
    let gone = sb.sh("echo $$").run();
    let dead_pid = gone.stdout.trim().to_string();
    let leftover = dir.join(format!(".deploys.{dead_pid}.tmp"));
    std::fs::write(&leftover, "4").unwrap();
    sb.tool("ccci-state").arg("gc").run().expect_code(0);
    assert!(!leftover.exists(), "gc left {}", leftover.display());
    assert_eq!(std::fs::read_to_string(dir.join("deploys")).unwrap(), "1\n");
}

/// `ccci-state gc` in a loop while a live run writes: the live run's files
/// never go away (its counter ends exactly at its number of increments),
/// and the runs of dead harnesses are collected.
#[test]
fn chaos_gc_racing_writers_never_removes_a_live_run() {
    let sb = Sandbox::new();
    let limit = soak(8);
    let me = std::process::id().to_string();
    let incr = || {
        sb.tool("ccci-state")
            .args(["--run-id", "live", "--pid", &me, "incr", "deploys"])
            .run()
    };
    sb.tool("ccci-state")
        .args(["--run-id", "live", "--pid", &me, "env"])
        .run()
        .expect_code(0);
    let stop = AtomicBool::new(false);
    let incrs = AtomicU64::new(0);
    let dead_made = AtomicU64::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = incr();
                if out.code() == 0 {
                    incrs.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push(out.to_string());
                }
            }
        });
        s.spawn(|| {
            // Runs of a harness that is gone: `sh` prints env's exports for
            // its own pid (the parent of ccci-state) and exits.
            while !stop.load(Ordering::Relaxed) {
                sb.sh("ccci-state --run-id dead env >/dev/null")
                    .run()
                    .expect_code(0);
                dead_made.fetch_add(1, Ordering::Relaxed);
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = sb.tool("ccci-state").arg("gc").run();
                if out.code() != 0 {
                    failures.lock().unwrap().push(out.to_string());
                }
            }
        });
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    let value = std::fs::read_to_string(sb.state_dir().join(format!("live-{me}/deploys"))).unwrap();
    assert_eq!(
        value.trim_end().parse::<u64>().unwrap(),
        incrs.load(Ordering::Relaxed),
        "the live run lost increments to gc"
    );
    sb.tool("ccci-state").arg("gc").run().expect_code(0);
    let left: Vec<String> = std::fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![format!("live-{me}")], "dead runs not collected");
    eprintln!(
        "gc chaos: {} increments, {} dead runs collected",
        incrs.load(Ordering::Relaxed),
        dead_made.load(Ordering::Relaxed)
    );
}

// Resource hygiene: no descriptor leaks into commands, no zombies, no
// temporaries left by normal, failing or killed runs.

/// The descriptors `sh` sees in a COMMAND started by `cmd`, as a sorted
/// list (the script writes them to `file`).
fn fds_in(sb: &Sandbox, file: &str) -> String {
    let text = std::fs::read_to_string(sb.path(file)).unwrap();
    let mut fds: Vec<u32> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    fds.sort();
    format!("{fds:?}")
}

/// A COMMAND started by ccci-lock, ccci-guard (exec and supervised) or the
/// janitor (its reap command) holds exactly the descriptors the same shell
/// holds when the test starts it directly: no lockfile, pidfd, pipe or
/// directory descriptor of the tool leaks into it.
#[test]
fn commands_inherit_no_descriptor_of_the_tool() {
    let sb = Sandbox::new();
    let list = |file: &str| format!("ls /proc/$$/fd > {file}");
    sb.sh(&list("base")).run().expect_code(0);
    let base = fds_in(&sb, "base");
    sb.tool("ccci-lock")
        .args(["d.example.org", "--", "sh", "-c", &list("lock")])
        .run()
        .expect_code(0);
    sb.tool("ccci-guard")
        .args(["--deadline", "1h", "--", "sh", "-c", &list("guard")])
        .run()
        .expect_code(0);
    sb.tool("ccci-guard")
        .args([
            "--supervise",
            "--deadline",
            "1h",
            "--",
            "sh",
            "-c",
            &list("super"),
        ])
        .run()
        .expect_code(0);
    std::fs::create_dir_all(sb.lock_dir()).unwrap();
    std::fs::write(sb.lockfile("orphan.example.org"), "").unwrap();
    sb.tool("ccci-janitor")
        .args(["--", "sh", "-c", &list("reap"), "reap"])
        .run()
        .expect_code(0);
    assert!(base.starts_with("[0, 1, 2"), "{base}");
    for file in ["lock", "guard", "super", "reap"] {
        assert_eq!(fds_in(&sb, file), base, "{file}: a descriptor leaked");
    }
}

/// The janitor reaps each reap command before it starts the next (no
/// zombie children pile up in a long pass), and after every run of every
/// tool no process of the run is left.
#[test]
fn no_zombies_and_no_process_left_behind() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.lock_dir()).unwrap();
    for i in 0..4 {
        std::fs::write(sb.lockfile(&format!("o{i}.example.org")), "").unwrap();
    }
    // Each reap lists the states of the janitor's children (itself included).
    let out = sb
        .tool("ccci-janitor")
        .args([
            "--",
            "sh",
            "-c",
            "ps -o stat= --ppid $PPID >> states",
            "reap",
        ])
        .run();
    out.expect_code(0);
    let states = std::fs::read_to_string(sb.path("states")).unwrap();
    assert_eq!(states.lines().count(), 4, "{states}");
    assert!(
        !states.contains('Z'),
        "a zombie child of the janitor:\n{states}"
    );

    for args in [
        &["ccci-lock", "d.example.org", "--", "true"][..],
        &["ccci-lock", "d.example.org", "--", "sh", "-c", "exit 3"],
        &[
            "ccci-lock",
            "d.example.org",
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        &["ccci-guard", "--supervise", "--", "sh", "-c", "exit 3"],
        &["ccci-guard", "--deadline", "1h", "--", "true"],
    ] {
        let out = sb.tool(args[0]).args(&args[1..]).run();
        assert!(
            [0, 3, 143].contains(&out.code()),
            "{args:?}: {}",
            out.code()
        );
        let left = sb.processes();
        assert!(left.is_empty(), "{args:?} left processes {left:?}");
    }
}

/// Normal, failing and killed runs leave no temporary: the lock dir holds
/// only what a run keeps on purpose (the lockfile of a killed run, for the
/// janitor), and a state dir only its values.
#[test]
fn no_temporaries_after_normal_failing_or_killed_runs() {
    let sb = Sandbox::new();
    let lock = |args: &[&str]| sb.tool("ccci-lock").args(args).run();
    lock(&["a.example.org", "--", "true"]).expect_code(0);
    lock(&["a.example.org", "--", "sh", "-c", "exit 3"]).expect_code(3);
    lock(&["-n", "a.example.org", "--", "true"]).expect_code(0);
    lock(&["b.example.org", "--", "sh", "-c", "kill -KILL $$"]).expect_code(137);
    let names = ccci_tests::lock_dir_entries(&sb.lock_dir());
    assert_eq!(names, vec!["b.example.org.lock"], "lock dir after the runs");

    let me = std::process::id().to_string();
    let st = |args: &[&str]| crate::state::run_r(&sb, &me, args);
    st(&["env"]).expect_code(0);
    st(&["incr", "deploys"]).expect_code(0);
    st(&["set", "opstate", "x"]).expect_code(0);
    st(&["append", "deps", "a"]).expect_code(0);
    st(&["set", "depskip", "not a number"]).expect_code(0);
    st(&["incr", "depskip"]).expect_code(125);
    let dir = sb.state_dir().join(format!("r-{me}"));
    let temporaries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
}
