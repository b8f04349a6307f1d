//! Listing and looking at the lockfiles of a lock dir ([`Backend::list`],
//! [`Backend::status`], [`Backend::peek_age`], the domains of a lock dir):
//! all without taking any lock.
//!
//! # Looking never blocks anyone
//!
//! [`Backend::list`], [`Backend::status`] and the holder record shown by
//! `-v` take no lock at all: the record is read with `pread`, and whether a
//! lockfile is held, and by which pid, comes from `/proc/locks`
//! ([`flock_holder`], matched by device and inode). A shared probe lock, as
//! before, made a concurrent `-n` on a free domain fail with 75.
//!
//! # Few system calls per lockfile
//!
//! A look ([`Backend::status`]) at a free, empty lockfile (a young claim
//! whose run never stamped it) is one `lstat` and a lookup in the lock
//! table; anything else is opened and read as before.

use anyhow::Context;
use ccci_common::fs::{FileErrorKind, OpenHow};
use ccci_common::names::quote_path;
use std::time::Duration;

use super::claim::{age_since, modified_of, read_holder, FileId};
use super::lock_dir::FlockDir;
use super::names::{domain_of, lockfile_name};
#[cfg(doc)]
use super::proc_locks::flock_holder;
use super::proc_locks::{flock_holder_of, KernelLock};
#[cfg(doc)]
use crate::protocol::Backend;
use crate::protocol::Status;
use ccci_common::{Domain, DomainList};

impl FlockDir {
    /// The state of the lockfile `name`, read without taking any lock;
    /// `None` when it is missing or not a usable lockfile.
    fn look(&self, domain: &Domain, name: &str) -> anyhow::Result<Option<Status>> {
        // The common case, a free lockfile without a record (a young claim
        // whose run never stamped it), is told from an `lstat` alone.
        let peeked = self.snapshot.as_ref().and_then(|snapshot| {
            snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_peeked(name)
        });
        let st = match peeked {
            Some(st) => Some(st),
            None => self
                .dir
                .stat(name)
                .with_context(|| format!("cannot stat {}", quote_path(&self.dir.join(name))))?,
        };
        let Some(st) = st else {
            return Ok(None);
        };
        let plain = st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1;
        if plain && st.st_size == 0 && self.lock_of(FileId::of(&st))?.is_none() {
            return Ok(Some(Status {
                domain: domain.clone(),
                held: false,
                holder: None,
                locker: None,
            }));
        }
        let (file, st) = match self.dir.open_file_stat(name, OpenHow::Read) {
            Ok(opened) => opened,
            Err(e) => match e.kind {
                FileErrorKind::Missing => return Ok(None),
                FileErrorKind::Symlink | FileErrorKind::NotRegular(_) => {
                    ccci_common::say!("skipping {e}");
                    return Ok(None);
                }
                _ => return Err(e.into()),
            },
        };
        let lock = self.lock_of(FileId::of(&st))?;
        Ok(Some(Status {
            domain: domain.clone(),
            held: lock.is_some(),
            holder: read_holder(&file),
            locker: lock.and_then(|l| l.pid),
        }))
    }

    /// Who holds a `flock` on the file `id`, from `/proc/locks` (or its
    /// snapshot, see [`FlockDir::reuse_lock_table`]).
    fn lock_of(&self, id: FileId) -> anyhow::Result<Option<KernelLock>> {
        match &self.snapshot {
            Some(snapshot) => snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lookup(id.dev, id.ino),
            None => flock_holder_of(id.dev, id.ino),
        }
        .context("cannot read /proc/locks")
    }
}

/// [`Backend::domains`] of `dir`.
pub(super) fn domains(dir: &FlockDir) -> anyhow::Result<Vec<Domain>> {
    Ok(domain_list(dir)?.iter().collect())
}

/// [`Backend::domain_list`] of `dir`.
pub(super) fn domain_list(dir: &FlockDir) -> anyhow::Result<DomainList> {
    let mut list = DomainList::new();
    dir.dir
        .each_name(|name| {
            if let Some(domain) = domain_of(name) {
                let _ = list.push(&domain);
            }
        })
        .with_context(|| format!("cannot read lock dir {}", quote_path(dir.path())))?;
    list.sort_dedup();
    Ok(list)
}

