//! SPEC §2 "The lock covers COMMAND's whole tree" and §7 case 33: a process
//! COMMAND started, in the background or in a session of its own, keeps
//! the lock held until it exits, gets the signals ccci-lock forwards and
//! the stop of a lost lock; `ccci-guard --supervise` does the same for its
//! COMMAND's tree. Whether a process is still there is asked of `ps`, not
//! only read from a status.

use std::process::Command;

use ccci_tests::etcd::Etcd;
use ccci_tests::{wait_until, Proc, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";

/// Whether `ps` lists `pid` as a process that has not ended (a zombie has).
fn ps_lists(pid: u32) -> bool {
    let out = Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .expect("ps runs");
    let stat = String::from_utf8_lossy(&out.stdout);
    let stat = stat.trim();
    !stat.is_empty() && !stat.starts_with('Z')
}

/// The pid each line `NAME=PID` of `p`'s stdout names, in the order of
/// `names`, whatever order the lines came in; a name may come several
/// times (`gc` twice: the pids in line order).
fn pids(p: &Proc, names: &[&str]) -> Vec<u32> {
    let found = |out: &str| -> Option<Vec<u32>> {
        let mut used = vec![false; out.lines().count()];
        names
            .iter()
            .map(|name| {
                let prefix = format!("{name}=");
                let (i, line) = out
                    .lines()
                    .enumerate()
                    .find(|(i, l)| !used[*i] && l.starts_with(&prefix))?;
                used[i] = true;
                line[prefix.len()..].trim().parse().ok()
            })
            .collect()
    };
    wait_until(&format!("COMMAND printed {names:?}"), || {
        found(&p.stdout_so_far()).is_some()
    });
    found(&p.stdout_so_far()).unwrap()
}

fn pid_line(p: &mut Proc, name: &str) -> u32 {
    pids(p, &[name])[0]
}

/// `ccci-lock D -- sh -c SCRIPT`, running.
fn wrap(sb: &Sandbox, script: &str) -> Proc {
    sb.tool("ccci-lock")
        .args([D, "--", "sh", "-c", script])
        .spawn()
}

/// While COMMAND's leftover `pid` lives, ccci-lock holds D; once it is
/// killed, ccci-lock exits with COMMAND's status and removes the lockfile.
fn held_until_gone(sb: &Sandbox, mut p: Proc, pid: u32) {
    let command = pid_line(&mut p, "cmd");
    wait_until("COMMAND itself has exited", || !ps_lists(command));
    assert!(ps_lists(pid), "the leftover is gone already");
    assert_eq!(sb.try_lock(D), 75, "the lock was released while {pid} runs");
    assert!(
        !p.has_exited(),
        "ccci-lock ended before {pid}: {}",
        p.report()
    );
    ccci_tests::kill(pid, libc::SIGKILL);
    p.wait().expect_code(0);
    assert!(!ps_lists(pid));
    assert!(
        !sb.lockfile(D).exists(),
        "COMMAND exited 0: the lockfile goes"
    );
    assert_eq!(sb.try_lock(D), 0);
}

#[test]
fn case_33_a_background_child_keeps_the_lock_until_it_exits() {
    let sb = Sandbox::new();
    let mut p = wrap(
        &sb,
        "sleep 1000 >/dev/null 2>&1 & echo bg=$!; echo cmd=$$; exit 0",
    );
    let bg = pid_line(&mut p, "bg");
    held_until_gone(&sb, p, bg);
}

#[test]
fn case_33_a_grandchild_in_a_session_of_its_own_keeps_the_lock_until_it_exits() {
    let sb = Sandbox::new();
    // The middle shell exits at once: the setsid'd sleep is re-parented,
    // to ccci-lock (a subreaper), not to init.
    let mut p = wrap(
        &sb,
        "sh -c 'setsid sleep 1000 >/dev/null 2>&1 & echo gc=$!'; echo cmd=$$; exit 0",
    );
    let gc = pid_line(&mut p, "gc");
    held_until_gone(&sb, p, gc);
}

/// A grandchild that records each TERM it gets. Its trap runs at once
/// (the shell is in `wait`) and takes a while, as a teardown does: a
/// second TERM while it runs would run it again, and the record would say
/// so (the negative control of "each process once").
fn term_recorder(sb: &Sandbox) -> std::path::PathBuf {
    let script = sb.path("gc.sh");
    std::fs::write(
        &script,
        "trap 'echo got-term >> \"$1\"; sleep 0.3; exit 0' TERM\n\
         sleep 1000 & echo gc=$$; wait\n",
    )
    .unwrap();
    script
}

#[test]
fn case_33_sigterm_to_ccci_lock_reaches_a_grandchild_in_its_own_session() {
    let sb = Sandbox::new();
    let script = term_recorder(&sb);
    let record = sb.path("record");
    let mut p = wrap(
        &sb,
        &format!(
            "setsid sh '{}' '{}' & wait",
            script.display(),
            record.display()
        ),
    );
    let gc = pid_line(&mut p, "gc");
    p.signal(libc::SIGTERM);
    let out = p.wait();
    out.expect_ended_by(libc::SIGTERM);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "got-term\n");
    assert!(!ps_lists(gc), "the grandchild outlived ccci-lock");
    assert!(
        sb.lockfile(D).exists(),
        "COMMAND died by a signal: the lockfile stays for the janitor"
    );
    assert_eq!(sb.try_lock(D), 0);
}

