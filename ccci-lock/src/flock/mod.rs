//! The local backend: an exclusive `flock(2)` on `<lock dir>/<DOMAIN>.lock`.
//!
//! # What lives where
//!
//! - `names`: lockfile names ([`lockfile_name`], [`domain_of`], the pass
//!   and records locks).
//! - `proc_locks`: reading `/proc/locks` ([`flock_holder`]), and the
//!   snapshot of it that a janitor pass reuses.
//! - `lock_dir`: [`FlockDir`] and its lock protocol: open, lock, identity
//!   check, unlink under the lock, nothing left behind by a run that gave
//!   up.
//! - `wait`: waiting (`-w` / `-n`), and the `lock-wait` thread.
//! - `claim`: a held lock ([`FlockClaim`]): its record, age and end; and a
//!   held lock of the lock dir's own, no domain's ([`DirLock`]).
//! - `watch`: noticing a held lockfile removed or replaced by hand.
//! - `listing`: listing and looking, without taking any lock.

mod claim;
mod listing;
mod lock_dir;
mod names;
mod proc_locks;
mod wait;
mod watch;

pub use claim::{DirLock, FlockClaim};
pub use lock_dir::FlockDir;
pub use names::{domain_of, lockfile_name, PASS_LOCK, RECORDS_LOCK, SUFFIX};
pub use proc_locks::{flock_holder, KernelLock};

/// What the unit tests of the lock dir backend share.
#[cfg(test)]
mod testing {
    use super::FlockDir;
    use crate::protocol::Acquired;
    use crate::FlockClaim;
    use ccci_common::Domain;

    /// The domain `name`, which must be valid.
    pub(super) fn d(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    /// A new lock dir in a temporary directory that lasts as long as the
    /// first value.
    pub(super) fn lock_dir() -> (tempfile::TempDir, FlockDir) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("locks");
        let dir = FlockDir::open(&path, true).unwrap().unwrap();
        (tmp, dir)
    }

    /// The claim of an acquire that must have got it.
    pub(super) fn held(a: Acquired<FlockClaim>) -> FlockClaim {
        match a {
            Acquired::Held(c) => c,
            Acquired::Busy(h) => panic!("busy: {h:?}"),
        }
    }
}
