//! What a pass did, said once at its end (SPEC §4): the summary line on
//! stderr after every pass, also one that found nothing or failed, and the
//! `--metrics` file for node_exporter's textfile collector.
//!
//! The metrics file is replaced whole (a temporary in the same directory,
//! then a rename: [`SafeDir::replace`]), so the collector never reads half
//! a file; a pass that fails still writes it, with
//! `ccci_janitor_last_pass_success 0`. Its directory must be safe as every
//! directory a tool writes into (SPEC §1): a real directory owned by the
//! user the janitor runs as, not writable by group or others.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ccci_common::cli::{Priority, UsageError};
use ccci_common::dirs::Role;
use ccci_common::fs::SafeDir;
use ccci_common::names::quote_path;

use crate::Outcome;

/// The directory of a `--metrics` file, in messages.
const METRICS_DIR: Role = Role {
    what: "metrics dir",
    flag: "--metrics",
    env: "CCCI_METRICS",
};

/// The counts of one pass, kept while it runs.
#[derive(Debug)]
pub struct Tally {
    started: Instant,
    counts: [Cell<usize>; Outcome::ALL.len()],
    backend: RefCell<String>,
}

impl Tally {
    /// A tally starting now; `backend` says where the pass looks.
    pub fn new(backend: String) -> Tally {
        Tally {
            started: Instant::now(),
            counts: Default::default(),
            backend: RefCell::new(backend),
        }
    }

    /// Where the pass looks, once it is known better.
    pub fn set_backend(&self, backend: String) {
        *self.backend.borrow_mut() = backend;
    }

    /// Counts one examined domain.
    pub fn count(&self, outcome: Outcome) {
        let cell = &self.counts[outcome as usize];
        cell.set(cell.get() + 1);
    }

    fn of(&self, outcome: Outcome) -> usize {
        self.counts[outcome as usize].get()
    }

    /// The summary line: counts per outcome, where, how long, the status.
    pub fn summary(&self, status: u8) -> String {
        let mut line = String::from("pass done: ");
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            let _ = write!(line, "{} {}", self.of(*outcome), outcome.word());
        }
        let _ = write!(
            line,
            "; {}; {:.3}s; status {status}",
            self.backend.borrow(),
            self.started.elapsed().as_secs_f64()
        );
        line
    }

    /// The priority of the summary line: an error when the pass failed.
    pub fn priority(status: u8) -> Priority {
        if status == 0 {
            Priority::Action
        } else {
            Priority::Error
        }
    }

    /// The metrics file's content (Prometheus text format).
    pub fn metrics(&self, status: u8, now: SystemTime) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        };
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        gauge(
            &mut out,
            "ccci_janitor_last_pass_timestamp_seconds",
            "When the last janitor pass ended, in seconds since the Unix epoch.",
            format!("{:.3}", now.as_secs_f64()),
        );
        gauge(
            &mut out,
            "ccci_janitor_last_pass_success",
            "Whether the last janitor pass succeeded (1) or failed (0).",
            u8::from(status == 0).to_string(),
        );
        gauge(
            &mut out,
            "ccci_janitor_pass_duration_seconds",
            "How long the last janitor pass took.",
            format!("{:.3}", self.started.elapsed().as_secs_f64()),
        );
        let _ = writeln!(
            out,
            "# HELP ccci_janitor_domains Domains the last janitor pass examined, by outcome."
        );
        let _ = writeln!(out, "# TYPE ccci_janitor_domains gauge");
        for outcome in Outcome::ALL {
            let _ = writeln!(
                out,
                "ccci_janitor_domains{{outcome=\"{}\"}} {}",
                outcome.word(),
                self.of(outcome)
            );
        }
        gauge(
            &mut out,
            "ccci_janitor_reaps_failed",
            "Reaps that failed in the last janitor pass.",
            self.of(Outcome::Failed).to_string(),
        );
        out
    }
}

/// A checked `--metrics FILE`: its directory and file name.
#[derive(Debug, Clone)]
pub struct MetricsFile {
    dir: PathBuf,
    name: String,
}

impl MetricsFile {
    /// Checks `path` (from `--metrics`): a file name that node_exporter
    /// reads (`*.prom`), in a directory.
    pub fn parse(path: &Path) -> Result<MetricsFile, UsageError> {
        let bad = |why: &str| {
            UsageError(format!(
                "invalid value {} for --metrics: {why}",
                quote_path(path)
            ))
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.'))
            .ok_or_else(|| bad("expected a file name such as ccci-janitor.prom"))?;
        if !name.ends_with(".prom") || name.len() == ".prom".len() {
            return Err(bad(
                "node_exporter's textfile collector reads only files ending in .prom",
            ));
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(MetricsFile {
            dir: ccci_common::dirs::absolute(&dir),
            name: name.to_string(),
        })
    }

    /// Replaces the file with `content`.
    pub fn write(&self, content: &str) -> anyhow::Result<()> {
        let Some(dir) = SafeDir::open(&METRICS_DIR, &self.dir, false)? else {
            anyhow::bail!(
                "metrics dir {} does not exist; create it (owned by the user the janitor runs as)",
                quote_path(&self.dir)
            );
        };
        dir.replace(&self.name, content.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_counted_and_named() {
        let tally = Tally::new("lock dir /x".into());
        tally.count(Outcome::Reaped);
        tally.count(Outcome::Live);
        tally.count(Outcome::Live);
        let line = tally.summary(0);
        assert!(
            line.starts_with("pass done: 1 reaped, 0 would-reap, 2 live, "),
            "{line}"
        );
        assert!(line.contains("; lock dir /x; "), "{line}");
        assert!(line.ends_with("; status 0"), "{line}");
        let metrics = tally.metrics(1, SystemTime::UNIX_EPOCH);
        assert!(
            metrics.contains("ccci_janitor_last_pass_success 0\n"),
            "{metrics}"
        );
        for outcome in Outcome::ALL {
            assert!(metrics.contains(&format!("outcome=\"{}\"", outcome.word())));
        }
        assert!(metrics.contains("ccci_janitor_domains{outcome=\"live\"} 2\n"));
    }

    #[test]
    fn a_metrics_file_must_be_a_prom_file() {
        assert!(MetricsFile::parse(Path::new("/var/lib/m/ccci.prom")).is_ok());
        for bad in [
            "/var/lib/m/ccci.txt",
            "/var/lib/m/",
            "/",
            ".prom",
            "/x/.prom",
        ] {
            assert!(MetricsFile::parse(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
