//! One pass (SPEC §4): what it is told ([`Settings`]), its candidates
//! (every claim the backend has and every deployed domain, sorted, each
//! once) and the decision for each: warm and not-CI names before any
//! backend call, a young claim told live or young without taking its lock,
//! then the probe and what follows from it. It keeps the guarantees listed
//! in the crate's doc; the hosts rule is in [`crate::hosts`], the reap of a
//! held claim in [`crate::reap`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ccci_common::names::shell_quote;
use ccci_common::{Domain, DomainList};
use ccci_lock::{Backend, Claim, Holder, Probe};

use crate::hosts::{record_age, Whose};
use crate::{human, Examined, Hosts, Level, Outcome, Patterns, Reaper, Summary};

/// What a pass is told to do.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The deployed domains (`--deployed`), when a list was given.
    pub deployed: Option<HashSet<Domain>>,
    /// The CI apps (`--only`, `--only-file`), when given: a domain that
    /// matches none is skipped before any file operation.
    pub only: Option<Patterns>,
    /// Domains matching one of these are skipped before any file operation.
    pub warm: Patterns,
    /// Claims younger than this are left alone.
    pub min_age: Duration,
    /// A lock held longer than this is reported as a possible leak.
    pub leak_after: Duration,
    /// Probe and report only: reap nothing, unlink nothing, create nothing.
    pub dry_run: bool,
    /// Tell live claims from young ones (for `-v` and `--json`). Without it,
    /// a claim whose age alone says "leave it" is not opened at all.
    pub exact: bool,
    /// Whose claims this pass may settle, when claims of several hosts meet
    /// in one backend (etcd); `None`: every claim is this host's (a lock
    /// dir).
    pub hosts: Option<Hosts>,
}

/// The candidates of a pass, sorted, each once: every claim the backend
/// has, and every deployed domain. A sorted pass must hold every name at
/// once; they are held compactly ([`DomainList`]), once each.
pub fn candidates<B: Backend>(
    backend: &B,
    deployed: Option<&HashSet<Domain>>,
) -> anyhow::Result<DomainList> {
    let mut all = backend.domain_list()?;
    if let Some(deployed) = deployed {
        for domain in deployed {
            all.push(domain)?;
        }
        all.sort_dedup();
    }
    Ok(all)
}

/// Runs one pass over `domains` (see [`candidates`]), reporting each
/// examined domain to `report` as soon as it is settled. An error of one
/// domain is reported and the pass goes on; an error of `report` (stdout
/// closed) ends it.
pub fn pass<B: Backend>(
    backend: &B,
    settings: &Settings,
    domains: &DomainList,
    reaper: &mut dyn Reaper,
    report: &mut dyn FnMut(&Examined) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    // Claims of several hosts: whose each is, and whether it is held, from
    // one read of them all (two range requests on etcd), so that another
    // host's claim is never locked to be looked at.
    let snapshot = match settings.hosts {
        Some(_) => backend
            .list()?
            .into_iter()
            .map(|st| (st.domain.clone(), st))
            .collect(),
        None => HashMap::new(),
    };
    let mut pass = Pass {
        backend,
        settings,
        reaper,
        summary: Summary::default(),
        host: None,
        min_age: human(settings.min_age),
        snapshot,
        ready: false,
    };
    for domain in domains.iter() {
        let examined = pass.examine(&domain).unwrap_or_else(|e| {
            pass.summary.errors = true;
            Examined::new(
                &domain,
                Outcome::Failed,
                Level::Error,
                format!("error: {e:#}").into(),
            )
        });
        report(&examined)?;
        if pass.summary.stopped_by.is_some() || pass.summary.refused {
            break;
        }
    }
    Ok(pass.summary)
}

/// A pass under way.
pub(crate) struct Pass<'a, B: Backend> {
    pub(crate) backend: &'a B,
    pub(crate) settings: &'a Settings,
    pub(crate) reaper: &'a mut dyn Reaper,
    pub(crate) summary: Summary,
    pub(crate) host: Option<String>,
    /// `--min-age` for people, written once for every young claim.
    pub(crate) min_age: String,
    /// With [`Settings::hosts`]: every claim, as read at the start.
    pub(crate) snapshot: HashMap<Domain, ccci_lock::Status>,
    /// [`Reaper::ready`] said yes.
    pub(crate) ready: bool,
}

/// The holder of a held claim, for messages: its record, or, without one,
/// the pid the backend names (`locker`) and that it wrote no record yet.
fn describe_holder(holder: Option<&Holder>, locker: Option<u32>) -> String {
    match (holder, locker) {
        (Some(h), _) => h.describe(),
        (None, Some(pid)) => format!("pid {pid}, which has written no holder record (yet)"),
        (None, None) => "a process that has written no holder record (yet)".into(),
    }
}

/// The last holder of a free claim, for messages.
pub(crate) fn describe_last(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => format!("last holder {}", h.describe()),
        None => "no holder record: whoever made the lockfile ended before writing one".into(),
    }
}

