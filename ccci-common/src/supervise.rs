//! Running a child and staying its parent: signal forwarding, a deadline,
//! a kill timer, and a status that is always the child's own.
//!
//! The pattern is coreutils timeout(1)'s: the signals we care about are
//! blocked *before* the child is started, so none can arrive between its
//! start and the wait loop and be lost; the child unblocks them just before
//! it execs (see [`crate::sys::spawn`], which starts it as posix_spawn does,
//! without copying our memory). The loop takes one pending signal at a
//! time with `sigtimedwait`, so no handler runs and nothing is async.
//!
//! Guarantees:
//! - A signal is only ever sent to the child's pid while the child is not yet
//!   reaped (a zombie's pid cannot be reused), and to its process group only
//!   while that group can still exist; `ESRCH` (already gone) is not an error.
//! - The child is always reaped before [`Supervised::wait`] returns.
//! - When the child shares our process group, `SIGINT` and `SIGQUIT` from the
//!   terminal (sent by the kernel to the whole foreground group) reached it
//!   already and are not sent a second time.
//! - A [`Loss`] (what the child runs under, such as an etcd lock lease, was
//!   lost) stops the child: SIGTERM at once, SIGKILL after a grace. It is
//!   noticed without polling and without a window: the loss sets a flag,
//!   then sends [`sys::loss_signal`] to the thread that made the [`Loss`],
//!   which blocked that signal when it made it, before anything that can be
//!   lost existed. A loss before the child starts is therefore either seen
//!   in the flag, which the loop reads before its first wait, or pending as
//!   the signal, which its first wait takes.
//!
//! # Starting a COMMAND, the same way in every tool
//!
//! [`command`] turns the `-- COMMAND [ARG...]` of a command line into a
//! [`Program`]; [`run`] starts it under a [`Watch`] and waits, and when it
//! cannot be started says `cannot run 'prog': why` (quoted visibly) and
//! gives 126 or 127 (SPEC §1); [`exec`] does the same for a tool that
//! replaces itself with COMMAND. The child always gets an empty signal mask
//! and default dispositions ([`crate::sys::spawn`]); [`FORWARDED`]
//! is the one list of signals a waiting tool passes on.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::UsageError;
use crate::exit::{self, Ended};
use crate::sys;

/// The signals a tool that waits for a COMMAND passes on to it: TERM, INT,
/// HUP, QUIT, ALRM, USR1 and USR2 (SPEC §2, §3, §4). ALRM is among them so
/// that an alarm armed before the tool was exec'd (an outer deadline)
/// reaches COMMAND instead of killing the tool.
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// A COMMAND to start: its argv, what it gets added to our environment,
/// and where its stdin and stdout go (by default: ours).
#[derive(Debug)]
pub struct Program {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
}

impl Program {
    /// `program` with no arguments.
    pub fn new(program: impl Into<OsString>) -> Program {
        Program {
            argv: vec![program.into()],
            // Set again, empty, as this process got them (cli::dropped_empty).
            env: crate::cli::dropped_empty()
                .iter()
                .map(|k| (k.clone(), OsString::new()))
                .collect(),
            stdin: None,
            stdout: None,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.argv.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(&mut self, args: I) -> &mut Self {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets environment variables for the child (on top of ours).
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The child reads from `fd`.
    pub fn stdin(&mut self, fd: OwnedFd) -> &mut Self {
        self.stdin = Some(fd);
        self
    }

    /// The child writes its stdout to `fd`.
    pub fn stdout(&mut self, fd: OwnedFd) -> &mut Self {
        self.stdout = Some(fd);
        self
    }

    /// The program, as given.
    pub fn get_program(&self) -> &OsStr {
        &self.argv[0]
    }

    /// The same as a std [`Command`], for [`exec`].
    fn command(&self) -> io::Result<Command> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).envs(self.env.iter().cloned());
        if let Some(fd) = &self.stdin {
            cmd.stdin(fd.try_clone()?);
        }
        if let Some(fd) = &self.stdout {
            cmd.stdout(fd.try_clone()?);
        }
        Ok(cmd)
    }
}

/// The `COMMAND [ARG...]` of a command line as a [`Program`]; an empty one
/// is a usage error.
pub fn command(argv: &[OsString]) -> Result<Program, UsageError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| UsageError("no COMMAND given".into()))?;
    let mut cmd = Program::new(program);
    cmd.args(args);
    Ok(cmd)
}

