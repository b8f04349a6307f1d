//! The local backend: an exclusive `flock(2)` on `<lock dir>/<DOMAIN>.lock`.
//!
//! Domain names are checked here ([`lockfile_name`]: a valid DOMAIN whose
//! lockfile name fits in 255 bytes); callers never build file names.
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
//! # The `Wait::AtMost` waiting thread
//!
//! A blocking `flock` cannot be given a timeout, and the alarm timer belongs
//! to whoever exec'd us (ccci-guard's deadline), so `-w` first tries without
//! waiting, then runs the blocking acquire loop in a thread named
//! `lock-wait` while the calling thread waits on a condition variable with
//! a timeout. The thread lives no longer than the [`Backend::acquire`] call
//! that started it, and the descriptor it waits on (opened by the thread,
//! close-on-exec like every lockfile descriptor, so no child inherits it)
//! no longer than the thread, unless it becomes the returned claim:
//! - It gets the lock in time: it hands the claim (with its descriptor) to
//!   the caller and ends.
//! - Time runs out first: under the shared mutex, the caller marks the wait
//!   as given up, so the thread can no longer hand anything over; then it
//!   wakes the thread out of `flock` with a dedicated signal
//!   ([`sys::wake_signal`], sent to that thread only, whose handler does
//!   nothing, installed without `SA_RESTART`), re-sending it every 10 ms
//!   in case it arrived just before the thread entered `flock`, and joins
//!   the thread. A thread that got the lock after the caller gave up
//!   settles it first (removes the lockfile if this process created it,
//!   as above). So after a `Busy` answer no thread, no descriptor and no
//!   lock of this call remain.
//! - The non-blocking steps of each round (open, `LOCK_NB`, identity
//!   check) run under the mutex, so the caller's "given up" and the thread's
//!   "got it" are ordered: exactly one of them wins.
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
//! - A look ([`Backend::status`]) at a free, empty lockfile (a young claim
//!   whose run never stamped it) is one `lstat` and a lookup in the lock
//!   table; anything else is opened and read as before.
//!
//! # Looking never blocks anyone
//!
//! [`Backend::list`], [`Backend::status`] and the holder record shown by
//! `-v` take no lock at all: the record is read with `pread`, and whether a
//! lockfile is held, and by which pid, comes from `/proc/locks`
//! ([`flock_holder`], matched by device and inode). A shared probe lock, as
//! before, made a concurrent `-n` on a free domain fail with 75.

use ccci_common::names::quote_path;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ccci_common::cli::UsageError;
use ccci_common::dirs::LOCK_DIR;
use ccci_common::fs::{FileErrorKind, OpenHow, SafeDir};
use ccci_common::names::shell_quote;
use ccci_common::supervise::LossNotifier;
use ccci_common::sys::{self, flock, FlockOp};
use nix::sys::stat::FileStat;

use crate::protocol::{
    Acquired, Backend, Claim, DomainList, Holder, PassLock, Probe, Status, Wait,
};

/// Longest lockfile name the file system takes (`NAME_MAX`).
const FILE_NAME_MAX: usize = 255;
/// The lockfile suffix.
pub const SUFFIX: &str = ".lock";
/// The pass lock of `ccci-janitor` in a lock dir; not a domain's lockfile
/// (no domain starts with a dot), so never listed or reaped.
pub const PASS_LOCK: &str = ".janitor.lock";
/// The lock that orders a run's writing of the lock dir's record of where
/// it claims against a janitor's reaps ([`crate::place`]); not a domain's
/// lockfile either.
pub const RECORDS_LOCK: &str = ".records.lock";
/// The most of a lockfile that is read for its holder record.
const RECORD_MAX: usize = 4096;
/// How often a given-up wait re-sends the wake-up signal until its thread ends.
const REWAKE: Duration = Duration::from_millis(10);

/// The lockfile name of `domain`: `<DOMAIN>.lock`. A domain that is valid
/// but too long for a file name (over 250 bytes) is a usage error.
pub fn lockfile_name(domain: &str) -> Result<String, UsageError> {
    ccci_common::names::check_domain(domain)
        .map_err(|why| UsageError(format!("invalid domain {}: {why}", shell_quote(domain))))?;
    // Called for every lockfile of a janitor pass: one allocation, no
    // formatting machinery.
    let mut name = String::with_capacity(domain.len() + SUFFIX.len());
    name.push_str(domain);
    name.push_str(SUFFIX);
    if name.len() > FILE_NAME_MAX {
        return Err(UsageError(format!(
            "domain {} is too long for a lockfile name: at most {} bytes",
            shell_quote(domain),
            FILE_NAME_MAX - SUFFIX.len()
        )));
    }
    Ok(name)
}

/// The domain a lockfile name stands for, if it is one of ours.
pub fn domain_of(file_name: &OsStr) -> Option<String> {
    domain_in(file_name).map(str::to_string)
}

/// [`domain_of`], borrowed from the name.
fn domain_in(file_name: &OsStr) -> Option<&str> {
    let domain = file_name.to_str()?.strip_suffix(SUFFIX)?;
    (file_name.len() <= FILE_NAME_MAX && ccci_common::names::domain(domain).is_ok())
        .then_some(domain)
}

/// A `flock(2)` lock found in `/proc/locks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLock {
    /// The pid that took it, as the kernel reports it (`None`: not visible
    /// from this pid namespace). The lock belongs to an open file, so this
    /// process may have ended while a child that inherited the descriptor
    /// keeps it.
    pub pid: Option<u32>,
    /// `LOCK_EX` rather than `LOCK_SH`.
    pub exclusive: bool,
}

