//! A child under supervision: [`spawn`] with the signals blocked first,
//! then [`Supervised::wait`], the one loop that forwards signals, runs the
//! deadline and kill timers, acts on a [`Loss`] and reaps the child (and,
//! with `whole_tree`, every descendant). Its guarantees are in the doc of
//! [`crate::supervise`].

use std::io;
use std::os::fd::AsFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::{Loss, Program};
use crate::exit::Ended;
use crate::sys;

/// The longest we wait for a signal before checking the child anyway. In a
/// process with other threads (a test harness, say) the kernel may hand
/// SIGCHLD to a thread that does not block it, and then it never reaches us.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

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
        set.extend(loss.map(|_| sys::dir_change_signal()));
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
                // A watched directory changed: the checks look (and report).
                Some(c) if c.signo == sys::dir_change_signal() => {
                    if let Some((loss, _)) = loss {
                        loss.run_checks();
                    }
                }
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
