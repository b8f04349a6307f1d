//! One `gc` for every directory of run dirs: ccci-state's state dir and
//! ccci-abradir's runs dir (SPEC §5, §6 "gc").
//!
//! Both hold one directory per run, named by its [`RunKey`], each with the
//! record of its harness ([`Record`]), and both remove a run dir only while
//! holding its lock. [`sweep`] is the one pass over such a directory; what
//! differs, how a run dir is locked and removed and what else is tidied, is
//! the [`RunDirs`] each tool implements.
//!
//! Guarantees of [`sweep`]:
//! - **Only run dirs of ours.** An entry whose name is not a run key is not
//!   looked at; one that is not a real directory of ours is reported as
//!   skipped, never removed ([`RunDirs::take`]).
//! - **Only under the lock, never a held one.** A run dir is judged and
//!   removed while [`RunDirs::take`]'s lock is held, taken without waiting:
//!   one that someone holds is kept (`in use`).
//! - **One rule.** Whether a run is over is [`judge`]'s: its harness has
//!   exited or its pid names another process; a run of another pid
//!   namespace, or one without a record whose pid is alive, is kept.
//! - **A dry run removes nothing** and reports what it would remove.
//! - Entries are reported in name order.

use anyhow::Context;

use crate::fs::SafeDir;
use crate::names::quote_path;
use crate::run::{judge, temporary_maker, GcEntry, Record, RunKey, Swept};

/// What [`RunDirs::take`] found.
#[derive(Debug)]
pub enum Taken<H> {
    /// Locked: judge it.
    Held(H),
    /// Someone else holds its lock.
    InUse,
    /// Gone meanwhile.
    Vanished,
    /// Not a run dir we may touch, and why.
    Skipped(String),
}

/// A directory of run dirs, as one tool keeps it.
pub trait RunDirs {
    /// A run dir, locked.
    type Held;

    /// The directory of run dirs.
    fn dir(&self) -> &SafeDir;

    /// Its entries' names, sorted.
    fn sorted_names(&self) -> anyhow::Result<Vec<String>>;

    /// Locks the run dir `name` without waiting.
    fn take(&self, name: &str) -> anyhow::Result<Taken<Self::Held>>;

    /// The record of the locked run dir.
    fn record(&self, held: &Self::Held) -> Option<Record>;

    /// Removes the locked run dir `name`, then unlocks it.
    fn remove(&self, held: Self::Held, name: &str) -> anyhow::Result<()>;

    /// A temporary `name` directly in the directory, made by `pid`: what
    /// became of it; `None` when it is kept or not this directory's.
    fn sweep_temporary(&self, _name: &str, _pid: u32, _dry_run: bool) -> Option<Swept> {
        None
    }

    /// In a run dir that is kept (`kept` says why), what else is tidied
    /// (temporaries of writers killed mid-write), reported into `out`.
    fn tidy_kept(
        &self,
        _held: &Self::Held,
        _kept: &Swept,
        _dry_run: bool,
        _out: &mut Vec<GcEntry>,
    ) {
    }
}

/// Removes (with `dry_run`, only reports) every run dir of `dirs` whose run
/// is over, and what [`RunDirs::sweep_temporary`] and
/// [`RunDirs::tidy_kept`] tidy; see the module doc.
pub fn sweep<D: RunDirs>(dirs: &D, dry_run: bool) -> anyhow::Result<Vec<GcEntry>> {
    let mut out = Vec::new();
    for name in dirs.sorted_names()? {
        let path = dirs.dir().join(&name);
        if let Some(pid) = temporary_maker(&name) {
            if let Some(outcome) = dirs.sweep_temporary(&name, pid, dry_run) {
                out.push(GcEntry { path, pid, outcome });
            }
            continue;
        }
        let Some(key) = RunKey::parse(&name) else {
            continue; // not a run dir of ours
        };
        let outcome = sweep_run(dirs, &name, &key, dry_run, &mut out)
            .unwrap_or_else(|e| Swept::Failed(format!("{e:#}")));
        out.push(GcEntry {
            path,
            pid: key.pid,
            outcome,
        });
    }
    Ok(out)
}

fn sweep_run<D: RunDirs>(
    dirs: &D,
    name: &str,
    key: &RunKey,
    dry_run: bool,
    out: &mut Vec<GcEntry>,
) -> anyhow::Result<Swept> {
    let held = match dirs.take(name)? {
        Taken::Held(held) => held,
        Taken::InUse => return Ok(Swept::InUse),
        Taken::Vanished => return Ok(Swept::Vanished),
        Taken::Skipped(why) => return Ok(Swept::Skipped(why)),
    };
    let fate = match judge(dirs.record(&held), key) {
        Ok(fate) => fate,
        Err(kept) => {
            dirs.tidy_kept(&held, &kept, dry_run, out);
            return Ok(kept);
        }
    };
    if dry_run {
        return Ok(Swept::WouldRemove(fate));
    }
    match dirs.remove(held, name) {
        Ok(()) => Ok(Swept::Removed(fate)),
        Err(e) => Ok(Swept::Failed(format!("{e:#}"))),
    }
}

/// The sorted names in `dir`, with a message naming it as `what` when they
/// cannot be listed ("cannot list runs dir '/x'").
pub fn sorted_names(dir: &SafeDir, what: Option<&str>) -> anyhow::Result<Vec<String>> {
    dir.sorted_names().with_context(|| match what {
        Some(what) => format!("cannot list {what} {}", quote_path(dir.path())),
        None => format!("cannot list {}", quote_path(dir.path())),
    })
}
