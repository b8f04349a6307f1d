//! Every process a COMMAND started: the descendants of this process, found
//! in `/proc`, and signals sent to all of them (SPEC §2 "The lock covers
//! COMMAND's whole tree").
//!
//! A tool that waits for COMMAND under a lock is a child subreaper
//! ([`crate::sys::set_child_subreaper`]): a process COMMAND started in the
//! background, or one that left its process group or session (`setsid`),
//! stays a descendant of the tool when its parent exits. So "COMMAND's
//! tree" is exactly "this process's descendants", which `/proc` lists
//! (each `/proc/PID/stat` names its parent), whatever groups or sessions
//! they made.
//!
//! Guarantees of [`Tree::signal`]:
//! - **Never another process.** Each target is opened as a pidfd first,
//!   then checked to still be the process that was read in the tree (same
//!   pid, same start time), and signalled through the pidfd: a pid that
//!   ended and was reused meanwhile is never signalled. One whose parent
//!   exited after the reading, and which was re-parented out of the tree
//!   (to init, when the watcher is not a subreaper), is still signalled.
//! - **New children too, but not a teardown's.** A process that forks
//!   while the signal goes out is found by the next reading of `/proc`;
//!   readings repeat until one finds no process not yet seen (at most
//!   [`ROUNDS`]). A process whose parent already had the signal and
//!   handles it, and every process below it, is left alone *while that
//!   parent lives*: it is the parent's answer to the signal (a TERM trap running `abra app
//!   undeploy`, and the `docker` it runs), and killing it would break the
//!   teardown.
//! - **Each handler once.** A [`Tree`] remembers, per signal, whom it sent
//!   it to, for as long as it lives. A second call (the supervisor's, once
//!   COMMAND has ended) skips a process that had the signal and catches it
//!   (`SigCgt`): it may still be running its handler, and a TERM trap must
//!   not run twice, however slow it is to finish; its teardown runs on. A
//!   process that had it but has no handler gets it again, which can do no
//!   harm: it is one that took the signal between fork and exec, in the
//!   handler it had from its parent, and lost it when it exec'd (a `sleep
//!   &` forked by a trapping shell as the signal came). What a process that
//!   has since *exited* left behind (re-parented to the subreaper) is no
//!   teardown any more and is told too. A process in the group the
//!   terminal signalled counts as sent.
//!
//! A different signal is a fresh start: the SIGKILL after a grace reaches
//! every process, teardowns included.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsFd;

use crate::proc::{self, Stat};
use crate::sys;

/// How many readings of `/proc` one [`Tree::signal`] makes at most.
pub const ROUNDS: usize = 8;

/// A process, told apart from a later one with the same pid by its start
/// time (in clock ticks since boot, `/proc/PID/stat` field 22).
type Id = (u32, u64);

/// Every process now in `/proc`.
fn process_table() -> io::Result<HashMap<u32, Stat>> {
    Ok(proc::pids()?
        .filter_map(|pid| Some((pid, proc::stat(pid)?)))
        .collect())
}

/// The descendants of `root` now, each after its parent.
fn descendants_in(table: &HashMap<u32, Stat>, root: u32) -> Vec<(u32, Stat)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, stat) in table {
        children.entry(stat.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if seen.insert(child) {
                out.push((child, table[&child]));
                todo.push(child);
            }
        }
    }
    out
}

/// The descendants of `root` now, with their process groups.
pub fn descendants_of(root: u32) -> io::Result<Vec<(u32, u32)>> {
    let table = process_table()?;
    Ok(descendants_in(&table, root)
        .into_iter()
        .map(|(pid, stat)| (pid, stat.pgrp))
        .collect())
}

/// The descendants of one process, and the signals sent to them so far
/// (see the module doc).
#[derive(Debug)]
pub struct Tree {
    root: u32,
    /// Per signal, whom it was sent to (or the terminal sent it to).
    sent: HashMap<libc::c_int, HashSet<Id>>,
}

impl Tree {
    /// The descendants of this process.
    pub fn of_this_process() -> Tree {
        Tree::of(std::process::id())
    }

    /// The descendants of `root` (not `root` itself): for a process that
    /// watches another one's tree without being its parent (a `--hold`
    /// keeper and the harness it holds locks for).
    pub fn of(root: u32) -> Tree {
        Tree {
            root,
            sent: HashMap::new(),
        }
    }

