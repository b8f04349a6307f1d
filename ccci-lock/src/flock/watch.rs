//! Noticing that a held lockfile is no longer the file its path names
//! ([`LockfileWatch`], started by [`Claim::watch_loss`]): the lock dir or
//! the lockfile removed or replaced by hand while a run holds it, which
//! is reported as a lost lock.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ccci_common::fs::SafeDir;
use ccci_common::supervise::LossNotifier;
use ccci_common::sys;
use ccci_common::Domain;

use super::claim::FileId;
#[cfg(doc)]
use crate::protocol::Claim;

/// Notices that a held lockfile is no longer the file its path names, and
/// reports it as a lost lock ([`Claim::watch_loss`]).
///
/// Rule 2 (unlink only while holding) keeps a held lockfile at its path
/// against every ccci tool, but not against a person or a script: `rm -rf
/// LOCK_DIR`, or `mv LOCK_DIR LOCK_DIR.old; mkdir LOCK_DIR`, while runs are
/// live lets a new run create a new lockfile and take its lock while the
/// old holder still holds its unlinked (or moved) file: two holders. So a
/// holder watches its lock dir and the lock dir's parent with dnotify
/// (`fcntl(F_NOTIFY)`, [`sys::notify_dir_changes`]): an entry deleted,
/// renamed or created in either wakes a thread (started with every signal
/// blocked, waiting in `sigwaitinfo` for [`sys::dir_change_signal`]) that
/// makes the identity check again: the lock dir's path must still name the
/// directory, and the lockfile's name in it must still name the locked
/// file. If not, it says so and reports the loss: COMMAND gets SIGTERM,
/// SIGKILL after `--lost-grace`, and ccci-lock exits 125, exactly as for a
/// lost etcd lease. Nothing polls: with no change in those two directories
/// the thread sleeps. The cost on a run is two opens, a few `fcntl`s and a
/// thread start. (inotify(7) was tried first: closing an inotify instance
/// that had a watch made every run wait for the kernel's SRCU grace period,
/// 0.05 to 12 ms here, which doubled the time of `ccci-lock D -- true`.)
///
/// Bounds: a change is noticed as soon as the thread runs after it (on an
/// idle machine, well under a millisecond). Only the lock dir, its parent
/// and the lockfile are watched: a renamed ancestor further up (which only
/// its owner, root or the CI user, can rename; see "Directories" in the
/// spec) is not noticed, nor is a renamed lock dir whose parent this
/// process cannot read (a search-only parent). Queued signals never
/// overflow unnoticed: a change that finds the queue full is dropped, but
/// the thread checks after every signal it takes, and the check looks at
/// the state, not at the events.
#[derive(Debug)]
pub(super) struct LockfileWatch {
    shared: Arc<WatchShared>,
}

#[derive(Debug, Default)]
struct WatchShared {
    /// The claim is being settled (removed or released) by its holder.
    stopped: std::sync::atomic::AtomicBool,
    /// Wakes the thread, once it has started.
    wake: Mutex<Option<sys::ThreadSignaller>>,
}

impl Drop for LockfileWatch {
    fn drop(&mut self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let wake = self.shared.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wake) = &*wake {
            wake.send();
        }
    }
}

impl LockfileWatch {
    /// Starts the `lockfile-watch` thread of the claim on the lockfile
    /// `name` (identity `id`) of `dir`, which reports to `notifier`.
    pub(super) fn start(
        dir: &Arc<SafeDir>,
        name: &str,
        id: FileId,
        domain: &Domain,
        notifier: LossNotifier,
    ) -> anyhow::Result<LockfileWatch> {
        // Blocked here for good, before the thread exists, so that a
        // change signal queued for the process is never anybody's death.
        sys::block_signals(&[sys::dir_change_signal()])?;
        let shared = Arc::new(WatchShared::default());
        let (dir, name, domain) = (Arc::clone(dir), name.to_string(), domain.clone());
        let thread_shared = Arc::clone(&shared);
        sys::spawn_without_signals("lockfile-watch", move || {
            watch_lockfile(&thread_shared, &dir, &name, id, &domain, &notifier)
        })?;
        Ok(LockfileWatch { shared })
    }
}

/// Whether the lock dir's path still names our lock dir and the
/// lockfile's name in it our file (see [`LockfileWatch`]); the error
/// says what changed.
fn still_at_path(dir: &SafeDir, name: &str, id: FileId) -> Result<(), String> {
    let path = dir.path();
    let ours = nix::sys::stat::fstat(dir.as_fd()).map_err(|e| e.to_string())?;
    match nix::sys::stat::lstat(path) {
        Ok(st) if st.st_dev == ours.st_dev && st.st_ino == ours.st_ino => {}
        Ok(_) => {
            return Err(format!(
                "the lock dir {} was replaced",
                ccci_common::names::quote_path(path)
            ))
        }
        Err(_) => {
            return Err(format!(
                "the lock dir {} was removed or moved away",
                ccci_common::names::quote_path(path)
            ))
        }
    }
    match dir.stat(name) {
        Ok(Some(st)) if FileId::of(&st) == id => Ok(()),
        Ok(Some(_)) => Err(format!(
            "the lockfile {} was replaced",
            ccci_common::names::quote_path(&dir.join(name))
        )),
        _ => Err(format!(
            "the lockfile {} was removed",
            ccci_common::names::quote_path(&dir.join(name))
        )),
    }
}

/// Says that the lock of `domain` is lost because `what` happened, and
/// reports it.
fn report_moved(what: &str, domain: &Domain, notifier: &LossNotifier) {
    ccci_common::say!(
        "{what} while the lock of {domain} was held: the lock is lost (another run may \
         hold it now)"
    );
    notifier.notify();
}

/// The body of the `lockfile-watch` thread (see [`LockfileWatch`]).
fn watch_lockfile(
    shared: &WatchShared,
    dir: &SafeDir,
    name: &str,
    id: FileId,
    domain: &Domain,
    notifier: &LossNotifier,
) {
    use std::sync::atomic::Ordering;
    let wake = sys::ThreadSignal::new(sys::dir_change_signal());
    *shared.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake.signaller());
    // Our own descriptors of the lock dir and its parent: dnotify lasts as
    // long as the descriptor it was asked on.
    let parent = match dir.path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut watched = Vec::with_capacity(2);
    for opened in [
        nix::fcntl::openat(
            dir.as_fd(),
            ".",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
        nix::fcntl::open(
            parent,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    ] {
        // A parent we may only search cannot be watched; the lock dir can.
        let Ok(fd) = opened else { continue };
        if sys::notify_dir_changes(fd.as_fd()).is_ok() {
            watched.push(fd);
        }
    }
    if watched.is_empty() {
        return;
    }
    // Checked once the watches are in place: a change before them is seen
    // here, one after them wakes us.
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        if let Err(what) = still_at_path(dir, name, id) {
            // Read after the check: our own removal sets it before unlinking.
            if !shared.stopped.load(Ordering::SeqCst) {
                report_moved(&what, domain, notifier);
            }
            return;
        }
        if sys::wait_signal(&[sys::dir_change_signal()], None).is_err() {
            return;
        }
    }
}
