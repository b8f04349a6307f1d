//! Noticing that a held lockfile is no longer the file its path names
//! ([`LockfileWatch`], started by [`Claim::watch_loss`]): the lock dir or
//! the lockfile removed or replaced by hand while a run holds it, which
//! is reported as a lost lock.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
/// renamed or created in either sends [`sys::dir_change_signal`] to the
/// thread that will wait for COMMAND, and its wait loop, woken, makes the
/// identity check again (a check of the [`LossNotifier`]): the lock dir's
/// path must still name the directory, and the lockfile's name in it must
/// still name the locked file. If not, it says so and reports the loss:
/// COMMAND gets SIGTERM, SIGKILL after `--lost-grace`, and ccci-lock exits
/// 125, exactly as for a lost etcd lease. Nothing polls: with no change in
/// those two directories nothing runs. The cost on a run is two opens and
/// a few `fcntl`s; no thread (a thread of its own cost a wrap about
/// 0.1 ms, a sixth of its time). (inotify(7) was tried first: closing an
/// inotify instance that had a watch made every run wait for the kernel's
/// SRCU grace period, 0.05 to 12 ms here, which doubled the time of
/// `ccci-lock D -- true`.)
///
/// Bounds: a change is noticed as soon as the waiting thread runs after it
/// (on an idle machine, well under a millisecond). Only the lock dir, its
/// parent and the lockfile are watched: a renamed ancestor further up
/// (which only its owner, root or the CI user, can rename; see
/// "Directories" in the spec) is not noticed, nor is a renamed lock dir
/// whose parent this process cannot read (a search-only parent). Queued
/// signals never overflow unnoticed: a change that finds the queue full is
/// dropped, but the check runs after every signal taken, and it looks at
/// the state, not at the events.
#[derive(Debug)]
pub(super) struct LockfileWatch {
    /// Set when the claim is being settled by its holder: a check from then
    /// on says nothing.
    stopped: Arc<AtomicBool>,
    /// The lock dir and its parent, asked for dnotify: it lasts as long as
    /// the descriptor it was asked on.
    watched: Vec<OwnedFd>,
}

impl Drop for LockfileWatch {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl LockfileWatch {
    /// Watches the lockfile `name` (identity `id`) of `dir` for the thread
    /// that calls this, which then waits for COMMAND and runs the check
    /// when the directories change; a loss goes to `notifier`.
    pub(super) fn start(
        dir: &Arc<SafeDir>,
        name: &str,
        id: FileId,
        domain: &Domain,
        notifier: LossNotifier,
    ) -> anyhow::Result<LockfileWatch> {
        // Blocked here for good, before anything can send it, so that a
        // change signal is never anybody's death.
        sys::block_signals(&[sys::dir_change_signal()])?;
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
        let stopped = Arc::new(AtomicBool::new(false));
        let watch = LockfileWatch {
            stopped: Arc::clone(&stopped),
            watched,
        };
        if watch.watched.is_empty() {
            return Ok(watch);
        }
        let (dir, name, domain) = (Arc::clone(dir), name.to_string(), domain.clone());
        let checks = notifier.clone();
        let check = move || {
            if stopped.load(Ordering::SeqCst) {
                return true;
            }
            match still_at_path(&dir, &name, id) {
                Ok(()) => false,
                Err(what) => {
                    report_moved(&what, &domain, &notifier);
                    true
                }
            }
        };
        // Checked once the watches are in place: a change before them is
        // seen here, one after them wakes the waiting thread.
        if !check() {
            checks.check_on_dir_change(Box::new(check));
        }
        Ok(watch)
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
