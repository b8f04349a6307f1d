//! ccci-guard (SPEC §3) and SPEC §7 cases 13-16, composed with ccci-lock
//! the way a harness uses them.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the child and signal helpers defined in it.

use std::time::{Duration, Instant};

use ccci_tests::{
    alive, assert_clean_signal_state, bin, mkfifo, stat_field, wait_until, Proc, Sandbox,
};

const D: &str = "wp-guard.ci.example.org";

/// A new sandbox, with both tools built: the shell scripts below call them
/// by name, through `PATH`.
fn sandbox() -> Sandbox {
    bin("ccci-guard");
    bin("ccci-lock");
    Sandbox::new()
}

/// The two ways ccci-guard runs COMMAND: exec'd, or under the supervisor.
const MODES: [&[&str]; 2] = [&[], &["--supervise"]];

/// Writes `harness.sh`, a stand-in for the recipe tests run under
/// `ccci-lock`: it says "ready" and waits; on `sig` it tears down once,
/// appending `<sig> held=<status of ccci-lock -n on its own domain>` to
/// `torn-down` (75: the lock was still held during teardown), then runs
/// `then`. Returns the command line that runs it.
fn harness(sb: &Sandbox, sig: &str, then: &str) -> Vec<String> {
    let script = format!(
        "trap 'trap \"\" {sig}; \
           held=$(ccci-lock -n \"$CCCI_LOCK_DOMAIN\" -- true 2>/dev/null; echo $?); \
           echo {sig} held=$held >> torn-down; {then}' {sig}\n\
         echo ready\n\
         sleep 1000 >/dev/null 2>&1 &\n\
         wait\n"
    );
    std::fs::write(sb.path("harness.sh"), script).unwrap();
    ["ccci-lock", D, "--", "sh", "harness.sh"]
        .map(String::from)
        .to_vec()
}

/// What the harness recorded in `torn-down`, once it has recorded something.
fn teardown_record(sb: &Sandbox) -> String {
    let path = sb.path("torn-down");
    wait_until("the harness's teardown ran", || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
    });
    std::fs::read_to_string(&path).unwrap()
}

fn guard(sb: &Sandbox, flags: &[&str], command: &[String]) -> Proc {
    let mut p = sb
        .tool("ccci-guard")
        .args(flags)
        .arg("--")
        .args(command)
        .spawn();
    p.expect_stdout("ready");
    p
}

