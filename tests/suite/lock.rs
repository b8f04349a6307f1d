//! ccci-lock (SPEC §2) and SPEC §7 cases 1-4 and 21; cases 1-4, 22 and 27
//! run on both backends (see `ccci_tests::both_backends`).
//!
//! One file, as the suite has one module per tool (see `main.rs`): its
//! tests share the holder and wait helpers defined in it.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use ccci_tests::{
    alive, assert_clean_signal_state, blocked_in_flock, both_backends, kill, mkfifo, wait_until,
    Backend, Proc, Sandbox,
};

const D: &str = "wp-3f2a.ci.example.org";

/// A holder of `domain` whose COMMAND says "ready" and then waits for a line
/// (or EOF) on stdin; release it with `p.send("")`.
fn hold(sb: &Sandbox, domain: &str, flags: &[&str]) -> Proc {
    let mut p = sb
        .tool("ccci-lock")
        .args(flags)
        .arg(domain)
        .args(["--", "sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    p.expect_stdout("ready");
    p
}

both_backends!(
    /// A SIGKILLed holder frees its lock (on files at once, with no timeout
    /// and no cleanup step: the kernel drops it with the process; on etcd
    /// within the lease TTL) and leaves its claim for the janitor.
    case_01_sigkill_of_a_holder_releases_its_lock_at_once,
    |b: &Backend| {
        let (holder, rev) = b.hold(D, &["--run-id", "r1"]);
        if b.is_etcd() {
            assert!(rev.is_some_and(|r| r > 0), "{rev:?}");
        }
        assert_eq!(b.try_lock(D), 75);
        holder.signal(libc::SIGKILL);
        let out = holder.wait();
        out.expect_code(137);
        assert!(b.has_claim(D), "the claim stays");
        b.assert_freed(D, "the lock is free again");
        // The -n that got the lock exited normally: it removed the claim.
        assert!(!b.has_claim(D), "{:?}", b.leftovers());
    }
);

both_backends!(
    case_02_nonblock_is_75_while_held_and_0_when_free,
    |b: &Backend| {
        assert_eq!(b.try_lock(D), 0);
        let (mut holder, _) = b.hold(D, &["--run-id", "run-a"]);
        let busy = b
            .tool("ccci-lock")
            .args(["-n", D, "--", "touch", "ran"])
            .run();
        busy.expect_code(75)
            .expect_stderr(&format!("pid {}", holder.pid()))
            .expect_stderr("'run-a'");
        assert!(!b.sb().path("ran").exists(), "COMMAND ran without the lock");
        holder.send("");
        holder.wait().expect_code(0);
        // A clean exit removed the claim and freed the lock at once.
        assert_eq!(b.leftovers(), Vec::<String>::new());
        assert_eq!(b.try_lock(D), 0);
    }
);

both_backends!(
    /// The holder's child outlives its SIGKILLed ccci-lock and the lock is
    /// released anyway (on etcd within the lease TTL). On files the child
    /// is also seen not to have the lockfile open at all.
    case_03_the_lock_is_not_inherited_by_the_holders_child,
    |b: &Backend| {
        // COMMAND ignores TERM (so the parent-death signal does not end it) and
        // becomes a long sleep: it outlives its ccci-lock.
        let mut holder = b
            .tool("ccci-lock")
            .args([D, "--", "sh", "-c"])
            .arg("trap '' TERM; echo pid=$$; exec sleep 1000 >/dev/null")
            .spawn();
        let line = holder.expect_stdout("pid=");
        let child: u32 = line.trim_start_matches("pid=").parse().unwrap();
        wait_until("COMMAND is sleep", || {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
        });
        if !b.is_etcd() {
            let lockfile = b.sb().lockfile(D);
            let holds_lockfile = |pid: u32| {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lockfile))
            };
            assert!(
                holds_lockfile(holder.pid()),
                "ccci-lock itself holds the lockfile open"
            );
            assert!(
                !holds_lockfile(child),
                "COMMAND inherited the lock descriptor"
            );
        }
        assert_eq!(b.try_lock(D), 75);

        holder.signal(libc::SIGKILL);
        holder.wait().expect_code(137);
        assert!(alive(child), "COMMAND should have survived its holder");
        b.assert_freed(D, "a surviving child kept the lock");
        assert!(alive(child), "the holder's child should have outlived it");
        kill(child, libc::SIGKILL);
    }
);

both_backends!(
    /// The second acquirer waits (blocked in flock, or saying so on etcd)
    /// and runs only after the first exits; on etcd with a greater fencing
    /// token.
    case_04_a_second_acquirer_blocks_until_the_first_holder_exits,
    |b: &Backend| {
        let (mut first, rev1) = b.hold(D, &[]);
        let mut second = b
            .tool("ccci-lock")
            .args([
                "-v",
                D,
                "--",
                "sh",
                "-c",
                "echo second-in rev=$CCCI_LOCK_REVISION",
            ])
            .spawn();
        b.wait_blocked(&mut second);
        assert!(!second.has_exited(), "{}", second.report());
        assert_eq!(
            second.stdout_so_far(),
            "",
            "the second ran while the first held"
        );
        first.send("");
        first.wait().expect_code(0);
        let line = second.expect_stdout("second-in");
        if b.is_etcd() {
            let rev2: i64 = line.trim_start_matches("second-in rev=").parse().unwrap();
            let rev1 = rev1.unwrap();
            assert!(
                rev2 > rev1,
                "fencing token did not grow: {rev1} then {rev2}"
            );
        }
        second.wait().expect_code(0);
    }
);