/// Who holds a `flock(2)` lock on `file`, per `/proc/locks`, found without
/// taking or waiting for any lock. `None`: nobody. Locks are matched by the
/// file's device and inode, so this needs a file system whose `stat` device
/// is the one the kernel's lock table shows (tmpfs, ext4, xfs: yes; a
/// btrfs subvolume or overlayfs may not be).
///
/// The kernel hands `/proc/locks` out a page at a time and walks its table
/// again for each page, so a table longer than a page that changes while it
/// is read can skip entries: a lock held all along may be missing from one
/// reading. An entry is never made up, so "held" is believed at once and
/// "free" only after [`TABLE_READS`] readings agree.
pub fn flock_holder(file: &File) -> io::Result<Option<KernelLock>> {
    let meta = file.metadata()?;
    flock_holder_of(meta.dev(), meta.ino())
}

/// [`flock_holder`] of the file `dev`/`ino`.
fn flock_holder_of(dev: u64, ino: u64) -> io::Result<Option<KernelLock>> {
    for _ in 0..TABLE_READS {
        let table = lock_table()?;
        if let Some(lock) = find_flock(&table, dev, ino) {
            return Ok(Some(lock));
        }
        if table.len() < TABLE_PAGE {
            break; // read in one piece: nothing was skipped
        }
    }
    Ok(None)
}

/// How many readings of a long `/proc/locks` must miss a lock before
/// [`flock_holder`] calls it free.
const TABLE_READS: usize = 3;

/// Below this many bytes `/proc/locks` arrives in one read (one page).
const TABLE_PAGE: usize = 4096;

/// The text of `/proc/locks`, as the kernel makes it now. The file is
/// opened once per process (close-on-exec) and read from offset 0 each
/// time, which makes the kernel generate the table afresh: a janitor pass
/// that looks at 10,000 young claims spends a quarter of the time an
/// open/read/close per look would.
fn lock_table() -> io::Result<String> {
    static PROC_LOCKS: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    let file = match PROC_LOCKS.get() {
        Some(file) => file,
        None => {
            let opened = File::open("/proc/locks")?;
            PROC_LOCKS.get_or_init(|| opened)
        }
    };
    thread_local! {
        // Zeroed once and reused: a fresh buffer per reading cost more than
        // the reading itself.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16384]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        String::from_utf8(buf[..len].to_vec()).map_err(io::Error::other)
    })
}

/// The first granted `FLOCK` entry of a `/proc/locks` text for the file
/// `dev`/`ino` (entries marked `->` are waiters, not holders).
fn find_flock(table: &str, dev: u64, ino: u64) -> Option<KernelLock> {
    let want = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev), ino);
    granted_flocks(table).find_map(|(id, lock)| (id == want).then_some(lock))
}

/// The granted `FLOCK` entries of a `/proc/locks` text, each with its
/// file's (major, minor, inode).
fn granted_flocks(table: &str) -> impl Iterator<Item = ((u64, u64, u64), KernelLock)> + '_ {
    table.lines().filter_map(|line| {
        let mut fields = line.split_whitespace().skip(1).peekable();
        if fields.peek() == Some(&"->") {
            return None;
        }
        let (kind, _, access, pid, id) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if kind != "FLOCK" {
            return None;
        }
        let mut parts = id.split(':');
        let major = u64::from_str_radix(parts.next()?, 16).ok()?;
        let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
        let inode: u64 = parts.next()?.parse().ok()?;
        let lock = KernelLock {
            pid: pid.parse::<u32>().ok().filter(|&p| p > 0),
            exclusive: access == "WRITE",
        };
        Some(((major, minor, inode), lock))
    })
}

/// `/proc/locks` read once and indexed, for a caller that looks at many
/// lockfiles in a row (a janitor pass with `-v` over thousands of young
/// claims): one reading every [`LockSnapshot::max_age`] instead of one per
/// lockfile, so a pass stays linear in the number of lockfiles whatever the
/// number of locks on the host. What it reports may be that old; it only
/// ever feeds reports (held or free), never a decision to take or remove a
/// lock, which `flock` itself makes.
#[derive(Debug)]
struct LockSnapshot {
    max_age: Duration,
    taken: Option<Instant>,
    locks: std::collections::HashMap<(u64, u64, u64), KernelLock>,
    /// The lockfile name and `lstat` of the last [`Backend::peek_age`], while
    /// `peeked` is set: a [`Backend::status`] of the same lockfile right after
    /// it (a janitor's `-v` look at a young claim) uses it instead of making
    /// another. Like the lock table, it only feeds a report.
    peeked_name: String,
    peeked: Option<FileStat>,
}

impl LockSnapshot {
    /// The `lstat` of `name` kept by the last peek, if it was of `name`;
    /// used once.
    fn take_peeked(&mut self, name: &str) -> Option<FileStat> {
        self.peeked.take().filter(|_| self.peeked_name == name)
    }

    fn lookup(&mut self, dev: u64, ino: u64) -> io::Result<Option<KernelLock>> {
        if self.taken.is_none_or(|t| t.elapsed() > self.max_age) {
            let table = lock_table()?;
            self.locks.clear();
            for (id, lock) in granted_flocks(&table) {
                self.locks.entry(id).or_insert(lock);
            }
            self.taken = Some(Instant::now());
        }
        let id = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev), ino);
        Ok(self.locks.get(&id).copied())
    }
}

/// The local backend: one lockfile per domain in a lock dir.
#[derive(Debug, Clone)]
pub struct FlockDir {
    dir: Arc<SafeDir>,
    /// Set by [`FlockDir::reuse_lock_table`]: looks read a shared snapshot.
    snapshot: Option<Arc<Mutex<LockSnapshot>>>,
}

