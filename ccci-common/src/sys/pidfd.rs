//! Process handles (`pidfd`): a descriptor for a process itself, not its
//! number, so a signal sent through it never reaches a later process that
//! reuses the pid. Used by `ccci-lock --hold`'s keeper.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `pidfd_open(2)`: a descriptor that refers to process `pid` itself, not to
/// its number, so it can never come to mean a later process that reuses the
/// number. Close-on-exec. `ESRCH`: no such process. Needs Linux 5.3.
pub fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags (0: the new fd is
    // close-on-exec) and returns a new descriptor or -1; it touches no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `pidfd_send_signal(2)`: sends `sig` to the process `pidfd` refers to;
/// `Ok(false)` when it has ended already (`ESRCH`). Never reaches another
/// process that got the same pid later.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<bool> {
    // SAFETY: the fd is a pidfd we own; no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(e)
    }
}
