//! The records lock before the first reap ([`ccci_lock::place`]): a pass
//! looks where the host's runs claim, and it reaps only under the records
//! lock of the host's lock dir, after reading the records again.
//!
//! The race it closes: a first run of this host on another place (another
//! backend, another etcd prefix) writes its record after the pass read the
//! records, then claims and deploys; the pass, looking in the wrong place,
//! sees no claim of that app and would reap it. A run writes its record
//! under the records lock, and [`RecordsFirst`] takes that lock before the
//! pass's first reap (with that domain's claim held) and keeps it to the
//! end of the pass: either the record was written before, and the second
//! reading refuses the pass (125, nothing reaped), or the run waits for the
//! lock and claims only after the pass has ended. A pass that only looks
//! never takes the lock, so it never keeps a first run waiting (SPEC §2
//! "Looking never blocks anyone").

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use ccci_common::names::quote_path;
use ccci_common::Domain;
use ccci_lock::place::Place;
use ccci_lock::FlockDir;

use crate::reap::ReapCommand;

/// The host this pass runs for: where it looks for claims, and the lock
/// dir that records where the host's runs claim ([`ccci_lock::place`]).
pub(crate) struct Here<'a> {
    /// With etcd: the host's lock dir, when it exists (with files the
    /// backend is the lock dir).
    pub(crate) local: Option<&'a FlockDir>,
    pub(crate) lock_dir: &'a Path,
    pub(crate) place: Place,
    /// The lock dir whose records the pass reads first, and whose records
    /// lock it takes before its first reap.
    pub(crate) records: RecordsAt<'a>,
}

/// Where the records lock is taken ([`ccci_lock::place`]).
#[derive(Clone, Copy)]
pub(crate) enum RecordsAt<'a> {
    /// In this lock dir.
    Dir(&'a FlockDir),
    /// In the lock dir at this path, created when missing (a janitor on
    /// etcd whose host's lock dir does not exist yet: a run that creates it
    /// meanwhile must find the records lock there).
    Create(&'a Path),
}

/// How long a pass waits for the records lock before its first reap: a
/// run holds it only to write one small file.
const RECORDS_WAIT: Duration = Duration::from_secs(10);

/// The pass's reaper: before the first reap, the records lock of the
/// host's lock dir and a second reading of its records
/// ([`ccci_lock::place::before_reaping`]), held to the end of the pass and
/// removed while held; then the reap command for each domain.
pub(crate) struct RecordsFirst<'a> {
    pub(crate) reap: ReapCommand,
    pub(crate) here: &'a Here<'a>,
    pub(crate) held: Option<ccci_lock::flock::DirLock>,
}

impl crate::Reaper for RecordsFirst<'_> {
    fn reap(&mut self, domain: &Domain, env: &[(&'static str, OsString)]) -> crate::ReapEnd {
        self.reap.reap(domain, env)
    }

    fn ready(&mut self) -> Result<(), String> {
        use ccci_lock::place::{before_reaping, refusal, Reaping};
        let here = self.here;
        let opened;
        let dir = match here.records {
            RecordsAt::Dir(dir) => dir,
            RecordsAt::Create(path) => {
                opened = FlockDir::open(path, true)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| {
                        format!("lock dir {} vanished while being created", quote_path(path))
                    })?;
                &opened
            }
        };
        let wait = ccci_lock::Wait::AtMost(RECORDS_WAIT);
        match before_reaping(dir, &here.place, wait).map_err(|e| format!("{e:#}"))? {
            Reaping::Clear(lock) => {
                self.held = Some(lock);
                Ok(())
            }
            Reaping::Elsewhere(found) => Err(refusal(&here.place, here.lock_dir, &found)),
            Reaping::Busy => Err(format!(
                "the records lock of lock dir {} stayed busy for {} (a run writing where it \
                 claims, stopped?)",
                quote_path(here.lock_dir),
                crate::human(RECORDS_WAIT)
            )),
        }
    }
}

impl Drop for RecordsFirst<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.held.take() {
            // Left behind, it is only an unlocked file the next taker locks.
            let _ = lock.remove();
        }
    }
}