fn parse_pid(line: &str, prefix: &str) -> u32 {
    line.trim()
        .strip_prefix(prefix)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

fn parent_killed_command_gets_the_signal(flags: &[&str], sig: &str) {
    let sb = sandbox();
    let command = harness(&sb, sig, "exit 0").join(" ");
    // A real parent: the shell names itself with --parent $$, starts the
    // guarded command in the background and waits, as a CI job script does.
    let mut parent = sb
        .sh(&format!(
            "ccci-guard --parent $$ {} -- {command} & echo guard=$!; wait",
            flags.join(" ")
        ))
        .spawn();
    // The two lines may come in either order; waiting for one line
    // discards others, so wait for "ready" and then find "guard=".
    parent.expect_stdout("ready");
    wait_until("the parent printed the guard's pid", || {
        parent.stdout_so_far().contains("guard=")
    });
    let out = parent.stdout_so_far();
    let guard = parse_pid(
        out.lines().find(|l| l.starts_with("guard=")).unwrap(),
        "guard=",
    );
    assert_eq!(sb.try_lock(D), 75, "the harness runs under the lock");

    parent.signal(libc::SIGKILL);
    assert_eq!(teardown_record(&sb), format!("{sig} held=75\n"));
    wait_until("the guarded command has ended", || !alive(guard));
    assert!(
        !sb.lockfile(D).exists(),
        "the harness exited normally after its teardown, so ccci-lock removed the lockfile"
    );
    assert_eq!(sb.try_lock(D), 0, "the lock was not released");
    parent.wait().expect_code(137);
}

#[test]
fn case_13_parent_sigkilled_command_gets_term_tears_down_and_releases_the_lock() {
    parent_killed_command_gets_the_signal(&[], "TERM");
}

#[test]
fn case_13_under_the_supervisor_too() {
    // The supervisor gets the parent-death signal and passes it to the group.
    parent_killed_command_gets_the_signal(&["--supervise"], "TERM");
}

#[test]
fn case_13_with_another_parent_death_signal() {
    parent_killed_command_gets_the_signal(&["--pdeathsig", "SIGUSR1"], "USR1");
}

#[test]
fn case_14_an_already_orphaned_guard_refuses_to_run() {
    let sb = sandbox();
    let fifo = sb.path("go");
    mkfifo(&fifo);
    // The subshell names the parent shell ($$ stays the parent's pid in a
    // subshell), waits until told, then execs ccci-guard. The parent shell
    // exits at once, so ccci-guard starts orphaned.
    let out = sb
        .sh(
            "(read _ < go; exec ccci-guard --parent $$ -- touch ran 2> refusal) \
             >/dev/null 2>&1 & echo parent=$$ sub=$!",
        )
        .run();
    out.expect_code(0);
    let (parent, sub) = out.stdout.trim().split_once(' ').unwrap();
    let parent = parse_pid(parent, "parent=");
    let sub = parse_pid(sub, "sub=");
    wait_until(
        "the subshell is orphaned (adopted by another process)",
        || stat_field(sub, 4).is_some_and(|ppid| ppid != parent.to_string()),
    );

    std::fs::write(&fifo, "go\n").unwrap();
    wait_until("ccci-guard has ended", || !alive(sub));
    let refusal = std::fs::read_to_string(sb.path("refusal")).unwrap();
    assert!(
        refusal.starts_with(&format!(
            "ccci-guard: refusing to run: parent {parent} has exited"
        )),
        "{refusal}"
    );
    assert!(!sb.path("ran").exists(), "COMMAND ran without its parent");
}

#[test]
fn case_14_a_parent_that_has_exited_is_status_125_whatever_the_mode() {
    let sb = sandbox();
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    for flags in [&[][..], &["--supervise"], &["--pdeathsig", "none"]] {
        sb.tool("ccci-guard")
            .args(["--parent", &dead.to_string()])
            .args(flags)
            .args(["--", "touch", "ran"])
            .run()
            .expect_code(125)
            .expect_stderr(&format!(
                "ccci-guard: refusing to run: parent {dead} has exited"
            ));
    }
    assert!(!sb.path("ran").exists(), "COMMAND ran without its parent");
}

#[test]
fn the_parent_it_started_with_or_the_one_named_is_accepted() {
    let sb = sandbox();
    sb.tool("ccci-guard")
        .args(["--", "sh", "-c", "exit 3"])
        .run()
        .expect_code(3);
    sb.sh("ccci-guard --parent $$ -- sh -c 'exit 4'; echo status=$?")
        .run()
        .expect_stdout("status=4");
    // An exec'd guard is no longer the shell's child: --parent $$ names
    // ccci-guard itself, and it says so.
    sb.sh("exec ccci-guard --parent $$ -- touch ran")
        .run()
        .expect_code(125)
        .expect_stderr("is ccci-guard itself");
    assert!(!sb.path("ran").exists());
}

fn deadline_tears_down_with_142(flags: &[&str], then: &str) {
    let sb = sandbox();
    let command = harness(&sb, "ALRM", then);
    let started = Instant::now();
    let p = guard(&sb, &[flags, &["--deadline", "2s"]].concat(), &command);
    let out = p.wait();
    out.expect_code(142);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the deadline fired early"
    );
    assert_eq!(teardown_record(&sb), "ALRM held=75\n");
    assert_eq!(sb.try_lock(D), 0, "the lock was not released");
}

#[test]
fn case_15_a_2s_deadline_tears_down_exits_142_and_releases_the_lock() {
    // Exec mode: the harness owns its status and reports the deadline.
    deadline_tears_down_with_142(&[], "exit 142");
}

#[test]
fn case_15_under_the_supervisor_the_status_is_142_whatever_command_says() {
    deadline_tears_down_with_142(&["--supervise"], "exit 0");
}

#[test]
fn case_16_sigterm_tears_down_exits_143_and_releases_the_lock() {
    for flags in MODES {
        let sb = sandbox();
        // The teardown ends by re-raising TERM, as a shell should.
        let command = harness(&sb, "TERM", "trap - TERM; kill -TERM $$");
        let p = guard(&sb, flags, &command);
        p.signal(libc::SIGTERM);
        p.wait().expect_code(143);
        assert_eq!(teardown_record(&sb), "TERM held=75\n", "{flags:?}");
        assert!(
            sb.lockfile(D).exists(),
            "a harness killed by a signal leaves the lockfile for the janitor"
        );
        assert_eq!(sb.try_lock(D), 0, "the lock was not released ({flags:?})");
    }
}

