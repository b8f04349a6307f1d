//! The lock protocol of the lock dir backend ([`FlockDir`]): open (creating
//! when missing), lock, identity check (invariant 1), and unlink only under
//! the lock (invariant 2); its [`Backend`] impl, whose waiting lives in
//! `wait` and whose looking lives in `listing`.
//!
//! # Nothing left behind by a run that gave up
//!
//! A lockfile this process created but did not end up holding (`-n` lost,
//! `-w` ran out, another domain of the set was busy) is removed before the
//! answer, so the janitor never reaps a claim nobody held. Removing obeys
//! invariant 2, unlink only while holding: the file is removed only when
//! its lock can be taken without waiting, the path still names it, and it
//! is still empty (nobody stamped a record into it since). A file that
//! another process locked in between is that process's claim now and is
//! left alone. A claim acquired by waiting is "ours" in this sense only
//! when we created the file and it is still empty: whoever held it
//! meanwhile never stamped it (a looker, or a run killed before stamping).
//!
//! # Few system calls per lockfile
//!
//! A janitor pass looks at every lockfile of a lock dir, so each look and
//! probe makes only what its guarantees need:
//! - The identity check (invariant 1) compares the device and inode of the
//!   open descriptor, taken by the `fstat` that [`SafeDir::open_file_stat`]
//!   makes anyway to refuse what is not a plain file (an open descriptor's
//!   device and inode never change), with an `lstat` of the path made after
//!   the lock is taken. That `lstat` also gives the size and mtime as of
//!   the lock, which the claim keeps until it is stamped: a probe that
//!   takes a young claim is `openat`, `fstat`, `flock`, `fstatat`, `close`,
//!   with no `pread` for an empty lockfile (no record to read).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ccci_common::cli::UsageError;
use ccci_common::dirs::LOCK_DIR;
use ccci_common::fs::{FileErrorKind, OpenHow, SafeDir};
use ccci_common::names::quote_path;
use ccci_common::sys::{flock, FlockOp};
use nix::sys::stat::FileStat;

use super::claim::{age_since, modified_of, read_holder, seen_of, DirLock, FileId, FlockClaim};
use super::listing;
use super::names::{lockfile_name, PASS_LOCK, RECORDS_LOCK};
use super::proc_locks::LockSnapshot;
use crate::protocol::{Acquired, Backend, Claim, Holder, PassLock, Probe, Status, Wait};
use ccci_common::{Domain, DomainList};

/// The local backend: one lockfile per domain in a lock dir.
#[derive(Debug, Clone)]
pub struct FlockDir {
    pub(super) dir: Arc<SafeDir>,
    /// Set by [`FlockDir::reuse_lock_table`]: looks read a shared snapshot.
    pub(super) snapshot: Option<Arc<Mutex<LockSnapshot>>>,
}

/// One non-blocking round of acquiring.
pub(super) enum Round {
    /// We hold it, and the path names it.
    Held(FlockClaim),
    /// We locked a file that is no longer at the path: start over.
    Moved,
    /// Somebody holds it.
    Busy(Busy),
}

/// A lockfile somebody else holds, as a round found it.
pub(super) struct Busy {
    pub(super) file: File,
    pub(super) id: FileId,
    pub(super) created: bool,
    pub(super) holder: Option<Holder>,
}

impl FlockDir {
    /// Opens the lock dir at `path` (see [`SafeDir`]); with `create`, makes
    /// it 0700 when missing. `None`: missing and not created.
    pub fn open(path: &Path, create: bool) -> anyhow::Result<Option<FlockDir>> {
        Ok(SafeDir::open(&LOCK_DIR, path, create)?.map(|dir| FlockDir {
            dir: Arc::new(dir),
            snapshot: None,
        }))
    }

    /// The lock dir's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The lock dir's identity ([`ccci_common::fs::DirId`]), from its
    /// descriptor: the directory this value opened, whatever its path names
    /// now.
    pub fn identity(&self) -> std::io::Result<ccci_common::fs::DirId> {
        self.dir.identity()
    }

    /// From now on, whether a lockfile is held ([`Backend::status`],
    /// [`Backend::list`]) is read from a snapshot of `/proc/locks` at most
    /// `max_age` old (see `LockSnapshot`): for a janitor pass that reports
    /// on many lockfiles. Acquiring, probing and removing are unaffected.
    pub fn reuse_lock_table(mut self, max_age: Duration) -> FlockDir {
        self.snapshot = Some(Arc::new(Mutex::new(LockSnapshot::new(max_age))));
        self
    }