    /// Sends `sig` to every descendant that has not had it from this
    /// [`Tree`] and is not a teardown (see the module doc), except those in
    /// the process group `except_group` (the terminal sent them the same
    /// signal already). Returns how many were signalled.
    pub fn signal(&mut self, sig: libc::c_int, except_group: Option<u32>) -> io::Result<usize> {
        let root = self.root;
        let sent = self.sent.entry(sig).or_default();
        let mut seen: HashSet<Id> = HashSet::new();
        let mut count = 0;
        for _ in 0..ROUNDS {
            let table = process_table()?;
            // Parents come before their children, so a teardown's children
            // are known to be a teardown's when they are reached.
            let tree = descendants_in(&table, root);
            let mut teardown: HashSet<Id> = HashSet::new();
            // Sent in this reading: their children found later in it were
            // there before the signal, so they are no teardown.
            let mut sent_now = Vec::new();
            let mut fresh = false;
            for (pid, stat) in tree {
                let id = (pid, stat.start);
                let parent = table.get(&stat.ppid).map(|p| (stat.ppid, p.start));
                // Only a process that handles the signal answers it: one
                // that had it and does not catch it is dying of it, or
                // took it in the instant between fork and exec, in its
                // parent's handler, and lost it.
                let handling = |(pid, start): Id| {
                    sent.contains(&(pid, start)) && proc::catches(pid, sig) == Some(true)
                };
                let of_teardown = parent.is_some_and(|p| teardown.contains(&p) || handling(p));
                if of_teardown && !sent.contains(&id) {
                    teardown.insert(id);
                }
                if !seen.insert(id) {
                    continue;
                }
                fresh = true;
                // Had it, and may be running its handler: not again (a
                // trap would run twice). Had it and has no handler: again,
                // harmlessly (its default action, or what it lost at exec).
                if of_teardown || (sent.contains(&id) && proc::catches(pid, sig) != Some(false)) {
                    continue;
                }
                if except_group == Some(stat.pgrp) {
                    sent_now.push(id);
                    continue;
                }
                let Ok(pidfd) = sys::pidfd_open(pid) else {
                    continue; // ended already
                };
                // The pidfd pins the process: if `pid` still started when
                // the process read above did, the pidfd is that process
                // (a pid and a start time name one process). Its parent
                // may have exited since and left it to init or another
                // subreaper: it is still one COMMAND started.
                let Some(now) = proc::stat(pid) else { continue };
                if now.start == stat.start && sys::pidfd_signal(pidfd.as_fd(), sig)? {
                    sent_now.push(id);
                    count += 1;
                }
            }
            sent.extend(sent_now);
            if !fresh {
                break;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn reads_parent_group_and_start_of_this_process() {
        let me = proc::stat(std::process::id()).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw() as u32);
        let parent = proc::stat(me.ppid).unwrap();
        assert!(parent.start <= me.start, "{parent:?} {me:?}");
    }

    /// `sh -c SCRIPT` with its stdout read line by line.
    fn sh(
        script: &str,
    ) -> (
        std::process::Child,
        std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    ) {
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    }

    fn kill(pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn finds_a_grandchild_that_left_for_its_own_session() {
        // sh starts a setsid'd sleep and prints its pid; the sleep stays
        // our descendant while sh lives.
        let (mut child, mut lines) = sh("setsid sleep 30 & echo $!; wait");
        let grandchild: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        let tree = descendants_of(child.id()).unwrap();
        assert!(tree.iter().any(|&(pid, _)| pid == grandchild), "{tree:?}");
        kill(grandchild);
        child.wait().unwrap();
    }

    #[test]
    fn a_second_call_skips_whom_the_first_one_signalled() {
        // The outer shell is the root; the inner one, its descendant,
        // catches USR1 and says so, and goes on.
        let (mut child, mut lines) = sh("sh -c \"trap 'echo usr1' USR1; echo ready; \
             while :; do sleep 0.01; done\" & wait");
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        let mut tree = Tree::of(child.id());
        let first = tree.signal(libc::SIGUSR1, None).unwrap();
        assert!(first >= 1, "the inner shell is a descendant");
        assert_eq!(lines.next().unwrap().unwrap(), "usr1");
        // The inner shell was sent USR1 already: not again; a `sleep` its
        // loop started since is its own business: left alone.
        assert_eq!(tree.signal(libc::SIGUSR1, None).unwrap(), 0);
        // A fresh Tree has no memory: the shell gets it again (negative
        // control for the count above).
        assert!(Tree::of(child.id()).signal(libc::SIGUSR1, None).unwrap() >= 1);
        assert_eq!(lines.next().unwrap().unwrap(), "usr1");
        for (pid, _) in descendants_of(child.id()).unwrap() {
            kill(pid);
        }
        kill(child.id());
        child.wait().unwrap();
    }
}
