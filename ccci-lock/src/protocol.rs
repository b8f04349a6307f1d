//! The lock protocol as traits and types, independent of where locks live:
//! a [`Backend`] hands out [`Claim`]s; [`Holder`] is the record a claim
//! carries. See the crate docs for the invariants every backend keeps.
//! Domains travel as [`Domain`]s, valid DOMAINs checked where they came
//! in; a backend checks only its own rule on top ([`Backend::check_domain`]).

use std::time::Duration;

use anyhow::Context;

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;
use ccci_common::supervise::LossNotifier;
use ccci_common::sys::GiveBackOnSignal;
use ccci_common::Domain;
/// Domains held compactly (moved to ccci-common with [`Domain`]; kept here
/// so that `ccci_lock::protocol::DomainList` and `ccci_lock::DomainList` work).
pub use ccci_common::DomainList;
use serde::{Deserialize, Serialize};
use std::os::fd::BorrowedFd;

/// The holder record written into a lockfile after each acquisition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The pid of the holding `ccci-lock`.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The run id the holder was given, if any.
    #[serde(default)]
    pub run_id: Option<String>,
    /// When it acquired the lock, RFC 3339.
    #[serde(default)]
    pub since: Option<String>,
    /// The host it runs on.
    #[serde(default)]
    pub host: Option<String>,
    /// The process a `--hold` keeper holds the lock for (`--parent PID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// `true` while a janitor that took the claim reaps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaper: Option<bool>,
}

impl Holder {
    /// A record for this process, now.
    pub fn this_process(run_id: Option<String>) -> Holder {
        Holder {
            pid: Some(std::process::id()),
            run_id,
            since: Some(ccci_common::cli::now_rfc3339()),
            host: Some(ccci_common::proc::hostname()).filter(|h| h != "-"),
            parent: None,
            reaper: None,
        }
    }

    /// The same record, stamped now: `since` is the current time.
    pub fn stamped_now(self) -> Holder {
        Holder {
            since: Some(ccci_common::cli::now_rfc3339()),
            ..self
        }
    }

    /// Whether `other` names the same holder, whenever it was stamped: the
    /// same process on the same host, for the same run and parent.
    pub fn same_holder(&self, other: &Holder) -> bool {
        (self.pid, &self.run_id, &self.host, self.parent)
            == (other.pid, &other.run_id, &other.host, other.parent)
    }

    /// "pid 123, run 'r1', since 2026-…" with `?` for what is unknown.
    pub fn describe(&self) -> String {
        format!(
            "pid {}, run {}, since {}",
            self.pid.map_or("?".into(), |p| p.to_string()),
            self.run_id.as_deref().map_or("?".into(), shell_quote),
            self.since.as_deref().unwrap_or("?"),
        )
    }
}

/// How long [`Backend::acquire`] may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the lock is free (a blocking `flock`, no polling).
    Forever,
    /// Not at all.
    Never,
    /// At most this long.
    AtMost(Duration),
}

/// The answer of [`Backend::acquire`] (and, with `B` = [`BusyDomain`], of
/// [`acquire_all`]).
#[derive(Debug)]
pub enum Acquired<C, B = Option<Holder>> {
    /// We hold the lock.
    Held(C),
    /// Somebody else held it for as long as we were willing to wait.
    Busy(B),
}

/// Which domain of a set was busy, and its holder's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyDomain {
    /// The domain.
    pub domain: Domain,
    /// Its holder's record, when readable.
    pub holder: Option<Holder>,
}

/// What [`Backend::probe`] found, without waiting and without creating.
#[derive(Debug)]
pub enum Probe<C> {
    /// No claim for the domain.
    Missing,
    /// Something that is not a usable claim (a symlink, a directory…); the
    /// text says what. It is never followed, opened for writing or removed.
    Unusable(String),
    /// Held by a live process.
    Held {
        /// The holder's record, when readable.
        holder: Option<Holder>,
        /// Time since the claim was last stamped (acquired).
        age: Duration,
    },
    /// We took the lock, but the claim was removed or replaced meanwhile:
    /// another process got there first. We hold nothing.
    Moved,
    /// We hold the lock of an existing claim.
    Acquired(C),
}

