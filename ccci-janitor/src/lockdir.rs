//! A lock dir that does not exist (SPEC §4). A reboot empties a tmpfs lock
//! dir, and then every deployed CI app is to be reaped at once; a lock dir
//! missing anywhere else (a typo, an unmounted disk) is a mistake, and
//! creating it would make every deployed app look orphaned while its run
//! holds its real lock. So a missing lock dir is created only when its
//! parent is on a tmpfs and no live process still holds a file of it; a dry
//! run passes over it as [`NoClaims`] and creates nothing.

use std::path::Path;

use ccci_common::names::quote_path;
use ccci_common::Domain;
use ccci_lock::{lockfile_name, Backend, Holder, PassLock, Probe};

/// What to do about a lock dir that does not exist (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingLockDir {
    /// Its parent is on a tmpfs (as `/run/lock` is): the host rebooted and
    /// took the lock dir, with every claim in it. Create it and settle every
    /// deployed CI app at once.
    Rebooted,
    /// Anywhere else (a typo, an unmounted disk): probe and reap nothing,
    /// or a misconfigured cron job would reap live runs. The reason.
    Leave(String),
}

/// A process that still has a file of the missing lock dir `path` open
/// (`/proc/PID/fd` of this user's processes: a holder keeps its lockfile
/// open, also after the file was unlinked): proof that the lock dir was
/// removed under a live run (by hand, say), not by a reboot, which ends
/// every process. Their apps must not be reaped. The pid and the file,
/// when one is found.
pub fn holder_of_removed(path: &Path) -> Option<(u32, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let mut prefix = path.as_os_str().as_bytes().to_vec();
    prefix.push(b'/');
    let me = nix::unistd::geteuid().as_raw();
    for pid in ccci_common::proc::pids().ok()? {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid());
        if owner.map_or(true, |uid| uid != me) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.as_os_str().as_bytes().starts_with(&prefix) {
                    return Some((pid, target));
                }
            }
        }
    }
    None
}

/// Decides about the missing lock dir `path` by the file system of its
/// parent (`statfs`, `TMPFS_MAGIC`). Only the direct parent counts: a
/// missing parent is not taken as a sign of a reboot, so a lock dir whose
/// path names two missing directories is never created.
pub fn missing_lock_dir(path: &Path) -> MissingLockDir {
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return MissingLockDir::Leave("it has no parent directory".into()),
    };
    match nix::sys::statfs::statfs(parent) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => MissingLockDir::Rebooted,
        Ok(_) => MissingLockDir::Leave(format!(
            "its parent {} is not on a tmpfs, so no reboot removed it (a typo? an unmounted disk?)",
            quote_path(parent)
        )),
        Err(e) => MissingLockDir::Leave(format!(
            "its parent {} cannot be examined: {e}",
            quote_path(parent)
        )),
    }
}

/// A lock dir that does not exist yet, for a dry run after a reboot: no
/// claims at all, so every deployed CI app would be reaped, and nothing is
/// created.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClaims;

impl Backend for NoClaims {
    type Claim = ccci_lock::FlockClaim;

    fn acquire(
        &self,
        _: &Domain,
        _: ccci_lock::Wait,
        _: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<ccci_lock::Acquired<Self::Claim>> {
        anyhow::bail!("the lock dir does not exist")
    }

    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<Self::Claim>> {
        lockfile_name(domain)?;
        Ok(Probe::Missing)
    }

    fn create(&self, _: &Domain) -> anyhow::Result<Option<Self::Claim>> {
        anyhow::bail!("the lock dir does not exist")
    }

    fn domains(&self) -> anyhow::Result<Vec<Domain>> {
        Ok(Vec::new())
    }

    fn list(&self) -> anyhow::Result<Vec<ccci_lock::Status>> {
        Ok(Vec::new())
    }

    fn pass_lock(&self, _: bool) -> anyhow::Result<PassLock> {
        Ok(PassLock::Missing)
    }
}
