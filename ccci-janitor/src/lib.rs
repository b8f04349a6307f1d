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

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod boot;
pub mod check;
pub mod cli;
pub mod glob;
pub mod reap;
pub mod tally;

use ccci_common::names::quote_path;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;
use ccci_lock::{lockfile_name, Backend, Claim, DomainList, Holder, PassLock, Probe};
use serde::Serialize;

pub use glob::{Glob, Patterns};

/// What a pass is told to do.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The deployed domains (`--deployed`), when a list was given.
    pub deployed: Option<HashSet<String>>,
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

/// The hosts whose claims a pass settles: its own, and those it adopts
/// (`--adopt-host`), whose janitor is gone for good.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    /// This host's name, as its runs record it (`gethostname(2)`).
    pub this: String,
    /// Hosts whose claims this pass settles as well.
    pub adopted: Vec<String>,
}

/// Whose claim a holder record is, for a pass with [`Hosts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose<'a> {
    /// This host's.
    Ours,
    /// An adopted host's: reaped whatever this host's `--deployed` says.
    Adopted(&'a str),
    /// Another host's.
    Other(&'a str),
    /// The record names no host (or there is no readable record).
    Unknown,
}

impl Hosts {
    /// This host, by `gethostname(2)` as its runs record it, adopting
    /// `adopted`; why not, when this host's name cannot tell its claims
    /// from other hosts'.
    pub fn here(adopted: Vec<String>) -> Result<Hosts, String> {
        let this = ccci_common::proc::hostname();
        let unusable = match this.as_str() {
            "-" => Some("it cannot be read".to_string()),
            name => ccci_lock::etcd::check_host(name).err(),
        };
        match unusable {
            Some(why) => Err(format!(
                "this host's name {} cannot tell its claims from other hosts' ({why}); give \
                 the host a name of its own (hostnamectl set-hostname)",
                shell_quote(&this)
            )),
            None => Ok(Hosts { this, adopted }),
        }
    }

    fn whose<'a>(&self, holder: Option<&'a Holder>) -> Whose<'a> {
        match holder.and_then(|h| h.host.as_deref()) {
            None => Whose::Unknown,
            Some(host) if host == self.this => Whose::Ours,
            Some(host) if self.adopted.iter().any(|a| a == host) => Whose::Adopted(host),
            Some(host) => Whose::Other(host),
        }
    }
}

/// The age of a claim by its record's `since` (the writer's wall clock):
/// zero when it has none.
fn record_age(holder: Option<&Holder>) -> Duration {
    holder
        .and_then(|h| h.since.as_deref())
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// The outcome words of SPEC §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The reap succeeded and the claim was removed.
    Reaped,
    /// `--dry-run`: it would be reaped.
    WouldReap,
    /// Held by a live run.
    Live,
    /// Held for longer than `--leak-after`.
    Leaked,
    /// Not deployed: the claim was removed without a reap.
    StaleUnlinked,
    /// Younger than `--min-age`.
    Young,
    /// Not settled: warm, not a CI app, not a usable claim, settled by
    /// someone else meanwhile.
    Skipped,
    /// The reap failed (or an error kept the domain from being settled).
    Failed,
    /// A claim of another host (or one naming no host), not held: left
    /// for that host's janitor, nothing written.
    Foreign,
}

impl Level {
    /// The line's priority under the journal (SPEC §1 "Logs under systemd").
    pub fn priority(self) -> ccci_common::cli::Priority {
        use ccci_common::cli::Priority;
        match self {
            Level::Info => Priority::Debug,
            Level::Action => Priority::Action,
            Level::Warning => Priority::Warning,
            Level::Error => Priority::Error,
        }
    }
}

impl Outcome {
    /// Every outcome, in the order of SPEC §4 (and of `as usize`).
    pub const ALL: [Outcome; 9] = [
        Outcome::Reaped,
        Outcome::WouldReap,
        Outcome::Live,
        Outcome::Leaked,
        Outcome::StaleUnlinked,
        Outcome::Young,
        Outcome::Skipped,
        Outcome::Failed,
        Outcome::Foreign,
    ];

