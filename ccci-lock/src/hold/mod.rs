//! `ccci-lock --hold` and `--release`: locks held for another process's
//! lifetime (SPEC §2), by a small keeper process.
//!
//! A harness that decides at run time which apps it deploys, or that is not
//! a shell, cannot wrap its work in `ccci-lock DOMAIN -- COMMAND`. Instead
//! `ccci-lock --hold --parent PID DOMAIN...` starts a *keeper* that takes
//! the locks and holds them until PID releases them or exits.
//!
//! # How a hold starts
//!
//! 1. The `--hold` process opens a pidfd of PID (`pidfd_open`) and checks
//!    that PID has not exited; else status 125. From here on PID is watched
//!    through that descriptor, which names the process itself: a later
//!    process that reuses the number can never be taken for PID.
//! 2. Domains already held for PID by a live keeper are left alone (holding
//!    twice is status 0 and changes nothing); the keeper itself is asked, so
//!    a keeper whose PID has just died never answers "held".
//! 3. The keeper is a fresh `exec` of our own binary (`/proc/self/exe`, a
//!    hidden `--keeper-fds` mode), never a `fork` that goes on running Rust
//!    code in a copy of a possibly multi-threaded process. It inherits
//!    exactly two descriptors besides `/dev/null` on stdin and stdout and
//!    the caller's stderr: the pidfd and the write end of a readiness pipe;
//!    every other descriptor is made close-on-exec between fork and exec,
//!    including any the caller leaked to us (a pipe a CI runner waits on).
//!    Between fork and exec it also starts a new session (`setsid`): no
//!    controlling terminal, not in the caller's process group, so a signal
//!    to the job's group or a terminal hang-up never reaches it; nothing
//!    ties it to the `--hold` process's own death either (no parent-death
//!    signal). At start-up it leaves the caller's working directory.
//! 4. The keeper takes the locks itself, all or nothing, in sorted order,
//!    with `-n`/`-w` as usual; so `/proc/locks` names the keeper as the
//!    holder. The lock descriptors are close-on-exec. While it waits it
//!    also watches the pidfd and the readiness pipe: if PID exits, or the
//!    `--hold` process is gone (nobody would learn of the hold), it gives up.
//! 5. It binds its control socket, stamps each lockfile (`"pid"`: the
//!    keeper, `"parent"`: PID; a record never names a keeper that cannot be
//!    reached yet), points stdin, stdout and stderr at `/dev/null`,
//!    and only then writes `ready` into the pipe. The `--hold` process
//!    returns 0 only after reading `ready`: when `--hold` returns 0, every
//!    domain is held and stamped. Otherwise it waits for the keeper and
//!    returns its status (75 busy, 125 failure; the keeper printed why).
//!
//! # How a hold ends
//!
//! - **PID exits** (normally, crash, SIGKILL, forgot to release): the pidfd
//!   becomes readable, the keeper removes its socket and exits without
//!   unlinking anything: the lockfiles stay, so `ccci-janitor` reaps the
//!   apps PID may have left deployed.
//! - **`--release --parent PID DOMAIN...`**: the releaser asks the keeper
//!   over its socket; the keeper unlinks each lockfile *while still holding
//!   it* (rule 2 of the lock protocol), then closes the lock, then answers.
//!   `--release` returns only after the answer, so when it returns the
//!   domain is free and its lockfile gone. A keeper that holds nothing more
//!   exits.
//! - **The keeper is killed** (SIGKILL, OOM): the kernel frees its locks;
//!   the lockfiles stay for the janitor, as for any killed holder, and so
//!   does its (empty, harmless) socket file.
//!
//! # The control channel
//!
//! A unix stream socket `<lock dir>/.keeper-<keeper pid>.sock` (not a
//! `*.lock` name, so the janitor and `--list` never see it). It is reached
//! through the lock dir's descriptor (`/proc/self/fd/N/…`), so the lock
//! dir's safety checks cover it and a long lock dir path does not matter.
//! Only the lock dir's owner can reach it (the dir is 0700); both ends also
//! check the other's uid with `SO_PEERCRED`, and the releaser checks that
//! the listener is the keeper pid the lockfile names. A request is one line,
//! `held PID DOMAIN...` or `release PID DOMAIN...`; the keeper answers one
//! line per domain and `done`. The domains of a request and of an answer
//! are parsed into [`Domain`]s where they arrive (text that is no domain
//! names no lock: `not-held`). It serves its clients at once from one
//! `poll` loop that also watches PID's pidfd, and drops a client whose
//! request and answer take longer than 10 s: no client can keep it from
//! noticing that PID died.
//!
//! # On etcd
//!
//! With `--etcd`, the keeper takes the locks on etcd ([`crate::etcd`]):
//! `--hold` passes `--etcd`, `--etcd-prefix`, `--ttl` and the TLS and
//! authentication settings on to its re-exec,
//! and the keeper's one lease is kept alive by its keep-alive thread. The
//! control socket stays in the local lock dir (the keeper always runs on
//! its caller's host); the lock dir holds nothing else then. Who holds a
//! domain is read from its claim (`"parent"`, `"pid"`, `"host"`) and
//! whether a lock key exists, the counterpart of `/proc/locks`; a claim
//! for PID whose `"host"` is another host is refused (125): its keeper's
//! socket is out of reach. A release deletes the claim and lock key in one
//! transaction guarded by the keeper's lock key (so only while it still
//! owns the lock); then the keeper revokes its lease when it exits.
//! **Lease lost**: the keeper looks every `LOSS_TICK` (200 ms), answers "not
//! held" from then on, removes its socket, and stops PID's whole tree as
//! ccci-lock stops a COMMAND whose lock is lost: SIGTERM to PID (through
//! its pidfd) and every descendant of PID, SIGKILL after the grace (10 s)
//! if PID is still there; then it exits. The claims stay for the janitor. PID exiting ends it as on flock: its lock keys are deleted
//! and its lease revoked at once, the claims stay.
//!
//! # Races closed
//!
//! - **Pid reuse of PID**: watched by pidfd only, opened by `--hold` before
//!   it returns; the keeper also checks that the pidfd it inherited names
//!   PID. A keeper asked whether it holds a domain first checks its pidfd,
//!   so a new process that got PID's number is never told "held".
//! - **Release vs. another holder**: a domain is released only by its
//!   keeper, for a request naming the keeper's own PID; the releaser
//!   refuses (125, nothing released) any domain held by anyone else: the
//!   kernel's `/proc/locks` says who holds it, the record whether that
//!   holder is a keeper for PID.
//! - **Unlink only while holding**: only the keeper, which holds the lock,
//!   unlinks; a lockfile is never removed by the releaser itself.
//! - **Caller gone before ready**: the keeper never keeps a hold that no
//!   `--hold` reported: it gives up while waiting, gives the locks back
//!   unstamped if the caller is gone once they are taken (lockfiles it
//!   created are removed while held), and a failed `ready` write ends it
//!   (the lockfiles it stamped stay, which is the safe side).
//!
//! # What lives where
//!
//! This module: the `--hold` command (the caller's side), and what it
//! shares with `--release`: how a domain's lock looks from outside.
//! [`mod@release`]: the `--release` command (the caller's side).
//! [`mod@keeper`]: the keeper process (taking the locks, serving clients,
//! watching PID and a lease). [`channel`]: the control socket and its
//! one-line requests, both ends.