/// Case 21, step by step: the first holder unlinks its lockfile on exit
/// while a second acquirer waits on that (now nameless) file; a third
/// arrives after the unlink. However the race goes, never two holders.
/// `acquire` starts a holder printing `<name>-in` once inside.
fn unlink_while_waiting(
    sb: &Sandbox,
    acquire: &dyn Fn(&str) -> Proc,
    release_first: &dyn Fn(&mut Proc),
) -> (Proc, Proc) {
    let mut a = acquire("a");
    a.expect_stdout("a-in");
    let b = acquire("b");
    wait_until("b waits on a's lockfile", || blocked_in_flock(b.pid()));
    release_first(&mut a);
    a.wait().expect_code(0);
    let mut b = b;
    b.expect_stdout("b-in");
    let _ = sb;
    let c = acquire("c");
    (b, c)
}

#[test]
fn case_21_unlink_and_recreate_while_another_waits_never_yields_two_holders() {
    let sb = Sandbox::new();
    let acquire = |name: &str| {
        sb.tool("ccci-lock")
            .args([D, "--", "sh", "-c"])
            .arg(format!("echo {name}-in; read _"))
            .piped_stdin()
            .spawn()
    };
    // ccci-lock itself unlinks the lockfile (under the lock) when `a` ends.
    let (mut b, mut c) = unlink_while_waiting(&sb, &acquire, &|a| a.send(""));
    wait_until("c blocks behind b, or gets in beside it", || {
        blocked_in_flock(c.pid()) || c.stdout_so_far().contains("c-in")
    });
    assert!(
        !c.stdout_so_far().contains("c-in"),
        "two holders: b and c\n{}",
        c.report()
    );
    b.send("");
    b.wait().expect_code(0);
    c.expect_stdout("c-in");
    c.send("");
    c.wait().expect_code(0);
}

#[test]
fn case_21_negative_control_flock1_without_the_identity_check_yields_two_holders() {
    // The same choreography with util-linux flock(1), whose holders unlink
    // the lockfile the same way but never recheck it: b wakes holding the
    // unlinked file while c locks the new one. This proves the test above
    // can see two holders when the protocol is missing.
    let sb = Sandbox::new();
    std::fs::create_dir(sb.lock_dir()).unwrap();
    let path = sb.lockfile(D);
    let acquire = |name: &str| {
        sb.command("flock")
            .arg(&path)
            .args(["sh", "-c"])
            .arg(format!("echo {name}-in; read _; rm -f \"$0\""))
            .arg(&path)
            .piped_stdin()
            .spawn()
    };
    let (mut b, mut c) = unlink_while_waiting(&sb, &acquire, &|a| a.send(""));
    c.expect_stdout("c-in");
    assert!(!b.has_exited(), "b is still inside: two holders at once");
    b.send("");
    c.send("");
    b.wait();
    c.wait();
}

#[test]
fn case_21_churn_many_acquirers_with_unlinks_never_overlap() {
    let sb = Sandbox::new();
    let cs = sb.path("cs");
    let log = sb.path("overlaps");
    let script = format!(
        "for i in $(seq 30); do ccci-lock {D} -- sh -c 'mkdir {cs} 2>/dev/null || echo overlap >> {log}; rmdir {cs} 2>/dev/null; true' || exit 1; done",
        cs = cs.display(),
        log = log.display(),
    );
    let workers: Vec<Proc> = (0..4).map(|_| sb.sh(&script).spawn()).collect();
    for w in workers {
        w.wait().expect_code(0);
    }
    assert!(
        !log.exists(),
        "two holders overlapped: {:?}",
        std::fs::read_to_string(&log)
    );
    assert!(
        !sb.lockfile(D).exists(),
        "the last holder should have removed the lockfile"
    );
}

#[test]
fn exit_status_is_passed_through_and_settles_the_lockfile() {
    let sb = Sandbox::new();
    let run = |flags: &[&str], cmd: &[&str]| {
        sb.tool("ccci-lock")
            .args(flags)
            .arg(D)
            .arg("--")
            .args(cmd)
            .run()
    };
    run(&[], &["true"]).expect_code(0);
    assert!(!sb.lockfile(D).exists(), "removed after a normal exit");
    run(&[], &["sh", "-c", "exit 3"]).expect_code(3);
    assert!(!sb.lockfile(D).exists(), "removed after a failing exit too");
    run(&["--keep"], &["true"]).expect_code(0);
    assert!(sb.lockfile(D).exists(), "--keep keeps it");
    std::fs::remove_file(sb.lockfile(D)).unwrap();

    run(&[], &["/nonexistent/cmd"])
        .expect_code(127)
        .expect_stderr("cannot run '/nonexistent/cmd'");
    let not_exec = sb.path("not-exec");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    run(&[], &[not_exec.to_str().unwrap()]).expect_code(126);
    assert!(!sb.lockfile(D).exists());

    run(&[], &["sh", "-c", "kill -TERM $$"]).expect_code(143);
    assert!(
        sb.lockfile(D).exists(),
        "a signal-killed COMMAND leaves its lockfile"
    );
    run(&[], &["sh", "-c", "kill -KILL $$"]).expect_code(137);
    assert!(sb.lockfile(D).exists());
    assert_eq!(sb.try_lock(D), 0, "a leftover lockfile is not a held lock");
}

#[test]
fn forwards_each_signal_and_keeps_the_lock_until_command_exits() {
    let sb = Sandbox::new();
    for sig in ["TERM", "INT", "HUP", "QUIT", "ALRM", "USR1", "USR2"] {
        let signo = match sig {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "HUP" => libc::SIGHUP,
            "QUIT" => libc::SIGQUIT,
            "ALRM" => libc::SIGALRM,
            "USR1" => libc::SIGUSR1,
            _ => libc::SIGUSR2,
        };
        // The trap answers, then waits for stdin, so the test can check that
        // the lock is still held after the signal while COMMAND tears down.
        let script = format!(
            "trap 'echo got-{sig}; kill $!; read _; exit 7' {sig}; echo ready; sleep 1000 >/dev/null 2>&1 & wait"
        );
        let mut p = sb
            .tool("ccci-lock")
            .args([D, "--", "sh", "-c", &script])
            .piped_stdin()
            .spawn();
        p.expect_stdout("ready");
        p.signal(signo);
        p.expect_stdout(&format!("got-{sig}"));
        assert!(
            !p.has_exited(),
            "ccci-lock ended before COMMAND: {}",
            p.report()
        );
        assert_eq!(
            sb.try_lock(D),
            75,
            "the lock was dropped during teardown ({sig})"
        );
        p.send("");
        p.wait().expect_code(7);
        assert!(!sb.lockfile(D).exists(), "COMMAND exited normally ({sig})");
    }
}

