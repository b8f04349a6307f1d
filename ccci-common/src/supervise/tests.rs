//! Unit tests of [`super`]: starting, waiting, forwarding, timers, losses,
//! and the execvp-like start of a COMMAND.

use std::io;
use std::time::{Duration, Instant};

use super::supervised::RECHECK;
use super::*;
use crate::exit::Ended;

fn watch() -> Watch {
    Watch {
        forward: vec![libc::SIGUSR1],
        own_group: true,
        deadline: None,
        deadline_signal: libc::SIGALRM,
        kill_after: None,
        death_signal: Some(libc::SIGTERM),
        whole_tree: false,
    }
}

#[test]
fn passes_the_exit_status_through() {
    let out = spawn(Program::new("sh").args(["-c", "exit 7"]), watch())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(!out.deadline_fired);
    assert_eq!(out.received, None);
}

#[test]
fn reports_a_forwarded_signal() {
    // USR1 is raised in this thread after the spawn, while it is
    // blocked, so the wait loop takes it and passes it to the group.
    let child = spawn(Program::new("sleep").arg("1000"), watch()).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR1).unwrap();
    let out = child.wait().unwrap();
    assert_eq!(out.received, Some(libc::SIGUSR1));
    assert_eq!(
        crate::exit::from_wait_status(out.status),
        crate::exit::SIGNALED + libc::SIGUSR1 as u8
    );
}

#[test]
fn deadline_then_kill_after() {
    let w = Watch {
        deadline: Some(Duration::from_millis(50)),
        kill_after: Some(Duration::from_millis(50)),
        ..watch()
    };
    // The child ignores ALRM, so only the kill timer ends it.
    let out = spawn(
        Program::new("sh").args(["-c", "trap '' ALRM; while :; do :; done"]),
        w,
    )
    .unwrap()
    .wait()
    .unwrap();
    assert!(out.deadline_fired && out.killed);
    assert_eq!(crate::exit::from_wait_status(out.status), 137);
}

#[test]
fn commands_from_argv_and_the_126_127_mapping() {
    assert!(command(&[]).is_err());
    let mut cmd = command(&["sh".into(), "-c".into(), "exit 4".into()]).unwrap();
    let done = run(&mut cmd, watch()).unwrap();
    assert_eq!(done.ended(), Ended::Code(4));
    let mut missing = command(&["/nonexistent/ccci".into()]).unwrap();
    assert_eq!(
        run(&mut missing, watch()).unwrap().ended(),
        Ended::Code(127)
    );
    let mut dir = command(&["/".into()]).unwrap();
    assert_eq!(run(&mut dir, watch()).unwrap().ended(), Ended::Code(126));
    let mut killed = command(&["sh".into(), "-c".into(), "kill -KILL $$".into()]).unwrap();
    assert_eq!(
        run(&mut killed, watch()).unwrap().ended(),
        Ended::Signal(libc::SIGKILL)
    );
}

#[test]
fn a_loss_reported_by_another_thread_stops_the_child_at_once() {
    let loss = Loss::new().unwrap();
    let notifier = loss.notifier();
    let child = spawn(Program::new("sleep").arg("1000"), watch()).unwrap();
    let started = Instant::now();
    let reporter = std::thread::spawn(move || notifier.notify());
    let out = child
        .wait_or_lose(Some((&loss, Duration::from_secs(600))))
        .unwrap();
    reporter.join().unwrap();
    assert!(out.lost && !out.killed);
    assert_eq!(crate::exit::from_wait_status(out.status), 143);
    // The wake-up is the signal, not the once-a-second recheck.
    assert!(started.elapsed() < RECHECK, "{:?}", started.elapsed());
}

#[test]
fn a_loss_before_the_child_starts_is_not_missed() {
    let loss = Loss::new().unwrap();
    loss.notifier().notify();
    let child = spawn(Program::new("sleep").arg("1000"), watch()).unwrap();
    let out = child
        .wait_or_lose(Some((&loss, Duration::from_secs(600))))
        .unwrap();
    assert!(out.lost);
    assert_eq!(crate::exit::from_wait_status(out.status), 143);
}

#[test]
fn a_child_that_ignores_term_after_a_loss_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let loss = Loss::new().unwrap();
    let notifier = loss.notifier();
    let child = spawn(
        Program::new("sh")
            .args(["-c", "trap '' TERM; touch \"$0\"; while :; do :; done"])
            .arg(&ready),
        watch(),
    )
    .unwrap();
    let reporter = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while !ready.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        notifier.notify();
    });
    let out = child
        .wait_or_lose(Some((&loss, Duration::from_millis(100))))
        .unwrap();
    reporter.join().unwrap();
    assert!(out.lost && out.killed);
    assert_eq!(crate::exit::from_wait_status(out.status), 137);
}