#[test]
fn case_33_a_lost_etcd_lease_stops_background_and_setsid_grandchildren_first() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let script = term_recorder(&sb);
    let (record_bg, record_sid) = (sb.path("record-bg"), sb.path("record-sid"));
    let p = sb
        .tool("ccci-lock")
        .env("CCCI_ETCD_ENDPOINTS", etcd.endpoint())
        .env("CCCI_ETCD_TTL", "30s")
        .args(["--lost-grace", "5s", D, "--", "sh", "-c"])
        .arg(format!(
            "sh '{s}' '{bg}' & setsid sh '{s}' '{sid}' & echo started; wait",
            s = script.display(),
            bg = record_bg.display(),
            sid = record_sid.display()
        ))
        .spawn();
    let [first, second] = pids(&p, &["gc", "gc"])[..] else {
        unreachable!()
    };
    // The lease is revoked behind the holder's back: a loss.
    let leases = etcd.ctl(&["lease", "list"]);
    let id = leases.lines().nth(1).expect("one lease").trim().to_string();
    etcd.ctl(&["lease", "revoke", &id]);
    let out = p.wait();
    out.expect_code(125).expect_stderr("lost the lock of");
    for (pid, record) in [(first, &record_bg), (second, &record_sid)] {
        assert!(!ps_lists(pid), "{pid} outlived the lost lock: {out}");
        assert_eq!(
            std::fs::read_to_string(record).unwrap_or_default(),
            "got-term\n",
            "{pid} was not told to stop"
        );
    }
}

#[test]
fn supervise_waits_for_and_signals_the_whole_tree() {
    let sb = Sandbox::new();
    // COMMAND succeeds and leaves a process in a session of its own: the
    // supervisor waits for it, and a TERM it gets reaches it.
    let script = term_recorder(&sb);
    let record = sb.path("record");
    let mut p = sb
        .tool("ccci-guard")
        .args(["--supervise", "--deadline", "1h", "--", "sh", "-c"])
        .arg(format!(
            "setsid sh '{}' '{}' & echo cmd=$$; exit 0",
            script.display(),
            record.display()
        ))
        .spawn();
    let [gc, command] = pids(&p, &["gc", "cmd"])[..] else {
        unreachable!()
    };
    wait_until("COMMAND itself has exited", || !ps_lists(command));
    assert!(ps_lists(gc));
    assert!(!p.has_exited(), "the supervisor left {gc} behind");
    p.signal(libc::SIGTERM);
    let out = p.wait();
    // COMMAND exited 0 before the TERM; the status stays its.
    out.expect_code(0);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "got-term\n");
    assert!(!ps_lists(gc));
}

/// On etcd, ccci-lock has helper threads (the lease's keep-alive, the watch
/// of its own lock key); a TERM sent to ccci-lock must still reach COMMAND,
/// never kill ccci-lock by its default action in one of them.
#[test]
fn sigterm_to_ccci_lock_on_etcd_reaches_command_and_its_teardown_runs() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let mut p = sb
        .tool("ccci-lock")
        .env("CCCI_ETCD_ENDPOINTS", etcd.endpoint())
        .args([D, "--", "sh", "-c"])
        .arg("trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done")
        .spawn();
    p.expect_stdout("ready");
    p.signal(libc::SIGTERM);
    p.expect_stdout("got-term");
    p.wait().expect_code(3);
}