impl<B: Backend> Pass<'_, B> {
    fn examine(&mut self, domain: &Domain) -> anyhow::Result<Examined> {
        let s = self.settings;
        if let Some(glob) = s.warm.first_match(domain) {
            let detail = format!(
                "warm (matches {}): skipped, not probed",
                shell_quote(&glob.to_string())
            );
            return Ok(Examined::new(
                domain,
                Outcome::Skipped,
                Level::Info,
                detail.into(),
            ));
        }
        if s.only
            .as_ref()
            .is_some_and(|only| only.first_match(domain).is_none())
        {
            let detail = "not a CI app (matches no --only pattern): skipped, not probed";
            return Ok(Examined::new(
                domain,
                Outcome::Skipped,
                Level::Info,
                detail.into(),
            ));
        }
        if let Some(hosts) = &s.hosts {
            if let Some(st) = self.snapshot.remove(domain) {
                // The backend's own age when it can tell (a lockfile's
                // mtime), else the record's (an etcd claim's `since`).
                let age = match self.backend.peek_age(domain)? {
                    Some(age) => age,
                    None => record_age(st.holder.as_ref()),
                };
                if st.held {
                    return Ok(self.held(domain, st.holder, age, st.locker));
                }
                if let whose @ (Whose::Other(_) | Whose::Unknown) = hosts.whose(st.holder.as_ref())
                {
                    let detail = self.foreign_detail(whose, st.holder.as_ref(), age);
                    return Ok(self.foreign(domain, whose, st.holder.clone(), age, detail));
                }
                // Free and young: left alone, as after a look without a lock.
                if age < s.min_age {
                    return Ok(self.young(domain, st.holder, age));
                }
            }
        }
        // A claim younger than --min-age is never reaped, so it is never
        // locked either: whether it is held (for -v, --json and the leak
        // warning) is read without taking any lock (Backend::status), so a
        // run's `ccci-lock -n` of that domain never finds it busy because a
        // janitor was looking (SPEC §2 "Looking never blocks anyone").
        if let Some(age) = self.backend.peek_age(domain)? {
            if age < s.min_age {
                if !s.exact && age <= s.leak_after {
                    // Held or not, it is left alone and cannot be a leak;
                    // nobody asked which of the two it is.
                    let detail = "young: younger than --min-age by its mtime (not probed)";
                    return Ok(
                        Examined::new(domain, Outcome::Young, Level::Info, detail.into())
                            .with(None, Some(age)),
                    );
                }
                return Ok(match self.backend.status(domain)? {
                    Some(st) if st.held => self.held(domain, st.holder, age, st.locker),
                    Some(st) => self.young(domain, st.holder, age),
                    None => Examined::new(
                        domain,
                        Outcome::Skipped,
                        Level::Info,
                        "skipped: its lockfile vanished before it was looked at (its run ended)"
                            .into(),
                    ),
                });
            }
        }
        let probe = self.backend.probe(domain)?;
        self.settle(domain, probe, true)
    }

    fn deployed(&self, domain: &Domain) -> Option<bool> {
        self.settings.deployed.as_ref().map(|d| d.contains(domain))
    }

    fn settle(
        &mut self,
        domain: &Domain,
        probe: Probe<B::Claim>,
        may_create: bool,
    ) -> anyhow::Result<Examined> {
        match probe {
            Probe::Missing if may_create && self.deployed(domain) == Some(true) => {
                self.create(domain)
            }
            Probe::Missing => Ok(Examined::new(
                domain,
                Outcome::Skipped,
                Level::Info,
                "skipped: its lockfile vanished before it was probed (its run ended)".into(),
            )),
            Probe::Unusable(why) => Ok(Examined::new(
                domain,
                Outcome::Skipped,
                Level::Warning,
                format!("skipped: {why}").into(),
            )),
            Probe::Held { holder, age } => Ok(self.held(domain, holder, age, None)),
            Probe::Moved => Ok(Examined::new(
                domain,
                Outcome::Skipped,
                Level::Info,
                "skipped: its lockfile was removed or replaced while being locked \
                 (another janitor or run got there first)"
                    .into(),
            )),
            Probe::Acquired(claim) => self.acquired(claim),
        }
    }

    /// A deployed domain without a claim: create it and reap at once.
    fn create(&mut self, domain: &Domain) -> anyhow::Result<Examined> {
        let why = "deployed, no lockfile";
        if self.settings.dry_run {
            return Ok(Examined::new(
                domain,
                Outcome::WouldReap,
                Level::Action,
                format!("dry run: would reap ({why})").into(),
            ));
        }
        match self.backend.create(domain)? {
            Some(claim) => Ok(self.reap(claim, None, None, why, None)),
            // A run created it first: settle it as an existing claim.
            None => {
                let probe = self.backend.probe(domain)?;
                self.settle(domain, probe, false)
            }
        }
    }

    /// A held claim: `locker` is the pid the backend names as holding the
    /// lock, when it can tell.
    fn held(
        &mut self,
        domain: &Domain,
        holder: Option<Holder>,
        age: Duration,
        locker: Option<u32>,
    ) -> Examined {
        let who = describe_holder(holder.as_ref(), locker);
        let note = match (&holder, locker) {
            (Some(h), _) if h.reaper == Some(true) => "; a janitor is reaping it".to_string(),
            (Some(h), Some(pid)) if h.pid.is_some() && h.pid != Some(pid) => format!(
                "; the lock is held by pid {pid}, not by the recorded holder (a janitor \
                 reaping it, or another flock user)"
            ),
            (Some(h), None) if self.recorded_holder_gone(h) => {
                "; the recorded holder is not running, so another process (a janitor \
                 reaping it?) holds the lock"
                    .to_string()
            }
            _ => String::new(),
        };
        let other_host = match self
            .settings
            .hosts
            .as_ref()
            .map(|h| h.whose(holder.as_ref()))
        {
            Some(Whose::Other(host)) => Some(host.to_string()),
            _ => None,
        };
        let note = match &other_host {
            Some(host) => format!("{note}; a run of host {}", shell_quote(host)),
            None => note,
        };
        let (outcome, level, detail) = if age > self.settings.leak_after {
            (
                Outcome::Leaked,
                Level::Warning,
                format!(
                    "possible leaked run: locked for {} (by the lockfile's mtime), \
                     longer than --leak-after {}; {who}{note}; not touched",
                    human(age),
                    human(self.settings.leak_after)
                ),
            )
        } else {
            (
                Outcome::Live,
                Level::Info,
                format!("live: locked by {who}, for {}{note}", human(age)),
            )
        };
        // Another host's leak is its own janitor's to warn about: every host
        // of a fleet would warn about it otherwise.
        let level = if other_host.is_some() {
            Level::Info
        } else {
            level
        };
        Examined::new(domain, outcome, level, detail.into()).with(holder, Some(age))
    }

    fn recorded_holder_gone(&mut self, holder: &Holder) -> bool {
        let host = self.host.get_or_insert_with(ccci_common::proc::hostname);
        let (Some(pid), Some(recorded_host)) = (holder.pid, holder.host.as_deref()) else {
            return false;
        };
        recorded_host == host.as_str() && !ccci_common::proc::alive(pid)
    }

    fn young(&self, domain: &Domain, holder: Option<Holder>, age: Duration) -> Examined {
        // Written once per young lockfile of a -v pass: the age is
        // formatted in place, not into a string of its own first.
        let detail = format!(
            "young: lockfile {} old, less than --min-age {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            self.min_age
        );
        Examined::new(domain, Outcome::Young, Level::Info, detail.into()).with(holder, Some(age))
    }

    /// We hold the lock of an existing claim whose holder is gone.
    fn acquired(&mut self, claim: B::Claim) -> anyhow::Result<Examined> {
        let domain = claim.domain().clone();
        let age = claim.age()?;
        let holder = claim.holder();
        if age < self.settings.min_age {
            drop(claim);
            return Ok(self.young(&domain, holder, age));
        }
        let whose = self
            .settings
            .hosts
            .as_ref()
            .map(|h| h.whose(holder.as_ref()));
        if let Some(whose @ (Whose::Other(_) | Whose::Unknown)) = whose {
            // It changed hands since the pass looked (or it was not looked
            // at): released untouched, its claim as it is.
            drop(claim);
            let detail = self.foreign_detail(whose, holder.as_ref(), age);
            return Ok(self.foreign(&domain, whose, holder.clone(), age, detail));
        }
        let adopted = match whose {
            Some(Whose::Adopted(host)) => Some(host.to_string()),
            _ => None,
        };
        let last = match &adopted {
            Some(host) => format!(
                "idle {}, {}, of adopted host {}",
                human(age),
                describe_last(holder.as_ref()),
                shell_quote(host)
            ),
            None => format!("idle {}, {}", human(age), describe_last(holder.as_ref())),
        };
        let examined = |outcome, level, detail| {
            Examined::new(&domain, outcome, level, detail).with(holder.clone(), Some(age))
        };
        // This host's deployed list says nothing of an adopted host's apps:
        // those are always reaped, never unlinked unreaped.
        if adopted.is_none() && self.deployed(&domain) == Some(false) {
            if self.settings.dry_run {
                return Ok(examined(
                    Outcome::Skipped,
                    Level::Action,
                    format!("dry run: would unlink stale lockfile (not deployed; {last})").into(),
                ));
            }
            claim.remove()?;
            return Ok(examined(
                Outcome::StaleUnlinked,
                Level::Action,
                format!("unlinked stale lockfile (not deployed, nothing to reap; {last})").into(),
            ));
        }
        if self.settings.dry_run {
            return Ok(examined(
                Outcome::WouldReap,
                Level::Action,
                format!("dry run: would reap ({last})").into(),
            ));
        }
        Ok(self.reap(claim, holder.clone(), Some(age), &last, adopted))
    }
}
