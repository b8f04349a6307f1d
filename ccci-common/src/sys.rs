//! The few system calls that need `unsafe`, each behind a safe function.
//!
//! Everything that runs in a child before `exec` lives in [`spawn`] (the
//! vfork-style start of every COMMAND), [`prepare_command`] and
//! [`detach_command`] (std `Command`s that fork: git, the lock keeper), and
//! uses only async-signal-safe calls (no allocation, no locks):
//! `sigprocmask`, `sigaction`, `prctl`, `getppid`, `setpgid`, `dup2`,
//! `kill`, `execve`.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

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

/// The signals that end a tool by default and that `ccci-lock` forwards:
/// while a set of locks is being taken, they make the process give back the
/// lockfiles it created for the set, then end by the signal
/// ([`GiveBackOnSignal`]).
pub const GIVE_BACK_SIGNALS: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How many files [`GiveBackOnSignal`] can keep at once; beyond that, a
/// file is not kept (and a signal leaves it, as before).
const GIVE_BACK_SLOTS: usize = 64;

/// One file kept by [`GiveBackOnSignal`], readable from a signal handler:
/// nothing but atomics and a fixed buffer.
struct GiveBackSlot {
    /// `FREE`, `FILLING`, `KEPT`, or `TAKEN` (by the handler).
    state: std::sync::atomic::AtomicU8,
    dir: std::sync::atomic::AtomicI32,
    dev: std::sync::atomic::AtomicU64,
    ino: std::sync::atomic::AtomicU64,
    /// The file name, NUL-terminated; written only while `FILLING`.
    name: std::cell::UnsafeCell<[u8; 256]>,
}

// SAFETY: `name` is written only by the thread that moved `state` from FREE
// to FILLING, and read only after `state` is KEPT (release/acquire).
unsafe impl Sync for GiveBackSlot {}

const FREE: u8 = 0;
const FILLING: u8 = 1;
const KEPT: u8 = 2;
const TAKEN: u8 = 3;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: GiveBackSlot = GiveBackSlot {
    state: std::sync::atomic::AtomicU8::new(FREE),
    dir: std::sync::atomic::AtomicI32::new(-1),
    dev: std::sync::atomic::AtomicU64::new(0),
    ino: std::sync::atomic::AtomicU64::new(0),
    name: std::cell::UnsafeCell::new([0; 256]),
};

static GIVE_BACK: [GiveBackSlot; GIVE_BACK_SLOTS] = [EMPTY_SLOT; GIVE_BACK_SLOTS];
/// Set by the first handler call, which then ends the process.
static GIVING_BACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// While it lives, each of [`GIVE_BACK_SIGNALS`] that is not ignored makes
/// the process remove the files it keeps ([`GiveBackOnSignal::keep`]) and
/// then end by that signal (default action, no core dump), as it would have
/// without it. A file is removed only if its name still names the kept
/// file (device and inode) and it is still empty: the caller keeps only
/// files whose lock it holds, so this is "unlink only while holding".
///
/// The handler uses only async-signal-safe calls (`fstatat`, `unlinkat`,
/// `prctl`, `setrlimit`, `signal`, `pthread_sigmask`, `raise`) and atomics.
/// It never touches the alarm timer. Dropping the value forgets the files
/// and puts the old dispositions back.
pub struct GiveBackOnSignal {
    old: Vec<(libc::c_int, libc::sigaction)>,
    kept: Vec<usize>,
}

extern "C" fn give_back_and_end(sig: libc::c_int) {
    use std::sync::atomic::Ordering;
    if GIVING_BACK.swap(true, Ordering::SeqCst) {
        return; // another thread is giving back, and ends the process
    }
    for slot in &GIVE_BACK {
        if slot
            .state
            .compare_exchange(KEPT, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        let dir = slot.dir.load(Ordering::Relaxed);
        let name = slot.name.get().cast::<libc::c_char>();
        // SAFETY: `name` is NUL-terminated and stays unchanged while TAKEN;
        // `st` is a stack-local out-parameter; both calls only use their
        // arguments.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstatat(dir, name, &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0
                && st.st_dev == slot.dev.load(Ordering::Relaxed)
                && st.st_ino == slot.ino.load(Ordering::Relaxed)
                && st.st_size == 0
            {
                libc::unlinkat(dir, name, 0);
            }
        }
    }
    // As in `end_by_signal`, without its stdio flush (not async-signal-safe).
    raise_by_default(sig);
}

