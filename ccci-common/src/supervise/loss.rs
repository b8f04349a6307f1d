//! A [`Loss`]: what a child runs under (an etcd lock lease) found lost by
//! another thread. The race it closes: a loss reported at any moment, even
//! before the child starts, is seen by the wait loop without polling,
//! either in the flag or as [`sys::loss_signal`] pending in the waiting
//! thread, which blocked it before anything that can be lost existed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::sys;

/// Something a child runs under that another thread may find lost while it
/// runs (a lock whose lease expired). Made on the thread that will wait for
/// the child, before what can be lost is acquired; see the doc of [`crate::supervise`].
#[derive(Debug)]
pub struct Loss {
    lost: Arc<AtomicBool>,
    wake: sys::ThreadSignal,
}

/// Reports a [`Loss`]; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct LossNotifier {
    lost: Arc<AtomicBool>,
    wake: sys::ThreadSignaller,
}

impl Loss {
    /// Blocks [`sys::loss_signal`] in this thread (for good: a stray one
    /// left pending must never kill the process) and makes the flag.
    pub fn new() -> io::Result<Loss> {
        sys::block_signals(&[sys::loss_signal()])?;
        Ok(Loss {
            lost: Arc::new(AtomicBool::new(false)),
            wake: sys::ThreadSignal::new(sys::loss_signal()),
        })
    }

    /// A notifier for whoever can find the loss.
    pub fn notifier(&self) -> LossNotifier {
        LossNotifier {
            lost: Arc::clone(&self.lost),
            wake: self.wake.signaller(),
        }
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
}
