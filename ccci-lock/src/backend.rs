//! Where locks live, chosen once per command line (SPEC §8): the one place
//! that picks the lock dir or etcd.
//!
//! [`Locks`] is the local flock backend, or etcd when `--etcd` or
//! `CCCI_ETCD_ENDPOINTS` names endpoints; everything else (the wrap,
//! `--list`, `--hold`, `--release` and the keeper) is a [`Job`] written
//! against [`Backend`], and runs unchanged on whichever was chosen. The
//! janitor chooses with [`Locks::of`] too, so that it looks where a wrap
//! given the same flags and variables claims.
//!
//! It also keeps SPEC §2's rule that the janitor looks where the runs claim:
//! a job that claims runs through [`Locks::run_claiming`], which first makes
//! sure the host's lock dir records where this backend claims
//! ([`crate::place`]); with etcd, that record stays open while the run
//! lives, so a janitor that finds the host's lock dir gone still sees a live
//! run of this host in it.

use std::path::PathBuf;
use std::time::Instant;

use ccci_common::args::{self, LockDirArg};
use ccci_common::cli::UsageError;
use ccci_common::dirs::LOCK_DIR;
use ccci_common::exit::{self, Ended};
use ccci_common::{say, Domain};

use crate::etcd::args::EtcdArgs;
use crate::etcd::Etcd;
use crate::{lockfile_name, Backend, FlockDir, Wait};

/// Where locks live, chosen once per command line (SPEC §8).
///
/// The local flock backend, or etcd when `--etcd` or `CCCI_ETCD_ENDPOINTS`
/// names endpoints; everything else is written against [`Backend`] and runs
/// unchanged on either.
#[derive(Debug, Clone)]
pub enum Locks {
    /// `flock(2)` on `<DOMAIN>.lock` in this lock dir.
    Flock(PathBuf),
    /// Etcd's lock on `<prefix>/lock/<DOMAIN>`, claims at `<prefix>/claim/<DOMAIN>`.
    Etcd(crate::etcd::Config),
}

/// Work that needs a backend, whichever [`Locks`] picked.
///
/// A backend is a cheap handle that the work may clone into a thread of its
/// own (the keeper of `--hold` takes its locks in one).
pub trait Job {
    /// What the work answers: an exit status, or what it found.
    type Output;

    /// Does the work on `backend`.
    fn run<B>(self, backend: &B) -> anyhow::Result<Self::Output>
    where
        B: Backend + Clone + Send + 'static,
        B::Claim: Send + 'static;
}

impl Locks {
    /// The backend the command line asks for: etcd when endpoints are
    /// given (then the lock dir is not used), else the lock dir. A bad or
    /// empty `--lock-dir` (or `CCCI_APP_LOCK_DIR`) is a usage error naming
    /// its source; a lock dir that coincides with the state or runs dir is
    /// refused (125).
    pub fn from_cli(lock_dir: &LockDirArg, etcd: &EtcdArgs) -> anyhow::Result<Locks> {
        Locks::of(etcd.config()?, lock_dir)
    }

    /// Like [`Locks::from_cli`], for a tool that read its etcd flags
    /// already (the janitor checks them before its other inputs): etcd
    /// when `etcd` is given, else the lock dir `lock_dir` names.
    pub fn of(etcd: Option<crate::etcd::Config>, lock_dir: &LockDirArg) -> anyhow::Result<Locks> {
        if let Some(config) = etcd {
            return Ok(Locks::Etcd(config));
        }
        let lock_dir = lock_dir.resolve()?;
        args::check_apart(&LOCK_DIR, &lock_dir)?;
        Ok(Locks::Flock(lock_dir))
    }

    /// The host's lock dir: the flock backend's own; for etcd, the one
    /// `lock_dir` names (checked as [`Locks::from_cli`] checks it), which
    /// holds only the record of where this host's runs claim and the
    /// sockets of `--hold` keepers.
    pub fn local_dir(&self, lock_dir: &LockDirArg) -> anyhow::Result<PathBuf> {
        match self {
            Locks::Flock(dir) => Ok(dir.clone()),
            Locks::Etcd(_) => {
                let dir = lock_dir.resolve()?;
                args::check_apart(&LOCK_DIR, &dir)?;
                Ok(dir)
            }
        }
    }

    /// Whether a held lock can be lost while its holder lives (etcd: its
    /// lease expired or was revoked); a lock dir's lock never is.
    pub fn can_lose_locks(&self) -> bool {
        matches!(self, Locks::Etcd(_))
    }

