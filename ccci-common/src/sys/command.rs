//! What a std [`Command`] child (one that forks: git, the lock keeper) does
//! between `fork` and `exec`: reset signals, a parent-death signal that
//! cannot be missed, or a new session with only chosen descriptors
//! inherited. The hooks call only async-signal-safe functions and allocate
//! nothing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::reset_signals;

/// Arranges for `cmd`'s child, between fork and exec: an empty signal mask,
/// default dispositions for [`RESET_SIGNALS`](super::RESET_SIGNALS), and, with `death_signal`, a
/// parent-death signal. If this process died before the child could set
/// that signal (the child's parent is no longer the pid saved here), the
/// child sends the signal to itself at once instead of running orphaned.
pub fn prepare_command(cmd: &mut Command, death_signal: Option<libc::c_int>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child and calls only
    // async-signal-safe functions; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            reset_signals();
            if let Some(sig) = death_signal {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), sig);
                    libc::_exit(128 + sig);
                }
            }
            Ok(())
        });
    }
}

/// Arranges for `cmd`'s child, between fork and exec, to get an empty
/// signal mask and default dispositions (as [`prepare_command`]), to start a
/// new session (`setsid`: no controlling terminal, not in our process group,
/// so a signal to our group or a hang-up of our terminal never reaches it)
/// and to inherit exactly stdin, stdout, stderr and the descriptors `keep`:
/// every other descriptor, including any this process inherited without
/// close-on-exec (a pipe a CI runner waits on, say), is made close-on-exec
/// in the child, and `keep` loses the flag in the child only, so no other
/// child of ours can inherit them. Only async-signal-safe calls run in the
/// child.
pub fn detach_command(cmd: &mut Command, keep: &[BorrowedFd<'_>]) {
    let keep: Vec<libc::c_int> = keep.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: the closure runs in the forked child and calls only
    // sigprocmask/signal (reset_signals), setsid, syscall(close_range),
    // sysconf and fcntl, all async-signal-safe; it reads the vector
    // allocated before the fork and allocates nothing. The descriptors stay
    // open in the parent (the caller borrows them until `spawn` returns), so
    // they are open in the child too; marking descriptors close-on-exec in
    // the child changes nothing in the parent.
    unsafe {
        cmd.pre_exec(move || {
            reset_signals();
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let all_cloexec = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            ) == 0;
            if !all_cloexec {
                // Before Linux 5.11: mark them one by one.
                let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(3, 1 << 16) as libc::c_int;
                for fd in 3..max {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
