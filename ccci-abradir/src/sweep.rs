//! The runs dir as [`ccci_common::gc`] sweeps it (guarantee 6 of the crate
//! doc): run trees whose harness is gone, and temporaries whose maker is.

use std::ffi::OsStr;

use ccci_common::fs::SafeDir;
use ccci_common::gc::{self, RunDirs, Taken};
use ccci_common::locked::Acquired;
use ccci_common::run::{temporary_maker, GcEntry, Record, Swept};
use ccci_common::sys::FlockOp;

use crate::*;

/// The runs dir, as [`gc`] sweeps it.
pub(crate) struct Runs(pub(crate) SafeDir);

impl RunDirs for Runs {
    type Held = SafeDir;

    fn dir(&self) -> &SafeDir {
        &self.0
    }

    fn sorted_names(&self) -> anyhow::Result<Vec<String>> {
        gc::sorted_names(&self.0, Some("runs dir"))
    }

    fn take(&self, name: &str) -> anyhow::Result<Taken<SafeDir>> {
        // Anything but a real directory of ours is skipped, never removed.
        if let Err(e) = self.0.subdir(&RUN_DIR, name, false) {
            return Ok(Taken::Skipped(format!("{e:#}")));
        }
        Ok(
            match lock_run(
                &self.0,
                name,
                &self.0.join(name),
                FlockOp::ExclusiveNonblock,
            ) {
                Ok(Some(Acquired::Held(run))) => Taken::Held(run),
                Ok(Some(_)) => Taken::InUse,
                Ok(None) => Taken::Vanished,
                Err(e) => Taken::Skipped(format!("{e:#}")),
            },
        )
    }

    fn record(&self, run: &SafeDir) -> Option<Record> {
        Record::read(run)
    }

    fn remove(&self, run: SafeDir, name: &str) -> anyhow::Result<()> {
        let removed = tree::remove_tree(&self.0, self.0.path(), OsStr::new(name));
        drop(run);
        removed
    }

    fn sweep_temporary(&self, name: &str, pid: u32, dry_run: bool) -> Option<Swept> {
        sweep_temporary(&self.0, name, pid, dry_run)
    }

    /// A live run keeps its tree; clones its killed calls left go.
    fn tidy_kept(&self, run: &SafeDir, _kept: &Swept, dry_run: bool, out: &mut Vec<GcEntry>) {
        let Ok(Some(abra)) = run.subdir(&RUN_DIR, ABRA, false) else {
            return;
        };
        let Ok(Some(private)) = abra.subdir(&RUN_DIR, RECIPES, false) else {
            return;
        };
        for entry in private.names().unwrap_or_default() {
            let Some(entry) = entry.to_str() else {
                continue;
            };
            if let Some(pid) = temporary_maker(entry) {
                if let Some(outcome) = sweep_temporary(&private, entry, pid, dry_run) {
                    out.push(GcEntry {
                        path: private.join(entry),
                        pid,
                        outcome,
                    });
                }
            }
        }
    }
}

/// Removes the temporary `name` in `dir` when no process has its maker's
/// pid any more; `None` when it is kept (its maker may still be at work).
pub(crate) fn sweep_temporary(dir: &SafeDir, name: &str, pid: u32, dry_run: bool) -> Option<Swept> {
    if ccci_common::proc::alive(pid) {
        return None;
    }
    if dry_run {
        return Some(Swept::WouldRemoveTemporary);
    }
    Some(match tree::remove_tree(dir, dir.path(), OsStr::new(name)) {
        Ok(()) => Swept::TemporaryRemoved,
        Err(e) => Swept::Failed(format!("{e:#}")),
    })
}