/// [`Backend::list`] of `dir`.
pub(super) fn list(dir: &FlockDir) -> anyhow::Result<Vec<Status>> {
    let mut out = Vec::new();
    for domain in domain_list(dir)?.iter() {
        let name = lockfile_name(&domain)?;
        out.extend(dir.look(&domain, &name)?);
    }
    Ok(out)
}

/// [`Backend::status`] of `dir`.
pub(super) fn status(dir: &FlockDir, domain: &Domain) -> anyhow::Result<Option<Status>> {
    let name = lockfile_name(domain)?;
    dir.look(domain, &name)
}

/// [`Backend::peek_age`] of `dir`.
pub(super) fn peek_age(dir: &FlockDir, domain: &Domain) -> anyhow::Result<Option<Duration>> {
    let name = lockfile_name(domain)?;
    let st = dir
        .dir
        .stat(&name)
        .with_context(|| format!("cannot stat {}", quote_path(&dir.dir.join(&name))))?;
    let Some(st) = st.filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG) else {
        return Ok(None);
    };
    if let Some(snapshot) = &dir.snapshot {
        snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep_peeked(&name, st);
    }
    Ok(Some(age_since(modified_of(&st))))
}

#[cfg(test)]
mod tests {
    use crate::flock::flock_holder;
    use crate::flock::testing::{d, held, lock_dir};
    use crate::protocol::{Backend, Claim, Holder, Probe, Wait};
    use std::time::{Duration, SystemTime};

    #[test]
    fn peek_age_reads_the_mtime_without_locking() {
        let (_t, dir) = lock_dir();
        assert_eq!(dir.peek_age(&d("d")).unwrap(), None);
        let mut claim = held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        claim
            .stamp(&Holder::this_process(Some("r1".into())))
            .unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        claim.file.set_modified(old).unwrap();
        let peeked = dir.peek_age(&d("d")).unwrap().unwrap();
        let aged = claim.age().unwrap();
        assert!(peeked >= Duration::from_secs(7200), "{peeked:?}");
        assert!(aged.abs_diff(peeked) < Duration::from_secs(5), "{aged:?}");
        assert_eq!(claim.holder().unwrap().run_id.as_deref(), Some("r1"));
        // A peek neither waits for nor disturbs the holder.
        assert!(matches!(dir.probe(&d("d")).unwrap(), Probe::Held { .. }));
        claim
            .file
            .set_modified(SystemTime::UNIX_EPOCH - Duration::from_secs(5))
            .unwrap();
        assert!(dir.peek_age(&d("d")).unwrap().unwrap() > Duration::from_secs(86400 * 365 * 50));

        std::fs::create_dir(dir.path().join("x.lock")).unwrap();
        assert_eq!(dir.peek_age(&d("x")).unwrap(), None, "not a regular file");
    }