use ccci_common::names::quote_path;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use ccci_common::{exit, sys, Domain};

use crate::backend::{Job, Locks};
use crate::{Backend, FlockDir, Holder, Wait};

pub mod channel;
pub mod keeper;
pub mod release;

use channel::*;
use keeper::*;
pub use keeper::{keeper, parse_keeper_fds};
pub use release::release;

/// `--parent`'s value parser: a positive pid.
pub fn parse_pid(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(pid) if pid > 0 && pid <= i32::MAX as u32 && !value.starts_with('+') => Ok(pid),
        _ => Err("not a valid pid: it must be a positive whole number".into()),
    }
}

/// What `--hold` was asked to do.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// The process whose lifetime bounds the hold.
    pub parent: u32,
    /// The domains, sorted, without duplicates.
    pub domains: Vec<Domain>,
    /// `-n` / `-w`.
    pub wait: Wait,
    /// The host's lock dir ([`Locks::local_dir`]): the locks' and the
    /// keeper's socket's place; with etcd, only the socket's.
    pub lock_dir: PathBuf,
    /// Where the locks live: in the lock dir, or on etcd.
    pub locks: Locks,
    /// Recorded in the lockfiles.
    pub run_id: Option<String>,
    /// Report waiting on stderr.
    pub verbose: bool,
}