/// Ends this process by `sig`'s default action, without a core dump:
/// no core limit, not dumpable, `sig` set to its default, unblocked in this
/// thread, raised. Async-signal-safe (a signal handler calls it too).
fn raise_by_default(sig: libc::c_int) {
    // SAFETY: prctl and setrlimit read only their integer arguments and
    // the stack-local `none`; signal installs SIG_DFL (no handler code);
    // the set is stack-local and initialised by sigemptyset; raise sends
    // a signal to this thread. None of them touches Rust-managed memory.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0);
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

impl GiveBackOnSignal {
    /// Installs the handler for each of [`GIVE_BACK_SIGNALS`] whose
    /// disposition is the default (an ignored signal stays ignored).
    pub fn arm() -> io::Result<GiveBackOnSignal> {
        let mut armed = GiveBackOnSignal {
            old: Vec::with_capacity(GIVE_BACK_SIGNALS.len()),
            kept: Vec::new(),
        };
        for sig in GIVE_BACK_SIGNALS {
            // SAFETY: `new` and `old` are stack-local and fully initialised
            // (zeroed, then sigfillset); the handler is async-signal-safe.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if old.sa_sigaction != libc::SIG_DFL {
                    continue;
                }
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = give_back_and_end as extern "C" fn(libc::c_int) as usize;
                new.sa_flags = libc::SA_RESTART;
                libc::sigfillset(&mut new.sa_mask);
                if libc::sigaction(sig, &new, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                armed.old.push((sig, old));
            }
        }
        Ok(armed)
    }

    /// Keeps the file `name` in `dir` (device `dev`, inode `ino`), which the
    /// caller holds the lock of, to be removed by a signal; `dir` must stay
    /// open until [`GiveBackOnSignal::forget`]. `None`: it cannot be kept
    /// (no free slot, or a name of 256 bytes or more).
    pub fn keep(&mut self, dir: BorrowedFd<'_>, name: &str, dev: u64, ino: u64) -> Option<usize> {
        use std::sync::atomic::Ordering;
        if name.len() >= 256 || name.as_bytes().contains(&0) {
            return None;
        }
        let (i, slot) = GIVE_BACK.iter().enumerate().find(|(_, slot)| {
            slot.state
                .compare_exchange(FREE, FILLING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: FILLING is ours alone (see `GiveBackSlot`).
        let buf = unsafe { &mut *slot.name.get() };
        buf[..name.len()].copy_from_slice(name.as_bytes());
        buf[name.len()] = 0;
        slot.dir.store(dir.as_raw_fd(), Ordering::Relaxed);
        slot.dev.store(dev, Ordering::Relaxed);
        slot.ino.store(ino, Ordering::Relaxed);
        slot.state.store(KEPT, Ordering::Release);
        self.kept.push(i);
        Some(i)
    }

    /// Forgets a kept file: a signal no longer removes it. If a signal is
    /// removing it right now, this waits for the end of the process.
    pub fn forget(&mut self, kept: usize) {
        use std::sync::atomic::Ordering;
        self.kept.retain(|&i| i != kept);
        let slot = &GIVE_BACK[kept];
        while slot
            .state
            .compare_exchange(KEPT, FREE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // TAKEN: the handler gives it back and then ends the process.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for GiveBackOnSignal {
    fn drop(&mut self) {
        for kept in std::mem::take(&mut self.kept) {
            self.forget(kept);
        }
        for (sig, old) in self.old.drain(..).rev() {
            // SAFETY: `old` is the disposition sigaction gave back for `sig`.
            unsafe {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
        }
    }
}

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

/// Sets this process's parent-death signal (`PR_SET_PDEATHSIG`).
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG reads only its integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Arms (`Some`) or disarms (`None`) this process's real-time interval
/// timer, `ITIMER_REAL`, which sends SIGALRM once when it expires and
/// replaces whatever was armed before. Unlike POSIX timers it survives
/// `exec`: a deadline armed before exec'ing a command fires in that command.
/// A duration below one microsecond is rounded up to one, since zero would
/// disarm the timer.
pub fn set_alarm_timer(after: Option<Duration>) -> io::Result<()> {
    let value = match after {
        Some(d) => {
            let micros = if d.as_secs() == 0 {
                d.subsec_micros().max(1)
            } else {
                d.subsec_micros()
            };
            libc::timeval {
                tv_sec: saturating_secs(d),
                tv_usec: micros.into(),
            }
        }
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: value,
    };
    // SAFETY: setitimer reads `timer` and, with a null pointer, writes nothing.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The time left on this process's `ITIMER_REAL`; `None` when it is not
/// armed.
pub fn alarm_timer() -> io::Result<Option<Duration>> {
    // SAFETY: getitimer only writes into the stack-local `timer`.
    let timer = unsafe {
        let mut timer: libc::itimerval = std::mem::zeroed();
        if libc::getitimer(libc::ITIMER_REAL, &mut timer) != 0 {
            return Err(io::Error::last_os_error());
        }
        timer
    };
    let left = Duration::new(
        u64::try_from(timer.it_value.tv_sec).unwrap_or(0),
        u32::try_from(timer.it_value.tv_usec).unwrap_or(0) * 1000,
    );
    Ok((!left.is_zero()).then_some(left))
}

/// Whole seconds of `d` as the C library's `time_t`, at most its largest
/// value (`i64::MAX`, or `i32::MAX` where `time_t` has 32 bits). Written
/// without naming `libc::time_t`, which the libc crate marks as about to
/// change on musl.
fn saturating_secs<T: TryFrom<u64> + TryFrom<i64> + From<i32>>(d: Duration) -> T {
    T::try_from(d.as_secs())
        .or_else(|_| T::try_from(i64::MAX))
        .unwrap_or_else(|_| T::from(i32::MAX))
}

/// Arranges for `cmd`'s child, between fork and exec: an empty signal mask,
/// default dispositions for [`RESET_SIGNALS`], and, with `death_signal`, a
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

/// Ends this process by signal `sig`, as if the signal had killed it, after
/// flushing stdout and stderr (SPEC §1 "Signal deaths propagate"). A parent
/// sees a signal death (a shell's `$?` is 128+N), exactly what it would have
/// seen had it waited for the command we wrapped.
///
/// No core dump is written, whatever the signal's default action: the
/// process is made non-dumpable (`PR_SET_DUMPABLE` 0, which also stops a
/// `core_pattern` pipe such as systemd-coredump) and `RLIMIT_CORE` is set to
/// 0. The signal gets its default disposition and is unblocked, then raised.
/// Only when the process is still alive after that (a signal whose default
/// action is to ignore or to stop, which never kills a child and so should
/// not reach here) does it `exit(128 + sig)` instead.
///
/// Call it only after every cleanup is done: destructors of live values do
/// not run.
pub fn end_by_signal(sig: libc::c_int) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let stops = matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    );
    if (1..=libc::SIGRTMAX()).contains(&sig) && !stops && sig != libc::SIGKILL {
        raise_by_default(sig);
    } else if sig == libc::SIGKILL {
        // SAFETY: SIGKILL cannot be caught, blocked or ignored, and makes no
        // core; raise only sends it to this thread.
        unsafe {
            libc::raise(sig);
        }
    }
    // Still alive: the signal's default action does not kill.
    std::process::exit(128 + sig.clamp(0, 127))
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

/// The signal's name without `SIG` (`TERM`), for messages.
pub fn signal_name(sig: libc::c_int) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => sig.to_string(),
    }
}

/// The real-time signal that wakes a supervise loop when what its child
/// runs under was lost (see [`crate::supervise::Loss`]). No ccci tool
/// forwards, sends or handles it otherwise; a child gets it unblocked with
/// the default disposition, like every real-time signal.
pub fn loss_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal that tells a holder's `lockfile-watch` thread that its lock
/// dir changed (dnotify, [`notify_dir_changes`]) or that it should end
/// (sent to it alone with [`ThreadSignaller::send`]). Blocked in every
/// thread of the process for good, so it is only ever taken with
/// [`wait_signal`].
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
    /// it waits pending until taken with [`wait_signal`].
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

/// The signal that wakes a thread blocked in [`flock_or_interrupted`] (see
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
        if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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

/// A blocking `LOCK_EX` on `fd` that a signal with a handler installed
/// without `SA_RESTART` (see [`interrupt_on`]) can cut short: `Ok(true)`
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

// ---------------------------------------------------------------------------
// Process handles and descriptors for `ccci-lock --hold`'s keeper.

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

/// `poll(2)` on `fds` (each with the events wanted) for at most `timeout`
/// (`None`: forever). Returns each descriptor's `revents`, in order; all
/// zero when the timeout passed. An interrupted poll is retried with the
/// same timeout.
pub fn poll(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    timeout: Option<Duration>,
) -> io::Result<Vec<libc::c_short>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *events,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(t) => libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX),
    };
    loop {
        // SAFETY: `pollfds` is a live, correctly sized array of pollfd whose
        // descriptors are borrowed (open) for the duration of the call.
        let r = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(pollfds.iter().map(|p| p.revents).collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
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

/// Takes ownership of descriptor `fd`, which this process inherited from its
/// parent and was told about on its command line; it is made close-on-exec.
/// `EBADF` when no such descriptor is open.
///
/// Call it once per descriptor, at start-up, before anything else could
/// have opened (and so own) a descriptor with that number.
pub fn adopt_inherited_fd(fd: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: fcntl on a number only reads or sets that descriptor's flags;
    // an unused number gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and, per this
    // function's contract, inherited and owned by nothing else in this process.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Points stdin, stdout and stderr at `/dev/null`, so that a long-lived
/// process holds no terminal and no pipe that a caller waits on.
pub fn stdio_to_dev_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: dup2 onto 0, 1 and 2 replaces those descriptors atomically;
        // `null` is open for the duration of the call.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets this process's name as `ps -o comm` and `/proc/PID/comm` show it
/// (at most 15 bytes are kept).
pub fn set_process_name(name: &str) -> io::Result<()> {
    let name =
        std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of which the kernel
    // copies at most 16 bytes; `name` lives for the duration of the call.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pid and uid of the process at the other end of the unix socket
/// `fd`, as the kernel recorded them when the connection was made (for the
/// connecting side: when the other end called `listen`) (`SO_PEERCRED`).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    // SAFETY: `cred` is a stack-local ucred of the size passed in `len`;
    // getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok((cred.pid as u32, cred.uid))
    }
}

/// A command ready to start with [`spawn`]: every string it needs as a C
/// string, built before the child exists, so the child allocates nothing.
#[derive(Debug)]
pub struct SpawnPlan {
    /// The paths to try, in order: the program itself when it names a path
    /// (has a `/`), else the program in each `PATH` directory, as
    /// `execvp(3)` tries them.
    paths: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Descriptors the child gets as its stdin and stdout.
    stdin: Option<libc::c_int>,
    stdout: Option<libc::c_int>,
    own_group: bool,
    death_signal: Option<libc::c_int>,
}

/// `PATH` when the environment has none, as glibc's `execvp` assumes.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

impl SpawnPlan {
    /// A plan for `argv` (program first) with this process's environment,
    /// `env` added to it (a name given twice: the last value wins). An
    /// empty `argv`, or a NUL byte in any string, is `InvalidInput`.
    pub fn new(argv: &[OsString], env: &[(OsString, OsString)]) -> io::Result<SpawnPlan> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let nul = || io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument");
        let cstr = |bytes: Vec<u8>| CString::new(bytes).map_err(|_| nul());
        let program = argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no program"))?;
        let argv = argv
            .iter()
            .map(|a| cstr(a.as_bytes().to_vec()))
            .collect::<io::Result<Vec<_>>>()?;
        let overridden = |name: &[u8]| env.iter().any(|(k, _)| k.as_bytes() == name);
        let mut envp = Vec::new();
        let mut path_var = None;
        let inherited = std::env::vars_os().filter(|(k, _)| !overridden(k.as_bytes()));
        let given = env
            .iter()
            .enumerate()
            // The last of several values for one name.
            .filter(|(i, (k, _))| !env[i + 1..].iter().any(|(later, _)| later == k))
            .map(|(_, kv)| kv.clone());
        for (k, v) in inherited.chain(given) {
            if k.as_bytes() == b"PATH" {
                path_var = Some(v.clone());
            }
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            envp.push(cstr(entry)?);
        }
        let program = program.as_bytes();
        let paths = if program.contains(&b'/') {
            vec![cstr(program.to_vec())?]
        } else if program.is_empty() {
            // execvp("") fails with ENOENT; an empty path does the same.
            vec![cstr(Vec::new())?]
        } else {
            let search = path_var.as_ref().map_or(DEFAULT_PATH, |p| p.as_bytes());
            search
                .split(|&b| b == b':')
                .map(|dir| {
                    // An empty entry is the current directory.
                    let mut path = dir.to_vec();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(program);
                    cstr(path)
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        Ok(SpawnPlan {
            paths,
            argv,
            envp,
            stdin: None,
            stdout: None,
            own_group: false,
            death_signal: None,
        })
    }

    /// The child's stdin is `fd` (which must stay open until [`spawn`]
    /// returns; it may be close-on-exec).
    pub fn stdin(&mut self, fd: BorrowedFd<'_>) -> &mut Self {
        self.stdin = Some(fd.as_raw_fd());
        self
    }

    /// The child's stdout is `fd` (as [`SpawnPlan::stdin`]).
    pub fn stdout(&mut self, fd: BorrowedFd<'_>) -> &mut Self {
        self.stdout = Some(fd.as_raw_fd());
        self
    }

    /// The child starts a process group of its own (`setpgid(0, 0)`).
    pub fn own_group(&mut self, yes: bool) -> &mut Self {
        self.own_group = yes;
        self
    }

    /// The child's parent-death signal; see [`spawn`].
    pub fn death_signal(&mut self, sig: Option<libc::c_int>) -> &mut Self {
        self.death_signal = sig;
        self
    }
}

/// What the child of [`spawn`] reads, and where it leaves its error: all of
/// it in the parent's memory, which the child shares until it execs.
struct ChildPlan {
    paths: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh PATH ARG...`: the second entry is filled in by the child
    /// for a program the kernel cannot execute (`ENOEXEC`), as `execvp`
    /// hands such a file to the shell.
    sh_argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdin: libc::c_int,
    stdout: libc::c_int,
    own_group: bool,
    death_signal: libc::c_int,
    parent: libc::pid_t,
    /// The `errno` of the step that failed, or 0.
    error: std::sync::atomic::AtomicI32,
}

const SH: &std::ffi::CStr = c"/bin/sh";

/// The bytes of stack the child of [`spawn`] runs on. It calls a dozen
/// system-call wrappers and nothing else; glibc's posix_spawn gives its
/// child about as much.
const CHILD_STACK: usize = 32 * 1024;

/// Starts `plan` the way `posix_spawn(3)` does, and returns the child's pid
/// once it has called `execve` (or the error that kept it from running).
///
/// The child is made with `clone(CLONE_VM | CLONE_VFORK)`: it runs in this
/// process's memory, on a stack of its own, while this thread waits until
/// it has exec'd or exited. No page tables are copied and no copy-on-write
/// faults follow, which is what a `fork` costs (std's `Command` forks as
/// soon as a `pre_exec` hook is set). In exchange the child may only make
/// async-signal-safe system calls on data prepared before the clone; it
/// allocates nothing and takes no lock, and its only write to shared memory
/// is its error code (and, for the shell fallback, one prepared slot).
///
/// In the child, in order:
/// 1. Every signal stays blocked from before the clone (this thread blocks
///    them all around it), so no handler of ours can run on shared memory.
///    Each signal with a handler, and each of [`RESET_SIGNALS`], gets its
///    default disposition.
/// 2. With a death signal: `PR_SET_PDEATHSIG`.
/// 3. With `own_group`: `setpgid(0, 0)`, before this thread resumes, so
///    the group exists by the time anyone signals it.
/// 4. stdin and stdout are put in place (`dup2`).
/// 5. The signal mask is emptied. Then, with a death signal, if the parent
///    is no longer this process (it was SIGKILLed after the clone and the
///    prctl came too late), the child sends itself the signal at once, as
///    the parent's death would have.
/// 6. `execve` of each path in turn, with `execvp(3)`'s rules: a file not
///    found (`ENOENT`, `ENOTDIR`, ...) moves on to the next `PATH`
///    directory, `EACCES` is remembered and moves on, any other error
///    stops; a file the kernel cannot execute is run by `/bin/sh`. On
///    failure the child writes `errno` where the parent reads it and
///    `_exit(127)`s; the parent reaps it and returns the error, whose
///    `kind()` tells "not found" from "not executable".
pub fn spawn(plan: &SpawnPlan) -> io::Result<libc::pid_t> {
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let sh_argv = std::iter::once(SH.as_ptr())
        .chain(std::iter::once(std::ptr::null())) // the slot for the path
        .chain(plan.argv.iter().skip(1).map(|s| s.as_ptr()))
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let child = ChildPlan {
        paths: plan.paths.iter().map(|p| p.as_ptr()).collect(),
        argv: pointers(&plan.argv),
        sh_argv,
        envp: pointers(&plan.envp),
        stdin: plan.stdin.unwrap_or(-1),
        stdout: plan.stdout.unwrap_or(-1),
        own_group: plan.own_group,
        death_signal: plan.death_signal.unwrap_or(0),
        parent: std::process::id() as libc::pid_t,
        error: std::sync::atomic::AtomicI32::new(0),
    };
    // u128: 16-byte alignment, which the x86-64 and aarch64 ABIs want of a
    // stack pointer.
    let mut stack = vec![0u128; CHILD_STACK / 16];
    // SAFETY: the stack grows down: its top is one past the end of the
    // buffer, which stays alive (and unused by this thread) until clone
    // returns, and with CLONE_VFORK it returns only once the child has
    // exec'd (getting memory of its own) or exited. `child` outlives the
    // child's use of it for the same reason; the child only reads it, except
    // for the atomic `error` and the sh_argv slot, which this thread reads
    // only after clone returns. All signals are blocked across the clone, so
    // the child starts with no handler able to run; the old mask is
    // restored before returning.
    let (pid, clone_error) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.as_mut_ptr().add(stack.len()).cast::<libc::c_void>();
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&child as *const ChildPlan).cast_mut().cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        (pid, clone_error)
    };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    match child.error.load(std::sync::atomic::Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            // The child has _exit'ed; reap it so that no zombie is left.
            let _ = wait_pid(pid, false);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child of [`spawn`]: see there. Only async-signal-safe calls on the
/// prepared plan; every failure leaves `errno` in the plan and `_exit(127)`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildPlan that `spawn` keeps alive, unmoved and
    // unread until this child execs or exits (CLONE_VFORK). Every call below
    // is a system-call wrapper that touches only stack-local values, the
    // plan's prepared strings and pointer arrays, and this task's own signal
    // state, descriptors and process attributes.
    unsafe {
        let plan = &*(arg as *const ChildPlan);
        let fail = |errno: libc::c_int| -> ! {
            plan.error
                .store(errno.max(1), std::sync::atomic::Ordering::SeqCst);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            // glibc's own signals (SIGRTMIN-2, SIGRTMIN-1) give EINVAL: skip.
            if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let handled =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if handled || RESET_SIGNALS.contains(&sig) {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if plan.death_signal != 0
            && libc::prctl(
                libc::PR_SET_PDEATHSIG,
                plan.death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
        {
            fail(errno());
        }
        if plan.own_group && libc::setpgid(0, 0) != 0 {
            fail(errno());
        }
        for (from, to) in [(plan.stdin, 0), (plan.stdout, 1)] {
            if from < 0 {
                continue;
            }
            // dup2 onto itself keeps close-on-exec: clear it instead.
            let done = if from == to {
                libc::fcntl(to, libc::F_SETFD, 0)
            } else {
                libc::dup2(from, to)
            };
            if done < 0 {
                fail(errno());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if plan.death_signal != 0 && libc::getppid() != plan.parent {
            libc::kill(libc::getpid(), plan.death_signal);
            libc::_exit(128 + plan.death_signal);
        }
        let mut error = libc::ENOENT;
        let mut denied = false;
        for &path in &plan.paths {
            libc::execve(path, plan.argv.as_ptr(), plan.envp.as_ptr());
            match errno() {
                libc::ENOEXEC => {
                    let slot = plan.sh_argv.as_ptr().add(1).cast_mut();
                    *slot = path;
                    libc::execve(SH.as_ptr(), plan.sh_argv.as_ptr(), plan.envp.as_ptr());
                    fail(errno());
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                e => {
                    error = e;
                    denied = false;
                    break;
                }
            }
            error = errno();
        }
        fail(if denied { libc::EACCES } else { error })
    }
}

/// `waitpid` for `pid` (retrying on `EINTR`); with `nohang`, `Ok(None)`
/// while it runs. The status is a raw wait status.
pub fn wait_pid(pid: libc::pid_t, nohang: bool) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the stack-local status.
        match unsafe { libc::waitpid(pid, &mut status, flags) } {
            0 => return Ok(None),
            p if p > 0 => return Ok(Some(std::process::ExitStatus::from_raw(status))),
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER)`: from now on, a descendant whose
/// parent exits is re-parented to this process instead of to init, so
/// that [`wait_any`] sees every process the children started, also one
/// that left its process group or session.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What [`wait_any`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// This child ended with this status; it is reaped.
    Reaped(libc::pid_t, std::process::ExitStatus),
    /// Children exist, none has ended.
    Running,
    /// No child is left.
    NoChildren,
}

/// `waitpid(-1, WNOHANG)`: reaps any one child that has ended.
pub fn wait_any() -> io::Result<Waited> {
    use std::os::unix::process::ExitStatusExt;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the stack-local status.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return Ok(Waited::Running),
            p if p > 0 => {
                return Ok(Waited::Reaped(
                    p,
                    std::process::ExitStatus::from_raw(status),
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => return Ok(Waited::NoChildren),
                    _ => return Err(e),
                }
            }
        }
    }
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

/// Whether `name` matches the shell pattern `pattern`: the C library's
/// fnmatch(3), no flags (the janitor's `--only` and `--warm`).
pub fn fnmatch(pattern: &std::ffi::CStr, name: &std::ffi::CStr) -> bool {
    // SAFETY: both are NUL-terminated C strings that outlive the call;
    // fnmatch only reads them.
    unsafe { libc::fnmatch(pattern.as_ptr(), name.as_ptr(), 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in a re-run of this test binary: the signal the child ends by,
    /// optionally ignored and blocked first (`QUIT:hostile`).
    const END_BY: &str = "CCCI_TEST_END_BY_SIGNAL";

    /// Not a test of its own: the body of the child that
    /// `a_child_that_ends_by_a_signal_is_seen_killed_without_core` runs.
    #[test]
    fn end_by_signal_child() {
        let Some(how) = std::env::var_os(END_BY) else {
            return;
        };
        let how = how.into_string().unwrap();
        let (sig, hostile) = match how.split_once(':') {
            Some((sig, _)) => (sig.parse().unwrap(), true),
            None => (how.parse().unwrap(), false),
        };
        if hostile {
            // What a tool may have inherited or set up itself.
            block_signals(&[sig]).unwrap();
            // SAFETY: test only: SIG_IGN runs no handler code; setrlimit
            // reads the stack-local limit. Core files allowed, so that a
            // missing guard against them would show.
            unsafe {
                libc::signal(sig, libc::SIG_IGN);
                let all = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &all);
            }
        }
        print!("unflushed output");
        end_by_signal(sig);
    }

    #[test]
    fn a_child_that_ends_by_a_signal_is_seen_killed_without_core() {
        use std::os::unix::process::ExitStatusExt;
        let cwd = tempfile::tempdir().unwrap();
        let run = |how: String| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "sys::tests::end_by_signal_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(END_BY, &how)
                .current_dir(cwd.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(stdout.contains("unflushed output"), "{how}: {stdout:?}");
            out.status
        };
        for sig in [
            libc::SIGTERM,
            libc::SIGALRM,
            libc::SIGQUIT,
            libc::SIGABRT,
            libc::SIGSEGV,
            libc::SIGUSR1,
            libc::SIGKILL,
        ] {
            for how in [sig.to_string(), format!("{sig}:hostile")] {
                let status = run(how.clone());
                assert_eq!(status.signal(), Some(sig), "{how}: {status:?}");
                assert!(!status.core_dumped(), "{how}: dumped core");
            }
        }
        // A signal whose default action is to ignore cannot kill: 128+N.
        let status = run(libc::SIGCHLD.to_string());
        assert_eq!(status.code(), Some(128 + libc::SIGCHLD));
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_name(libc::SIGALRM), "ALRM");
    }

    #[test]
    fn alarm_timer_is_armed_read_back_and_disarmed() {
        // An hour is long enough never to fire during the test run.
        assert_eq!(alarm_timer().unwrap(), None);
        set_alarm_timer(Some(Duration::from_secs(3600))).unwrap();
        let left = alarm_timer().unwrap().expect("armed");
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        set_alarm_timer(None).unwrap();
        assert_eq!(alarm_timer().unwrap(), None);
    }

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
