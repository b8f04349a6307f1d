//! The state dir and its run dirs: created with a record of the harness,
//! replaced when stale, removed only under their lock (guarantees 1, 4 and
//! 5 of the crate doc).

use ccci_common::names::quote_path;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use ccci_common::dirs::{self, STATE_DIR};
use ccci_common::fs::SafeDir;
use ccci_common::gc::{self, RunDirs, Taken};
use ccci_common::locked::Name;
use ccci_common::run::{temporary_maker, GcEntry, Harness, Record, RunKey, Swept};

use crate::files::Locked;
use crate::RUN_DIR;

/// How often [`StateDir::begin`] replaces a stale dir and starts over.
const ATTEMPTS: usize = 100;

/// A run dir opened for writing ([`StateDir::begin`], [`crate::Location::lock`]).
#[derive(Debug)]
pub struct Begun {
    /// The locked directory.
    pub locked: Locked,
    /// The record of an earlier run whose stale dir was replaced on the way.
    pub replaced: Option<Record>,
}

/// The state dir: one subdirectory per run key.
#[derive(Debug)]
pub struct StateDir {
    dir: SafeDir,
}

impl StateDir {
    /// Opens the state dir at `path` (made absolute, so the paths handed to
    /// children work from any directory). With `create`, a missing one is
    /// made 0700; without, a missing one is `Ok(None)`.
    pub fn open(path: &Path, create: bool) -> anyhow::Result<Option<StateDir>> {
        let path = dirs::absolute(path);
        Ok(SafeDir::open(&STATE_DIR, &path, create)?.map(|dir| StateDir { dir }))
    }

    /// The state dir's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<state dir>/<run key>`.
    pub fn run_path(&self, key: &RunKey) -> PathBuf {
        self.dir.join(&key.key())
    }

    /// Locks the run dir `name` (created first with `create`), verified by
    /// descriptor to be what the name names; `None` when there is none
    /// (with `create`: it was removed between its creation and the open).
    fn lock_run(&self, name: &str, create: bool) -> anyhow::Result<Option<Locked>> {
        let path = self.dir.join(name);
        let got = Locked::acquire(Name::At(self.dir.as_fd(), name), &path, true, || {
            self.dir.subdir(&RUN_DIR, name, create)
        })?;
        match got {
            Some(Ok(locked)) => Ok(Some(locked)),
            Some(Err(_)) => unreachable!("a waiting lock is never busy"),
            None => Ok(None),
        }
    }

    /// Opens the run dir of `key` for writing: created (0700, with its
    /// record) when missing, replaced by a fresh one when it is stale (its
    /// recorded harness pid now names another process), locked either way.
    pub fn begin(&self, key: &RunKey) -> anyhow::Result<Begun> {
        let name = key.key();
        let mut replaced = None;
        for _ in 0..ATTEMPTS {
            let Some(locked) = self.lock_run(&name, true)? else {
                continue; // removed between mkdir and open
            };
            match Record::read(locked.dir()) {
                Some(record) if record.is_for(key) => {
                    if record.harness() == Harness::Replaced {
                        locked.remove(&self.dir, &name)?;
                        replaced = Some(record);
                        continue;
                    }
                }
                _ => {
                    Record::write(locked.dir(), key)?;
                }
            }
            return Ok(Begun { locked, replaced });
        }
        Err(anyhow!(
            "{} kept being replaced while it was being opened; try again",
            quote_path(&self.dir.join(&name))
        ))
    }

    /// The run dir of `key` for reading; `None` when it is missing or stale.
    pub fn lookup(&self, key: &RunKey) -> anyhow::Result<Option<SafeDir>> {
        let Some(dir) = self.dir.subdir(&RUN_DIR, &key.key(), false)? else {
            return Ok(None);
        };
        Ok(match Record::read(&dir) {
            Some(record) if record.is_for(key) && record.harness() == Harness::Replaced => None,
            _ => Some(dir),
        })
    }