/// Whether the process behind `pidfd` has exited.
pub(super) fn exited(pidfd: BorrowedFd<'_>) -> anyhow::Result<bool> {
    let revents = sys::poll(&[(pidfd, libc::POLLIN)], Some(Duration::ZERO))
        .context("cannot poll the parent's pidfd")?;
    Ok(revents[0] != 0)
}

/// A pidfd of `parent`, which must be running (else an error: status 125).
pub(super) fn open_parent(parent: u32) -> anyhow::Result<OwnedFd> {
    let pidfd = match sys::pidfd_open(parent) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            bail!("--parent {parent}: no such process; refusing to hold locks for it")
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            bail!("--hold needs pidfd_open(2), Linux 5.3 or later: {e}")
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot watch pid {parent}"))),
    };
    if exited(pidfd.as_fd())? {
        bail!("--parent {parent} has exited; refusing to hold locks for it");
    }
    Ok(pidfd)
}

/// A domain's lock as seen from outside, without taking it.
#[derive(Debug)]
pub(super) enum State {
    /// No lockfile, or nobody holds its lock.
    Free {
        /// The record left in the lockfile, if any.
        last: Option<Holder>,
    },
    /// Claimed by keeper `pid` for our parent, per its record and the
    /// kernel; only the keeper can say whether it still holds it.
    Keeper(u32),
    /// Held by someone else (another parent's keeper, a `ccci-lock` running
    /// a command, the janitor, a foreign flock user).
    Other(Option<Holder>, Option<u32>),
    /// Held by a keeper for a PID of the same number on another host (etcd):
    /// its socket is out of reach.
    Elsewhere(String),
}

pub(super) fn state<B: Backend>(
    backend: &B,
    domain: &Domain,
    parent: u32,
) -> anyhow::Result<State> {
    // Read without taking any lock: the record, and who holds the lock
    // (flock: `/proc/locks`; etcd: whether a lock key exists).
    let Some(status) = backend.status(domain)? else {
        return Ok(State::Free { last: None });
    };
    if let Some(Holder {
        parent: Some(p),
        pid: Some(keeper),
        host,
        ..
    }) = status.holder.clone()
    {
        let here = ccci_common::proc::hostname();
        if let Some(host) = host.filter(|h| p == parent && status.held && *h != here) {
            return Ok(State::Elsewhere(host));
        }
        // A record naming a keeper for PID: the keeper itself is asked,
        // unless the kernel names another holder. (Where `/proc/locks`
        // cannot be matched to the file, on some overlay file systems, the
        // keeper's answer still decides.)
        if p == parent && status.locker.is_none_or(|l| l == keeper) {
            return Ok(State::Keeper(keeper));
        }
    }
    Ok(if status.held {
        State::Other(status.holder, status.locker)
    } else {
        State::Free {
            last: status.holder,
        }
    })
}

/// `ccci-lock --hold`: see the module doc. Returns 0 once a keeper holds
/// every domain, 75 when one was busy, or the keeper's failure status.
pub fn hold(req: &HoldRequest) -> anyhow::Result<u8> {
    if req.parent == std::process::id() {
        // `exec ccci-lock --hold --parent $$`: this process exits at once.
        bail!(
            "--parent {} is this ccci-lock itself, which exits as soon as the locks are held; \
             name the harness that should hold them",
            req.parent
        );
    }
    let pidfd = open_parent(req.parent)?;
    let dir = FlockDir::open(&req.lock_dir, true)?
        .ok_or_else(|| anyhow::anyhow!("lock dir {} vanished", quote_path(&req.lock_dir)))?;
    let todo = req.locks.run_at(&dir, NotHeld { dir: &dir, req })?;
    if todo.is_empty() {
        return Ok(exit::SUCCESS);
    }
    start_keeper(req, &todo, pidfd, &dir)
}

/// [`not_held`] as a [`Job`].
pub(super) struct NotHeld<'a> {
    dir: &'a FlockDir,
    req: &'a HoldRequest,
}