    #[test]
    fn list_reports_held_and_free() {
        let (_t, dir) = lock_dir();
        let mut a = held(dir.acquire(&d("a"), Wait::Never, &mut |_| {}).unwrap());
        a.stamp(&Holder::this_process(None)).unwrap();
        drop(held(
            dir.acquire(&d("b"), Wait::Never, &mut |_| {}).unwrap(),
        ));
        let list = dir.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].held && list[0].domain == "a");
        assert_eq!(
            list[0].holder.as_ref().unwrap().pid,
            Some(std::process::id())
        );
        assert!(!list[1].held && list[1].holder.is_none());
    }

    #[test]
    fn a_reused_lock_table_is_read_once_per_max_age() {
        let (_t, dir) = lock_dir();
        let fresh = dir.clone().reuse_lock_table(Duration::ZERO);
        let stale = dir.clone().reuse_lock_table(Duration::from_secs(3600));
        let mut a = held(dir.acquire(&d("a"), Wait::Never, &mut |_| {}).unwrap());
        a.stamp(&Holder::this_process(None)).unwrap();
        drop(held(
            dir.acquire(&d("b"), Wait::Never, &mut |_| {}).unwrap(),
        ));
        for snapshot in [&fresh, &stale] {
            let a_st = snapshot.status(&d("a")).unwrap().unwrap();
            assert!(a_st.held && a_st.locker == Some(std::process::id()));
            assert!(!snapshot.status(&d("b")).unwrap().unwrap().held);
        }
        drop(a);
        // Read again at once when allowed no age; the hour-old one keeps
        // what it read (it only ever feeds reports).
        assert!(!fresh.status(&d("a")).unwrap().unwrap().held);
        assert!(stale.status(&d("a")).unwrap().unwrap().held);
        // A status right after a peek of the same lockfile uses the peek's
        // lstat, once; of another lockfile, its own.
        assert!(fresh.peek_age(&d("b")).unwrap().is_some());
        let mut b = held(dir.acquire(&d("b"), Wait::Never, &mut |_| {}).unwrap());
        b.stamp(&Holder::this_process(Some("rb".into()))).unwrap();
        drop(b);
        // The peek saw it empty: no record to read.
        let peeked = fresh.status(&d("b")).unwrap().unwrap();
        assert!(!peeked.held && peeked.holder.is_none(), "{peeked:?}");
        let looked = fresh.status(&d("b")).unwrap().unwrap();
        assert_eq!(looked.holder.and_then(|h| h.run_id).as_deref(), Some("rb"));
        assert!(fresh.peek_age(&d("b")).unwrap().is_some());
        assert!(fresh.status(&d("a")).unwrap().unwrap().holder.is_some());
        // Without a reused lock table, nothing is kept.
        assert!(dir.peek_age(&d("b")).unwrap().is_some());
        assert!(dir.status(&d("b")).unwrap().unwrap().holder.is_some());
        // Taking locks never goes through the snapshot.
        held(stale.acquire(&d("a"), Wait::Never, &mut |_| {}).unwrap());
    }

    #[test]
    fn looking_takes_no_lock_and_names_the_locking_pid() {
        let (_t, dir) = lock_dir();
        let mut claim = held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        claim.stamp(&Holder::this_process(None)).unwrap();
        let held_by = flock_holder(&claim.file).unwrap().unwrap();
        assert_eq!(held_by.pid, Some(std::process::id()));
        assert!(held_by.exclusive);
        let status = dir.status(&d("d")).unwrap().unwrap();
        assert!(status.held);
        assert_eq!(status.locker, Some(std::process::id()));
        drop(claim);
        let status = dir.status(&d("d")).unwrap().unwrap();
        assert!(!status.held && status.locker.is_none());
        // Looking at a free lockfile holds nothing: a -n right after gets it.
        let listed = dir.list().unwrap();
        assert!(!listed[0].held);
        held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        assert!(dir.status(&d("none")).unwrap().is_none());
    }

    #[test]
    fn an_empty_lockfile_is_looked_at_by_its_lstat_and_still_seen_held() {
        let (_t, dir) = lock_dir();
        let fresh = dir.clone().reuse_lock_table(Duration::ZERO);
        let claim = held(dir.acquire(&d("e"), Wait::Never, &mut |_| {}).unwrap());
        assert_eq!(claim.file.metadata().unwrap().len(), 0);
        assert_eq!(claim.holder(), None, "an empty lockfile has no record");
        for looker in [&dir, &fresh] {
            let status = looker.status(&d("e")).unwrap().unwrap();
            assert!(status.held, "a held lockfile without a record looked free");
            assert_eq!(status.locker, Some(std::process::id()));
        }
        drop(claim);
        for looker in [&dir, &fresh] {
            let status = looker.status(&d("e")).unwrap().unwrap();
            assert!(!status.held && status.holder.is_none());
        }
        // Not a plain file: looked at as before (refused, not listed).
        std::fs::create_dir(dir.path().join("x.lock")).unwrap();
        assert_eq!(dir.status(&d("x")).unwrap(), None);
        std::fs::hard_link(dir.path().join("e.lock"), dir.path().join("f.lock")).unwrap();
        assert_eq!(dir.status(&d("f")).unwrap(), None, "a hard-linked lockfile");
        // A claim taken by a probe knows the lockfile was empty; stamped,
        // its record is read again.
        drop(held(
            dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap(),
        ));
        let Probe::Acquired(mut claim) = dir.probe(&d("d")).unwrap() else {
            panic!("d is free")
        };
        assert_eq!(claim.holder(), None);
        claim
            .stamp(&Holder::this_process(Some("r2".into())))
            .unwrap();
        assert_eq!(claim.holder().unwrap().run_id.as_deref(), Some("r2"));
    }
}