#[test]
fn an_alarm_armed_before_exec_reaches_command() {
    // ccci-guard arms the deadline with the alarm timer and then execs
    // ccci-lock; the timer survives exec and must reach COMMAND.
    let sb = Sandbox::new();
    let started = Instant::now();
    let mut p = unsafe {
        sb.tool("ccci-lock")
            .args(["-w", "20s", D, "--", "sh", "-c"])
            .arg(
                "trap 'echo got-alarm; exit 9' ALRM; echo ready; sleep 1000 >/dev/null 2>&1 & wait",
            )
            .pre_exec(|| {
                libc::alarm(2);
                Ok(())
            })
    }
    .spawn();
    p.expect_stdout("ready");
    p.expect_stdout("got-alarm");
    p.wait().expect_code(9);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the caller's alarm was postponed"
    );
}

#[test]
fn a_deadline_that_fires_while_waiting_ends_the_wait_with_142() {
    // `-w` must use its own clock: the caller's alarm still fires during the
    // wait, and nothing runs.
    let sb = Sandbox::new();
    let mut holder = hold(&sb, D, &[]);
    let started = Instant::now();
    let out = unsafe {
        sb.tool("ccci-lock")
            .args(["-w", "25s", D, "--", "touch", "ran"])
            .pre_exec(|| {
                libc::alarm(1);
                Ok(())
            })
    }
    .run();
    out.expect_code(142);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the alarm was replaced by -w"
    );
    assert!(!sb.path("ran").exists());
    holder.send("");
    holder.wait().expect_code(0);
}

#[test]
fn command_gets_a_clean_signal_state_whatever_the_caller_had() {
    let sb = Sandbox::new();
    // The caller ignores TERM, INT and CHLD and blocks USR1 and ALRM, as a
    // careless CI runner might.
    let out = unsafe {
        sb.tool("ccci-lock")
            .args([D, "--", "cat", "/proc/self/status"])
            .pre_exec(|| {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::sigaddset(&mut set, libc::SIGALRM);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            })
    }
    .run();
    out.expect_code(0);
    assert_clean_signal_state(&out);

    // With SIGCHLD ignored by the caller, the status must still come through.
    let out = unsafe {
        sb.tool("ccci-lock")
            .args([D, "--", "sh", "-c", "exit 5"])
            .pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            })
    }
    .run();
    out.expect_code(5);
}

#[test]
fn command_gets_term_when_ccci_lock_is_killed() {
    let sb = Sandbox::new();
    let mark = sb.path("teardown-ran");
    let mut p = sb
        .tool("ccci-lock")
        .args([D, "--", "sh", "-c"])
        .arg(format!(
            "trap 'echo done > {}; exit 0' TERM; echo ready; sleep 1000 >/dev/null 2>&1 & wait",
            mark.display()
        ))
        .spawn();
    p.expect_stdout("ready");
    p.signal(libc::SIGKILL);
    p.wait().expect_code(137);
    wait_until("COMMAND's TERM teardown ran", || mark.exists());
    assert!(
        sb.lockfile(D).exists(),
        "a killed holder cannot remove its lockfile"
    );
    assert_eq!(sb.try_lock(D), 0);
}

#[test]
fn holder_record_environment_and_mtime() {
    let sb = Sandbox::new();
    let before = std::time::SystemTime::now() - Duration::from_secs(2);
    let mut p = sb
        .tool("ccci-lock")
        .args(["--run-id", "build-279", D, "--", "sh", "-c"])
        .arg("echo \"domain=$CCCI_LOCK_DOMAIN\"; echo \"file=$CCCI_LOCK_FILE\"; echo ready; read _")
        .piped_stdin()
        .spawn();
    p.expect_stdout("ready");
    let out = p.stdout_so_far();
    assert!(out.contains(&format!("domain={D}\n")), "{out}");
    let lockfile = sb.lockfile(D);
    assert!(
        out.contains(&format!("file={}\n", lockfile.display())),
        "{out}"
    );

    let text = std::fs::read_to_string(&lockfile).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line: {text:?}");
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["pid"], p.pid());
    assert_eq!(record["run_id"], "build-279");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(record["host"], host.trim());
    let since = record["since"].as_str().unwrap();
    assert!(
        since.len() == 20 && since.ends_with('Z'),
        "RFC 3339: {since}"
    );
    let meta = std::fs::metadata(&lockfile).unwrap();
    assert!(
        meta.modified().unwrap() >= before,
        "mtime touched at acquisition"
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(sb.lock_dir()).unwrap().mode() & 0o777,
        0o700
    );
    p.send("");
    p.wait().expect_code(0);
}

#[test]
fn wait_gives_up_with_75_or_gets_the_lock_when_it_frees_in_time() {
    let sb = Sandbox::new();
    let mut holder = hold(&sb, D, &["--run-id", "slow-run"]);
    let started = Instant::now();
    let out = sb
        .tool("ccci-lock")
        .args(["-w", "300ms", D, "--", "touch", "ran"])
        .run();
    out.expect_code(75).expect_stderr("'slow-run'");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "gave up early"
    );
    assert!(!sb.path("ran").exists());

    let waiter = sb
        .tool("ccci-lock")
        .args(["--wait", "1h", D, "--", "sh", "-c", "echo waiter-in"])
        .spawn();
    wait_until("the -w waiter blocks in flock", || {
        blocked_in_flock(waiter.pid())
    });
    holder.send("");
    holder.wait().expect_code(0);
    waiter.wait().expect_code(0).expect_stdout("waiter-in");
}

