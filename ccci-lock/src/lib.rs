//! The lock protocol: one holder per app domain.
//!
//! # Invariants
//!
//! The lock of DOMAIN is an exclusive `flock(2)` on `<lock dir>/<DOMAIN>.lock`.
//! The kernel lock is the truth; the lockfile's content (a JSON holder record)
//! is diagnostics only.
//!
//! 1. **Identity after every acquisition.** A holder owns the lock only if,
//!    after `flock` succeeds, the path still names the file it locked (same
//!    device and inode). A waiter that was blocked on a file which was
//!    unlinked meanwhile now holds a lock on a nameless inode, while a newer
//!    process may hold the lock on the file now at the path: both would think
//!    they own DOMAIN. The check makes the waiter close and start over.
//! 2. **Unlink only while holding.** The lockfile is removed only by a holder
//!    that passed the check, before it releases. So while a process holds a
//!    checked lock, the path keeps naming its file: nobody else can remove it.
//!    Together, 1 and 2 give one holder per domain even though lockfiles come
//!    and go (a finishing run removes its lockfile; so does the janitor).
//! 3. **Not inherited.** The lock descriptor is close-on-exec and is never
//!    passed to a child, so the lock ends when the holding process ends,
//!    whatever its children do, and a SIGKILLed holder frees it at once.
//! 4. **A leftover lockfile means "maybe an app to reap".** A holder whose
//!    command exits normally removes the lockfile (unless `--keep`); one
//!    whose command was killed by a signal, or that was itself killed,
//!    leaves it for `ccci-janitor`; so does one whose lock was lost (a
//!    lease backend). A run that gave up (busy, or a set with one busy
//!    domain) removes any lockfile it created and never held for others:
//!    nobody ran, so nothing is left to reap.
//! 5. **Sets in one order.** Several domains are taken in sorted order, all
//!    or none ([`acquire_all`]): overlapping sets never deadlock.
//! 6. **Looking never blocks anyone.** Listing, `-v` and a janitor's check of
//!    a live domain take no lock ([`Backend::status`], [`flock::flock_holder`]),
//!    so they never make a concurrent `-n` on a free domain fail.
//!
//! 7. **The janitor looks where the runs claim.** Before its first claim, a
//!    holder makes sure its host's lock dir records where it claims (files,
//!    or an etcd cluster and prefix); a janitor that looks elsewhere refuses
//!    the whole pass ([`place`]).
//!
//! The protocol is expressed by the [`Backend`] and [`Claim`] traits in
//! [`protocol`], so that a second backend (etcd, for several hosts) can
//! provide the same semantics; [`FlockDir`] in [`flock`] is the local one.
//!
//! # What lives where
//!
//! - [`protocol`]: the [`Backend`] and [`Claim`] traits, holder records,
//!   sets taken in one order.
//! - [`flock`]: the lock dir backend; [`etcd`]: the etcd backend.
//! - [`place`]: the lock dir's record of where its runs claim.
//! - [`cli`]: the command line: the clap definition, parsing, dispatch.
//! - [`backend`]: the one choice of backend (the lock dir or etcd), and the
//!   [`backend::Job`]s that run on either.
//! - [`wrap`]: the wrap (lock, run COMMAND, settle).
//! - [`list`]: the listing of `--list`, which takes no lock.
//! - [`hold`]: `--hold` and `--release`, and the keeper they start.
//! - [`report`]: who holds a lock, in words.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod etcd;
pub mod flock;
pub mod hold;
pub mod list;
pub mod place;
pub mod protocol;
pub mod report;
pub mod wrap;

pub use flock::{domain_of, lockfile_name, FlockClaim, FlockDir, PASS_LOCK, RECORDS_LOCK, SUFFIX};
pub use protocol::{
    acquire_all, Acquired, Backend, BusyDomain, Claim, DomainList, Holder, PassLock, Probe, Status,
    Wait,
};

/// How long COMMAND may take to stop after SIGTERM when the lock it runs
/// under is lost, before it gets SIGKILL (`--lost-grace`; a keeper's
/// harness too).
pub const DEFAULT_LOST_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
