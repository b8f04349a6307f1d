//! `ccci-lock --list` (SPEC §2): every lockfile (or etcd claim), whether
//! it is held, and its holder record, as tab-separated lines or, with
//! `--json`, one object per line.
//!
//! Looking never blocks anyone: listing takes no lock (whether a lockfile is
//! held, and by which pid, is read from `/proc/locks`; on etcd, from whether
//! a lock key exists), so it never makes a concurrent `-n` on a free domain
//! fail.

use std::io::Write;

use ccci_common::exit::{self, Ended};
use ccci_common::Domain;

use crate::backend::Job;
use crate::Backend;

/// One line of `--list --json`: the fields of the tab-separated form.
#[derive(serde::Serialize)]
struct ListLine<'a> {
    domain: &'a Domain,
    state: &'a str,
    pid: Option<u32>,
    run_id: Option<&'a str>,
    since: Option<&'a str>,
    /// For a held domain: the process a `--hold` keeper holds it for.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<u32>,
}

/// `--list`.
pub(crate) struct List {
    /// `--json`: one JSON object per line.
    pub json: bool,
}

impl Job for List {
    type Output = Ended;

    fn run<B>(self, backend: &B) -> anyhow::Result<Ended>
    where
        B: Backend + Clone + Send + 'static,
        B::Claim: Send + 'static,
    {
        list(backend, self.json).map(Ended::Code)
    }
}

fn list<B: Backend>(backend: &B, json: bool) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    for status in backend.list()? {
        let holder = status.holder.unwrap_or_default();
        let state = if status.held { "held" } else { "free" };
        if json {
            let line = ListLine {
                domain: &status.domain,
                state,
                pid: holder.pid,
                run_id: holder.run_id.as_deref(),
                since: holder.since.as_deref(),
                parent: holder.parent.filter(|_| status.held),
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{}\t{state}\t{}\t{}\t{}",
                status.domain,
                dash(holder.pid.map(|p| p.to_string())),
                dash(holder.run_id),
                dash(holder.since),
            )?;
        }
    }
    out.flush()?;
    Ok(exit::SUCCESS)
}