/// One entry of [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The domain.
    pub domain: Domain,
    /// Whether a live process holds the lock.
    pub held: bool,
    /// The last holder record, when readable (for a free lock: the last holder).
    pub holder: Option<Holder>,
    /// The process the backend itself names as holding the lock (for
    /// flock: the pid in `/proc/locks`), when it can tell. It differs from
    /// the record's pid when the record is stale: a janitor reaping a dead
    /// run's claim before stamping, or a foreign `flock(1)` user.
    pub locker: Option<u32>,
}

/// The answer of [`Backend::pass_lock`].
pub enum PassLock {
    /// This process holds the pass lock until the value is dropped.
    Held(Box<dyn std::any::Any + Send>),
    /// Another pass holds it.
    Busy,
    /// There is no pass lock and none was made (`create` was false).
    Missing,
}

impl std::fmt::Debug for PassLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PassLock::Held(_) => "Held",
            PassLock::Busy => "Busy",
            PassLock::Missing => "Missing",
        })
    }
}

/// A place where domain locks live. `ccci-lock` and `ccci-janitor` are
/// written against this trait; [`crate::FlockDir`] implements it with flock(2).
pub trait Backend {
    /// A held lock.
    type Claim: Claim;
    /// Checks that `domain`, a valid DOMAIN (SPEC §1), can also name a lock
    /// here: a lockfile name has at most 255 bytes; an etcd key takes any
    /// domain. Every method that takes a domain checks it and fails with
    /// this [`UsageError`]; a caller with several domains checks them all
    /// first, so that a bad one is refused before anything is taken. The
    /// default: every domain can.
    fn check_domain(&self, domain: &Domain) -> Result<(), UsageError> {
        let _ = domain;
        Ok(())
    }
    /// Takes the lock of `domain`, creating its claim when missing, waiting
    /// as `wait` says. `waiting` is called once, with the holder's record,
    /// if we have to wait.
    fn acquire(
        &self,
        domain: &Domain,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<Self::Claim>>;
    /// [`Backend::acquire`] for a holder whose record is known before the
    /// lock is taken: a backend may then have the releasing holder write
    /// it into the claim as it hands the lock over (etcd, where that takes
    /// a write off each hand-off), and [`Claim::stamp`] with that record
    /// writes nothing more. The default is [`Backend::acquire`].
    fn acquire_as(
        &self,
        domain: &Domain,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
        record: &Holder,
    ) -> anyhow::Result<Acquired<Self::Claim>> {
        let _ = record;
        self.acquire(domain, wait, waiting)
    }
    /// Tries, without waiting and without creating anything, to take the
    /// lock of `domain`'s existing claim.
    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<Self::Claim>>;
    /// Creates `domain`'s claim, which must not exist yet, and takes its
    /// lock. `None` when it exists already (someone just created it).
    fn create(&self, domain: &Domain) -> anyhow::Result<Option<Self::Claim>>;
    /// Every domain that has a claim, sorted. Names found there that are
    /// not valid domains are not listed.
    fn domains(&self) -> anyhow::Result<Vec<Domain>>;
    /// [`Backend::domains`] in a [`DomainList`], sorted, each once: for a
    /// caller that holds every domain at once (a janitor pass).
    fn domain_list(&self) -> anyhow::Result<DomainList> {
        let mut list: DomainList = self.domains()?.iter().collect();
        list.sort_dedup();
        Ok(list)
    }
    /// The state of every claim, sorted by domain. Looking never blocks
    /// anyone: this takes no lock and never makes a concurrent acquirer of
    /// a free domain find it busy.
    fn list(&self) -> anyhow::Result<Vec<Status>>;
    /// The state of `domain`'s claim (`None`: no claim), found as
    /// [`Backend::list`] finds it, without taking any lock: for `-v` and
    /// for a janitor's check of a live domain.
    fn status(&self, domain: &Domain) -> anyhow::Result<Option<Status>> {
        Ok(self.list()?.into_iter().find(|s| s.domain == *domain))
    }
    /// Time since `domain`'s claim was last stamped, read without opening
    /// or locking it, when the backend can tell cheaply (a `stat`). `None`:
    /// no usable claim, or the backend cannot tell. Only a hint, for
    /// skipping young claims; [`Backend::probe`] is the truth.
    fn peek_age(&self, domain: &Domain) -> anyhow::Result<Option<Duration>> {
        let _ = domain;
        Ok(None)
    }
    /// Takes, without waiting, the lock that lets one `ccci-janitor` pass
    /// run at a time (SPEC §4), with the same protocol as a domain's lock,
    /// and removes it while still held when the value is dropped. With
    /// `create` false (a dry run) a missing pass lock is not made, and an
    /// existing one is taken shared: dry runs exclude real passes but not
    /// each other. A backend without one cannot serve the janitor: the
    /// default refuses.
    fn pass_lock(&self, create: bool) -> anyhow::Result<PassLock> {
        let _ = create;
        anyhow::bail!("this lock backend has no janitor pass lock")
    }
}

/// A lock we hold. Dropping it releases the lock and keeps the claim.
pub trait Claim {
    /// The domain.
    fn domain(&self) -> &Domain;
    /// Records `holder` in the claim and marks it as fresh.
    fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()>;
    /// Time since the claim was last stamped.
    fn age(&self) -> anyhow::Result<Duration>;
    /// The record of the claim's last holder, when readable.
    fn holder(&self) -> Option<Holder> {
        None
    }
    /// Environment for a command run under this lock (`CCCI_LOCK_FILE`…).
    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)>;
    /// Asks the claim to report through `notifier` when it loses its lock
    /// while held (an etcd lease that expired or was revoked), from any
    /// thread, without being asked again. A claim that lost its lock
    /// before this call reports at once, so no loss is missed. A flock is
    /// never lost while its descriptor is open, so the default does nothing.
    fn watch_loss(&mut self, notifier: LossNotifier) {
        let _ = notifier;
    }
    /// For a claim this process created and nobody stamped: the directory
    /// descriptor, file name, device and inode that a signal handler needs
    /// to remove it ([`GiveBackOnSignal`]) while [`acquire_all`] waits for
    /// the rest of its set. The default: nothing to remove (a backend whose
    /// claim is written only when stamped, as etcd's).
    fn give_back_on_signal(&self) -> Option<(BorrowedFd<'_>, &str, u64, u64)> {
        None
    }
    /// Removes the claim while still holding the lock, then releases it.
    fn remove(self) -> anyhow::Result<()>;
    /// Gives back a claim that was taken but will not be used (another
    /// domain of its set was busy): removed, while held, when this process
    /// created it, so a run that gave up leaves nothing for the janitor;
    /// released untouched when it existed before (it may be an orphan
    /// waiting to be reaped). The default releases it untouched.
    fn give_up(self) -> anyhow::Result<()>
    where
        Self: Sized,
    {
        drop(self);
        Ok(())
    }
}