#[test]
fn exec_mode_keeps_the_pid_and_supervise_runs_a_group_of_its_own() {
    let sb = sandbox();
    let report = "echo pid=$$ ppid=$PPID pgid=$(cut -d' ' -f5 /proc/$$/stat)";
    let p = sb
        .tool("ccci-guard")
        .args(["--", "sh", "-c", report])
        .spawn();
    let guard = p.pid();
    let out = p.wait();
    out.expect_code(0);
    assert!(
        out.stdout
            .starts_with(&format!("pid={guard} ppid={} ", std::process::id())),
        "{out}"
    );

    let p = sb
        .tool("ccci-guard")
        .args(["--supervise", "--", "sh", "-c", report])
        .spawn();
    let guard = p.pid();
    let out = p.wait();
    out.expect_code(0);
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    let pid = parse_pid(fields[0], "pid=");
    assert_ne!(pid, guard, "{out}");
    assert_eq!(fields[1], format!("ppid={guard}"), "{out}");
    assert_eq!(fields[2], format!("pgid={pid}"), "{out}");
}

#[test]
fn signals_ignored_or_blocked_by_the_caller_are_reset_for_command() {
    for flags in MODES {
        let sb = sandbox();
        // The caller ignores TERM, INT, ALRM and CHLD and blocks USR1, TERM
        // and ALRM, as a careless CI runner might.
        let out = unsafe {
            sb.tool("ccci-guard")
                .args(flags)
                .args(["--", "cat", "/proc/self/status"])
                .pre_exec(|| {
                    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGALRM, libc::SIGCHLD] {
                        libc::signal(sig, libc::SIG_IGN);
                    }
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    for sig in [libc::SIGUSR1, libc::SIGTERM, libc::SIGALRM] {
                        libc::sigaddset(&mut set, sig);
                    }
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                })
        }
        .run();
        out.expect_code(0);
        assert_clean_signal_state(&out);
    }
}

#[test]
fn a_deadline_given_to_a_caller_that_ignored_alrm_still_ends_command() {
    for flags in MODES {
        let sb = sandbox();
        let out = unsafe {
            sb.tool("ccci-guard")
                .args(flags)
                .args(["--deadline", "300ms", "--", "sleep", "1000"])
                .pre_exec(|| {
                    libc::signal(libc::SIGALRM, libc::SIG_IGN);
                    Ok(())
                })
        }
        .run();
        out.expect_code(142);
    }
}

#[test]
fn an_earlier_alarm_is_never_postponed_by_a_later_deadline() {
    let sb = sandbox();
    // The caller's alarm is due in 1s; --deadline 1h must not replace it.
    let started = Instant::now();
    let out = unsafe {
        sb.tool("ccci-guard")
            .args(["--deadline", "1h", "--", "sleep", "1000"])
            .pre_exec(|| {
                libc::alarm(1);
                Ok(())
            })
    }
    .run();
    out.expect_code(142);
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A sooner deadline replaces a later alarm.
    let out = unsafe {
        sb.tool("ccci-guard")
            .args(["--deadline", "200ms", "--", "sleep", "1000"])
            .pre_exec(|| {
                libc::alarm(3600);
                Ok(())
            })
    }
    .run();
    out.expect_code(142);
}

#[test]
fn supervise_kills_a_grandchild_that_ignores_term_and_alrm_after_kill_after() {
    let sb = sandbox();
    // The grandchild ignores TERM and ALRM; COMMAND ignores TERM and only
    // reports ALRM, so the deadline ends neither and only the kill timer
    // ends both.
    let mut p = sb
        .tool("ccci-guard")
        .args(["--deadline", "300ms", "--kill-after", "300ms", "--"])
        .args(["sh", "-c"])
        .arg(
            "trap '' TERM ALRM; sleep 1000 >/dev/null 2>&1 & \
             trap 'echo command-got-ALRM' ALRM; echo group=$$ grandchild=$!; \
             while :; do wait; done",
        )
        .spawn();
    let line = p.expect_stdout("grandchild=");
    let (group, grandchild) = line.split_once(' ').unwrap();
    let grandchild = parse_pid(grandchild, "grandchild=");
    assert_eq!(
        stat_field(grandchild, 5),
        Some(parse_pid(group, "group=").to_string()),
        "the grandchild is in COMMAND's process group"
    );
    p.signal(libc::SIGTERM);
    p.expect_stdout("command-got-ALRM");
    p.wait().expect_code(142);
    wait_until("the grandchild is dead", || !alive(grandchild));
}