/// Says that `cmd` could not be started (its program quoted visibly) and
/// returns the status for it: 127 when not found, else 126.
pub fn cannot_start(cmd: &Program, e: &io::Error) -> u8 {
    crate::say!("cannot run {}: {e}", crate::cli::quote(cmd.get_program()));
    exit::from_spawn_error(e)
}

/// How a started COMMAND finished.
#[derive(Debug, Clone, Copy)]
pub enum Finished {
    /// It ran and ended.
    Ran(Outcome),
    /// It could not be started (already reported): 126 or 127.
    NotStarted(u8),
}

impl Finished {
    /// How a tool that only passes COMMAND's ending on ends: with its
    /// status, by its signal, or 126/127.
    pub fn ended(&self) -> Ended {
        match self {
            Finished::Ran(outcome) => outcome.ended(),
            Finished::NotStarted(code) => Ended::Code(*code),
        }
    }
}

/// Starts `cmd` under `watch` and waits for it ([`spawn`], then
/// [`Supervised::wait`]); a command that cannot be started is reported.
pub fn run(cmd: &mut Program, watch: Watch) -> io::Result<Finished> {
    match spawn(cmd, watch) {
        Ok(child) => Ok(Finished::Ran(child.wait()?)),
        Err(e) => Ok(Finished::NotStarted(cannot_start(cmd, &e))),
    }
}

/// Replaces this process with `cmd`; returns only when that failed, with
/// the status to exit with (126 or 127), after reporting it. The caller
/// resets the signal state first ([`sys::reset_signals`]).
pub fn exec(cmd: &mut Program) -> u8 {
    use std::os::unix::process::CommandExt;
    let e = match cmd.command() {
        Ok(mut command) => command.exec(),
        Err(e) => e,
    };
    cannot_start(cmd, &e)
}

/// The longest we wait for a signal before checking the child anyway. In a
/// process with other threads (a test harness, say) the kernel may hand
/// SIGCHLD to a thread that does not block it, and then it never reaches us.
const RECHECK: Duration = Duration::from_secs(1);

/// What to do while the child runs.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Signals received by this process that are passed on to the child.
    pub forward: Vec<libc::c_int>,
    /// Start the child in a process group of its own and signal the whole
    /// group; otherwise the child shares our group and only its pid is
    /// signalled.
    pub own_group: bool,
    /// After this long, send `deadline_signal`.
    pub deadline: Option<Duration>,
    /// The signal sent at the deadline.
    pub deadline_signal: libc::c_int,
    /// This long after the deadline, send SIGKILL.
    pub kill_after: Option<Duration>,
    /// The child's parent-death signal.
    pub death_signal: Option<libc::c_int>,
    /// Cover the child's whole tree: this process becomes a child
    /// subreaper before the child starts; every signal sent goes to every
    /// descendant ([`crate::tree`]); and the wait ends only when the child
    /// and every descendant have exited (the status is the child's). Only
    /// for a process whose every child is the one started here (a tool's
    /// main thread, never a test harness).
    pub whole_tree: bool,
}

/// How the child ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Its wait status.
    pub status: ExitStatus,
    /// Whether the deadline fired before it ended.
    pub deadline_fired: bool,
    /// Whether it (or its group) was sent SIGKILL by the kill timer.
    pub killed: bool,
    /// The last of `Watch::forward` that this process received while the
    /// child ran, if any: a caller that was asked to stop can stop too.
    pub received: Option<libc::c_int>,
    /// Whether the [`Loss`] given to [`Supervised::wait_or_lose`] was
    /// reported, so the child was told to stop.
    pub lost: bool,
}

/// Something a child runs under that another thread may find lost while it
/// runs (a lock whose lease expired). Made on the thread that will wait for
/// the child, before what can be lost is acquired; see the module doc.
#[derive(Debug)]
pub struct Loss {
    lost: Arc<AtomicBool>,
    wake: sys::ThreadSignal,
}

/// Reports a [`Loss`]; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct LossNotifier {
    lost: Arc<AtomicBool>,
    wake: sys::ThreadSignaller,
}

impl Loss {
    /// Blocks [`sys::loss_signal`] in this thread (for good: a stray one
    /// left pending must never kill the process) and makes the flag.
    pub fn new() -> io::Result<Loss> {
        sys::block_signals(&[sys::loss_signal()])?;
        Ok(Loss {
            lost: Arc::new(AtomicBool::new(false)),
            wake: sys::ThreadSignal::new(sys::loss_signal()),
        })
    }

    /// A notifier for whoever can find the loss.
    pub fn notifier(&self) -> LossNotifier {
        LossNotifier {
            lost: Arc::clone(&self.lost),
            wake: self.wake.signaller(),
        }
    }

