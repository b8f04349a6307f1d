//! Settling abandoned claims (SPEC §4): one janitor pass.
//!
//! A claim (a lockfile) that outlives its run means "maybe an app to reap".
//! A pass looks at every candidate domain, in order, once, and settles it.
//!
//! # Guarantees
//!
//! - **Never a live run.** A claim is only settled while this process holds
//!   its lock, taken without waiting ([`Backend::probe`]). A held lock is
//!   reported (`live`, or `leaked` past `--leak-after`) and never stolen.
//! - **Exactly once.** The reap runs while the lock is held, and the claim
//!   is removed (unlinked while held, [`Claim::remove`]) only after the reap
//!   succeeded. Another janitor either finds the lock held, or takes it after
//!   the claim is gone and fails the identity check inside `probe`
//!   ([`Probe::Moved`]): it never reaps the same claim again.
//! - **A new run waits for the reap.** `ccci-lock` blocks on the same lock,
//!   so a run of a domain being reaped starts only when the reap is over.
//! - **Warm names, and names that are not CI apps, are never touched.**
//!   `--warm` and `--only` are matched before any backend call, so no claim
//!   of theirs is opened, locked or created; the proxy a shared server runs
//!   is never reaped because `abra app ls` lists it.
//! - **One pass at a time.** The command line holds the backend's pass lock
//!   ([`Backend::pass_lock`]) from before the candidates are listed until
//!   after the last is settled; a pass that finds it held examines nothing.
//!   Passes whose `--deployed` lists were read at different times would
//!   otherwise reap a domain twice: the later list still names a domain the
//!   earlier pass just reaped and whose claim it removed.
//! - **A failed or timed-out reap keeps the claim**, for the next pass, with
//!   the last holder's record put back. While a reap runs the claim carries
//!   the janitor's own record (`"reaper": true`).
//! - **Nothing is created but a deployed domain's missing claim**, made with
//!   `O_EXCL` ([`Backend::create`]) and reaped at once: after a reboot
//!   emptied a tmpfs lock dir, the apps still deployed are reaped without
//!   waiting for `--min-age`. If a run created the claim first, the domain is
//!   settled as an existing claim. A missing lock dir is created only when
//!   its parent is on a tmpfs ([`missing_lock_dir`]): then a reboot removed
//!   it; anywhere else it is a mistake, and creating it would make every
//!   deployed app look orphaned while its run holds its real lock.
//!
//! - **Another host's claim is never settled** ([`Settings::hosts`], set on
//!   etcd, where claims of every host meet). A claim names the host whose
//!   run made it; only that host's abra has the app, and only that host's
//!   `--deployed` list can say whether it is still deployed. A pass settles
//!   the claims of its own host (and of the hosts it was told to adopt),
//!   reports every other orphan as `foreign` and writes nothing for it: no
//!   lock key is queued, no claim deleted. A claim that names no host is
//!   nobody's and is left alone too. The host is read from one snapshot of
//!   every claim at the start of the pass ([`Backend::list`]), and read
//!   again once the lock is ours: a claim that changed hands meanwhile is
//!   released untouched.
//!
//! The pass is written against [`Backend`] and [`Claim`] (ccci-lock's
//! protocol), so a second backend gets the same decisions. Skipping a young
//! claim may use [`Backend::peek_age`] (a `stat`) instead of opening and
//! locking it, when nobody needs to know whether it is held.
//!
//! # What lives where
//!
//! - [`pass`](mod@pass): the pass, its [`Settings`] and its [`candidates`];
//! - [`outcome`]: outcomes, levels, examined domains, `--json` lines and the
//!   [`Summary`] of a pass;
//! - [`hosts`]: whose claims a pass settles ([`Hosts`]), and `foreign`;
//! - [`reap`]: the [`Reaper`], the reap of a held claim, and REAP_COMMAND;
//! - [`lockdir`]: a missing lock dir ([`missing_lock_dir`], [`NoClaims`]);
//! - [`boot`]: a reboot told from a lock dir removed under live runs;
//! - [`inputs`]: the `--deployed` list and the patterns ([`glob`]);
//! - [`cli`]: the command line; [`one_pass`](mod@one_pass) runs a pass from
//!   it, [`records`] takes the records lock before its first reap;
//!   [`check`] is `--check`, [`tally`] the summary line and `--metrics`.
//!
//! [`Backend`]: ccci_lock::Backend
//! [`Backend::probe`]: ccci_lock::Backend::probe
//! [`Backend::pass_lock`]: ccci_lock::Backend::pass_lock
//! [`Backend::create`]: ccci_lock::Backend::create
//! [`Backend::list`]: ccci_lock::Backend::list
//! [`Backend::peek_age`]: ccci_lock::Backend::peek_age
//! [`Claim`]: ccci_lock::Claim
//! [`Claim::remove`]: ccci_lock::Claim::remove
//! [`Probe::Moved`]: ccci_lock::Probe::Moved

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod boot;
pub mod check;
pub mod cli;
pub mod glob;
pub mod hosts;
pub mod inputs;
pub mod lockdir;
pub(crate) mod one_pass;
pub mod outcome;
pub mod pass;
pub mod reap;
pub(crate) mod records;
pub mod tally;

pub use glob::{Glob, Patterns};
pub use hosts::Hosts;
pub use inputs::{read_deployed, read_patterns};
pub use lockdir::{holder_of_removed, missing_lock_dir, MissingLockDir, NoClaims};
pub use outcome::{human, Examined, JsonLine, Level, Outcome, Summary};
pub use pass::{candidates, pass, Settings};
pub use reap::{ReapEnd, Reaper};

#[cfg(test)]
mod tests;
