//! `flock(2)`: waiting, non-blocking, and a wait that a signal can cut
//! short ([`flock_or_interrupted`], for a thread that must be able to stop
//! waiting; see [`super::interrupt_on`]). An interrupted plain wait is
//! retried, so [`flock`] never reports `EINTR`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// How `flock(2)` should lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlockOp {
    /// `LOCK_EX`, waiting.
    Exclusive,
    /// `LOCK_EX|LOCK_NB`.
    ExclusiveNonblock,
    /// `LOCK_SH|LOCK_NB`: a probe that never waits.
    SharedNonblock,
}

/// `flock(2)` on `fd`. `Ok(false)` means a non-blocking request found the
/// lock held; an interrupted wait is retried.
pub fn flock(fd: BorrowedFd<'_>, op: FlockOp) -> io::Result<bool> {
    let op = match op {
        FlockOp::Exclusive => libc::LOCK_EX,
        FlockOp::ExclusiveNonblock => libc::LOCK_EX | libc::LOCK_NB,
        FlockOp::SharedNonblock => libc::LOCK_SH | libc::LOCK_NB,
    };
    loop {
        // SAFETY: flock takes a plain descriptor and an int; `fd` is borrowed,
        // so it stays open for the duration of the call.
        if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// A blocking `LOCK_EX` on `fd` that a signal with a handler installed
/// without `SA_RESTART` (see [`interrupt_on`](super::interrupt_on)) can cut short: `Ok(true)`
/// when locked, `Ok(false)` when interrupted first.
pub fn flock_or_interrupted(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: as in `flock`.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINTR) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonblocking_flock_sees_another_open_file_description() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let a = std::fs::File::create(&path).unwrap();
        let b = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsFd;
        assert!(flock(a.as_fd(), FlockOp::ExclusiveNonblock).unwrap());
        assert!(!flock(b.as_fd(), FlockOp::ExclusiveNonblock).unwrap());
        assert!(!flock(b.as_fd(), FlockOp::SharedNonblock).unwrap());
        drop(a);
        // Waiting, not trying: a child another test thread forks at this
        // moment holds a copy of `a` until it execs (close-on-exec).
        assert!(flock(b.as_fd(), FlockOp::Exclusive).unwrap());
    }
}