    /// Whether a loss was reported.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl LossNotifier {
    /// Reports the loss: sets the flag, then wakes the waiting thread.
    /// Idempotent; after the [`Loss`] is dropped it only sets the flag.
    pub fn notify(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.wake.send();
    }
}

impl Outcome {
    /// How the child ended: its exit status, or the signal that killed it.
    pub fn ended(&self) -> Ended {
        Ended::from_wait_status(self.status)
    }
}

/// A running child under supervision.
#[derive(Debug)]
pub struct Supervised {
    pid: libc::pid_t,
    watch: Watch,
    old_mask: libc::sigset_t,
    started: Instant,
    /// With `whole_tree`: the descendants, and whom each signal reached.
    tree: std::cell::RefCell<crate::tree::Tree>,
}

fn blocked_set(watch: &Watch) -> Vec<libc::c_int> {
    let mut set = watch.forward.clone();
    set.push(libc::SIGCHLD);
    set
}

/// Starts `cmd` under `watch` ([`sys::spawn`]: a vfork-style clone, as
/// posix_spawn starts a program). On error (the command could not be
/// started) the signal mask is restored and the error is the spawn error,
/// whose `kind()` tells "not found" from "not executable".
pub fn spawn(cmd: &mut Program, watch: Watch) -> io::Result<Supervised> {
    // A SIGCHLD we inherited as ignored would make the kernel reap the child
    // and lose its status.
    sys::default_disposition(libc::SIGCHLD);
    let mut plan = sys::SpawnPlan::new(&cmd.argv, &cmd.env)?;
    if let Some(fd) = &cmd.stdin {
        plan.stdin(fd.as_fd());
    }
    if let Some(fd) = &cmd.stdout {
        plan.stdout(fd.as_fd());
    }
    if watch.whole_tree {
        sys::set_child_subreaper()?;
    }
    plan.own_group(watch.own_group)
        .death_signal(watch.death_signal);
    let old_mask = sys::block_signals(&blocked_set(&watch))?;
    match sys::spawn(&plan) {
        Ok(pid) => Ok(Supervised {
            pid,
            watch,
            old_mask,
            started: Instant::now(),
            tree: std::cell::RefCell::new(crate::tree::Tree::of_this_process()),
        }),
        Err(e) => {
            sys::restore_mask(&old_mask);
            Err(e)
        }
    }
}

impl Supervised {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Sends `sig` to the child (its group, with `own_group`), while it is
    /// not reaped; with `whole_tree`, to every descendant instead, except
    /// those in `except_group` (the terminal signalled them already).
    ///
    /// With `whole_tree` each process gets a signal once, however often it
    /// is sent ([`crate::tree::Tree`]): the child and every member of its
    /// group are descendants, so the walk reaches them all, and no group
    /// kill sends it a second time to one that had it already.
    fn send_to(&self, sig: libc::c_int, child_alive: bool, except_group: Option<u32>) {
        if !self.watch.whole_tree {
            if child_alive && (self.watch.own_group || except_group.is_none()) {
                let target = if self.watch.own_group {
                    -self.pid
                } else {
                    self.pid
                };
                let signal = nix::sys::signal::Signal::try_from(sig).ok();
                // ESRCH: the child or group is gone already; nothing to do.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), signal);
            }
            return;
        }
        if let Err(e) = self.tree.borrow_mut().signal(sig, except_group) {
            crate::say!("cannot signal every process COMMAND started: {e}");
        }
    }

    fn send(&self, sig: libc::c_int) {
        self.send_to(sig, true, None)
    }

    /// Sends `sig` now, as a forwarded signal would be.
    pub fn signal(&self, sig: libc::c_int) {
        self.send(sig)
    }

    /// Forwards signals and runs the timers until the child ends; reaps it.
    pub fn wait(self) -> io::Result<Outcome> {
        self.wait_or_lose(None)
    }