#[test]
fn supervise_forwards_signals_to_the_group_and_passes_the_status_through() {
    let sb = sandbox();
    for (name, signo) in [
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("ALRM", libc::SIGALRM),
    ] {
        let script = format!(
            "trap 'echo got-{name}; kill $!; read _; exit 7' {name}; echo ready; \
             sleep 1000 >/dev/null 2>&1 & wait"
        );
        let mut p = sb
            .tool("ccci-guard")
            .args(["--supervise", "--", "sh", "-c", &script])
            .piped_stdin()
            .spawn();
        p.expect_stdout("ready");
        p.signal(signo);
        p.expect_stdout(&format!("got-{name}"));
        assert!(
            !p.has_exited(),
            "the supervisor ended before COMMAND ({name})\n{}",
            p.report()
        );
        p.send("");
        p.wait().expect_code(7);
    }

    // The whole group gets it: a grandchild too. Untrapped, COMMAND dies of
    // TERM and the status says so.
    let mut p = sb
        .tool("ccci-guard")
        .args(["--supervise", "--", "sh", "-c"])
        .arg(
            "sh -c 'trap \"echo grandchild-got-TERM; exit 0\" TERM; echo ready; \
             sleep 1000 >/dev/null 2>&1 & wait' & wait",
        )
        .spawn();
    p.expect_stdout("ready");
    p.signal(libc::SIGTERM);
    p.expect_stdout("grandchild-got-TERM");
    p.wait().expect_code(143);
}

#[test]
fn supervise_command_gets_its_own_parent_death_signal() {
    let sb = sandbox();
    let command = harness(&sb, "TERM", "exit 0");
    let p = guard(&sb, &["--supervise"], &command);
    p.signal(libc::SIGKILL);
    p.wait().expect_code(137);
    assert_eq!(teardown_record(&sb), "TERM held=75\n");
    wait_until("ccci-lock released the lock", || sb.try_lock(D) == 0);
}

#[test]
fn command_not_found_or_not_executable_is_127_or_126() {
    let sb = sandbox();
    let not_exec = sb.path("not-exec");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    for flags in MODES {
        sb.tool("ccci-guard")
            .args(flags)
            .args(["--", "/nonexistent/cmd"])
            .run()
            .expect_code(127)
            .expect_stderr("ccci-guard: cannot run '/nonexistent/cmd'");
        sb.tool("ccci-guard")
            .args(flags)
            .arg("--")
            .arg(&not_exec)
            .run()
            .expect_code(126);
    }
}

#[test]
fn every_bad_input_is_status_2_quoted_and_runs_nothing() {
    let sb = sandbox();
    let bad: [&[&str]; 12] = [
        &["--pdeathsig", "FOO"],
        &["--pdeathsig", "-15"],
        &["--pdeathsig", "0"],
        &["--pdeathsig", "99"],
        &["--deadline", "0"],
        &["--deadline", "-1s"],
        &["--deadline", "5x"],
        &["--deadline", "1s", "--kill-after", "0"],
        &["--parent", "0"],
        &["--parent", "abc"],
        &["--parent", "-5"],
        &["--parent", "99999999999"],
    ];
    for flags in bad {
        let out = sb
            .tool("ccci-guard")
            .args(flags)
            .args(["--", "touch", "ran"])
            .run();
        let value = flags.last().unwrap();
        out.expect_code(2).expect_stderr(&format!("'{value}'"));
        assert!(out.stderr.starts_with("ccci-guard: "), "{out}");
    }
    sb.tool("ccci-guard")
        .args(["--kill-after", "1s", "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("--deadline");
    sb.tool("ccci-guard")
        .args(["touch", "ran"])
        .run()
        .expect_code(2);
    sb.tool("ccci-guard").run().expect_code(2);
    assert!(!sb.path("ran").exists(), "a bad input ran COMMAND");
}

/// `$?` alone cannot tell "ended by signal N" from "exited 128+N"; a
/// wrapping tool can, and SPEC §1 wants the signal.
fn ended_by(out: &ccci_tests::Output, sig: libc::c_int) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(sig),
        "expected an end by signal {sig}\n{out}"
    );
    assert!(!out.status.core_dumped(), "dumped core\n{out}");
}