    /// Removes the run dir of `key` and its files, and nothing else;
    /// `Ok(false)` when there was none.
    pub fn clean(&self, key: &RunKey) -> anyhow::Result<bool> {
        let name = key.key();
        match self.lock_run(&name, false)? {
            Some(locked) => {
                locked.remove(&self.dir, &name)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes (or with `dry_run` only reports) every run dir whose harness
    /// has exited or whose pid now names another process. Dirs whose harness
    /// runs, dirs a writer holds, dirs recorded in another pid namespace and
    /// entries that are not run dirs are kept. The entries are reported in
    /// name order.
    pub fn gc(&self, dry_run: bool) -> anyhow::Result<Vec<GcEntry>> {
        gc::sweep(self, dry_run)
    }
}

impl RunDirs for StateDir {
    type Held = Locked;

    fn dir(&self) -> &SafeDir {
        &self.dir
    }

    fn sorted_names(&self) -> anyhow::Result<Vec<String>> {
        gc::sorted_names(&self.dir, None)
    }

    fn take(&self, name: &str) -> anyhow::Result<Taken<Locked>> {
        match self.dir.stat(name)? {
            None => return Ok(Taken::Vanished),
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                return Ok(Taken::Skipped("is a symlink".into()))
            }
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
                return Ok(Taken::Skipped("is not a directory".into()))
            }
            Some(_) => {}
        }
        let path = self.dir.join(name);
        let mut unsafe_dir = None;
        let got = Locked::acquire(
            Name::At(self.dir.as_fd(), name),
            &path,
            false,
            || match self.dir.subdir(&RUN_DIR, name, false) {
                Ok(dir) => Ok(dir),
                Err(e) => {
                    unsafe_dir = Some(format!("{e:#}"));
                    Ok(None)
                }
            },
        )?;
        Ok(match got {
            Some(Ok(locked)) => Taken::Held(locked),
            Some(Err(_)) => Taken::InUse,
            None => unsafe_dir.map_or(Taken::Vanished, Taken::Skipped),
        })
    }

    fn record(&self, held: &Locked) -> Option<Record> {
        Record::read(held.dir())
    }

    fn remove(&self, held: Locked, name: &str) -> anyhow::Result<()> {
        held.remove(&self.dir, name)
    }

    fn tidy_kept(&self, held: &Locked, kept: &Swept, dry_run: bool, out: &mut Vec<GcEntry>) {
        if matches!(kept, Swept::Live | Swept::Unrecorded) {
            sweep_temporaries(held, dry_run, out);
        }
    }
}

/// Removes the temporaries in a kept run dir: every writer holds the dir's
/// lock while its temporary exists, and we hold it now, so each one left is
/// from a writer that was killed mid-write.
fn sweep_temporaries(locked: &Locked, dry_run: bool, out: &mut Vec<GcEntry>) {
    let dir = locked.dir();
    let Ok(names) = dir.names() else { return };
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = temporary_maker(name) else {
            continue;
        };
        let outcome = if dry_run {
            Swept::WouldRemoveTemporary
        } else {
            match dir.remove_file(name) {
                Ok(()) => Swept::TemporaryRemoved,
                Err(e) => Swept::Failed(format!(
                    "cannot remove {}: {e}",
                    quote_path(&dir.join(name))
                )),
            }
        };
        out.push(GcEntry {
            path: dir.join(name),
            pid,
            outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccci_common::fs::testing::private_tempdir as tmp;

    /// Replaces the record of `begun`'s run dir with `record` (a harness
    /// whose start time or pid namespace is not the run's), then unlocks.
    fn forge(begun: Begun, record: &Record) {
        begun
            .locked
            .dir()
            .replace(
                ccci_common::run::RECORD,
                &serde_json::to_vec(record).unwrap(),
            )
            .unwrap();
    }

    /// A state dir of its own, in a temporary directory that lives as long
    /// as the first value.
    fn new_state() -> (tempfile::TempDir, StateDir) {
        let t = tmp();
        let state = StateDir::open(t.path(), true).unwrap().unwrap();
        (t, state)
    }

    fn me() -> RunKey {
        RunKey {
            run_id: "t".into(),
            pid: std::process::id(),
        }
    }

    #[test]
    fn begin_records_the_harness_and_reuses_a_live_dir() {
        let (_t, state) = new_state();
        let key = me();
        let begun = state.begin(&key).unwrap();
        assert!(begun.replaced.is_none());
        begun.locked.set("opstate", b"up").unwrap();
        drop(begun);
        let record = Record::read(&state.lookup(&key).unwrap().unwrap()).unwrap();
        assert_eq!(record.pid, key.pid);
        assert_eq!(record.start_time, ccci_common::proc::start_time(key.pid));
        let again = state.begin(&key).unwrap();
        assert!(again.replaced.is_none());
        assert_eq!(again.locked.read("opstate").unwrap().unwrap(), b"up\n");
    }

    #[test]
    fn a_stale_dir_is_replaced_and_ignored_by_readers() {
        let (_t, state) = new_state();
        let key = me();
        let begun = state.begin(&key).unwrap();
        begun.locked.incr("deploys", 5).unwrap();
        let mut stale = Record::now(&key);
        stale.start_time = stale.start_time.map(|t| t + 1);
        forge(begun, &stale);
        assert!(state.lookup(&key).unwrap().is_none());
        let fresh = state.begin(&key).unwrap();
        assert_eq!(fresh.replaced, Some(stale));
        assert_eq!(fresh.locked.read("deploys").unwrap(), None);
    }

    #[test]
    fn locked_operations() {
        let (_t, state) = new_state();
        let begun = state.begin(&me()).unwrap();
        let l = &begun.locked;
        assert_eq!(l.incr("deploys", 1).unwrap(), 1);
        assert_eq!(l.incr("deploys", 41).unwrap(), 42);
        assert_eq!(l.incr("deploys", -2).unwrap(), 40);
        assert_eq!(l.read("deploys").unwrap().unwrap(), b"40\n");
        l.append("deps", b"a").unwrap();
        l.append("deps", b"b c").unwrap();
        assert_eq!(l.read("deps").unwrap().unwrap(), b"a\nb c\n");
        l.dir().replace("deps", b"no newline").unwrap();
        l.append("deps", b"d").unwrap();
        assert_eq!(l.read("deps").unwrap().unwrap(), b"no newline\nd\n");
        l.set("opstate", b"").unwrap();
        l.set("opstate", b"done").unwrap();
        assert_eq!(l.read("opstate").unwrap().unwrap(), b"done\n");
        let e = l.incr("opstate", 1).unwrap_err().to_string();
        assert!(e.contains("opstate holds no number ('done')"), "{e}");
        l.set("big", i64::MAX.to_string().as_bytes()).unwrap();
        assert!(l.incr("big", 1).is_err());
        assert_eq!(
            l.read("big").unwrap().unwrap(),
            format!("{}\n", i64::MAX).as_bytes()
        );
    }

    #[test]
    fn clean_removes_everything_and_is_idempotent() {
        let (_t, state) = new_state();
        let key = me();
        state.begin(&key).unwrap().locked.set("x", b"1").unwrap();
        assert!(state.run_path(&key).is_dir());
        assert!(state.clean(&key).unwrap());
        assert!(!state.run_path(&key).exists());
        assert!(!state.clean(&key).unwrap());
    }

    #[test]
    fn gc_keeps_the_live_and_the_foreign_and_removes_the_gone() {
        let (t, state) = new_state();
        let live = me();
        drop(state.begin(&live).unwrap());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = RunKey {
            run_id: "t".into(),
            pid: child.id(),
        };
        drop(state.begin(&gone).unwrap());
        child.wait().unwrap();
        // A run of another pid namespace whose pid happens to be dead here.
        let foreign = RunKey {
            run_id: "other-ns".into(),
            pid: gone.pid,
        };
        let begun = state.begin(&foreign).unwrap();
        let mut record = Record::now(&foreign);
        record.pid_ns = record.pid_ns.map(|ns| ns + 1);
        forge(begun, &record);
        std::fs::write(t.path().join("not-a-run"), "x").unwrap();

        // A writer of the live run killed mid-write left its temporary.
        let leftover = state.run_path(&live).join(".deploys.999999999.tmp");
        std::fs::write(&leftover, "4").unwrap();

        let dry = state.gc(true).unwrap();
        assert_eq!(dry.len(), 4, "{dry:?}");
        assert!(leftover.exists());
        assert!(state.run_path(&gone).exists());
        let swept = state.gc(false).unwrap();
        let outcome = |key: &RunKey| {
            swept
                .iter()
                .find(|e| e.path == state.run_path(key))
                .map(|e| e.outcome.clone())
        };
        assert_eq!(outcome(&live), Some(Swept::Live));
        assert_eq!(outcome(&gone), Some(Swept::Removed(Harness::Gone)));
        assert_eq!(outcome(&foreign), Some(Swept::Foreign));
        assert!(!leftover.exists(), "{swept:?}");
        assert!(swept
            .iter()
            .any(|e| e.path == leftover && e.outcome == Swept::TemporaryRemoved));
        assert!(!state.run_path(&gone).exists());
        assert!(state.run_path(&live).exists());
        assert!(state.run_path(&foreign).exists());
        assert!(t.path().join("not-a-run").exists());
    }
}