    /// [`Supervised::wait`], and when `loss` is reported: SIGTERM to the
    /// child at once, SIGKILL after the grace if it is still running.
    pub fn wait_or_lose(self, loss: Option<(&Loss, Duration)>) -> io::Result<Outcome> {
        let mut set = blocked_set(&self.watch);
        set.extend(loss.map(|_| sys::loss_signal()));
        let mut deadline_fired = false;
        let mut killed = false;
        let mut received = None;
        // When the loss was seen, as time since the start.
        let mut lost_at: Option<Duration> = None;
        // The child's status, once it is reaped; with `whole_tree` the
        // wait goes on until no descendant is left.
        let mut status: Option<ExitStatus> = None;
        // After the child ended on a signal, how soon what it left behind
        // is told again (see below): soon, then less and less often.
        let mut again = Duration::from_millis(10);
        let result = loop {
            if status.is_none() {
                status = if self.watch.whole_tree {
                    self.reap_tree()?
                } else {
                    sys::wait_pid(self.pid, true)?
                };
                // The run was told to stop and the child has ended: what it
                // left behind is told the same, at once (and again below
                // while anything is left), except a process that had it and
                // handles it, and that process's teardown (crate::tree).
                if let (Some(_), Some(sig), true) = (status, received, self.watch.whole_tree) {
                    self.send_to(sig, false, None);
                }
            }
            let done = match status {
                Some(_) if self.watch.whole_tree => self.tree_gone()?,
                Some(_) => true,
                None => false,
            };
            if let Some(status) = status.filter(|_| done) {
                break Outcome {
                    status,
                    deadline_fired,
                    killed,
                    received,
                    lost: lost_at.is_some(),
                };
            }
            let child_alive = status.is_none();
            if lost_at.is_none() && loss.is_some_and(|(l, _)| l.is_lost()) {
                lost_at = Some(self.started.elapsed());
                self.send_to(libc::SIGTERM, child_alive, None);
            }
            // The next timer: (when, whether it is the kill).
            let deadline = self.watch.deadline.filter(|_| !deadline_fired);
            let kill = [
                self.watch
                    .deadline
                    .zip(self.watch.kill_after)
                    .filter(|_| deadline_fired)
                    .map(|(d, k)| d.saturating_add(k)),
                lost_at
                    .zip(loss)
                    .map(|(at, (_, grace))| at.saturating_add(grace)),
            ]
            .into_iter()
            .flatten()
            .min()
            .filter(|_| !killed);
            let next = match (deadline, kill) {
                (Some(d), Some(k)) if k < d => Some((k, true)),
                (Some(d), _) => Some((d, false)),
                (None, k) => k.map(|k| (k, true)),
            };
            let timer = next.map(|(at, _)| at.saturating_sub(self.started.elapsed()));
            let mut timeout = timer.map_or(RECHECK, |t| t.min(RECHECK));
            let leftovers = status.is_some() && received.is_some() && self.watch.whole_tree;
            if leftovers {
                timeout = timeout.min(again);
                again = (again * 2).min(RECHECK);
            }
            match sys::wait_signal(&set, Some(timeout))? {
                // COMMAND has ended after a signal and left processes: tell
                // those again that have no handler for it. One that took it
                // between fork and exec lost it (see crate::tree); one that
                // handles it is not sent it twice.
                None if timer != Some(timeout) => {
                    if let (true, Some(sig)) = (leftovers, received) {
                        self.send_to(sig, false, None);
                    }
                }
                None if next.is_some_and(|(_, kill)| !kill) => {
                    deadline_fired = true;
                    self.send_to(self.watch.deadline_signal, child_alive, None);
                }
                None => {
                    killed = true;
                    self.send_to(libc::SIGKILL, child_alive, None);
                }
                // The loop reads the flag again.
                Some(c) if c.signo == libc::SIGCHLD || c.signo == sys::loss_signal() => {}
                Some(c) => {
                    received = Some(c.signo);
                    let from_terminal = c.code == libc::SI_KERNEL
                        && matches!(c.signo, libc::SIGINT | libc::SIGQUIT);
                    // The terminal sent it to our whole process group
                    // already: not a second time to those in it.
                    let except = (from_terminal && !self.watch.own_group)
                        .then(|| nix::unistd::getpgrp().as_raw() as u32);
                    self.send_to(c.signo, child_alive, except);
                }
            }
        };
        sys::restore_mask(&self.old_mask);
        Ok(result)
    }

    /// With `whole_tree`: reaps every child that has ended (descendants
    /// re-parented to us included); the child's status when it was among
    /// them.
    fn reap_tree(&self) -> io::Result<Option<ExitStatus>> {
        let mut found = None;
        loop {
            match sys::wait_any()? {
                sys::Waited::Reaped(pid, status) if pid == self.pid => found = Some(status),
                sys::Waited::Reaped(..) => {}
                sys::Waited::Running | sys::Waited::NoChildren => return Ok(found),
            }
        }
    }

    /// With `whole_tree`, once the child is reaped: whether no descendant
    /// is left (each ended one is reaped on the way).
    fn tree_gone(&self) -> io::Result<bool> {
        loop {
            match sys::wait_any()? {
                sys::Waited::Reaped(..) => {}
                sys::Waited::Running => return Ok(false),
                sys::Waited::NoChildren => return Ok(true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