    /// The outcome's word, as `--json` writes it.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Reaped => "reaped",
            Outcome::WouldReap => "would-reap",
            Outcome::Live => "live",
            Outcome::Leaked => "leaked",
            Outcome::StaleUnlinked => "stale-unlinked",
            Outcome::Young => "young",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Foreign => "foreign",
        }
    }
}

/// How loud an [`Examined`] is on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only with `-v`: live, young, warm, not a CI app, settled by someone
    /// else, another host's.
    Info,
    /// Something was (or, in a dry run, would be) done.
    Action,
    /// Needs a look: a possible leak, a claim that is not usable.
    Warning,
    /// A reap failed, or the domain could not be examined.
    Error,
}

/// What a pass found and did for one domain.
#[derive(Debug, Clone)]
pub struct Examined {
    /// The domain.
    pub domain: String,
    /// The outcome.
    pub outcome: Outcome,
    /// How loud it is.
    pub level: Level,
    /// The holder's record: the live holder, or the run whose claim was left.
    pub holder: Option<Holder>,
    /// The claim's age (since it was last stamped), when there was one.
    pub age: Option<Duration>,
    /// A sentence for people (most are fixed: not copied per domain).
    pub detail: Cow<'static, str>,
}

impl std::fmt::Display for Examined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.domain, self.detail)
    }
}

/// One `--json` line: exactly the keys of SPEC §4.
#[derive(Debug, Serialize)]
pub struct JsonLine<'a> {
    domain: &'a str,
    outcome: Outcome,
    holder_pid: Option<u32>,
    run_id: Option<&'a str>,
    age_s: Option<u64>,
    detail: &'a str,
}

impl Examined {
    fn new(domain: &str, outcome: Outcome, level: Level, detail: Cow<'static, str>) -> Examined {
        Examined {
            domain: domain.to_string(),
            outcome,
            level,
            holder: None,
            age: None,
            detail,
        }
    }

    fn with(mut self, holder: Option<Holder>, age: Option<Duration>) -> Examined {
        self.holder = holder;
        self.age = age;
        self
    }

    /// The `--json` form.
    pub fn json(&self) -> JsonLine<'_> {
        let holder = self.holder.as_ref();
        JsonLine {
            domain: &self.domain,
            outcome: self.outcome,
            holder_pid: holder.and_then(|h| h.pid),
            run_id: holder.and_then(|h| h.run_id.as_deref()),
            age_s: self.age.map(|a| a.as_secs()),
            detail: &self.detail,
        }
    }
}

/// How a reap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapEnd {
    /// It succeeded (status 0): the claim may be removed.
    pub ok: bool,
    /// What happened, for the report.
    pub detail: String,
    /// A signal that asked us to stop while it ran: end the pass after it.
    pub stop: Option<libc::c_int>,
}

