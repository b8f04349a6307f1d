//! A held lock of the lock dir backend ([`FlockClaim`]): its record
//! (stamped into the lockfile, read back with `pread`), its age, and how it
//! ends: removed while still held (invariant 2, unlink only while holding),
//! or given up, which removes the lockfile only when this process created
//! it and nobody stamped it since.
//!
//! A claim keeps the size and mtime the identity check saw when its lock
//! was taken, until it is stamped, so a claim taken from a young, empty
//! lockfile needs no `stat` for its age and no `pread` for its record.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ccci_common::fs::SafeDir;
use ccci_common::names::quote_path;
use ccci_common::supervise::LossNotifier;
use ccci_common::Domain;
use nix::sys::stat::FileStat;

use super::watch::LockfileWatch;
use crate::protocol::{Claim, Holder};

/// The most of a lockfile that is read for its holder record.
const RECORD_MAX: usize = 4096;

/// A held lock of [`FlockDir`](super::FlockDir).
#[derive(Debug)]
pub struct FlockClaim {
    pub(super) dir: Arc<SafeDir>,
    pub(super) file: File,
    pub(super) name: String,
    /// The domain whose lock this is; `None` for the lock dir's own locks
    /// (the janitor's pass lock, the records lock), which are no domain's:
    /// they are taken with the same protocol, but only ever held and
    /// removed. Such a claim never leaves this module bare: it is handed
    /// out inside a [`DirLock`] or a pass guard, which offer no
    /// [`Claim`] method, so [`Claim::domain`] always has a domain.
    pub(super) domain: Option<Domain>,
    /// This process created the lockfile, and nobody stamped a record into
    /// it before we took it: giving it up may remove it.
    pub(super) created: bool,
    /// The locked file's device and inode (from the descriptor), for the
    /// identity check before a removal.
    pub(super) id: FileId,
    /// The file's mtime and size as the identity check after taking the
    /// lock saw them, until we stamp it: what [`Claim::age`] and
    /// [`Claim::holder`] need, without another `stat`. Nobody else writes
    /// a lockfile while we hold it.
    pub(super) seen: Option<(SystemTime, u64)>,
    /// Set by [`Claim::watch_loss`]: reports the lockfile removed or
    /// replaced while held (see [`LockfileWatch`]).
    pub(super) watch: Option<LockfileWatch>,
}

/// A held lock of the lock dir's own, which is no domain's (the records
/// lock, [`super::RECORDS_LOCK`]): taken with the lock protocol, it can
/// only be held, and removed while held ([`DirLock::remove`]); dropped,
/// it is released and its lockfile left.
#[derive(Debug)]
pub struct DirLock(pub(super) FlockClaim);

impl DirLock {
    /// Removes the lockfile while still holding it, then releases it.
    pub fn remove(self) -> anyhow::Result<()> {
        Claim::remove(self.0)
    }
}

/// A file's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl FileId {
    pub(super) fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// The mtime of `st`.
pub(super) fn modified_of(st: &FileStat) -> SystemTime {
    let since_epoch = Duration::new(st.st_mtime.unsigned_abs(), st.st_mtime_nsec as u32);
    if st.st_mtime >= 0 {
        SystemTime::UNIX_EPOCH + since_epoch
    } else {
        SystemTime::UNIX_EPOCH - since_epoch
    }
}

/// What the identity check saw of a file whose lock we just took.
pub(super) fn seen_of(st: &FileStat) -> Option<(SystemTime, u64)> {
    Some((modified_of(st), st.st_size as u64))
}

pub(super) fn read_holder(file: &File) -> Option<Holder> {
    let mut buf = vec![0; RECORD_MAX];
    let n = file.read_at(&mut buf, 0).ok()?;
    let line = buf[..n].split(|&b| b == b'\n').next()?;
    serde_json::from_slice(line).ok()
}

fn age_of(file: &File) -> io::Result<Duration> {
    Ok(age_since(file.metadata()?.modified()?))
}

