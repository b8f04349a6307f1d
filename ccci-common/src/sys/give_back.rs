//! Lockfiles a signal gives back: while [`GiveBackOnSignal`] lives, a
//! signal that would end the process first removes the empty lockfiles it
//! keeps, and only while their names still name them, then ends the
//! process by that signal. The handler runs only async-signal-safe calls
//! on atomics and fixed buffers, so it may interrupt any code.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use super::end::raise_by_default;

/// The signals that end a tool by default and that `ccci-lock` forwards:
/// while a set of locks is being taken, they make the process give back the
/// lockfiles it created for the set, then end by the signal
/// ([`GiveBackOnSignal`]). [`crate::supervise::FORWARDED`] is this list.
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
                super::signals::note_handler(sig);
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