#[test]
fn verbose_reports_waiting_with_the_holder() {
    let sb = Sandbox::new();
    let mut holder = hold(&sb, D, &["--run-id", "first-run"]);
    let mut waiter = sb.tool("ccci-lock").args(["-v", D, "--", "true"]).spawn();
    let line = waiter.expect_stderr("waiting");
    assert!(line.starts_with("ccci-lock: "), "{line}");
    assert!(line.contains(D), "{line}");
    assert!(line.contains(&format!("pid {}", holder.pid())), "{line}");
    assert!(line.contains("'first-run'"), "{line}");
    assert!(line.contains("since 20"), "{line}");
    holder.send("");
    holder.wait().expect_code(0);
    waiter.expect_stderr("acquired");
    waiter.wait().expect_code(0);
}

#[test]
fn list_shows_held_and_free_lockfiles_as_text_and_json() {
    let sb = Sandbox::new();
    sb.tool("ccci-lock")
        .args(["--list"])
        .run()
        .expect_code(0)
        .expect_stdout("");
    assert!(!sb.lock_dir().exists(), "--list created the lock dir");

    let mut holder = hold(&sb, "a.example", &["--run-id", "r1"]);
    sb.tool("ccci-lock")
        .args(["b.example", "--", "sh", "-c", "kill -TERM $$"])
        .run()
        .expect_code(143);
    std::fs::write(sb.lock_dir().join("notes.txt"), "not a lock").unwrap();

    let out = sb.tool("ccci-lock").arg("--list").run();
    out.expect_code(0);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let pid = holder.pid().to_string();
    assert_eq!(
        &lines[0][..4],
        ["a.example", "held", pid.as_str(), "r1"],
        "{out}"
    );
    assert!(lines[0][4].ends_with('Z'));
    assert_eq!(&lines[1][..2], ["b.example", "free"], "{out}");
    assert_eq!(lines[1][3], "-", "no run id was given: {out}");

    let out = sb.tool("ccci-lock").args(["--list", "--json"]).run();
    out.expect_code(0);
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects[0]["domain"], "a.example");
    assert_eq!(objects[0]["state"], "held");
    assert_eq!(objects[0]["pid"], holder.pid());
    assert_eq!(objects[0]["run_id"], "r1");
    assert_eq!(objects[1]["state"], "free");
    assert!(objects[1]["run_id"].is_null());
    holder.send("");
    holder.wait().expect_code(0);
}

#[test]
fn every_bad_input_is_status_2_quoted_and_creates_nothing() {
    let sb = Sandbox::new();
    let long = "a".repeat(254);
    let too_long_for_a_file = "a".repeat(251);
    let bad_domains = [
        "",
        ".hidden",
        "-",
        "a/b",
        "../x",
        "a b",
        "é.example",
        "x\ny",
        "a*",
        &long,
        &too_long_for_a_file,
    ];
    for bad in bad_domains {
        let out = sb.tool("ccci-lock").args([bad, "--", "touch", "ran"]).run();
        // A newline shows as `\n` (SPEC §1 Names), the rest as typed.
        let shown = match bad {
            "x\ny" => r"$'x\ny'".to_string(),
            _ => format!("'{bad}'"),
        };
        out.expect_code(2).expect_stderr(&shown);
        assert!(out.stderr.starts_with("ccci-lock: "), "{out}");
    }
    let bad_values: [&[&str]; 6] = [
        &["-w", "5x"],
        &["-w", "-1"],
        &["-w", ""],
        &["-w", "99999999999999999999h"],
        &["--run-id", "a b"],
        &["--run-id", "../up"],
    ];
    for flags in bad_values {
        let out = sb
            .tool("ccci-lock")
            .args(flags)
            .args([D, "--", "touch", "ran"])
            .run();
        out.expect_code(2).expect_stderr(&format!("'{}'", flags[1]));
    }
    let out = sb
        .tool("ccci-lock")
        .args(["--bogus", D, "--", "touch", "ran"])
        .run();
    out.expect_code(2).expect_stderr("'--bogus'");
    let out = sb
        .tool("ccci-lock")
        .args(["-n", "-w", "1s", D, "--", "touch", "ran"])
        .run();
    out.expect_code(2).expect_stderr("cannot be used with");
    let out = sb
        .tool("ccci-lock")
        .env("CCCI_RUN_ID", "bad/id")
        .args([D, "--", "touch", "ran"])
        .run();
    // Blamed on where the value came from: the variable, not the flag.
    out.expect_code(2).expect_stderr("CCCI_RUN_ID='bad/id'");
    sb.tool("ccci-lock")
        .args(["--run-id", "a\rb", D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("--run-id")
        .expect_stderr("$'a\\rb'");
    sb.tool("ccci-lock")
        .args(["--lock-dir", "", D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("--lock-dir");
    sb.tool("ccci-lock").arg(D).run().expect_code(2);
    sb.tool("ccci-lock")
        .args([D, "touch", "ran"])
        .run()
        .expect_code(2);
    assert!(!sb.lock_dir().exists(), "a bad input created the lock dir");
    assert!(!sb.path("ran").exists(), "a bad input ran COMMAND");
}

#[test]
fn an_empty_run_id_variable_counts_as_unset() {
    let sb = Sandbox::new();
    sb.tool("ccci-lock")
        .env("CCCI_RUN_ID", "")
        .args(["--keep", D, "--", "true"])
        .run()
        .expect_code(0);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.lockfile(D)).unwrap()).unwrap();
    assert!(record["run_id"].is_null());
}

#[test]
fn a_symlink_fifo_or_directory_where_the_lockfile_should_be_is_refused() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.lock_dir()).unwrap();
    std::fs::set_permissions(sb.lock_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = sb.path("victim");
    symlink(&target, sb.lockfile("link.example")).unwrap();
    mkfifo(&sb.lockfile("fifo.example"));
    std::fs::create_dir(sb.lockfile("dir.example")).unwrap();
    for (domain, what) in [
        ("link.example", "symlink"),
        ("fifo.example", "FIFO"),
        ("dir.example", "directory"),
    ] {
        let out = sb
            .tool("ccci-lock")
            .args([domain, "--", "touch", "ran"])
            .run();
        out.expect_code(125)
            .expect_stderr(what)
            .expect_stderr(&sb.lockfile(domain).display().to_string());
    }
    assert!(!target.exists(), "the symlink was followed");
    assert!(std::fs::symlink_metadata(sb.lockfile("link.example"))
        .unwrap()
        .is_symlink());
    assert!(!sb.path("ran").exists());
}

#[test]
fn an_unsafe_lock_dir_is_refused_with_125_and_a_fix() {
    let sb = Sandbox::new();
    let run = |dir: &std::path::Path| {
        sb.tool("ccci-lock")
            .arg("--lock-dir")
            .arg(dir)
            .args([D, "--", "touch", "ran"])
            .run()
    };
    let real = sb.path("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = sb.path("link");
    symlink(&real, &link).unwrap();
    run(&link)
        .expect_code(125)
        .expect_stderr(&format!("lock dir {} is a symlink", link.display()))
        .expect_stderr("CCCI_APP_LOCK_DIR");

    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode)).unwrap();
        run(&real)
            .expect_code(125)
            .expect_stderr("writable by group or others")
            .expect_stderr(&format!("chmod 700 {}", real.display()));
    }

    let foreign = if nix_euid() == 0 {
        let dir = sb.path("foreign");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        dir
    } else {
        std::path::PathBuf::from("/") // owned by root, not by us
    };
    run(&foreign)
        .expect_code(125)
        .expect_stderr("is owned by uid");
    assert!(!sb.path("ran").exists());
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "nothing created"
    );
}