impl Job for NotHeld<'_> {
    type Output = Vec<Domain>;

    fn run<B>(self, backend: &B) -> anyhow::Result<Vec<Domain>>
    where
        B: Backend + Clone + Send + 'static,
        B::Claim: Send + 'static,
    {
        not_held(backend, self.dir, self.req)
    }
}

/// The domains of `req` that no live keeper holds for its parent yet.
pub(super) fn not_held<B: Backend>(
    backend: &B,
    dir: &FlockDir,
    req: &HoldRequest,
) -> anyhow::Result<Vec<Domain>> {
    let mut todo = Vec::new();
    for domain in &req.domains {
        let held = match state(backend, domain, req.parent)? {
            State::Keeper(keeper) => {
                // The keeper is the authority: it checks its own pidfd.
                matches!(
                    ask(Some(dir), keeper, "held", req.parent, &[domain]),
                    Ok(Some(answers)) if answers == [Answer::Held]
                )
            }
            _ => false,
        };
        if !held {
            todo.push(domain.clone());
        }
    }
    Ok(todo)
}

/// Starts the keeper for `domains` and waits until it is ready or has failed.
pub(super) fn start_keeper(
    req: &HoldRequest,
    domains: &[Domain],
    pidfd: OwnedFd,
    dir: &FlockDir,
) -> anyhow::Result<u8> {
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("ccci-lock")
        .arg("--hold")
        .arg("--parent")
        .arg(req.parent.to_string())
        .arg("--lock-dir")
        .arg(ccci_common::dirs::absolute(dir.path()))
        .arg("--keeper-fds")
        .arg(format!("{},{}", pidfd.as_raw_fd(), ready_w.as_raw_fd()));
    match req.wait {
        Wait::Forever => {}
        Wait::Never => {
            cmd.arg("-n");
        }
        Wait::AtMost(limit) => {
            cmd.arg("-w").arg(format!("{}ms", limit.as_millis()));
        }
    }
    if let Some(run_id) = &req.run_id {
        cmd.arg("--run-id").arg(run_id);
    }
    if req.verbose {
        cmd.arg("-v");
    }
    if let Locks::Etcd(etcd) = &req.locks {
        cmd.args(crate::etcd::args::EtcdArgs::to_args(etcd));
    }
    // Valid domains never start with "-".
    cmd.args(domains.iter().map(Domain::as_str));
    // stderr stays the caller's until the keeper is ready, for its messages.
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    sys::detach_command(&mut cmd, &[pidfd.as_fd(), ready_w.as_fd()]);
    let mut child = cmd.spawn().context("cannot start the keeper")?;
    drop(ready_w); // EOF once the keeper has closed its end
    drop(pidfd);
    let mut said = Vec::new();
    File::from(ready_r)
        .read_to_end(&mut said)
        .context("cannot read from the keeper")?;
    if said == READY {
        // The keeper runs on, reparented when we exit; nothing to reap.
        return Ok(exit::SUCCESS);
    }
    let status = child.wait().context("cannot wait for the keeper")?;
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) if code != 0 => Ok(code as u8),
        (_, Some(sig)) => bail!(
            "the keeper was killed by SIG{} before it held the locks",
            sys::signal_name(sig)
        ),
        _ => bail!("the keeper exited before it held the locks"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_positive_numbers() {
        assert_eq!(parse_pid("42"), Ok(42));
        for bad in ["0", "-1", "+3", "x", "", "2147483648", " 1"] {
            assert!(parse_pid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn our_own_pidfd_names_us_and_is_not_readable() {
        let fd = sys::pidfd_open(std::process::id()).unwrap();
        assert_eq!(pidfd_pid(fd.as_fd()).unwrap(), Some(std::process::id()));
        assert!(!exited(fd.as_fd()).unwrap());
        assert!(open_parent(std::process::id()).is_ok());
    }

    #[test]
    fn an_exited_child_is_refused_as_parent() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let fd = sys::pidfd_open(pid).unwrap();
        // A zombie still has its pid, but its pidfd is readable.
        let revents = sys::poll(&[(fd.as_fd(), libc::POLLIN)], None).unwrap();
        assert_ne!(revents[0], 0);
        let e = open_parent(pid).unwrap_err().to_string();
        assert!(e.contains("has exited"), "{e}");
        child.wait().unwrap();
        let e = open_parent(pid).unwrap_err().to_string();
        assert!(e.contains("no such process"), "{e}");
    }
}