#[test]
fn supervise_ends_by_the_signal_that_killed_command_without_core() {
    let sb = sandbox();
    for (name, sig) in [
        ("KILL", libc::SIGKILL),
        ("TERM", libc::SIGTERM),
        ("QUIT", libc::SIGQUIT),
        ("SEGV", libc::SIGSEGV),
    ] {
        let script = format!("kill -{name} $$");
        let out = sb
            .tool("ccci-guard")
            .args(["--supervise", "--", "sh", "-c", &script])
            .run();
        out.expect_code(128 + sig);
        ended_by(&out, sig);
    }
    // A command that exits 143 by itself: an exit status, passed through.
    let out = sb
        .tool("ccci-guard")
        .args(["--supervise", "--", "sh", "-c", "exit 143"])
        .run();
    out.expect_code(143);
    assert_eq!(out.status.code(), Some(143), "{out}");
    assert!(
        std::fs::read_dir(sb.root()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("core")),
        "a core file was written\n{}",
        sb.listing()
    );
}

#[test]
fn supervise_deadline_ends_the_supervisor_by_sigalrm() {
    let sb = sandbox();
    // COMMAND catches ALRM and exits 0: the deadline still fired.
    let out = sb
        .tool("ccci-guard")
        .args(["--supervise", "--deadline", "500ms", "--", "sh", "-c"])
        .arg("trap 'exit 0' ALRM; sleep 1000 >/dev/null 2>&1 & wait")
        .run();
    out.expect_code(142);
    ended_by(&out, libc::SIGALRM);
}

#[test]
fn case_22_a_supervised_deadline_under_ccci_lock_keeps_the_lockfile() {
    let sb = sandbox();
    let out = sb
        .tool("ccci-lock")
        .args([D, "--", "ccci-guard", "--supervise", "--deadline", "1s"])
        .args(["--", "sleep", "30"])
        .run();
    out.expect_code(142);
    assert!(
        sb.lockfile(D).exists(),
        "the deploy the deadline killed must stay a claim for the janitor\n{out}\n{}",
        sb.listing()
    );
    assert_eq!(sb.try_lock(D), 0, "the lock was not released");
}

#[test]
fn a_deadline_below_a_nanosecond_fires_at_once_and_zero_or_overflow_is_refused() {
    let sb = sandbox();
    for flags in MODES {
        // coreutils' timeout tests: a tiny timeout fires, it is not "none".
        let out = sb
            .tool("ccci-guard")
            .args(flags)
            .args(["--deadline", "0.0000000001", "--", "sleep", "30"])
            .run();
        out.expect_code(142);
    }
    for (value, says) in [
        ("0", "must be more than 0"),
        ("0.000s", "must be more than 0"),
        ("600000d", "too long"),
        ("18446744074", "too long"),
    ] {
        sb.tool("ccci-guard")
            .args(["--deadline", value, "--", "touch", "ran"])
            .run()
            .expect_code(2)
            .expect_stderr(says)
            .expect_stderr(&format!("'{value}'"));
        assert!(!sb.path("ran").exists());
    }
}

#[test]
fn a_non_utf8_argument_is_named_by_its_flag_and_quoted() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sb = sandbox();
    for (flag, value, shown) in [
        ("--deadline", &b"5\xffs"[..], r"$'5\xffs'"),
        ("--parent", b"1\xfe", r"$'1\xfe'"),
        ("--pdeathsig", b"TERM\r", r"$'TERM\r'"),
    ] {
        let out = sb
            .tool("ccci-guard")
            .arg(flag)
            .arg(OsStr::from_bytes(value))
            .args(["--", "touch", "ran"])
            .run();
        out.expect_code(2);
        if std::str::from_utf8(value).is_err() {
            out.expect_stderr(&format!(
                "ccci-guard: invalid value {shown} for {flag}: not valid UTF-8"
            ));
        }
        assert!(!sb.path("ran").exists());
    }
}