    /// The lock dir itself: for the keeper of `--hold` (its socket lives
    /// there; see [`crate::hold`]), and for the records of where the host's
    /// runs claim ([`crate::place`]).
    pub fn safe_dir(&self) -> &SafeDir {
        &self.dir
    }

    /// Takes the records lock ([`RECORDS_LOCK`]) with the lock protocol,
    /// waiting as `wait` says; `None` when it stayed busy. A run holds it
    /// while it writes the lock dir's record of where it claims, a janitor
    /// from its first reap to the end of its pass ([`crate::place`]).
    /// The lock is no domain's: it is only held and removed ([`DirLock`]).
    pub fn lock_records(&self, wait: Wait) -> anyhow::Result<Option<DirLock>> {
        let name = RECORDS_LOCK;
        Ok(match self.acquire_as(None, name, wait, &mut |_| {})? {
            Acquired::Held(claim) => Some(DirLock(claim)),
            Acquired::Busy(_) => None,
        })
    }

    /// A claim on `file` (identity `id`), whose lock we hold and whose
    /// identity check saw `at_path`.
    fn claim(
        &self,
        file: File,
        id: FileId,
        at_path: &FileStat,
        name: &str,
        domain: Option<&Domain>,
        created: bool,
    ) -> FlockClaim {
        FlockClaim {
            dir: Arc::clone(&self.dir),
            file,
            name: name.to_string(),
            domain: domain.cloned(),
            created,
            id,
            seen: seen_of(at_path),
            watch: None,
        }
    }

    /// The identity check (invariant 1): the `lstat` of the path `name`
    /// when it still names the file `id` (taken from the open descriptor,
    /// whose device and inode never change). Made after the lock is taken,
    /// it also gives the file's size and mtime as of then.
    fn at_path(&self, name: &str, id: FileId) -> io::Result<Option<FileStat>> {
        Ok(self.dir.stat(name)?.filter(|st| FileId::of(st) == id))
    }

