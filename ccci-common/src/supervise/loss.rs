//! A [`Loss`]: what a child runs under (an etcd lock lease) found lost by
//! another thread. The race it closes: a loss reported at any moment, even
//! before the child starts, is seen by the wait loop without polling,
//! either in the flag or as [`sys::loss_signal`] pending in the waiting
//! thread, which blocked it before anything that can be lost existed.
//!
//! A loss may also be found by the waiting thread itself, with no thread of
//! its own: a *check* ([`LossNotifier::check_on_dir_change`]) runs in the
//! wait loop each time [`sys::dir_change_signal`] arrives for that thread
//! (dnotify on a lock dir, [`sys::notify_dir_changes`]), and reports the
//! loss when what it checks has changed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys;

/// Something a child runs under that another thread may find lost while it
/// runs (a lock whose lease expired). Made on the thread that will wait for
/// the child, before what can be lost is acquired; see the doc of [`crate::supervise`].
#[derive(Debug)]
pub struct Loss {
    lost: Arc<AtomicBool>,
    wake: sys::ThreadSignal,
    checks: Checks,
}

/// Reports a [`Loss`]; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct LossNotifier {
    lost: Arc<AtomicBool>,
    wake: sys::ThreadSignaller,
    checks: Checks,
}

/// A check run by the waiting thread when a watched directory changed:
/// `true` once it found (and reported) the loss, after which it is dropped.
pub type Check = Box<dyn FnMut() -> bool + Send>;

/// The checks of a [`Loss`].
#[derive(Clone, Default)]
struct Checks(Arc<Mutex<Vec<Check>>>);

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |c| c.len());
        write!(f, "Checks({n})")
    }
}

impl Loss {
    /// Blocks [`sys::loss_signal`] in this thread (for good: a stray one
    /// left pending must never kill the process) and makes the flag.
    pub fn new() -> io::Result<Loss> {
        sys::block_signals(&[sys::loss_signal()])?;
        Ok(Loss {
            lost: Arc::new(AtomicBool::new(false)),
            wake: sys::ThreadSignal::new(sys::loss_signal()),
            checks: Checks::default(),
        })
    }

    /// A notifier for whoever can find the loss.
    pub fn notifier(&self) -> LossNotifier {
        LossNotifier {
            lost: Arc::clone(&self.lost),
            wake: self.wake.signaller(),
            checks: self.checks.clone(),
        }
    }

    /// Runs every check (see [`LossNotifier::check_on_dir_change`]); the
    /// wait loop calls this when [`sys::dir_change_signal`] arrives.
    pub fn run_checks(&self) {
        let mut checks = self.checks.0.lock().unwrap_or_else(|e| e.into_inner());
        checks.retain_mut(|check| !check());
    }

    /// Whether a loss was reported.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl LossNotifier {
    /// Reports the loss: sets the flag, then wakes the waiting thread.
    /// Idempotent; after the [`Loss`] is dropped it only sets the flag.
    pub fn notify(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.wake.send();
    }

    /// Runs `check` in the thread waiting on the [`Loss`] each time
    /// [`sys::dir_change_signal`] arrives for it: the caller, on that
    /// thread, has asked for it with [`sys::notify_dir_changes`] (and so
    /// blocked it). `check` reports a loss itself ([`LossNotifier::notify`])
    /// and returns `true` then.
    pub fn check_on_dir_change(&self, check: Check) {
        self.checks
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(check);
    }
}
