//! Signals sent to one thread of this process, never to the process: the
//! real-time signals ccci uses to wake a waiting thread (a lost lease, a
//! changed lock dir, a wait to cut short), [`ThreadSignal`], which never
//! signals a thread that may have ended, and dnotify on a directory.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The real-time signal that wakes a supervise loop when what its child
/// runs under was lost (see [`crate::supervise::Loss`]). No ccci tool
/// forwards, sends or handles it otherwise; a child gets it unblocked with
/// the default disposition, like every real-time signal.
pub fn loss_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal that tells the thread waiting for a holder's COMMAND that its
/// lock dir changed (dnotify, [`notify_dir_changes`], sent to that thread
/// alone): its wait loop then runs the lockfile checks (see
/// [`crate::supervise::LossNotifier::check_on_dir_change`]). Blocked for
/// good before it is asked for, so it is only ever taken with
/// [`wait_signal`](super::wait_signal).
pub fn dir_change_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Asks the kernel (dnotify, `fcntl(F_NOTIFY)`) to send [`dir_change_signal`]
/// to the calling thread whenever an entry of the directory `dir` is
/// deleted, renamed or created, for as long as `dir` stays open. The
/// caller blocks that signal first. Unlike an inotify(7) instance, which
/// costs the closing process a wait of up to several milliseconds (the
/// kernel's SRCU grace period), closing `dir` is as cheap as any close.
pub fn notify_dir_changes(dir: BorrowedFd<'_>) -> io::Result<()> {
    // From <linux/fcntl.h>; the libc crate does not have them for glibc.
    const F_SETSIG: libc::c_int = 10;
    const F_SETOWN_EX: libc::c_int = 15;
    const F_OWNER_TID: libc::c_int = 0;
    const DN_CREATE: libc::c_int = 0x4;
    const DN_DELETE: libc::c_int = 0x8;
    const DN_RENAME: libc::c_int = 0x10;
    const DN_MULTISHOT: libc::c_int = 0x8000_0000_u32 as libc::c_int;
    #[repr(C)]
    struct FOwnerEx {
        kind: libc::c_int,
        pid: libc::pid_t,
    }
    let fd = dir.as_raw_fd();
    // SAFETY: fcntl with integer arguments, and a stack-local FOwnerEx laid
    // out as the kernel's struct f_owner_ex, on a borrowed, open descriptor.
    unsafe {
        let owner = FOwnerEx {
            kind: F_OWNER_TID,
            pid: libc::gettid(),
        };
        if libc::fcntl(fd, F_SETSIG, dir_change_signal()) != 0
            || libc::fcntl(
                fd,
                libc::F_NOTIFY,
                DN_DELETE | DN_RENAME | DN_CREATE | DN_MULTISHOT,
            ) != 0
            || libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A signal that other threads can send to the thread that made this
/// value, for as long as it lives: dropping it (on its thread) ends every
/// [`ThreadSignaller`] made from it, so a signal is never sent to a thread
/// that may have ended. Not `Send`: it stays on the thread it names.
#[derive(Debug)]
pub struct ThreadSignal {
    target: std::sync::Arc<std::sync::Mutex<Option<(libc::pid_t, libc::pid_t)>>>,
    sig: libc::c_int,
    _on_this_thread: std::marker::PhantomData<*const ()>,
}

/// Sends a [`ThreadSignal`]'s signal to its thread; clone it freely.
#[derive(Debug, Clone)]
pub struct ThreadSignaller {
    target: std::sync::Arc<std::sync::Mutex<Option<(libc::pid_t, libc::pid_t)>>>,
    sig: libc::c_int,
}

impl ThreadSignal {
    /// `sig` for this thread. The caller blocks `sig` here first, so that
    /// it waits pending until taken with [`wait_signal`](super::wait_signal).
    pub fn new(sig: libc::c_int) -> ThreadSignal {
        // SAFETY: getpid and gettid have no preconditions.
        let me = unsafe { (libc::getpid(), libc::gettid()) };
        ThreadSignal {
            target: std::sync::Arc::new(std::sync::Mutex::new(Some(me))),
            sig,
            _on_this_thread: std::marker::PhantomData,
        }
    }

    /// A sender for other threads.
    pub fn signaller(&self) -> ThreadSignaller {
        ThreadSignaller {
            target: std::sync::Arc::clone(&self.target),
            sig: self.sig,
        }
    }
}

impl Drop for ThreadSignal {
    fn drop(&mut self) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        *target = None;
    }
}

impl ThreadSignaller {
    /// Sends the signal, unless the [`ThreadSignal`] is gone.
    pub fn send(&self) {
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((pid, tid)) = *target {
            // SAFETY: tgkill takes plain numbers. The thread is alive while
            // the ThreadSignal is (it is not Send, and its drop takes this
            // mutex to clear the target first); should one be leaked, a
            // reused thread id gets at worst a signal, never memory unsafety,
            // and tgkill never reaches outside this process.
            unsafe {
                libc::syscall(libc::SYS_tgkill, pid, tid, self.sig);
            }
        }
    }
}

/// The signal that wakes a thread blocked in [`flock_or_interrupted`](super::flock_or_interrupted) (see
/// [`interrupt_on`]); only ever sent to one thread with
/// [`ThreadSignaller::send`].
pub fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn do_nothing(_: libc::c_int) {}

/// Gives `sig` a handler that does nothing, installed without `SA_RESTART`:
/// a thread that gets `sig` while blocked in a system call sees it fail
/// with `EINTR`. Process-wide and idempotent; `exec` resets it.
pub fn interrupt_on(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: the action is stack-local and zero-initialised (an empty mask,
    // no flags) before use; the handler is async-signal-safe (it does nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = do_nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        super::signals::note_handler(sig);
        if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
