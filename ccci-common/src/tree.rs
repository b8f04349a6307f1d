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
//! Guarantees of [`signal_descendants`]:
//! - **Never another process.** Each target is opened as a pidfd first,
//!   then checked to still be a child of a process of the tree (or of this
//!   one), and signalled through the pidfd: a pid that ended and was
//!   reused meanwhile is never signalled.
//! - **New children too, but not a teardown's.** A process that forks
//!   while the signal goes out is found by the next reading of `/proc`;
//!   readings repeat until one finds no process not yet signalled (at most
//!   [`ROUNDS`]). A process started by one that was already signalled is
//!   left alone: it is that process's answer to the signal (a TERM trap
//!   running `abra app undeploy`), and killing it would break the
//!   teardown. What is still running when COMMAND ends gets the signal then
//!   (see `supervise`).
//! - **Each process once.** A process gets the signal once per call, so a
//!   COMMAND that traps TERM to tear down runs its trap once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsFd;

use crate::sys;

/// How many readings of `/proc` one [`signal_descendants`] makes at most.
pub const ROUNDS: usize = 8;

/// The parent and process group of `pid`, from `/proc/PID/stat`.
fn parent_and_group(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// Every process now in `/proc` with its parent and process group.
fn process_table() -> io::Result<HashMap<u32, (u32, u32)>> {
    let mut table = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(info) = parent_and_group(pid) {
            table.insert(pid, info);
        }
    }
    Ok(table)
}

/// The descendants of `root` now, with their process groups.
pub fn descendants_of(root: u32) -> io::Result<Vec<(u32, u32)>> {
    let table = process_table()?;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &table {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if seen.insert(child) {
                out.push((child, table[&child].1));
                todo.push(child);
            }
        }
    }
    Ok(out)
}

/// Sends `sig` to every descendant of this process (see the module doc),
/// except those in the process group `except_group` (the terminal already
/// sent them the same signal). Returns how many were signalled.
pub fn signal_descendants(sig: libc::c_int, except_group: Option<u32>) -> io::Result<usize> {
    signal_descendants_of(std::process::id(), sig, except_group)
}

/// [`signal_descendants`] for the descendants of `root` (not `root`
/// itself): for a process that watches another one's tree without being
/// its parent (a `--hold` keeper and the harness it holds locks for).
pub fn signal_descendants_of(
    root: u32,
    sig: libc::c_int,
    except_group: Option<u32>,
) -> io::Result<usize> {
    let me = root;
    let mut done: HashSet<u32> = HashSet::new();
    let mut signalled: HashSet<u32> = HashSet::new();
    let mut sent = 0;
    for round in 0..ROUNDS {
        let tree = descendants_of(me)?;
        let members: HashSet<u32> = tree.iter().map(|&(pid, _)| pid).collect();
        let fresh: Vec<(u32, u32)> = tree
            .into_iter()
            .filter(|(pid, _)| !done.contains(pid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for (pid, group) in fresh {
            done.insert(pid);
            if except_group == Some(group) {
                continue;
            }
            let Ok(pidfd) = sys::pidfd_open(pid) else {
                continue; // ended already
            };
            // The pidfd pins the process: if `pid` is still a child of the
            // tree now, the pidfd is that process.
            let Some((ppid, _)) = parent_and_group(pid) else {
                continue;
            };
            let ours = ppid == me || members.contains(&ppid);
            // A process that a signalled one started after the first
            // reading is its own business (a TERM trap's teardown): only
            // what other processes start meanwhile is caught.
            let started_by_a_signalled_one = round > 0 && signalled.contains(&ppid);
            if ours && !started_by_a_signalled_one && sys::pidfd_signal(pidfd.as_fd(), sig)? {
                signalled.insert(pid);
                sent += 1;
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parent_and_group_of_this_process() {
        let (ppid, pgrp) = parent_and_group(std::process::id()).unwrap();
        assert_eq!(ppid, std::os::unix::process::parent_id());
        assert_eq!(pgrp, nix::unistd::getpgrp().as_raw() as u32);
    }

    #[test]
    fn finds_a_grandchild_that_left_for_its_own_session() {
        // sh starts a setsid'd sleep and prints its pid; the sleep stays
        // our descendant while sh lives.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let tree = descendants_of(child.id()).unwrap();
        assert!(tree.iter().any(|&(pid, _)| pid == grandchild), "{tree:?}");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        child.wait().unwrap();
    }
}
