//! The hosts rule (SPEC §4, on etcd, where the claims of every host meet):
//! a pass settles only the claims of its own host and of the hosts it was
//! told to adopt. A claim names the host whose run made it, and only that
//! host's abra has the app and only its `--deployed` list can say whether it
//! is still deployed; every other orphan, and one naming no host, is
//! reported `foreign` and nothing is written for it.

use std::time::Duration;

use ccci_common::names::shell_quote;
use ccci_common::Domain;
use ccci_lock::{Backend, Holder};

use crate::pass::{describe_last, Pass};
use crate::{human, Examined, Level, Outcome};

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
pub(crate) enum Whose<'a> {
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

    pub(crate) fn whose<'a>(&self, holder: Option<&'a Holder>) -> Whose<'a> {
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
pub(crate) fn record_age(holder: Option<&Holder>) -> Duration {
    holder
        .and_then(|h| h.since.as_deref())
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// The reports of a claim that is not this pass's to settle.
impl<B: Backend> Pass<'_, B> {
    /// A claim that is not this pass's to settle (see [`Whose`]).
    pub(crate) fn foreign(
        &self,
        domain: &Domain,
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

    pub(crate) fn foreign_detail(
        &self,
        whose: Whose<'_>,
        holder: Option<&Holder>,
        age: Duration,
    ) -> String {
        let last = format!("idle {}, {}", human(age), describe_last(holder));
        match whose {
            Whose::Other(host) if age > self.settings.leak_after => format!(
                "foreign: an orphan of host {h} ({last}), idle longer than --leak-after {}; \
                 only host {h}'s janitor reaps it: is it running? If host {h} is gone for \
                 good, a janitor given --adopt-host {h} takes its claims over; not touched",
                human(self.settings.leak_after),
                h = shell_quote(host),
            ),
            Whose::Other(host) => format!(
                "foreign: an orphan of host {h} ({last}); left for host {h}'s janitor, \
                 which has its apps; not touched",
                h = shell_quote(host),
            ),
            _ => format!(
                "foreign: its claim names no host ({last}), so no janitor can tell whose app \
                 it is; not touched: reap it on the host that deployed it, as docs/etcd.md \
                 says under \"A claim that names no host\""
            ),
        }
    }
}