/// Takes the locks of all `domains` (SPEC §2 "Several DOMAINs"), or none.
///
/// - **One order.** The domains are taken in sorted order (duplicates
///   once), so two callers naming overlapping sets never wait for each other
///   in a cycle: whoever holds the smallest contended domain goes on.
/// - **One budget.** `wait` is for the whole set: with `Wait::AtMost`, each
///   domain gets what is left of the time; `Wait::Never` fails on the first
///   busy domain.
/// - **All or none.** When one domain is busy, the ones already taken are
///   given back ([`Claim::give_up`]) before the answer: a caller that gets
///   `Busy` holds nothing.
/// - **A signal gives back too.** While a set of several domains is being
///   taken, TERM, INT, HUP, QUIT, ALRM, USR1 and USR2 (a cancelled job, a
///   `ccci-guard` deadline) end the process by that signal, as their
///   default action does, but first remove the claims of the set that this
///   process created and holds ([`Claim::give_back_on_signal`],
///   [`GiveBackOnSignal`]): a run that gave up never leaves a claim for the
///   janitor. Signals the process ignores stay ignored; the alarm timer is
///   not touched.
///
/// Every domain is checked ([`Backend::check_domain`]) before the first is
/// taken. `waiting` is called with the domain and its holder's record each
/// time a domain has to be waited for. The claims come back in sorted order.
/// `record`, when given, is what the caller will stamp the claims with
/// ([`Backend::acquire_as`]).
pub fn acquire_all<B: Backend>(
    backend: &B,
    domains: &[Domain],
    wait: Wait,
    record: Option<&Holder>,
    waiting: &mut dyn FnMut(&Domain, Option<&Holder>),
) -> anyhow::Result<Acquired<Vec<B::Claim>, BusyDomain>> {
    let mut sorted: Vec<&Domain> = domains.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    for domain in &sorted {
        backend.check_domain(domain)?;
    }
    let until = match wait {
        Wait::AtMost(limit) => Some(std::time::Instant::now().checked_add(limit)),
        _ => None,
    };
    // A single domain holds nothing while it waits: nothing to give back.
    let mut give_back = if sorted.len() > 1 {
        Some(GiveBackOnSignal::arm().context("cannot set up the signal handlers")?)
    } else {
        None
    };
    let mut held: Vec<(B::Claim, Option<usize>)> = Vec::with_capacity(sorted.len());
    for domain in sorted {
        let this_wait = match until {
            // An instant beyond the clock's range: as good as forever.
            Some(None) => Wait::Forever,
            Some(Some(until)) => match until.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => Wait::AtMost(left),
                _ => Wait::Never,
            },
            None => wait,
        };
        let mut tell = |h: Option<&Holder>| waiting(domain, h);
        let acquired = match record {
            Some(record) => backend.acquire_as(domain, this_wait, &mut tell, record),
            None => backend.acquire(domain, this_wait, &mut tell),
        };
        match acquired {
            Ok(Acquired::Held(claim)) => {
                let kept = give_back.as_mut().and_then(|g| {
                    let (dir, name, dev, ino) = claim.give_back_on_signal()?;
                    g.keep(dir, name, dev, ino)
                });
                held.push((claim, kept));
            }
            Ok(Acquired::Busy(holder)) => {
                give_up_all(held, give_back.as_mut());
                return Ok(Acquired::Busy(BusyDomain {
                    domain: domain.clone(),
                    holder,
                }));
            }
            Err(e) => {
                give_up_all(held, give_back.as_mut());
                return Err(e);
            }
        }
    }
    drop(give_back); // forgets the claims (still held) before they are returned
    Ok(Acquired::Held(
        held.into_iter().map(|(claim, _)| claim).collect(),
    ))
}