/// A `--hold` keeper whose etcd lease is lost stops the harness it holds
/// the locks for, and the harness's children, as ccci-lock stops COMMAND:
/// no harness goes on deploying a dependency whose lock is gone.
#[test]
fn a_keeper_whose_lease_is_lost_stops_the_harness_and_its_children() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let script = term_recorder(&sb);
    let (record_harness, record_child) = (sb.path("record-harness"), sb.path("record-child"));
    let mut harness = sb
        .command("sh")
        .env("CCCI_ETCD_ENDPOINTS", etcd.endpoint())
        .env("CCCI_ETCD_TTL", "30s")
        .args(["-c"])
        .arg(format!(
            "ccci-lock --hold --parent $$ {D} || exit 9; \
             setsid sh '{s}' '{child}' & \
             trap 'echo got-term >> \"{harness}\"; exit 0' TERM; \
             echo ready; while :; do sleep 0.05; done",
            s = script.display(),
            child = record_child.display(),
            harness = record_harness.display()
        ))
        .spawn();
    let [child] = pids(&harness, &["gc"])[..] else {
        unreachable!()
    };
    harness.expect_stdout("ready");
    let leases = etcd.ctl(&["lease", "list"]);
    let id = leases
        .lines()
        .nth(1)
        .expect("the keeper's lease")
        .trim()
        .to_string();
    etcd.ctl(&["lease", "revoke", &id]);
    harness.wait().expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&record_harness).unwrap(),
        "got-term\n"
    );
    wait_until("the harness's child has gone", || !ps_lists(child));
    assert_eq!(
        std::fs::read_to_string(&record_child).unwrap(),
        "got-term\n"
    );
}

/// The processes a COMMAND's TERM trap starts (its teardown) are not sent
/// the TERM that started the trap: the teardown runs to its end.
#[test]
fn a_term_traps_teardown_is_not_stopped_by_the_same_term() {
    let sb = Sandbox::new();
    for _ in 0..10 {
        let mut p = wrap(
            &sb,
            "trap 'sh -c \"sleep 0.2; echo torn-down\"; exit 0' TERM; \
             echo cmd=$$; sleep 1000 & wait",
        );
        pid_line(&mut p, "cmd");
        p.signal(libc::SIGTERM);
        let out = p.wait();
        out.expect_code(0).expect_stdout("torn-down");
    }
}

/// A shell that, told to stop, starts a process in the background and
/// ends: what it left behind is its own child no longer, so when COMMAND
/// has ended it gets the same TERM, and ccci-lock ends with COMMAND's
/// status instead of holding the domain for it. (A teardown is left alone
/// only while the process that started it lives.)
#[test]
fn what_a_signalled_process_left_behind_when_it_ended_is_told_too() {
    let sb = Sandbox::new();
    let script = term_recorder(&sb);
    let record = sb.path("record");
    let mut p = wrap(
        &sb,
        &format!(
            "trap 'trap - TERM; sh \"{s}\" \"{r}\" > \"{o}\" & \
               until grep -q gc= \"{o}\"; do sleep 0.01; done; kill -TERM $$' TERM; \
             echo cmd=$$; while :; do sleep 0.05; done",
            s = script.display(),
            r = record.display(),
            o = sb.path("left").display()
        ),
    );
    pid_line(&mut p, "cmd");
    p.signal(libc::SIGTERM);
    let out = p.wait();
    out.expect_ended_by(libc::SIGTERM);
    let left: u32 = std::fs::read_to_string(sb.path("left"))
        .unwrap()
        .trim()
        .trim_start_matches("gc=")
        .parse()
        .unwrap();
    assert!(
        !ps_lists(left),
        "the process COMMAND left behind outlived ccci-lock"
    );
    assert_eq!(
        std::fs::read_to_string(&record).unwrap_or_default(),
        "got-term\n",
        "the process COMMAND left behind was not told to stop: {out}"
    );
    assert_eq!(sb.try_lock(D), 0);
}

/// A shell that traps TERM and starts a process in the background as the
/// TERM comes: the new process, forked but not yet exec'd, has the shell's
/// handler, takes the TERM in it and loses it when it execs `sleep`. It is
/// told again once it has no handler, so ccci-lock ends (a trap is never
/// run twice: a process that still catches the signal is not sent it
/// again). Before, this hung about 1 in 20.
#[test]
fn a_term_lost_between_fork_and_exec_is_sent_again() {
    let sb = Sandbox::new();
    for _ in 0..30 {
        let mut p = wrap(
            &sb,
            "trap 'sleep 1000 >/dev/null 2>&1 & exit 0' TERM; echo cmd=$$; \
             while :; do sleep 0.01; done",
        );
        pid_line(&mut p, "cmd");
        p.signal(libc::SIGTERM);
        p.wait().expect_code(0);
        assert_eq!(sb.try_lock(D), 0);
    }
}