    /// Checks `domain` as the chosen backend will (see
    /// [`Backend::check_domain`]), before anything is opened or created.
    pub fn check_domain(&self, domain: &Domain) -> Result<(), UsageError> {
        match self {
            Locks::Flock(_) => lockfile_name(domain).map(drop),
            Locks::Etcd(_) => crate::etcd::check_domain(domain),
        }
    }

    /// Like [`Locks::run`] with `create`, for a job that claims: first
    /// [`Locks::note_place`]. `job` is made with what is left of `wait`
    /// after that, so `-w` bounds the whole acquisition.
    pub fn run_claiming<J: Job<Output = Ended>>(
        &self,
        lock_dir: &LockDirArg,
        wait: Wait,
        job: impl FnOnce(Wait) -> J,
    ) -> anyhow::Result<Ended> {
        let started = Instant::now();
        let local = match self.note_place(lock_dir, wait)? {
            Ok(local) => local,
            Err(busy) => return Ok(busy),
        };
        let job = job(match wait {
            Wait::AtMost(limit) => Wait::AtMost(limit.saturating_sub(started.elapsed())),
            other => other,
        });
        match self {
            Locks::Flock(_) => job.run(&local),
            Locks::Etcd(config) => {
                // Kept open while the run lives: a janitor that finds the
                // host's lock dir gone sees a live run of this host in it
                // (ccci_janitor::holder_of_removed), as a lockfile shows one.
                let place = crate::place::Place::etcd(&config.endpoints, &config.prefix);
                let _record = local
                    .safe_dir()
                    .open_file(&place.record_name(), ccci_common::fs::OpenHow::Read)?;
                job.run(&Etcd::new(config.clone()))
            }
        }
    }

    /// Makes sure the host's lock dir records where this backend claims
    /// ([`crate::place`]), waiting for a reaping janitor pass as `wait` allows, and
    /// returns that lock dir, opened; `Err(75)` when the wait ran out.
    /// `lock_dir` names the host's lock dir for etcd, where it holds only
    /// the record (and `--hold` keepers' sockets).
    pub fn note_place(
        &self,
        lock_dir: &LockDirArg,
        wait: Wait,
    ) -> anyhow::Result<Result<FlockDir, Ended>> {
        let place = match self {
            Locks::Flock(_) => crate::place::Place::Files,
            Locks::Etcd(config) => crate::place::Place::etcd(&config.endpoints, &config.prefix),
        };
        let local = FlockDir::open(&self.local_dir(lock_dir)?, true)?;
        let local = local.ok_or_else(|| anyhow::anyhow!("the lock dir vanished"))?;
        if crate::place::note(&local, &place, wait)? == crate::place::Noted::Busy {
            say!(
                "a janitor pass is reaping, and the lock dir {} must first record that this \
                 host's runs claim {place}; giving up (try again once the pass is over)",
                ccci_common::names::quote_path(local.path())
            );
            return Ok(Err(Ended::Code(exit::BUSY)));
        }
        Ok(Ok(local))
    }

    /// Opens the backend and runs `job` on it. With `create`, the lock dir
    /// is made when missing; without, a missing one means nothing was ever
    /// locked, and the answer is `None` without running `job`.
    pub fn run<J: Job>(&self, create: bool, job: J) -> anyhow::Result<Option<J::Output>> {
        match self {
            Locks::Flock(dir) => match FlockDir::open(dir, create)? {
                Some(backend) => job.run(&backend).map(Some),
                None => Ok(None),
            },
            Locks::Etcd(config) => job.run(&Etcd::new(config.clone())).map(Some),
        }
    }

    /// Runs `job` on the backend, given the host's lock dir
    /// ([`Locks::local_dir`]) already opened as `local`: the flock backend
    /// is `local` itself; etcd's is a client of its cluster.
    pub fn run_at<J: Job>(&self, local: &FlockDir, job: J) -> anyhow::Result<J::Output> {
        match self {
            Locks::Flock(_) => job.run(local),
            Locks::Etcd(config) => job.run(&Etcd::new(config.clone())),
        }
    }

    /// Like [`Locks::run_at`], where the host's lock dir may be missing
    /// (`None`): then the flock backend has nothing to run on, and the
    /// answer is `None` without running `job`; etcd runs it all the same.
    pub fn run_if_local<J: Job>(
        &self,
        local: Option<&FlockDir>,
        job: J,
    ) -> anyhow::Result<Option<J::Output>> {
        match (self, local) {
            (Locks::Flock(_), None) => Ok(None),
            (_, Some(local)) => self.run_at(local, job).map(Some),
            (Locks::Etcd(config), None) => job.run(&Etcd::new(config.clone())).map(Some),
        }
    }
}