#[test]
fn spawn_errors_keep_their_kind() {
    let e = spawn(&mut Program::new("/nonexistent/ccci"), watch()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

/// Runs `cmd` (stdout to a file) under `watch()`; its exit code and
/// output, or the spawn error.
fn output(mut cmd: Program) -> io::Result<(i32, String)> {
    let out = tempfile::tempfile().unwrap();
    cmd.stdout(out.try_clone().unwrap().into());
    let status = spawn(&mut cmd, watch())?.wait().unwrap().status;
    let mut text = String::new();
    use std::io::{Read, Seek};
    let mut out = out;
    out.rewind().unwrap();
    out.read_to_string(&mut text).unwrap();
    Ok((status.code().unwrap_or(-1), text))
}

fn write_file(path: &std::path::Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn path_is_searched_as_execvp_searches_it() {
    let dir = tempfile::tempdir().unwrap();
    let (denied, found) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&denied).unwrap();
    std::fs::create_dir(&found).unwrap();
    // Not executable in the first directory: skipped, not fatal.
    write_file(&denied.join("ccci-t"), "#!/bin/sh\necho wrong\n", 0o644);
    write_file(&found.join("ccci-t"), "#!/bin/sh\necho right\n", 0o755);
    let path = format!("/nonexistent:{}:{}", denied.display(), found.display());
    let mut cmd = Program::new("ccci-t");
    cmd.envs([("PATH", &path)]);
    assert_eq!(output(cmd).unwrap(), (0, "right\n".into()));
    // Only a file that cannot be executed: "not executable", not "not found".
    let mut cmd = Program::new("ccci-t");
    cmd.envs([("PATH", denied.as_os_str())]);
    let e = output(cmd).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    let mut cmd = Program::new("ccci-t");
    cmd.envs([("PATH", "/nonexistent")]);
    assert_eq!(output(cmd).unwrap_err().kind(), io::ErrorKind::NotFound);
}

#[test]
fn a_script_without_interpreter_line_runs_in_the_shell() {
    // As execvp(3) runs it (flock(1) and timeout(1) use execvp).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s");
    write_file(&script, "echo \"$0 $1 $2\"\n", 0o755);
    let mut cmd = Program::new(&script);
    cmd.args(["x", "y z"]);
    let expected = format!("{} x y z\n", script.display());
    assert_eq!(output(cmd).unwrap(), (0, expected));
}

#[test]
fn env_is_ours_with_the_given_variables_set_once() {
    // The environment exactly as execve gave it, not as a shell
    // re-exports it.
    let mut cmd = Program::new("cat");
    cmd.arg("/proc/self/environ").envs([
        ("CCCI_TEST_SPAWN", "first"),
        ("CCCI_TEST_SPAWN", "second"),
        ("HOME", "/ccci-home"),
    ]);
    let (code, env) = output(cmd).unwrap();
    assert_eq!(code, 0);
    let lines =
        |name: &str| -> Vec<&str> { env.split('\0').filter(|l| l.starts_with(name)).collect() };
    assert_eq!(lines("CCCI_TEST_SPAWN="), ["CCCI_TEST_SPAWN=second"]);
    assert_eq!(lines("HOME="), ["HOME=/ccci-home"]);
    if let Some(path) = std::env::var_os("PATH") {
        let inherited = format!("PATH={}", path.to_string_lossy());
        assert_eq!(lines("PATH="), [inherited.as_str()]);
    }
}

#[test]
fn stdin_and_stdout_are_the_given_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "hello\n").unwrap();
    let mut cmd = Program::new("sh");
    cmd.args(["-c", "read x; echo \"got $x\""])
        .stdin(std::fs::File::open(&input).unwrap().into());
    assert_eq!(output(cmd).unwrap(), (0, "got hello\n".into()));
}

#[test]
fn a_nul_byte_is_refused_before_anything_starts() {
    let mut cmd = Program::new("true");
    cmd.arg("a\0b");
    let e = output(cmd).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let mut cmd = Program::new("true");
    cmd.envs([("CCCI_TEST_NUL", "a\0b")]);
    assert_eq!(output(cmd).unwrap_err().kind(), io::ErrorKind::InvalidInput);
}