    /// Opens the lockfile `name`, creating it when missing; `true` when
    /// this call created it.
    fn open_or_create(&self, name: &str) -> anyhow::Result<(File, FileId, bool)> {
        loop {
            match self.dir.open_file_stat(name, OpenHow::CreateNew) {
                Ok((file, st)) => return Ok((file, FileId::of(&st), true)),
                Err(e) if matches!(e.kind, FileErrorKind::Exists) => {}
                Err(e) => return Err(e.into()),
            }
            match self.dir.open_file_stat(name, OpenHow::ReadWrite) {
                Ok((file, st)) => return Ok((file, FileId::of(&st), false)),
                // Removed between the two opens: create it after all.
                Err(e) if matches!(e.kind, FileErrorKind::Missing) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes the lockfile `name` that this process created but will not
    /// hold, if nobody else took it since (see the module doc).
    fn discard_created(&self, name: &str, file: &File, id: FileId) -> anyhow::Result<()> {
        if flock(file.as_fd(), FlockOp::ExclusiveNonblock)?
            && self.at_path(name, id)?.is_some_and(|st| st.st_size == 0)
        {
            self.dir.remove_file(name).with_context(|| {
                format!(
                    "cannot remove lockfile {}",
                    quote_path(&self.dir.join(name))
                )
            })?;
        }
        Ok(())
    }

    /// Open (creating), lock without waiting, check identity.
    pub(super) fn round(&self, domain: Option<&Domain>, name: &str) -> anyhow::Result<Round> {
        let (file, id, created) = self.open_or_create(name)?;
        if !flock(file.as_fd(), FlockOp::ExclusiveNonblock)? {
            let holder = read_holder(&file);
            return Ok(Round::Busy(Busy {
                file,
                id,
                created,
                holder,
            }));
        }
        Ok(match self.at_path(name, id)? {
            Some(st) => Round::Held(self.claim(file, id, &st, name, domain, created)),
            None => Round::Moved,
        })
    }

    /// Rounds until one ends with the lockfile at the path locked by us
    /// (`Ok`) or by somebody else (`Err`): a locked file no longer at the
    /// path is let go and the round made again.
    pub(super) fn round_at_path(
        &self,
        domain: Option<&Domain>,
        name: &str,
    ) -> anyhow::Result<Result<FlockClaim, Busy>> {
        loop {
            match self.round(domain, name)? {
                Round::Held(claim) => return Ok(Ok(claim)),
                Round::Moved => continue,
                Round::Busy(busy) => return Ok(Err(busy)),
            }
        }
    }

    /// Without waiting: held, or busy (after discarding a lockfile we
    /// created and lost), with the holder's record.
    pub(super) fn try_acquire(
        &self,
        domain: Option<&Domain>,
        name: &str,
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        match self.round_at_path(domain, name)? {
            Ok(claim) => Ok(Acquired::Held(claim)),
            Err(busy) => {
                if busy.created {
                    self.discard_created(name, &busy.file, busy.id)?;
                }
                Ok(Acquired::Busy(busy.holder))
            }
        }
    }

    /// The claim on a lockfile that was busy and whose lock we then got by
    /// waiting, if the path still names it (the identity check); `None`:
    /// start over. Someone else held it meanwhile: "ours" only if it is
    /// still the empty file we made.
    pub(super) fn claim_after_wait(
        &self,
        domain: Option<&Domain>,
        name: &str,
        file: File,
        id: FileId,
        created: bool,
    ) -> io::Result<Option<FlockClaim>> {
        Ok(self.at_path(name, id)?.map(|st| {
            let ours = created && st.st_size == 0;
            self.claim(file, id, &st, name, domain, ours)
        }))
    }
}

impl Backend for FlockDir {
    type Claim = FlockClaim;

    fn check_domain(&self, domain: &Domain) -> Result<(), UsageError> {
        lockfile_name(domain).map(drop)
    }

    fn acquire(
        &self,
        domain: &Domain,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        let name = lockfile_name(domain)?;
        self.acquire_as(Some(domain), &name, wait, waiting)
    }

    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<FlockClaim>> {
        let name = lockfile_name(domain)?;
        // Opened for writing, so that a janitor that takes the claim can
        // stamp its own record while it reaps; a lockfile we may only read
        // (made read-only by hand) is still probed and settled.
        let opened = match self.dir.open_file_stat(&name, OpenHow::ReadWrite) {
            Err(e) if matches!(&e.kind, FileErrorKind::Io(io) if io.kind() == io::ErrorKind::PermissionDenied) => {
                self.dir.open_file_stat(&name, OpenHow::Read)
            }
            other => other,
        };
        let (file, st) = match opened {
            Ok(opened) => opened,
            Err(e) => match e.kind {
                FileErrorKind::Missing => return Ok(Probe::Missing),
                FileErrorKind::Symlink | FileErrorKind::NotRegular(_) => {
                    return Ok(Probe::Unusable(e.to_string()))
                }
                _ => return Err(e.into()),
            },
        };
        let id = FileId::of(&st);
        if !flock(file.as_fd(), FlockOp::ExclusiveNonblock)? {
            // Its age as of the open, a moment ago: held, it is only reported.
            return Ok(Probe::Held {
                holder: read_holder(&file),
                age: age_since(modified_of(&st)),
            });
        }
        Ok(match self.at_path(&name, id)? {
            Some(st) => Probe::Acquired(self.claim(file, id, &st, &name, Some(domain), false)),
            None => Probe::Moved,
        })
    }

    fn create(&self, domain: &Domain) -> anyhow::Result<Option<FlockClaim>> {
        let name = lockfile_name(domain)?;
        let (file, st) = match self.dir.open_file_stat(&name, OpenHow::CreateNew) {
            Ok(opened) => opened,
            Err(e) if matches!(e.kind, FileErrorKind::Exists) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The file is new, but another process may have opened and locked
        // it, or locked and removed it, since; the identity check covers both.
        let id = FileId::of(&st);
        if !flock(file.as_fd(), FlockOp::ExclusiveNonblock)? {
            return Ok(None);
        }
        Ok(self
            .at_path(&name, id)?
            .map(|st| self.claim(file, id, &st, &name, Some(domain), true)))
    }

    fn domains(&self) -> anyhow::Result<Vec<Domain>> {
        listing::domains(self)
    }

    /// Filtered while the directory is read: names that are no domain's
    /// lockfile are never held.
    fn domain_list(&self) -> anyhow::Result<DomainList> {
        listing::domain_list(self)
    }

    fn list(&self) -> anyhow::Result<Vec<Status>> {
        listing::list(self)
    }

    fn status(&self, domain: &Domain) -> anyhow::Result<Option<Status>> {
        listing::status(self, domain)
    }

    fn peek_age(&self, domain: &Domain) -> anyhow::Result<Option<Duration>> {
        listing::peek_age(self, domain)
    }

    fn pass_lock(&self, create: bool) -> anyhow::Result<PassLock> {
        if create {
            return Ok(match self.try_acquire(None, PASS_LOCK)? {
                Acquired::Held(claim) => PassLock::Held(Box::new(PassGuard(Some(claim)))),
                Acquired::Busy(_) => PassLock::Busy,
            });
        }
        let file = match self.dir.open_file(PASS_LOCK, OpenHow::Read) {
            Ok(file) => file,
            Err(e) if matches!(e.kind, FileErrorKind::Missing) => return Ok(PassLock::Missing),
            Err(e) => return Err(e.into()),
        };
        if !flock(file.as_fd(), FlockOp::SharedNonblock)? {
            return Ok(PassLock::Busy);
        }
        // Removed meanwhile by the pass that held it: no pass runs now.
        Ok(if self.dir.names_file(PASS_LOCK, &file)? {
            PassLock::Held(Box::new(file))
        } else {
            PassLock::Missing
        })
    }
}

/// The pass lock of a real pass: like a domain's lockfile, it is removed
/// while still held when the pass ends (invariant 2), so a lock dir holds
/// nothing between passes; a pass that locked the removed file fails the
/// identity check and starts over (invariant 1).
struct PassGuard(Option<FlockClaim>);

impl Drop for PassGuard {
    fn drop(&mut self) {
        if let Some(claim) = self.0.take() {
            if let Err(e) = claim.remove() {
                ccci_common::say!("{e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flock::testing::{d, held, lock_dir};
    use crate::protocol::Claim;
    use std::os::unix::fs::FileExt;

    #[test]
    fn remove_unlinks_while_holding_and_frees_the_domain() {
        let (_t, dir) = lock_dir();
        let first = held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        let path = first.path();
        first.remove().unwrap();
        assert!(!path.exists());
        held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
    }

    #[test]
    fn probe_and_create_never_create_by_accident() {
        let (_t, dir) = lock_dir();
        assert!(matches!(dir.probe(&d("d")).unwrap(), Probe::Missing));
        assert!(dir.domains().unwrap().is_empty());
        let created = dir.create(&d("d")).unwrap().unwrap();
        assert!(dir.create(&d("d")).unwrap().is_none());
        assert!(matches!(dir.probe(&d("d")).unwrap(), Probe::Held { .. }));
        drop(created);
        assert!(matches!(dir.probe(&d("d")).unwrap(), Probe::Acquired(_)));
        assert_eq!(dir.domains().unwrap(), [d("d")]);
    }

    #[test]
    fn a_busy_set_member_taken_first_is_removed_only_if_we_created_it() {
        let (_t, dir) = lock_dir();
        let busy = held(dir.acquire(&d("c"), Wait::Never, &mut |_| {}).unwrap());
        // "a" exists already (a claim the janitor may have to reap); "b" does not.
        drop(held(
            dir.acquire(&d("a"), Wait::Never, &mut |_| {}).unwrap(),
        ));
        let set = ["c", "b", "a"].map(d);
        for wait in [Wait::Never, Wait::AtMost(Duration::from_millis(30))] {
            let mut told = Vec::new();
            match crate::acquire_all(&dir, &set, wait, None, &mut |d, _| told.push(d.to_string()))
                .unwrap()
            {
                Acquired::Busy(b) => assert_eq!(b.domain, "c"),
                Acquired::Held(_) => panic!("c is held"),
            }
            assert!(
                dir.path().join("a.lock").exists(),
                "a pre-existing claim was removed"
            );
            assert!(
                !dir.path().join("b.lock").exists(),
                "our own b.lock was left behind"
            );
            assert!(dir.status(&d("a")).unwrap().is_some_and(|s| !s.held));
        }
        drop(busy);
    }

    #[test]
    fn a_created_lockfile_is_discarded_only_while_held_at_the_path_and_unstamped() {
        let (_t, dir) = lock_dir();
        let (file, id, created) = dir.open_or_create("d.lock").unwrap();
        assert!(created);
        let (again, _, created_again) = dir.open_or_create("d.lock").unwrap();
        assert!(!created_again);
        let path = dir.path().join("d.lock");
        // Someone else holds it: it is theirs now.
        assert!(flock(again.as_fd(), FlockOp::ExclusiveNonblock).unwrap());
        dir.discard_created("d.lock", &file, id).unwrap();
        assert!(path.exists());
        // Someone stamped a record into it and left it (a killed run): kept.
        again.write_all_at(b"{}\n", 0).unwrap();
        drop(again);
        dir.discard_created("d.lock", &file, id).unwrap();
        assert!(path.exists());
        drop(file);
        // Empty and free: removed.
        let (file, id, _) = dir.open_or_create("d.lock").unwrap();
        file.set_len(0).unwrap();
        dir.discard_created("d.lock", &file, id).unwrap();
        assert!(!path.exists());
    }
}
