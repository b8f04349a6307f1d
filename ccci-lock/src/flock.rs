//! The local backend: an exclusive `flock(2)` on `<lock dir>/<DOMAIN>.lock`.
//!
//! Domain names are checked here ([`lockfile_name`]: a valid DOMAIN whose
//! lockfile name fits in 255 bytes); callers never build file names.
//!
//! # The `Wait::AtMost` waiting thread
//!
//! A blocking `flock` cannot be given a timeout, and the alarm timer belongs
//! to whoever exec'd us (ccci-guard's deadline), so `-w` first tries without
//! waiting, then runs the blocking acquire loop in a thread named
//! `lock-wait` while the calling thread waits on a channel with a timeout.
//! The thread owns the descriptor it waits on (opened by itself, close-on-exec
//! like every lockfile descriptor, so no child ever inherits it).
//! - If it gets the lock in time, it sends the claim (descriptor included)
//!   over the channel and ends: the caller owns the claim.
//! - If time runs out first, the caller answers `Busy` and the thread keeps
//!   waiting, blocked in `flock`, until the process exits: its descriptor
//!   is closed then, with any lock it holds. `ccci-lock` exits right after
//!   a `Busy`; a long-lived caller must know the thread (one descriptor)
//!   outlives the call.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ccci_common::cli::UsageError;
use ccci_common::dirs::LOCK_DIR;
use ccci_common::fs::{FileErrorKind, OpenHow, SafeDir};
use ccci_common::names::shell_quote;
use ccci_common::sys::{flock, FlockOp};

use crate::protocol::{Acquired, Backend, Claim, Holder, Probe, Status, Wait};

/// Longest lockfile name the file system takes (`NAME_MAX`).
const FILE_NAME_MAX: usize = 255;
/// The lockfile suffix.
pub const SUFFIX: &str = ".lock";
/// The most of a lockfile that is read for its holder record.
const RECORD_MAX: usize = 4096;

/// The lockfile name of `domain`: `<DOMAIN>.lock`. A domain that is valid
/// but too long for a file name (over 250 bytes) is a usage error.
pub fn lockfile_name(domain: &str) -> Result<String, UsageError> {
    ccci_common::names::domain(domain)
        .map_err(|why| UsageError(format!("invalid domain {}: {why}", shell_quote(domain))))?;
    let name = format!("{domain}{SUFFIX}");
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
    let domain = file_name.to_str()?.strip_suffix(SUFFIX)?;
    lockfile_name(domain).ok().map(|_| domain.to_string())
}

/// The local backend: one lockfile per domain in a lock dir.
#[derive(Debug, Clone)]
pub struct FlockDir {
    dir: Arc<SafeDir>,
}

/// A held lock of [`FlockDir`].
#[derive(Debug)]
pub struct FlockClaim {
    dir: Arc<SafeDir>,
    file: File,
    name: String,
    domain: String,
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

impl FlockDir {
    /// Opens the lock dir at `path` (see [`SafeDir`]); with `create`, makes
    /// it 0700 when missing. `None`: missing and not created.
    pub fn open(path: &Path, create: bool) -> anyhow::Result<Option<FlockDir>> {
        Ok(SafeDir::open(&LOCK_DIR, path, create)?.map(|dir| FlockDir { dir: Arc::new(dir) }))
    }

    /// The lock dir's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn claim(&self, file: File, name: String, domain: &str) -> FlockClaim {
        FlockClaim {
            dir: Arc::clone(&self.dir),
            file,
            name,
            domain: domain.to_string(),
        }
    }