fn nix_euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Waits for each of `procs` to end while it makes progress: each round of
/// its loop appends to `progress`. Fails only when no round ends for a whole
/// deadline (a hang, or a deadlock), however slow a loaded machine makes the
/// rounds.
fn wait_progressing(procs: Vec<Proc>, progress: &std::path::Path) -> Vec<ccci_tests::Output> {
    let mut procs = procs;
    let len = || std::fs::metadata(progress).map_or(0, |m| m.len());
    let (mut seen, mut since) = (len(), Instant::now());
    while !procs.iter_mut().all(|p| p.has_exited()) {
        if len() != seen {
            (seen, since) = (len(), Instant::now());
        }
        assert!(
            since.elapsed() < ccci_tests::deadline(),
            "no progress for {:?}: stuck\n{}",
            ccci_tests::deadline(),
            procs
                .iter()
                .map(Proc::report)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.into_iter().map(Proc::wait).collect()
}

both_backends!(
    /// Case 27: two runs take the sets {a, b} and {b, a} at the same time, many
    /// times over. Taken in the order given, they would soon deadlock (each
    /// holding one and waiting for the other); taken sorted, they never do.
    /// Each COMMAND marks its domains with a mkdir, so an overlap is recorded.
    case_27_overlapping_sets_never_deadlock_and_never_overlap,
    |b: &Backend| {
        let sb = b.sb();
        let log = sb.path("overlaps");
        let marks = sb.path("marks");
        std::fs::create_dir(&marks).unwrap();
        let inside = format!(
            "for d in a b; do mkdir {m}/$d 2>/dev/null || echo \"overlap on $d\" >> {log}; done; \
             for d in a b; do rmdir {m}/$d; done",
            m = marks.display(),
            log = log.display(),
        );
        let progress = sb.path("progress");
        let run = |order: &str| {
            let script = format!(
                "for i in $(seq 60); do ccci-lock {order} -- sh -c '{inside}' || exit 1; \
                 echo >> {progress}; done; echo done",
                progress = progress.display(),
            );
            b.sh(&script).spawn()
        };
        // Stuck for a whole deadline fails the test: that is the deadlock check.
        for out in wait_progressing(vec![run("a b"), run("b a")], &progress) {
            out.expect_code(0).expect_stdout("done");
        }
        assert!(
            !log.exists(),
            "two holders overlapped: {:?}",
            std::fs::read_to_string(&log)
        );
        assert!(!b.has_claim("a") && !b.has_claim("b"));
        assert_eq!(b.leftovers(), Vec::<String>::new());
    }
);

#[test]
fn several_domains_are_all_held_with_sorted_environment_and_all_settled() {
    let sb = Sandbox::new();
    let mut p = sb
        .tool("ccci-lock")
        .args([
            "--run-id",
            "r1",
            "b.example",
            "a.example",
            "b.example",
            "--",
        ])
        .args(["sh", "-c"])
        .arg("echo \"domain=$CCCI_LOCK_DOMAIN\"; echo \"file=$CCCI_LOCK_FILE\"; echo ready; read _")
        .piped_stdin()
        .spawn();
    p.expect_stdout("ready");
    let out = p.stdout_so_far();
    assert!(out.contains("domain=a.example b.example\n"), "{out}");
    let files = format!(
        "file={} {}\n",
        sb.lockfile("a.example").display(),
        sb.lockfile("b.example").display()
    );
    assert!(out.contains(&files), "{out}");
    for d in ["a.example", "b.example"] {
        assert_eq!(sb.try_lock(d), 75, "{d} is not held");
        let record = std::fs::read_to_string(sb.lockfile(d)).unwrap();
        assert!(record.contains("\"run_id\":\"r1\""), "{record}");
    }
    p.send("");
    p.wait().expect_code(0);
    for d in ["a.example", "b.example"] {
        assert!(
            !sb.lockfile(d).exists(),
            "{d}.lock left after a normal exit"
        );
    }
    // A signal death keeps them all, for the janitor.
    let out = sb
        .tool("ccci-lock")
        .args(["a.example", "b.example", "--", "sh", "-c", "kill -KILL $$"])
        .run();
    out.expect_code(137);
    assert!(sb.lockfile("a.example").exists() && sb.lockfile("b.example").exists());
}

#[test]
fn a_set_with_one_busy_domain_holds_none_and_runs_nothing() {
    let sb = Sandbox::new();
    let mut holder = hold(&sb, "b", &["--run-id", "run-b"]);
    for flags in [&["-n"][..], &["-w", "300ms"][..]] {
        let out = sb
            .tool("ccci-lock")
            .args(flags)
            .args(["a", "b", "c", "--", "touch", "ran"])
            .run();
        out.expect_code(75)
            .expect_stderr("b is locked by")
            .expect_stderr("'run-b'")
            .expect_stderr("holding none");
        assert!(!sb.path("ran").exists(), "COMMAND ran without all locks");
        assert_eq!(sb.try_lock("a"), 0, "a was kept after giving up");
    }
    holder.send("");
    holder.wait().expect_code(0);
}

/// A process started without the harness (for a stderr the test controls);
/// killed and reaped when dropped.
struct Raw(std::process::Child);

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Case 29, `-w`: when the wait runs out, the waiting thread is already
/// gone before ccci-lock says it gives up, so it can never take the lock
/// (and create a lockfile nobody holds) between giving up and exiting. The
/// give-up message is held up in a full pipe, freezing ccci-lock right
/// there, while the test looks for a thread or a flock waiter.
#[test]
fn case_29_a_wait_that_runs_out_has_no_waiting_thread_left_and_leaves_no_lockfile() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let sb = Sandbox::new();
    let mut holder = hold(&sb, D, &[]);
    let fifo = sb.path("stderr");
    mkfifo(&fifo);
    let mut drain = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let stderr = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    {
        use std::io::Write;
        let mut filler = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        while filler.write(&[b'.'; 4096]).is_ok_and(|n| n > 0) {}
    }
    let waiter = Raw(std::process::Command::new(ccci_tests::bin("ccci-lock"))
        .env("CCCI_APP_LOCK_DIR", sb.lock_dir())
        .args(["-w", "300ms", D, "--", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap());
    let pid = waiter.0.id();
    wait_until("ccci-lock -w waits in flock", || blocked_in_flock(pid));
    wait_until("ccci-lock -w gave up and is stuck writing why", || {
        std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("pipe"))
    });
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(
        !threads.iter().any(|c| c == "lock-wait"),
        "the waiting thread outlived the wait: {threads:?}"
    );
    assert!(!blocked_in_flock(pid), "a flock waiter outlived the wait");
    // The holder ends normally (removing its lockfile) while the waiter is
    // frozen: a waiting thread left behind would now take a new lockfile.
    holder.send("");
    holder.wait().expect_code(0);
    // Drain the pipe until ccci-lock, its only writer, has closed it.
    let mut said = Vec::new();
    let mut buf = [0u8; 65536];
    let start = Instant::now();
    loop {
        match drain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < ccci_tests::deadline(),
                    "ccci-lock -w never ended"
                );
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut waiter = waiter;
    let status = waiter.0.wait().unwrap();
    assert_eq!(status.code(), Some(75));
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.contains("giving up"),
        "{}",
        said.trim_start_matches('.')
    );
    assert!(!sb.lockfile(D).exists(), "a lockfile was left behind");
}

/// Case 29, `-n`: `--list` in a loop never makes `-n` on a free domain fail
/// (it reads /proc/locks instead of taking a shared lock; `--keep` keeps
/// the lockfile there for the listers to look at), and neither a `-n` nor
/// two `-n`s racing each other leave a lockfile behind.
#[test]
fn case_29_list_in_a_loop_never_makes_nonblock_fail_and_nothing_is_left() {
    let sb = Sandbox::new();
    let listers: Vec<Proc> = (0..3)
        .map(|_| {
            sb.sh("while :; do ccci-lock --list >/dev/null || echo list-failed; done")
                .spawn()
        })
        .collect();
    let progress = sb.path("progress");
    let runs = sb
        .sh(&format!(
            "for i in $(seq 300); do \
               ccci-lock -n --keep {D} -- true || echo \"-n failed with $?\"; \
               echo >> {p}; \
             done; echo done",
            p = progress.display()
        ))
        .spawn();
    let out = wait_progressing(vec![runs], &progress).remove(0);
    out.expect_code(0).expect_stdout("done");
    assert_eq!(out.stdout.trim(), "done", "{out}");
    for lister in listers {
        assert_eq!(lister.stdout_so_far(), "", "{}", lister.report());
        lister.signal(libc::SIGKILL);
        lister.wait();
    }

    std::fs::remove_file(sb.lockfile(D)).unwrap();
    let races = sb
        .sh(&format!(
            "for i in $(seq 100); do \
               ccci-lock -n {D} -- true 2>/dev/null & ccci-lock -n {D} -- true 2>/dev/null; wait; \
               [ -e {f} ] && echo left-after-race; \
               echo >> {p}; \
             done; echo done",
            f = sb.lockfile(D).display(),
            p = progress.display()
        ))
        .spawn();
    let out = wait_progressing(vec![races], &progress).remove(0);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "done", "{out}");
}

