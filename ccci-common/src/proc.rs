//! What this host says about its processes: whether a pid is alive, when a
//! process started, which pid namespace and boot we are in, the host name.
//!
//! One home for each question, so every tool answers it the same way. A pid
//! alone names a process only while it runs: after it exits the number can
//! be given to another process. Code that must tell "the process recorded
//! then" from "whatever has that pid now" compares the start time
//! ([`start_time`]) as well, and a pid recorded in another pid namespace or
//! before a reboot means nothing here at all ([`pid_namespace`],
//! [`boot_id`]).

/// Whether a process `pid` exists (a zombie counts). A process of another
/// user counts too (`kill(pid, 0)` says `EPERM` for it).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// What `/proc/<pid>/stat` says of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (field 3): `R`, `S`, `Z`…
    pub state: char,
    /// The parent's pid (field 4).
    pub ppid: u32,
    /// The process group (field 5).
    pub pgrp: u32,
    /// The start time (field 22), in clock ticks since boot.
    pub start: u64,
}

/// `/proc/<pid>/stat` of `pid`; `None` when there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // `fields` now starts at field 6; starttime is field 22.
    let start = fields.nth(22 - 6)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        start,
    })
}

/// Whether process `pid` catches signal `sig` now (it has a handler for
/// it: `SigCgt` of `/proc/<pid>/status`); `None` when there is no such
/// process. A shell that traps a signal catches it; a process just forked
/// from one catches it too until it execs another program.
pub fn catches(pid: u32, sig: libc::c_int) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    let bit = u32::try_from(sig).ok()?.checked_sub(1)?;
    Some(bit < 64 && mask & (1 << bit) != 0)
}

/// The pids `/proc` lists now.
pub fn pids() -> std::io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir("/proc")?.filter_map(|entry| {
        entry
            .ok()?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
    }))
}

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); `None` when there is no such process. Together with
/// the pid (and the boot) it names a process uniquely.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|stat| stat.start)
}

/// Whether `pid` is a process that has exited but is not reaped yet.
pub fn is_zombie(pid: u32) -> bool {
    matches!(
        stat(pid),
        Some(Stat {
            state: 'Z' | 'X',
            ..
        })
    )
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`); pids
/// recorded in another namespace name other processes, or none.
pub fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): pids and start times
/// recorded under another boot name nothing that still runs.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// This host's name, for holder records and messages; `-` when it cannot be
/// read or is not UTF-8.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_living_the_dead_and_the_unborn() {
        assert!(alive(std::process::id()));
        assert!(alive(1));
        assert!(!alive(0));
        assert!(!alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
        assert_eq!(start_time(pid), None);
    }

    #[test]
    fn start_times_namespaces_boots_and_the_host() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert!(!is_zombie(me));
        assert!(pid_namespace().is_some());
        assert_eq!(boot_id().unwrap().len(), 36);
        let host = hostname();
        assert!(!host.is_empty());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(host, kernel.trim());
    }
}