/// A held lock of [`FlockDir`].
#[derive(Debug)]
pub struct FlockClaim {
    dir: Arc<SafeDir>,
    file: File,
    name: String,
    domain: String,
    /// This process created the lockfile, and nobody stamped a record into
    /// it before we took it: giving it up may remove it.
    created: bool,
    /// The locked file's device and inode (from the descriptor), for the
    /// identity check before a removal.
    id: FileId,
    /// The file's mtime and size as the identity check after taking the
    /// lock saw them, until we stamp it: what [`Claim::age`] and
    /// [`Claim::holder`] need, without another `stat`. Nobody else writes
    /// a lockfile while we hold it.
    seen: Option<(SystemTime, u64)>,
    /// Set by [`Claim::watch_loss`]: reports the lockfile removed or
    /// replaced while held (see [`LockfileWatch`]).
    watch: Option<LockfileWatch>,
}

/// Notices that a held lockfile is no longer the file its path names, and
/// reports it as a lost lock ([`Claim::watch_loss`]).
///
/// Rule 2 (unlink only while holding) keeps a held lockfile at its path
/// against every ccci tool, but not against a person or a script: `rm -rf
/// LOCK_DIR`, or `mv LOCK_DIR LOCK_DIR.old; mkdir LOCK_DIR`, while runs are
/// live lets a new run create a new lockfile and take its lock while the
/// old holder still holds its unlinked (or moved) file: two holders. So a
/// holder watches its lock dir and the lock dir's parent with dnotify
/// (`fcntl(F_NOTIFY)`, [`sys::notify_dir_changes`]): an entry deleted,
/// renamed or created in either wakes a thread (started with every signal
/// blocked, waiting in `sigwaitinfo` for [`sys::dir_change_signal`]) that
/// makes the identity check again: the lock dir's path must still name the
/// directory, and the lockfile's name in it must still name the locked
/// file. If not, it says so and reports the loss: COMMAND gets SIGTERM,
/// SIGKILL after `--lost-grace`, and ccci-lock exits 125, exactly as for a
/// lost etcd lease. Nothing polls: with no change in those two directories
/// the thread sleeps. The cost on a run is two opens, a few `fcntl`s and a
/// thread start. (inotify(7) was tried first: closing an inotify instance
/// that had a watch made every run wait for the kernel's SRCU grace period,
/// 0.05 to 12 ms here, which doubled the time of `ccci-lock D -- true`.)
///
/// Bounds: a change is noticed as soon as the thread runs after it (on an
/// idle machine, well under a millisecond). Only the lock dir, its parent
/// and the lockfile are watched: a renamed ancestor further up (which only
/// its owner, root or the CI user, can rename; see "Directories" in the
/// spec) is not noticed, nor is a renamed lock dir whose parent this
/// process cannot read (a search-only parent). Queued signals never
/// overflow unnoticed: a change that finds the queue full is dropped, but
/// the thread checks after every signal it takes, and the check looks at
/// the state, not at the events.
#[derive(Debug)]
struct LockfileWatch {
    shared: Arc<WatchShared>,
}

#[derive(Debug, Default)]
struct WatchShared {
    /// The claim is being settled (removed or released) by its holder.
    stopped: std::sync::atomic::AtomicBool,
    /// Wakes the thread, once it has started.
    wake: Mutex<Option<sys::ThreadSignaller>>,
}

impl Drop for LockfileWatch {
    fn drop(&mut self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let wake = self.shared.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wake) = &*wake {
            wake.send();
        }
    }
}

/// A file's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// The mtime of `st`.
fn modified_of(st: &FileStat) -> SystemTime {
    let since_epoch = Duration::new(st.st_mtime.unsigned_abs(), st.st_mtime_nsec as u32);
    if st.st_mtime >= 0 {
        SystemTime::UNIX_EPOCH + since_epoch
    } else {
        SystemTime::UNIX_EPOCH - since_epoch
    }
}

/// What the identity check saw of a file whose lock we just took.
fn seen_of(st: &FileStat) -> Option<(SystemTime, u64)> {
    Some((modified_of(st), st.st_size as u64))
}

fn read_holder(file: &File) -> Option<Holder> {
    let mut buf = vec![0; RECORD_MAX];
    let n = file.read_at(&mut buf, 0).ok()?;
    let line = buf[..n].split(|&b| b == b'\n').next()?;
    serde_json::from_slice(line).ok()
}

fn age_of(file: &File) -> io::Result<Duration> {
    Ok(age_since(file.metadata()?.modified()?))
}

/// Time since `modified`; zero for a time in the future.
fn age_since(modified: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO)
}

/// One non-blocking round of acquiring.
enum Round {
    /// We hold it, and the path names it.
    Held(FlockClaim),
    /// We locked a file that is no longer at the path: start over.
    Moved,
    /// Somebody holds it.
    Busy {
        file: File,
        id: FileId,
        created: bool,
        holder: Option<Holder>,
    },
}

/// What the caller of a `Wait::AtMost` and its waiting thread share.
#[derive(Default)]
struct WaitState {
    /// The caller stopped waiting: the thread must hand nothing over.
    gave_up: bool,
    /// The thread ended; with what, unless the caller gave up.
    finished: bool,
    outcome: Option<anyhow::Result<FlockClaim>>,
    /// Wakes the thread out of a blocking `flock`.
    wake: Option<sys::ThreadSignaller>,
}

#[derive(Default)]
struct WaitShared {
    state: Mutex<WaitState>,
    changed: Condvar,
}