/// Gives back claims taken for a set that could not be completed. Each is
/// forgotten by the signal handler only once given back: a signal meanwhile
/// finds it removed (or, if it was not, removes it itself).
fn give_up_all<C: Claim>(
    claims: Vec<(C, Option<usize>)>,
    mut give_back: Option<&mut GiveBackOnSignal>,
) {
    for (claim, kept) in claims.into_iter().rev() {
        if let Err(e) = claim.give_up() {
            ccci_common::say!("{e:#}");
        }
        if let (Some(g), Some(kept)) = (give_back.as_deref_mut(), kept) {
            g.forget(kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_and_reaper_appear_only_when_set() {
        let plain = Holder {
            pid: Some(7),
            ..Holder::default()
        };
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("parent") && !json.contains("reaper"),
            "{json}"
        );
        let keeper = Holder {
            parent: Some(42),
            reaper: Some(true),
            ..plain
        };
        let json = serde_json::to_string(&keeper).unwrap();
        assert!(json.contains(r#""parent":42"#), "{json}");
        assert!(json.contains(r#""reaper":true"#), "{json}");
        let back: Holder = serde_json::from_str(&json).unwrap();
        assert_eq!(back, keeper);
        // A record written before these fields existed still reads.
        let old: Holder = serde_json::from_str(r#"{"pid":1,"run_id":null}"#).unwrap();
        assert_eq!((old.parent, old.reaper), (None, None));
    }
}