/// Time since `modified`; zero for a time in the future.
pub(super) fn age_since(modified: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO)
}

impl FlockClaim {
    /// The lockfile's path.
    pub fn path(&self) -> PathBuf {
        ccci_common::dirs::absolute(&self.dir.join(&self.name))
    }

    /// The identity check of a held claim: the path's `lstat` when it
    /// still names our file.
    fn at_path(&self) -> io::Result<Option<FileStat>> {
        Ok(self
            .dir
            .stat(&self.name)?
            .filter(|st| FileId::of(st) == self.id))
    }
}

impl Claim for FlockClaim {
    fn domain(&self) -> &Domain {
        self.domain
            .as_ref()
            .expect("a lock dir's own lock is no domain's claim")
    }

    fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
        // Empty when we took it (as a lockfile this process created is):
        // one write is the whole record, and it sets the mtime itself.
        let empty = matches!(self.seen, Some((_, 0)));
        self.seen = None;
        let mut line = serde_json::to_vec(holder)?;
        line.push(b'\n');
        // Otherwise write over the old record, then cut and touch: a reader
        // sees the old record, the new one, or a mix it cannot parse; never
        // an empty file.
        let written = self.file.write_all_at(&line, 0).and_then(|()| {
            if empty {
                return Ok(());
            }
            self.file.set_len(line.len() as u64)?;
            nix::sys::stat::futimens(
                &self.file,
                &nix::sys::time::TimeSpec::UTIME_NOW,
                &nix::sys::time::TimeSpec::UTIME_NOW,
            )
            .map_err(io::Error::from)
        });
        written.with_context(|| format!("cannot write lockfile {}", quote_path(&self.path())))
    }

    fn age(&self) -> anyhow::Result<Duration> {
        if let Some((modified, _)) = self.seen {
            return Ok(age_since(modified));
        }
        age_of(&self.file).with_context(|| format!("cannot stat {}", quote_path(&self.path())))
    }

    fn holder(&self) -> Option<Holder> {
        if matches!(self.seen, Some((_, 0))) {
            return None; // empty when we took it: no record
        }
        read_holder(&self.file)
    }

    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("CCCI_LOCK_DOMAIN", self.domain().as_str().into()),
            ("CCCI_LOCK_FILE", self.path().into_os_string()),
        ]
    }

    fn watch_loss(&mut self, notifier: LossNotifier) {
        let started = LockfileWatch::start(&self.dir, &self.name, self.id, self.domain(), notifier);
        match started {
            Ok(watch) => self.watch = Some(watch),
            Err(e) => ccci_common::say!(
                "cannot watch lockfile {} for removal (the lock itself is unaffected): {e:#}",
                ccci_common::names::quote_path(&self.path())
            ),
        }
    }

    fn give_back_on_signal(&self) -> Option<(std::os::fd::BorrowedFd<'_>, &str, u64, u64)> {
        self.created.then(|| {
            (
                self.dir.as_fd(),
                self.name.as_str(),
                self.id.dev,
                self.id.ino,
            )
        })
    }

    fn give_up(mut self) -> anyhow::Result<()> {
        drop(self.watch.take());
        // Held since we created it; check it is still unstamped anyway.
        if self.created && self.at_path()?.is_some_and(|st| st.st_size == 0) {
            return self.remove();
        }
        Ok(())
    }

    fn remove(mut self) -> anyhow::Result<()> {
        drop(self.watch.take()); // our own unlink is no loss
                                 // By invariant 2 the path still names our file; check anyway, so a
                                 // lockfile replaced by hand is never removed by someone not holding it.
        if self.at_path()?.is_some() {
            self.dir
                .remove_file(&self.name)
                .with_context(|| format!("cannot remove lockfile {}", quote_path(&self.path())))?;
        }
        drop(self.file); // releases the lock, after the unlink
        Ok(())
    }
}