impl WaitShared {
    fn lock(&self) -> MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        self.snapshot = Some(Arc::new(Mutex::new(LockSnapshot {
            max_age,
            taken: None,
            locks: Default::default(),
            peeked_name: String::new(),
            peeked: None,
        })));
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
    pub fn lock_records(&self, wait: Wait) -> anyhow::Result<Option<FlockClaim>> {
        let name = RECORDS_LOCK;
        let got = match wait {
            Wait::Forever => Acquired::Held(self.acquire_forever(name, name, &mut |_| {})?),
            Wait::Never => self.try_acquire(name, name)?,
            Wait::AtMost(limit) => self.acquire_at_most(name, name, limit, &mut |_| {})?,
        };
        Ok(match got {
            Acquired::Held(claim) => Some(claim),
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
        domain: &str,
        created: bool,
    ) -> FlockClaim {
        FlockClaim {
            dir: Arc::clone(&self.dir),
            file,
            name: name.to_string(),
            domain: domain.to_string(),
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
    fn round(&self, domain: &str, name: &str) -> anyhow::Result<Round> {
        let (file, id, created) = self.open_or_create(name)?;
        if !flock(file.as_fd(), FlockOp::ExclusiveNonblock)? {
            let holder = read_holder(&file);
            return Ok(Round::Busy {
                file,
                id,
                created,
                holder,
            });
        }
        Ok(match self.at_path(name, id)? {
            Some(st) => Round::Held(self.claim(file, id, &st, name, domain, created)),
            None => Round::Moved,
        })
    }

    /// Without waiting: held, or busy (after discarding a lockfile we
    /// created and lost), with the holder's record.
    fn try_acquire(&self, domain: &str, name: &str) -> anyhow::Result<Acquired<FlockClaim>> {
        loop {
            match self.round(domain, name)? {
                Round::Held(claim) => return Ok(Acquired::Held(claim)),
                Round::Moved => continue,
                Round::Busy {
                    file,
                    id,
                    created,
                    holder,
                } => {
                    if created {
                        self.discard_created(name, &file, id)?;
                    }
                    return Ok(Acquired::Busy(holder));
                }
            }
        }
    }

    /// Waiting as long as it takes (a blocking `flock`, no polling).
    fn acquire_forever(
        &self,
        domain: &str,
        name: &str,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<FlockClaim> {
        let mut reported = false;
        loop {
            match self.round(domain, name)? {
                Round::Held(claim) => return Ok(claim),
                Round::Moved => continue,
                Round::Busy {
                    file,
                    id,
                    created,
                    holder,
                } => {
                    if !std::mem::replace(&mut reported, true) {
                        waiting(holder.as_ref());
                    }
                    flock(file.as_fd(), FlockOp::Exclusive)?;
                    if let Some(st) = self.at_path(name, id)? {
                        let ours = created && st.st_size == 0;
                        return Ok(self.claim(file, id, &st, name, domain, ours));
                    }
                }
            }
        }
    }

    /// The body of the `lock-wait` thread (see the module doc).
    fn wait_in_thread(&self, domain: &str, name: &str, shared: &WaitShared) {
        let wake = sys::ThreadSignal::new(sys::wake_signal());
        let outcome = sys::unblock_signals(&[sys::wake_signal()])
            .context("cannot unblock the wake-up signal")
            .and_then(|()| {
                shared.lock().wake = Some(wake.signaller());
                self.wait_rounds(domain, name, shared)
            });
        let mut state = shared.lock();
        match outcome {
            Ok(Some(claim)) if state.gave_up => {
                if let Err(e) = claim.give_up() {
                    ccci_common::say!("{e:#}");
                }
            }
            Ok(Some(claim)) => state.outcome = Some(Ok(claim)),
            Ok(None) => {}
            Err(e) => state.outcome = Some(Err(e)),
        }
        state.finished = true;
        shared.changed.notify_all();
    }

    /// `Ok(None)`: the caller gave up first.
    fn wait_rounds(
        &self,
        domain: &str,
        name: &str,
        shared: &WaitShared,
    ) -> anyhow::Result<Option<FlockClaim>> {
        loop {
            let (file, id, created) = {
                let state = shared.lock();
                if state.gave_up {
                    return Ok(None);
                }
                match self.round(domain, name)? {
                    Round::Held(claim) => return Ok(Some(claim)),
                    Round::Moved => continue,
                    Round::Busy {
                        file, id, created, ..
                    } => (file, id, created),
                }
            };
            if !sys::flock_or_interrupted(file.as_fd())? {
                continue; // woken: the next round reads `gave_up`
            }
            let Some(st) = self.at_path(name, id)? else {
                continue;
            };
            // Someone else held it meanwhile: "ours" only if it is still
            // the empty file we made.
            let ours = created && st.st_size == 0;
            return Ok(Some(self.claim(file, id, &st, name, domain, ours)));
        }
    }

    fn acquire_at_most(
        &self,
        domain: &str,
        name: &str,
        limit: Duration,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        let holder = match self.try_acquire(domain, name)? {
            Acquired::Busy(holder) => holder,
            held => return Ok(held),
        };
        if limit.is_zero() {
            return Ok(Acquired::Busy(holder)); // `-w 0`: try once, like `-n`
        }
        waiting(holder.as_ref());
        sys::interrupt_on(sys::wake_signal()).context("cannot set up the wake-up signal")?;
        let shared = Arc::new(WaitShared::default());
        let thread = {
            let (this, shared) = (self.clone(), Arc::clone(&shared));
            let (domain, name) = (domain.to_string(), name.to_string());
            std::thread::Builder::new()
                .name("lock-wait".into())
                .spawn(move || this.wait_in_thread(&domain, &name, &shared))
                .context("cannot start the waiting thread")?
        };
        let until = Instant::now().checked_add(limit);
        let mut state = shared.lock();
        while !state.finished {
            let left = match until {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                break;
            }
            state = shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let outcome = if state.finished {
            state.outcome.take()
        } else {
            state.gave_up = true;
            while !state.finished {
                if let Some(wake) = &state.wake {
                    wake.send();
                }
                state = shared
                    .changed
                    .wait_timeout(state, REWAKE)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            None
        };
        drop(state);
        let _ = thread.join();
        match outcome {
            Some(got) => got.map(Acquired::Held),
            None => Ok(Acquired::Busy(holder)),
        }
    }

    /// The state of the lockfile `name`, read without taking any lock;
    /// `None` when it is missing or not a usable lockfile.
    fn look(&self, domain: &str, name: &str) -> anyhow::Result<Option<Status>> {
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
                domain: domain.to_string(),
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
            domain: domain.to_string(),
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

impl Backend for FlockDir {
    type Claim = FlockClaim;

    fn check_domain(&self, domain: &str) -> Result<(), UsageError> {
        lockfile_name(domain).map(drop)
    }

    fn acquire(
        &self,
        domain: &str,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        let name = lockfile_name(domain)?;
        match wait {
            Wait::Forever => self
                .acquire_forever(domain, &name, waiting)
                .map(Acquired::Held),
            Wait::Never => self.try_acquire(domain, &name),
            Wait::AtMost(limit) => self.acquire_at_most(domain, &name, limit, waiting),
        }
    }

    fn probe(&self, domain: &str) -> anyhow::Result<Probe<FlockClaim>> {
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
            Some(st) => Probe::Acquired(self.claim(file, id, &st, &name, domain, false)),
            None => Probe::Moved,
        })
    }

    fn create(&self, domain: &str) -> anyhow::Result<Option<FlockClaim>> {
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
            .map(|st| self.claim(file, id, &st, &name, domain, true)))
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.domain_list()?.iter().map(String::from).collect())
    }

    /// Filtered while the directory is read: names that are no domain's
    /// lockfile are never held.
    fn domain_list(&self) -> anyhow::Result<DomainList> {
        let mut list = DomainList::new();
        self.dir
            .each_name(|name| {
                if let Some(domain) = domain_in(name) {
                    let _ = list.push(domain);
                }
            })
            .with_context(|| format!("cannot read lock dir {}", quote_path(self.path())))?;
        list.sort_dedup();
        Ok(list)
    }

    fn list(&self) -> anyhow::Result<Vec<Status>> {
        let mut out = Vec::new();
        for domain in self.domain_list()?.iter() {
            let name = lockfile_name(domain)?;
            out.extend(self.look(domain, &name)?);
        }
        Ok(out)
    }

    fn status(&self, domain: &str) -> anyhow::Result<Option<Status>> {
        let name = lockfile_name(domain)?;
        self.look(domain, &name)
    }

    fn peek_age(&self, domain: &str) -> anyhow::Result<Option<Duration>> {
        let name = lockfile_name(domain)?;
        let st = self
            .dir
            .stat(&name)
            .with_context(|| format!("cannot stat {}", quote_path(&self.dir.join(&name))))?;
        let Some(st) = st.filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG) else {
            return Ok(None);
        };
        if let Some(snapshot) = &self.snapshot {
            let mut snapshot = snapshot.lock().unwrap_or_else(|e| e.into_inner());
            snapshot.peeked_name.clear();
            snapshot.peeked_name.push_str(&name);
            snapshot.peeked = Some(st);
        }
        Ok(Some(age_since(modified_of(&st))))
    }

    fn pass_lock(&self, create: bool) -> anyhow::Result<PassLock> {
        if create {
            return Ok(match self.try_acquire(PASS_LOCK, PASS_LOCK)? {
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

impl FlockClaim {
    /// The lockfile's path.
    pub fn path(&self) -> PathBuf {
        ccci_common::dirs::absolute(&self.dir.join(&self.name))
    }

    /// Whether the lock dir's path still names our lock dir and the
    /// lockfile's name in it our file (see [`LockfileWatch`]); the error
    /// says what changed.
    fn still_at_path(dir: &SafeDir, name: &str, id: FileId) -> Result<(), String> {
        let path = dir.path();
        let ours = nix::sys::stat::fstat(dir.as_fd()).map_err(|e| e.to_string())?;
        match nix::sys::stat::lstat(path) {
            Ok(st) if st.st_dev == ours.st_dev && st.st_ino == ours.st_ino => {}
            Ok(_) => {
                return Err(format!(
                    "the lock dir {} was replaced",
                    ccci_common::names::quote_path(path)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "the lock dir {} was removed or moved away",
                    ccci_common::names::quote_path(path)
                ))
            }
        }
        match dir.stat(name) {
            Ok(Some(st)) if FileId::of(&st) == id => Ok(()),
            Ok(Some(_)) => Err(format!(
                "the lockfile {} was replaced",
                ccci_common::names::quote_path(&dir.join(name))
            )),
            _ => Err(format!(
                "the lockfile {} was removed",
                ccci_common::names::quote_path(&dir.join(name))
            )),
        }
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

/// Says that the lock of `domain` is lost because `what` happened, and
/// reports it.
fn report_moved(what: &str, domain: &str, notifier: &LossNotifier) {
    ccci_common::say!(
        "{what} while the lock of {domain} was held: the lock is lost (another run may \
         hold it now)"
    );
    notifier.notify();
}

/// The body of the `lockfile-watch` thread (see [`LockfileWatch`]).
fn watch_lockfile(
    shared: &WatchShared,
    dir: &SafeDir,
    name: &str,
    id: FileId,
    domain: &str,
    notifier: &LossNotifier,
) {
    use std::sync::atomic::Ordering;
    let wake = sys::ThreadSignal::new(sys::dir_change_signal());
    *shared.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake.signaller());
    // Our own descriptors of the lock dir and its parent: dnotify lasts as
    // long as the descriptor it was asked on.
    let parent = match dir.path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut watched = Vec::with_capacity(2);
    for opened in [
        nix::fcntl::openat(
            dir.as_fd(),
            ".",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
        nix::fcntl::open(
            parent,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    ] {
        // A parent we may only search cannot be watched; the lock dir can.
        let Ok(fd) = opened else { continue };
        if sys::notify_dir_changes(fd.as_fd()).is_ok() {
            watched.push(fd);
        }
    }
    if watched.is_empty() {
        return;
    }
    // Checked once the watches are in place: a change before them is seen
    // here, one after them wakes us.
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        if let Err(what) = FlockClaim::still_at_path(dir, name, id) {
            // Read after the check: our own removal sets it before unlinking.
            if !shared.stopped.load(Ordering::SeqCst) {
                report_moved(&what, domain, notifier);
            }
            return;
        }
        if sys::wait_signal(&[sys::dir_change_signal()], None).is_err() {
            return;
        }
    }
}

impl Claim for FlockClaim {
    fn domain(&self) -> &str {
        &self.domain
    }

    fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
        self.seen = None;
        let mut line = serde_json::to_vec(holder)?;
        line.push(b'\n');
        // Write over the old record, then cut: a reader sees the old record,
        // the new one, or a mix it cannot parse; never an empty file.
        let written = self
            .file
            .write_all_at(&line, 0)
            .and_then(|()| self.file.set_len(line.len() as u64))
            .and_then(|()| {
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
            ("CCCI_LOCK_DOMAIN", self.domain.clone().into()),
            ("CCCI_LOCK_FILE", self.path().into_os_string()),
        ]
    }

    fn watch_loss(&mut self, notifier: LossNotifier) {
        let started = (|| -> anyhow::Result<LockfileWatch> {
            // Blocked here for good, before the thread exists, so that a
            // change signal queued for the process is never anybody's death.
            sys::block_signals(&[sys::dir_change_signal()])?;
            let shared = Arc::new(WatchShared::default());
            let (dir, name, id, domain) = (
                Arc::clone(&self.dir),
                self.name.clone(),
                self.id,
                self.domain.clone(),
            );
            let thread_shared = Arc::clone(&shared);
            sys::spawn_without_signals("lockfile-watch", move || {
                watch_lockfile(&thread_shared, &dir, &name, id, &domain, &notifier)
            })?;
            Ok(LockfileWatch { shared })
        })();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;

    fn lock_dir() -> (tempfile::TempDir, FlockDir) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("locks");
        let dir = FlockDir::open(&path, true).unwrap().unwrap();
        (tmp, dir)
    }

    fn held(a: Acquired<FlockClaim>) -> FlockClaim {
        match a {
            Acquired::Held(c) => c,
            Acquired::Busy(h) => panic!("busy: {h:?}"),
        }
    }

    #[test]
    fn lockfile_names() {
        assert_eq!(lockfile_name("a.example").unwrap(), "a.example.lock");
        assert!(lockfile_name("../x").is_err());
        assert!(lockfile_name(&"a".repeat(250)).is_ok());
        let e = lockfile_name(&"a".repeat(251)).unwrap_err().0;
        assert!(e.contains("too long"), "{e}");
        assert_eq!(
            domain_of(OsStr::new("a.lock.lock")).as_deref(),
            Some("a.lock")
        );
        assert_eq!(domain_of(OsStr::new("a.lck")), None);
        assert_eq!(domain_of(OsStr::new(".lock")), None);
        assert_eq!(domain_of(OsStr::new(".x.tmp.lock")), None);
    }

    #[test]
    fn second_acquirer_is_busy_and_sees_the_record() {
        let (_t, dir) = lock_dir();
        let mut first = held(dir.acquire("d.example", Wait::Never, &mut |_| {}).unwrap());
        first
            .stamp(&Holder::this_process(Some("r1".into())))
            .unwrap();
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        match dir.acquire("d.example", Wait::Never, &mut |_| {}).unwrap() {
            Acquired::Busy(Some(h)) => {
                assert_eq!(h.pid, Some(std::process::id()));
                assert_eq!(h.run_id.as_deref(), Some("r1"));
            }
            other => panic!("{other:?}"),
        }
        let started = std::time::Instant::now();
        let mut told = None;
        let again = dir
            .acquire(
                "d.example",
                Wait::AtMost(Duration::from_millis(100)),
                &mut |h| told = h.cloned(),
            )
            .unwrap();
        assert!(matches!(again, Acquired::Busy(_)));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(told.and_then(|h| h.run_id).as_deref(), Some("r1"));
    }

    #[test]
    fn remove_unlinks_while_holding_and_frees_the_domain() {
        let (_t, dir) = lock_dir();
        let first = held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        let path = first.path();
        first.remove().unwrap();
        assert!(!path.exists());
        held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
    }

    #[test]
    fn probe_and_create_never_create_by_accident() {
        let (_t, dir) = lock_dir();
        assert!(matches!(dir.probe("d").unwrap(), Probe::Missing));
        assert!(dir.domains().unwrap().is_empty());
        let created = dir.create("d").unwrap().unwrap();
        assert!(dir.create("d").unwrap().is_none());
        assert!(matches!(dir.probe("d").unwrap(), Probe::Held { .. }));
        drop(created);
        assert!(matches!(dir.probe("d").unwrap(), Probe::Acquired(_)));
        assert_eq!(dir.domains().unwrap(), vec!["d".to_string()]);
    }

    #[test]
    fn a_waiter_on_an_unlinked_file_starts_over() {
        // The waiter's file is unlinked while it waits; when it wakes it must
        // notice, and lock the file now at the path instead.
        let (_t, dir) = lock_dir();
        let first = held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let claim = held(
                    dir.acquire("d", Wait::Forever, &mut |_| tx.send(()).unwrap())
                        .unwrap(),
                );
                let path = claim.path();
                let ino = std::fs::metadata(&path).unwrap();
                (claim, ino)
            })
        };
        rx.recv().unwrap();
        first.remove().unwrap();
        let (claim, meta) = waiter.join().unwrap();
        use std::os::unix::fs::MetadataExt;
        let file_ino = claim.file.metadata().unwrap().ino();
        assert_eq!(
            meta.ino(),
            file_ino,
            "the waiter holds a file that is not at the path"
        );
    }

    #[test]
    fn peek_age_reads_the_mtime_without_locking() {
        let (_t, dir) = lock_dir();
        assert_eq!(dir.peek_age("d").unwrap(), None);
        let mut claim = held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        claim
            .stamp(&Holder::this_process(Some("r1".into())))
            .unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        claim.file.set_modified(old).unwrap();
        let peeked = dir.peek_age("d").unwrap().unwrap();
        let aged = claim.age().unwrap();
        assert!(peeked >= Duration::from_secs(7200), "{peeked:?}");
        assert!(aged.abs_diff(peeked) < Duration::from_secs(5), "{aged:?}");
        assert_eq!(claim.holder().unwrap().run_id.as_deref(), Some("r1"));
        // A peek neither waits for nor disturbs the holder.
        assert!(matches!(dir.probe("d").unwrap(), Probe::Held { .. }));
        claim
            .file
            .set_modified(SystemTime::UNIX_EPOCH - Duration::from_secs(5))
            .unwrap();
        assert!(dir.peek_age("d").unwrap().unwrap() > Duration::from_secs(86400 * 365 * 50));

        std::fs::create_dir(dir.path().join("x.lock")).unwrap();
        assert_eq!(dir.peek_age("x").unwrap(), None, "not a regular file");
    }

    #[test]
    fn list_reports_held_and_free() {
        let (_t, dir) = lock_dir();
        let mut a = held(dir.acquire("a", Wait::Never, &mut |_| {}).unwrap());
        a.stamp(&Holder::this_process(None)).unwrap();
        drop(held(dir.acquire("b", Wait::Never, &mut |_| {}).unwrap()));
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
    fn proc_locks_lines_are_matched_by_device_and_inode_and_skip_waiters() {
        let dev = libc::makedev(0xfe, 0x01);
        let table = "\
1: POSIX  ADVISORY  WRITE 10 fe:01:77 0 EOF
2: FLOCK  ADVISORY  READ  11 fe:02:77 0 EOF
3: FLOCK  ADVISORY  WRITE 12 fe:01:77 0 EOF
3: -> FLOCK  ADVISORY  WRITE 13 fe:01:78 0 EOF
";
        assert_eq!(
            find_flock(table, dev, 77),
            Some(KernelLock {
                pid: Some(12),
                exclusive: true
            })
        );
        assert_eq!(find_flock(table, dev, 78), None, "a waiter holds nothing");
        assert_eq!(
            find_flock(table, libc::makedev(0xfe, 0x02), 77).map(|l| l.exclusive),
            Some(false)
        );
        assert_eq!(find_flock("garbage\n\n1: FLOCK", dev, 77), None);
    }

    /// Whether `/proc/locks` shows a waiter on the file `meta` names.
    fn has_waiter(meta: &std::fs::Metadata) -> bool {
        let (major, minor) = (
            nix::sys::stat::major(meta.dev()),
            nix::sys::stat::minor(meta.dev()),
        );
        let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(" -> ") && l.contains(&id))
    }

    #[test]
    fn a_reused_lock_table_is_read_once_per_max_age() {
        let (_t, dir) = lock_dir();
        let fresh = dir.clone().reuse_lock_table(Duration::ZERO);
        let stale = dir.clone().reuse_lock_table(Duration::from_secs(3600));
        let mut a = held(dir.acquire("a", Wait::Never, &mut |_| {}).unwrap());
        a.stamp(&Holder::this_process(None)).unwrap();
        drop(held(dir.acquire("b", Wait::Never, &mut |_| {}).unwrap()));
        for snapshot in [&fresh, &stale] {
            let a_st = snapshot.status("a").unwrap().unwrap();
            assert!(a_st.held && a_st.locker == Some(std::process::id()));
            assert!(!snapshot.status("b").unwrap().unwrap().held);
        }
        drop(a);
        // Read again at once when allowed no age; the hour-old one keeps
        // what it read (it only ever feeds reports).
        assert!(!fresh.status("a").unwrap().unwrap().held);
        assert!(stale.status("a").unwrap().unwrap().held);
        // A status right after a peek of the same lockfile uses the peek's
        // lstat, once; of another lockfile, its own.
        assert!(fresh.peek_age("b").unwrap().is_some());
        let mut b = held(dir.acquire("b", Wait::Never, &mut |_| {}).unwrap());
        b.stamp(&Holder::this_process(Some("rb".into()))).unwrap();
        drop(b);
        // The peek saw it empty: no record to read.
        let peeked = fresh.status("b").unwrap().unwrap();
        assert!(!peeked.held && peeked.holder.is_none(), "{peeked:?}");
        let looked = fresh.status("b").unwrap().unwrap();
        assert_eq!(looked.holder.and_then(|h| h.run_id).as_deref(), Some("rb"));
        assert!(fresh.peek_age("b").unwrap().is_some());
        assert!(fresh.status("a").unwrap().unwrap().holder.is_some());
        // Without a reused lock table, nothing is kept.
        assert!(dir.peek_age("b").unwrap().is_some());
        assert!(dir.status("b").unwrap().unwrap().holder.is_some());
        // Taking locks never goes through the snapshot.
        held(stale.acquire("a", Wait::Never, &mut |_| {}).unwrap());
    }

    #[test]
    fn looking_takes_no_lock_and_names_the_locking_pid() {
        let (_t, dir) = lock_dir();
        let mut claim = held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        claim.stamp(&Holder::this_process(None)).unwrap();
        let held_by = flock_holder(&claim.file).unwrap().unwrap();
        assert_eq!(held_by.pid, Some(std::process::id()));
        assert!(held_by.exclusive);
        let status = dir.status("d").unwrap().unwrap();
        assert!(status.held);
        assert_eq!(status.locker, Some(std::process::id()));
        drop(claim);
        let status = dir.status("d").unwrap().unwrap();
        assert!(!status.held && status.locker.is_none());
        // Looking at a free lockfile holds nothing: a -n right after gets it.
        let listed = dir.list().unwrap();
        assert!(!listed[0].held);
        held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        assert!(dir.status("none").unwrap().is_none());
    }

    #[test]
    fn an_empty_lockfile_is_looked_at_by_its_lstat_and_still_seen_held() {
        let (_t, dir) = lock_dir();
        let fresh = dir.clone().reuse_lock_table(Duration::ZERO);
        let claim = held(dir.acquire("e", Wait::Never, &mut |_| {}).unwrap());
        assert_eq!(claim.file.metadata().unwrap().len(), 0);
        assert_eq!(claim.holder(), None, "an empty lockfile has no record");
        for looker in [&dir, &fresh] {
            let status = looker.status("e").unwrap().unwrap();
            assert!(status.held, "a held lockfile without a record looked free");
            assert_eq!(status.locker, Some(std::process::id()));
        }
        drop(claim);
        for looker in [&dir, &fresh] {
            let status = looker.status("e").unwrap().unwrap();
            assert!(!status.held && status.holder.is_none());
        }
        // Not a plain file: looked at as before (refused, not listed).
        std::fs::create_dir(dir.path().join("x.lock")).unwrap();
        assert_eq!(dir.status("x").unwrap(), None);
        std::fs::hard_link(dir.path().join("e.lock"), dir.path().join("f.lock")).unwrap();
        assert_eq!(dir.status("f").unwrap(), None, "a hard-linked lockfile");
        // A claim taken by a probe knows the lockfile was empty; stamped,
        // its record is read again.
        drop(held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap()));
        let Probe::Acquired(mut claim) = dir.probe("d").unwrap() else {
            panic!("d is free")
        };
        assert_eq!(claim.holder(), None);
        claim
            .stamp(&Holder::this_process(Some("r2".into())))
            .unwrap();
        assert_eq!(claim.holder().unwrap().run_id.as_deref(), Some("r2"));
    }

    #[test]
    fn a_wait_that_runs_out_leaves_no_thread_waiting_and_nothing_behind() {
        // The holder removes its lockfile and releases after the waiter gave
        // up: a waiting thread left behind would then create and take a new
        // lockfile that nobody holds for long, and nobody removes.
        let (_t, dir) = lock_dir();
        let first = held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        let meta = first.file.metadata().unwrap();
        let again = dir
            .acquire("d", Wait::AtMost(Duration::from_millis(50)), &mut |_| {})
            .unwrap();
        assert!(matches!(again, Acquired::Busy(_)));
        assert!(!has_waiter(&meta), "a waiting thread outlived the call");
        let path = first.path();
        first.remove().unwrap();
        assert!(!path.exists());
        held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap())
            .remove()
            .unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_busy_set_member_taken_first_is_removed_only_if_we_created_it() {
        let (_t, dir) = lock_dir();
        let busy = held(dir.acquire("c", Wait::Never, &mut |_| {}).unwrap());
        // "a" exists already (a claim the janitor may have to reap); "b" does not.
        drop(held(dir.acquire("a", Wait::Never, &mut |_| {}).unwrap()));
        let set: Vec<String> = ["c", "b", "a"].map(String::from).to_vec();
        for wait in [Wait::Never, Wait::AtMost(Duration::from_millis(30))] {
            let mut told = Vec::new();
            match crate::acquire_all(&dir, &set, wait, &mut |d, _| told.push(d.to_string()))
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
            assert!(dir.status("a").unwrap().is_some_and(|s| !s.held));
        }
        drop(busy);
    }

    #[test]
    fn a_claim_got_by_waiting_is_not_ours_to_give_up() {
        let (_t, dir) = lock_dir();
        let mut first = held(dir.acquire("d", Wait::Never, &mut |_| {}).unwrap());
        assert!(first.created);
        first.stamp(&Holder::this_process(None)).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                held(
                    dir.acquire("d", Wait::AtMost(Duration::from_secs(600)), &mut |_| {
                        tx.send(()).unwrap()
                    })
                    .unwrap(),
                )
            })
        };
        rx.recv().unwrap();
        drop(first); // released, lockfile kept (as after a killed COMMAND)
        let second = waiter.join().unwrap();
        assert!(!second.created);
        let path = second.path();
        second.give_up().unwrap();
        assert!(path.exists(), "gave up someone else's claim by removing it");
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