#[test]
fn verbose_says_when_the_recorded_holder_is_not_running() {
    let sb = Sandbox::new();
    // A foreign flock(1) user holds a lockfile whose record names a run
    // that has ended (its pid is that of a process already reaped).
    let dead = sb.sh("true").spawn();
    let dead_pid = dead.pid();
    dead.wait().expect_code(0);
    std::fs::create_dir_all(sb.lock_dir()).unwrap();
    std::fs::set_permissions(sb.lock_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        sb.lockfile(D),
        format!("{{\"pid\":{dead_pid},\"run_id\":\"gone\",\"since\":null,\"host\":null}}\n"),
    )
    .unwrap();
    std::fs::set_permissions(sb.lockfile(D), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut foreign = sb
        .command("flock")
        .arg(sb.lockfile(D))
        .args(["sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    foreign.expect_stdout("ready");
    let out = sb
        .tool("ccci-lock")
        .args(["-v", "-w", "200ms", D, "--", "true"])
        .run();
    out.expect_code(75)
        .expect_stderr("not its recorded holder")
        .expect_stderr("not running")
        .expect_stderr(&format!("pid {}", foreign.pid()));
    foreign.send("");
    foreign.wait().expect_code(0);
}

#[test]
fn list_json_shows_the_parent_of_held_domains_and_misuse_is_status_2() {
    let sb = Sandbox::new();
    sb.tool("ccci-lock")
        .args([D, "--", "true"])
        .run()
        .expect_code(0);
    // A keeper's record, as `--hold` writes it, held by flock(1).
    let mut keeper = sb
        .command("flock")
        .arg(sb.lockfile(D))
        .args(["sh", "-c"])
        .arg(
            "printf '{\"pid\":%s,\"run_id\":\"r\",\"since\":null,\"host\":null,\"parent\":4242}\\n' \
             $PPID > \"$0\"; echo ready; read _",
        )
        .arg(sb.lockfile(D))
        .piped_stdin()
        .spawn();
    keeper.expect_stdout("ready");
    let out = sb.tool("ccci-lock").args(["--list", "--json"]).run();
    out.expect_code(0);
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(line["state"], "held", "{out}");
    assert_eq!(line["parent"], 4242, "{out}");
    keeper.send("");
    keeper.wait().expect_code(0);
    let out = sb.tool("ccci-lock").args(["--list", "--json"]).run();
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(line["state"], "free", "{out}");
    assert!(line.get("parent").is_none(), "{out}");

    for args in [
        &["--json", D, "--", "true"][..],
        &["--json"][..],
        &["--list", "--", "true"][..],
        &["--list", D][..],
    ] {
        sb.tool("ccci-lock").args(args).run().expect_code(2);
    }
    assert!(!sb.path("ran").exists());
}

both_backends!(
    /// Case 22: signal deaths compose through ccci-guard and nested ccci-locks:
    /// each ccci-lock keeps its claim, releases its lock, and ends by the
    /// same signal, so the one around it sees a signal death too.
    case_22_signal_deaths_compose_and_keep_every_lockfile,
    |b: &Backend| {
        let out = b
            .tool("ccci-lock")
            .args([D, "--", "ccci-guard", "--supervise", "--deadline", "1s"])
            .args(["--", "sleep", "30"])
            .run();
        out.expect_code(142).expect_ended_by(libc::SIGALRM);
        assert!(b.has_claim(D), "the claim must stay\n{}", b.sb().listing());
        b.assert_freed(D, "the lock was not released");

        let out = b
            .tool("ccci-lock")
            .args([
                "a",
                "--",
                "ccci-lock",
                "b",
                "--",
                "sh",
                "-c",
                "kill -KILL $$",
            ])
            .run();
        out.expect_code(137).expect_ended_by(libc::SIGKILL);
        for d in ["a", "b"] {
            assert!(
                b.has_claim(d),
                "{d}'s claim removed\n{}",
                b.sb().listing()
            );
            b.assert_freed(d, &format!("{d} was not released")); // and removes it
        }

        let out = b
            .tool("ccci-lock")
            .args(["a", "--", "ccci-lock", "b", "--", "sh", "-c", "exit 3"])
            .run();
        out.expect_code(3);
        for d in ["a", "b"] {
            assert!(!b.has_claim(d), "{d}'s claim left after a normal exit");
        }
        // Nothing is left held: both locks are free at once.
        assert_eq!(b.try_lock("a"), 0);
        assert_eq!(b.leftovers(), Vec::<String>::new());
    }
);

#[test]
fn a_lock_dir_that_is_the_state_or_runs_dir_is_refused() {
    let sb = Sandbox::new();
    for var in ["CCCI_STATE_DIR", "CCCI_RUNS_DIR"] {
        let out = sb
            .tool("ccci-lock")
            .env(var, sb.lock_dir())
            .args([D, "--", "touch", "ran"])
            .run();
        out.expect_code(125)
            .expect_stderr(&sb.lock_dir().display().to_string());
        assert!(!sb.path("ran").exists(), "{out}");
    }
}

/// A `-w` that gives up just as the holder exits names the holder as having
/// just finished, never "a janitor or a foreign flock(1) user" (before,
/// 19 of 23 such races said so: the recorded holder was gone and nobody
/// held the lock any more, which was read as a stale record). The race is
/// made certain: the waiter runs under strace, which holds its open of
/// `/proc/locks` (made only for the give-up message) for a second, while
/// the holder finishes and is reaped.
#[test]
fn a_wait_that_runs_out_as_the_holder_exits_says_the_holder_just_finished() {
    let sb = Sandbox::new();
    let mut holder = sb
        .tool("ccci-lock")
        .args([D, "--", "sh", "-c", "echo ready; sleep 0.5"])
        .spawn();
    holder.expect_stdout("ready");
    let waiter = sb
        .command("strace")
        .args(["-qq", "-f", "-o", "/dev/null", "-P", "/proc/locks"])
        .args([
            "-e",
            "trace=openat",
            "-e",
            "inject=openat:delay_enter=1000000",
        ])
        .arg(ccci_tests::bin("ccci-lock"))
        .args(["-w", "100ms", D, "--", "true"])
        .spawn();
    holder.wait().expect_code(0);
    let out = waiter.wait();
    out.expect_code(75).expect_stderr("it has just finished");
    assert!(
        !out.stderr.contains("janitor") && !out.stderr.contains("foreign"),
        "blamed someone who was not there\n{out}"
    );
}

/// SPEC §2 "a run that gave up never leaves a claim": a set waiter that is
/// cancelled (TERM, or any signal ccci-lock forwards) or reaches a
/// `ccci-guard --deadline` (ALRM) while it waits for the second domain
/// removes the lockfile it created for the first, and ends by that signal.
/// Before, the signal's default action killed it and left an empty `a.lock`
/// that the janitor then reaped. A lockfile that existed before is kept.
#[test]
fn a_set_waiter_killed_by_a_signal_leaves_no_lockfile_it_created() {
    let sb = Sandbox::new();
    let (a, b) = ("a.example.org", "b.example.org");
    let mut holder = sb
        .tool("ccci-lock")
        .args([b, "--", "sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    holder.expect_stdout("ready");
    let signals = [
        (libc::SIGTERM, None),
        (libc::SIGINT, Some("-w")),
        (libc::SIGHUP, None),
        (libc::SIGQUIT, None),
        (libc::SIGUSR1, Some("-w")),
        (libc::SIGUSR2, None),
    ];
    for (sig, wait) in signals {
        let mut args = vec![];
        if let Some(flag) = wait {
            args.extend([flag, "1h"]);
        }
        args.extend([a, b, "--", "touch", "ran"]);
        let waiter = sb.tool("ccci-lock").args(&args).spawn();
        let pid = waiter.pid();
        wait_until("the set waiter waits for b", || {
            sb.lockfile(a).exists() && blocked_in_flock(pid)
        });
        waiter.signal(sig);
        let out = waiter.wait();
        out.expect_ended_by(sig);
        assert!(
            !sb.lockfile(a).exists(),
            "SIG{sig}: the waiter left the a.lock it created\n{out}"
        );
    }
    // A ccci-guard deadline: ALRM, the alarm timer armed before the exec.
    let out = sb
        .tool("ccci-guard")
        .args(["--deadline", "1s", "--"])
        .arg(ccci_tests::bin("ccci-lock"))
        .args([a, b, "--", "touch", "ran"])
        .run();
    out.expect_code(142);
    assert!(!sb.lockfile(a).exists(), "the deadline left a.lock\n{out}");
    // An a.lock that existed before (maybe an orphan to reap) stays.
    std::fs::write(sb.lockfile(a), "").unwrap();
    std::fs::set_permissions(sb.lockfile(a), std::fs::Permissions::from_mode(0o600)).unwrap();
    let waiter = sb.tool("ccci-lock").args([a, b, "--", "true"]).spawn();
    let pid = waiter.pid();
    wait_until("the set waiter waits for b", || blocked_in_flock(pid));
    waiter.signal(libc::SIGTERM);
    waiter.wait().expect_ended_by(libc::SIGTERM);
    assert!(
        sb.lockfile(a).exists(),
        "a lockfile it did not create was removed"
    );
    assert!(!sb.path("ran").exists());
    holder.send("");
    holder.wait().expect_code(0);
}

/// The lock dir removed or replaced while a run holds a lock (`rm -rf L`,
/// `mv L L.old; mkdir L`, or only the lockfile removed): a new run could
/// then take the domain while the old holder still holds its unlinked or
/// moved file. The holder notices (inotify on its lock dir), says what
/// happened, stops COMMAND with SIGTERM and exits 125, as for a lost lease.
/// Before, it went on holding a lock nobody else could see.
#[test]
fn a_holder_whose_lockfile_is_removed_or_replaced_stops_command_and_fails_with_125() {
    // The holder may look between the `mv` and the `mkdir`, or after both.
    let cases: [(&str, &[&str]); 3] = [
        ("rm -rf \"$1\"", &["was removed"]),
        (
            "mv \"$1\" \"$1.old\" && mkdir -m 700 \"$1\"",
            &[
                "the lock dir was removed or moved away",
                "the lock dir was replaced",
            ],
        ),
        ("rm \"$1/$2.lock\"", &["was removed"]),
    ];
    for (attack, said) in cases {
        let sb = Sandbox::new();
        let script = r#"trap 'echo TERM > "$1"; exit 3' TERM
            echo ready; while :; do sleep 0.05; done"#;
        let got = sb.path("got");
        let mut holder = sb
            .tool("ccci-lock")
            .args(["--lost-grace", "30s", D, "--", "sh", "-c", script, "sh"])
            .arg(&got)
            .spawn();
        holder.expect_stdout("ready");
        sb.sh(attack)
            .arg("sh")
            .arg(sb.lock_dir())
            .arg(D)
            .run()
            .expect_code(0);
        let out = holder.wait_within(Duration::from_secs(20));
        out.expect_code(125);
        let dir = sb.lock_dir().display().to_string();
        let stderr = out.stderr.replace(&format!("{dir} "), "");
        assert!(said.iter().any(|s| stderr.contains(s)), "{attack}: {out}");
        assert_eq!(
            std::fs::read_to_string(&got).unwrap_or_default().trim(),
            "TERM",
            "{attack}: COMMAND was not stopped\n{out}"
        );
        // The domain is free for the next run, which now is its only holder.
        assert_eq!(sb.try_lock(D), 0, "{attack}");
    }
}
