//! This process's signal state: the mask of a thread, dispositions, and
//! taking pending signals one at a time with `sigtimedwait` (no handler
//! runs, so nothing is async). [`reset_signals`] is async-signal-safe and
//! also runs between `fork` and `exec`; [`spawn_without_signals`] starts a
//! thread that can never be handed a process-directed signal.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::saturating_secs;

/// The signals this process has given a handler, one bit per signal
/// (bit `n - 1` for signal `n`): the child of [`spawn`](super::spawn),
/// which runs in this process's memory until it execs, resets exactly
/// these and [`RESET_SIGNALS`] instead of asking about all 64. Every
/// handler is installed in this module's siblings, which note it here;
/// std's own (SIGSEGV and SIGBUS, for stack overflows) are here from the
/// start.
static HANDLED: AtomicU64 = AtomicU64::new(bit(libc::SIGSEGV) | bit(libc::SIGBUS));

const fn bit(sig: libc::c_int) -> u64 {
    1 << (sig - 1)
}

/// Notes that `sig` now has a handler (see [`handled_signals`]).
pub(super) fn note_handler(sig: libc::c_int) {
    if (1..=64).contains(&sig) {
        HANDLED.fetch_or(bit(sig), Ordering::SeqCst);
    }
}

/// The signals that may have a handler in this process, as a bit set
/// (bit `n - 1` for signal `n`).
pub(super) fn handled_signals() -> u64 {
    HANDLED.load(Ordering::SeqCst)
}

/// The signals a started command gets with their default disposition
/// (SPEC §1 "Commands started by a tool").
pub const RESET_SIGNALS: [libc::c_int; 11] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGCHLD,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Starts a thread with every signal blocked from its first instruction (the
/// mask is set in this thread around the spawn, and inherited): a helper
/// thread of a tool that takes signals with `sigtimedwait` in its main
/// thread must never be the one a process-directed signal is handed to.
pub fn spawn_without_signals<F>(name: &str, f: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: both sets are stack-local and initialised (sigfillset, or
    // filled in by pthread_sigmask) before use.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    // SAFETY: `old` is the mask pthread_sigmask gave back above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    spawned
}

/// Resets the signal mask and the dispositions of [`RESET_SIGNALS`] in this
/// process. Async-signal-safe: used between `fork` and `exec` too.
pub fn reset_signals() {
    // SAFETY: sigemptyset/sigprocmask/signal only touch the stack-local set
    // and this process's signal state; all three are async-signal-safe.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in RESET_SIGNALS {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Makes `sig` take its default action in this process, undoing an inherited
/// `SIG_IGN`. A tool that waits for children calls this for `SIGCHLD` first:
/// with `SIGCHLD` ignored the kernel reaps children itself and their exit
/// status is lost.
pub fn default_disposition(sig: libc::c_int) {
    // SAFETY: installing SIG_DFL involves no handler code.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// A signal taken from the pending set by [`wait_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caught {
    /// The signal number.
    pub signo: libc::c_int,
    /// `si_code`: `SI_USER` for kill(2), `SI_KERNEL` for terminal and timer
    /// signals, `CLD_*` for SIGCHLD.
    pub code: libc::c_int,
    /// The sender's pid, where the kernel reports one.
    pub pid: libc::pid_t,
}

/// Blocks `signals` in this thread; they stay pending until [`wait_signal`]
/// takes them. Returns the previous mask, for [`restore_mask`].
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: the sets are stack-local and initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) {
            0 => Ok(old),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Restores a mask saved by [`block_signals`].
pub fn restore_mask(old: &libc::sigset_t) {
    // SAFETY: `old` came from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

/// Waits for one of `signals` (which must be blocked) for at most `timeout`
/// (`None`: forever). Returns `None` when the timeout passed first.
pub fn wait_signal(
    signals: &[libc::c_int],
    timeout: Option<std::time::Duration>,
) -> io::Result<Option<Caught>> {
    // SAFETY: the set and siginfo are stack-local and initialised before
    // use; sigtimedwait/sigwaitinfo only write into `info`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = match timeout {
                None => libc::sigwaitinfo(&set, &mut info),
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: saturating_secs(t),
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(&set, &mut info, &ts)
                }
            };
            if r > 0 {
                return Ok(Some(Caught {
                    signo: r,
                    code: info.si_code,
                    pid: info.si_pid(),
                }));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
    }
}

/// Unblocks `signals` in this thread.
pub fn unblock_signals(signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: the set is stack-local and initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        match libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The signal's name without `SIG` (`TERM`), for messages.
pub fn signal_name(sig: libc::c_int) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => sig.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_name(libc::SIGALRM), "ALRM");
    }
}