/// Runs the reap of one domain, while the pass holds its lock.
pub trait Reaper {
    /// Reaps `domain`; `env` is the environment the reap gets
    /// (`CCCI_DOMAIN`, and the claim's own).
    fn reap(&mut self, domain: &str, env: &[(&'static str, OsString)]) -> ReapEnd;
    /// Called once, before the pass's first reap, while that domain's
    /// claim is held: `Err(why)` ends the pass there with nothing reaped
    /// (125). The command-line janitor takes the records lock here and
    /// reads the records of where the host's runs claim again
    /// ([`ccci_lock::place`]). The default: ready.
    fn ready(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl<F: FnMut(&str, &[(&'static str, OsString)]) -> ReapEnd> Reaper for F {
    fn reap(&mut self, domain: &str, env: &[(&'static str, OsString)]) -> ReapEnd {
        self(domain, env)
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// At least one reap failed (status 1).
    pub reap_failed: bool,
    /// At least one domain could not be examined or settled (status 125).
    pub errors: bool,
    /// The reaper was not ready ([`Reaper::ready`]): the pass ended before
    /// its first reap (status 125).
    pub refused: bool,
    /// The pass stopped early, asked to by this signal: the process ends by
    /// it (a shell sees 128+N).
    pub stopped_by: Option<libc::c_int>,
}

impl Summary {
    /// How the process ends after this pass (SPEC §1): stopped by a
    /// signal, it ends by that signal; else 125, 1 or 0.
    pub fn ended(&self) -> ccci_common::exit::Ended {
        use ccci_common::exit::{self, Ended};
        match self.stopped_by {
            Some(sig) => Ended::Signal(sig),
            None if self.errors || self.refused => Ended::Code(exit::TOOL_FAILED),
            None if self.reap_failed => Ended::Code(exit::FAILURE),
            None => Ended::Code(exit::SUCCESS),
        }
    }
}

/// `d` to the second, for people: `2h 5m 3s`.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The lines of a list file that matter, with their numbers: blank lines
/// and `#` comments (whole lines, or from `#` to the end) are dropped.
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

/// Reads a `--deployed` list. Names that are not valid domains cannot have
/// a claim; they are left out, each with a warning in the second list.
pub fn read_deployed(text: &str, source: &str) -> (HashSet<String>, Vec<String>) {
    let mut domains = HashSet::new();
    let mut warnings = Vec::new();
    for (number, line) in meaningful_lines(text) {
        match lockfile_name(line) {
            Ok(_) => {
                domains.insert(line.to_string());
            }
            Err(e) => warnings.push(format!("{source} line {number}: ignored: {e}")),
        }
    }
    (domains, warnings)
}

/// Reads a `--warm-file` or `--only-file`: one pattern per line. A
/// malformed pattern is an error (status 2): ignoring it could get a warm
/// app reaped, or leave a CI app behind.
pub fn read_patterns(text: &str, source: &str) -> Result<Vec<Glob>, UsageError> {
    meaningful_lines(text)
        .map(|(number, line)| {
            Glob::parse(line).map_err(|why| {
                UsageError(format!(
                    "{source} line {number}: invalid pattern {}: {why}",
                    shell_quote(line)
                ))
            })
        })
        .collect()
}

/// What to do about a lock dir that does not exist (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingLockDir {
    /// Its parent is on a tmpfs (as `/run/lock` is): the host rebooted and
    /// took the lock dir, with every claim in it. Create it and settle every
    /// deployed CI app at once.
    Rebooted,
    /// Anywhere else (a typo, an unmounted disk): probe and reap nothing,
    /// or a misconfigured cron job would reap live runs. The reason.
    Leave(String),
}

/// A process that still has a file of the missing lock dir `path` open
/// (`/proc/PID/fd` of this user's processes: a holder keeps its lockfile
/// open, also after the file was unlinked): proof that the lock dir was
/// removed under a live run (by hand, say), not by a reboot, which ends
/// every process. Their apps must not be reaped. The pid and the file,
/// when one is found.
pub fn holder_of_removed(path: &Path) -> Option<(u32, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let mut prefix = path.as_os_str().as_bytes().to_vec();
    prefix.push(b'/');
    let me = nix::unistd::geteuid().as_raw();
    for pid in ccci_common::proc::pids().ok()? {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid());
        if owner.map_or(true, |uid| uid != me) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.as_os_str().as_bytes().starts_with(&prefix) {
                    return Some((pid, target));
                }
            }
        }
    }
    None
}

/// Decides about the missing lock dir `path` by the file system of its
/// parent (`statfs`, `TMPFS_MAGIC`). Only the direct parent counts: a
/// missing parent is not taken as a sign of a reboot, so a lock dir whose
/// path names two missing directories is never created.
pub fn missing_lock_dir(path: &Path) -> MissingLockDir {
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return MissingLockDir::Leave("it has no parent directory".into()),
    };
    match nix::sys::statfs::statfs(parent) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => MissingLockDir::Rebooted,
        Ok(_) => MissingLockDir::Leave(format!(
            "its parent {} is not on a tmpfs, so no reboot removed it (a typo? an unmounted disk?)",
            quote_path(parent)
        )),
        Err(e) => MissingLockDir::Leave(format!(
            "its parent {} cannot be examined: {e}",
            quote_path(parent)
        )),
    }
}

/// A lock dir that does not exist yet, for a dry run after a reboot: no
/// claims at all, so every deployed CI app would be reaped, and nothing is
/// created.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClaims;

impl Backend for NoClaims {
    type Claim = ccci_lock::FlockClaim;

    fn acquire(
        &self,
        _: &str,
        _: ccci_lock::Wait,
        _: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<ccci_lock::Acquired<Self::Claim>> {
        anyhow::bail!("the lock dir does not exist")
    }

    fn probe(&self, domain: &str) -> anyhow::Result<Probe<Self::Claim>> {
        lockfile_name(domain)?;
        Ok(Probe::Missing)
    }

    fn create(&self, _: &str) -> anyhow::Result<Option<Self::Claim>> {
        anyhow::bail!("the lock dir does not exist")
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn list(&self) -> anyhow::Result<Vec<ccci_lock::Status>> {
        Ok(Vec::new())
    }

    fn pass_lock(&self, _: bool) -> anyhow::Result<PassLock> {
        Ok(PassLock::Missing)
    }
}

/// The candidates of a pass, sorted, each once: every claim the backend
/// has, and every deployed domain. A sorted pass must hold every name at
/// once; they are held compactly ([`DomainList`]), once each.
pub fn candidates<B: Backend>(
    backend: &B,
    deployed: Option<&HashSet<String>>,
) -> anyhow::Result<DomainList> {
    let mut all = backend.domain_list()?;
    if let Some(deployed) = deployed {
        for domain in deployed {
            // read_deployed kept only valid domains, which all fit.
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
        let examined = pass.examine(domain).unwrap_or_else(|e| {
            pass.summary.errors = true;
            Examined::new(
                domain,
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

struct Pass<'a, B: Backend> {
    backend: &'a B,
    settings: &'a Settings,
    reaper: &'a mut dyn Reaper,
    summary: Summary,
    host: Option<String>,
    /// `--min-age` for people, written once for every young claim.
    min_age: String,
    /// With [`Settings::hosts`]: every claim, as read at the start.
    snapshot: HashMap<String, ccci_lock::Status>,
    /// [`Reaper::ready`] said yes.
    ready: bool,
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
fn describe_last(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => format!("last holder {}", h.describe()),
        None => "no holder record: whoever made the lockfile ended before writing one".into(),
    }
}

impl<B: Backend> Pass<'_, B> {
    fn examine(&mut self, domain: &str) -> anyhow::Result<Examined> {
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

    fn deployed(&self, domain: &str) -> Option<bool> {
        self.settings.deployed.as_ref().map(|d| d.contains(domain))
    }

    fn settle(
        &mut self,
        domain: &str,
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
    fn create(&mut self, domain: &str) -> anyhow::Result<Examined> {
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
        domain: &str,
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

    /// A claim that is not this pass's to settle (see [`Whose`]).
    fn foreign(
        &self,
        domain: &str,
        whose: Whose<'_>,
        holder: Option<Holder>,
        age: Duration,
        detail: String,
    ) -> Examined {
        // Left over long after its run, another host's orphan says that its
        // janitor does not run; one naming no host needs a person at once.
        let level = match whose {
            Whose::Other(_) if age <= self.settings.leak_after => Level::Info,
            _ => Level::Warning,
        };
        Examined::new(domain, Outcome::Foreign, level, detail.into()).with(holder, Some(age))
    }

    fn foreign_detail(&self, whose: Whose<'_>, holder: Option<&Holder>, age: Duration) -> String {
        let last = format!("idle {}, {}", human(age), describe_last(holder));
        match whose {
            Whose::Other(host) if age > self.settings.leak_after => format!(
                "foreign: an orphan of host {h} ({last}), idle longer than --leak-after {};                  only host {h}'s janitor reaps it: is it running? If host {h} is gone for                  good, a janitor given --adopt-host {h} takes its claims over; not touched",
                human(self.settings.leak_after),
                h = shell_quote(host),
            ),
            Whose::Other(host) => format!(
                "foreign: an orphan of host {h} ({last}); left for host {h}'s janitor,                  which has its apps; not touched",
                h = shell_quote(host),
            ),
            _ => format!(
                "foreign: its claim names no host ({last}), so no janitor can tell whose app                  it is; not touched: reap it on the host that deployed it, as docs/etcd.md                  says under \"A claim that names no host\""
            ),
        }
    }

    fn recorded_holder_gone(&mut self, holder: &Holder) -> bool {
        let host = self.host.get_or_insert_with(ccci_common::proc::hostname);
        let (Some(pid), Some(recorded_host)) = (holder.pid, holder.host.as_deref()) else {
            return false;
        };
        recorded_host == host.as_str() && !ccci_common::proc::alive(pid)
    }

    fn young(&self, domain: &str, holder: Option<Holder>, age: Duration) -> Examined {
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
        let domain = claim.domain().to_string();
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

    /// Runs the reap while holding `claim`, with our own record in it
    /// (`"reaper": true`, so that a run waiting for the domain is told a
    /// janitor is reaping it); removes the claim on success, and puts the
    /// last holder's record back on failure, for the next pass's report.
    /// The claim of an `adopted` host keeps naming that host while it is
    /// reaped: a janitor that dies during the reap leaves it to the next
    /// adopting pass, never to this host's own rules.
    fn reap(
        &mut self,
        mut claim: B::Claim,
        holder: Option<Holder>,
        age: Option<Duration>,
        why: &str,
        adopted: Option<String>,
    ) -> Examined {
        let domain = claim.domain().to_string();
        if !self.ready {
            if let Err(why) = self.reaper.ready() {
                // Given back as found: removed if this pass created it.
                let kept = claim.give_up().err();
                self.summary.refused = true;
                let kept = kept.map_or(String::new(), |e| format!(" ({e:#})"));
                let detail = format!("not reaped: {why}{kept}");
                return Examined::new(&domain, Outcome::Skipped, Level::Error, detail.into())
                    .with(holder, age);
            }
            self.ready = true;
        }
        let mut env = claim.env();
        env.push(("CCCI_DOMAIN", domain.clone().into()));
        let mut reaper = Holder {
            reaper: Some(true),
            ..Holder::this_process(None)
        };
        if adopted.is_some() {
            reaper.host = adopted;
        }
        // The record is diagnostics only: a claim we cannot write is still
        // ours to reap.
        let _ = claim.stamp(&reaper);
        let end = self.reaper.reap(&domain, &env);
        if end.stop.is_some() {
            self.summary.stopped_by = end.stop;
        }
        let (outcome, level, detail) = if end.ok {
            match claim.remove() {
                Ok(()) => (Outcome::Reaped, Level::Action, format!("reaped ({why})")),
                Err(e) => {
                    self.summary.errors = true;
                    (
                        Outcome::Failed,
                        Level::Error,
                        format!("reaped ({why}), but the lockfile stays: {e:#}"),
                    )
                }
            }
        } else {
            if let Some(last) = &holder {
                let _ = claim.stamp(last);
            }
            drop(claim);
            self.summary.reap_failed = true;
            (
                Outcome::Failed,
                Level::Error,
                format!(
                    "reap failed: {} ({why}); lockfile kept for the next pass",
                    end.detail
                ),
            )
        };
        Examined::new(&domain, outcome, level, detail.into()).with(holder, age)
    }
}

#[cfg(test)]
mod tests;