    /// One round of the acquire loop: open (creating), lock, check identity.
    /// `Ok(None)`: the lockfile moved under us; start over.
    fn attempt(
        &self,
        domain: &str,
        name: &str,
        block: bool,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Option<Acquired<FlockClaim>>> {
        let file = self.dir.open_file(name, OpenHow::Create)?;
        if !flock(file.as_fd(), FlockOp::ExclusiveNonblock)? {
            let holder = read_holder(&file);
            if !block {
                return Ok(Some(Acquired::Busy(holder)));
            }
            waiting(holder.as_ref());
            flock(file.as_fd(), FlockOp::Exclusive)?;
        }
        if self.dir.names_file(name, &file)? {
            Ok(Some(Acquired::Held(self.claim(
                file,
                name.to_string(),
                domain,
            ))))
        } else {
            Ok(None)
        }
    }

    fn acquire_loop(
        &self,
        domain: &str,
        name: &str,
        block: bool,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        let mut reported = false;
        let mut report_once = |holder: Option<&Holder>| {
            if !std::mem::replace(&mut reported, true) {
                waiting(holder)
            }
        };
        loop {
            if let Some(outcome) = self.attempt(domain, name, block, &mut report_once)? {
                return Ok(outcome);
            }
        }
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
        let limit = match wait {
            Wait::Forever => return self.acquire_loop(domain, &name, true, waiting),
            Wait::Never => return self.acquire_loop(domain, &name, false, waiting),
            Wait::AtMost(limit) => limit,
        };
        let holder = match self.acquire_loop(domain, &name, false, waiting)? {
            Acquired::Busy(holder) => holder,
            held => return Ok(held),
        };
        waiting(holder.as_ref());
        // A blocking flock cannot be given a timeout, and the alarm timer
        // belongs to whoever exec'd us (ccci-guard's deadline), so the wait
        // runs in a thread while this one waits on the clock. When time runs
        // out the caller exits, which ends the thread and any lock it got.
        let (tx, rx) = mpsc::channel();
        let this = self.clone();
        let domain_owned = domain.to_string();
        std::thread::Builder::new()
            .name("lock-wait".into())
            .spawn(move || {
                let got = this.acquire_loop(&domain_owned, &name, true, &mut |_| {});
                let _ = tx.send(got);
            })
            .context("cannot start the waiting thread")?;
        match rx.recv_timeout(limit) {
            Ok(got) => got,
            Err(_) => Ok(Acquired::Busy(holder)),
        }
    }

    fn probe(&self, domain: &str) -> anyhow::Result<Probe<FlockClaim>> {
        let name = lockfile_name(domain)?;
        let file = match self.dir.open_file(&name, OpenHow::Read) {
            Ok(file) => file,
            Err(e) => match e.kind {
                FileErrorKind::Missing => return Ok(Probe::Missing),
                FileErrorKind::Symlink | FileErrorKind::NotRegular(_) => {
                    return Ok(Probe::Unusable(e.to_string()))
                }
                _ => return Err(e.into()),
            },
        };
        if !flock(file.as_fd(), FlockOp::ExclusiveNonblock)? {
            return Ok(Probe::Held {
                holder: read_holder(&file),
                age: age_of(&file)?,
            });
        }
        if !self.dir.names_file(&name, &file)? {
            return Ok(Probe::Moved);
        }
        Ok(Probe::Acquired(self.claim(file, name, domain)))
    }

    fn create(&self, domain: &str) -> anyhow::Result<Option<FlockClaim>> {
        let name = lockfile_name(domain)?;
        let file = match self.dir.open_file(&name, OpenHow::CreateNew) {
            Ok(file) => file,
            Err(e) if matches!(e.kind, FileErrorKind::Exists) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The file is new, but another process may have opened and locked
        // it, or locked and removed it, since; the identity check covers both.
        if flock(file.as_fd(), FlockOp::ExclusiveNonblock)? && self.dir.names_file(&name, &file)? {
            Ok(Some(self.claim(file, name, domain)))
        } else {
            Ok(None)
        }
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        let names = self
            .dir
            .names()
            .with_context(|| format!("cannot read lock dir {}", self.path().display()))?;
        let mut domains: Vec<String> = names.iter().filter_map(|n| domain_of(n)).collect();
        domains.sort();
        Ok(domains)
    }

    fn list(&self) -> anyhow::Result<Vec<Status>> {
        let mut out = Vec::new();
        for domain in self.domains()? {
            let name = lockfile_name(&domain)?;
            let file = match self.dir.open_file(&name, OpenHow::Read) {
                Ok(file) => file,
                Err(e) => match e.kind {
                    FileErrorKind::Missing => continue,
                    FileErrorKind::Symlink | FileErrorKind::NotRegular(_) => {
                        ccci_common::say!("skipping {e}");
                        continue;
                    }
                    _ => return Err(e.into()),
                },
            };
            // A shared probe conflicts with a holder but never with another probe.
            let held = !flock(file.as_fd(), FlockOp::SharedNonblock)?;
            out.push(Status {
                domain,
                held,
                holder: read_holder(&file),
            });
        }
        Ok(out)
    }

    fn peek_age(&self, domain: &str) -> anyhow::Result<Option<Duration>> {
        let name = lockfile_name(domain)?;
        let st = self
            .dir
            .stat(&name)
            .with_context(|| format!("cannot stat {}", self.dir.join(&name).display()))?;
        let Some(st) = st.filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG) else {
            return Ok(None);
        };
        let since_epoch = Duration::new(st.st_mtime.unsigned_abs(), st.st_mtime_nsec as u32);
        let modified = if st.st_mtime >= 0 {
            SystemTime::UNIX_EPOCH + since_epoch
        } else {
            SystemTime::UNIX_EPOCH - since_epoch
        };
        Ok(Some(age_since(modified)))
    }
}

impl FlockClaim {
    /// The lockfile's path.
    pub fn path(&self) -> PathBuf {
        ccci_common::dirs::absolute(&self.dir.join(&self.name))
    }
}

impl Claim for FlockClaim {
    fn domain(&self) -> &str {
        &self.domain
    }

    fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
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
        written.with_context(|| format!("cannot write lockfile {}", self.path().display()))
    }

    fn age(&self) -> anyhow::Result<Duration> {
        age_of(&self.file).with_context(|| format!("cannot stat {}", self.path().display()))
    }

    fn holder(&self) -> Option<Holder> {
        read_holder(&self.file)
    }

    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("CCCI_LOCK_DOMAIN", self.domain.clone().into()),
            ("CCCI_LOCK_FILE", self.path().into_os_string()),
        ]
    }

    fn remove(self) -> anyhow::Result<()> {
        // By invariant 2 the path still names our file; check anyway, so a
        // lockfile replaced by hand is never removed by someone not holding it.
        if self.dir.names_file(&self.name, &self.file)? {
            self.dir
                .remove_file(&self.name)
                .with_context(|| format!("cannot remove lockfile {}", self.path().display()))?;
        }
        drop(self.file); // releases the lock, after the unlink
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
