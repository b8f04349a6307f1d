//! What a pass reports: the outcome of each examined domain (the words of
//! SPEC §4), how loud it is on stderr, its `--json` line (exactly the keys
//! of SPEC §4), and how the whole pass ended ([`Summary`]), which decides the
//! exit status.

use std::borrow::Cow;
use std::time::Duration;

use ccci_common::Domain;
use ccci_lock::Holder;
use serde::Serialize;

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
    pub domain: Domain,
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
    domain: &'a Domain,
    outcome: Outcome,
    holder_pid: Option<u32>,
    run_id: Option<&'a str>,
    age_s: Option<u64>,
    detail: &'a str,
}

impl Examined {
    pub(crate) fn new(
        domain: &Domain,
        outcome: Outcome,
        level: Level,
        detail: Cow<'static, str>,
    ) -> Examined {
        Examined {
            domain: domain.clone(),
            outcome,
            level,
            holder: None,
            age: None,
            detail,
        }
    }

    pub(crate) fn with(mut self, holder: Option<Holder>, age: Option<Duration>) -> Examined {
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
