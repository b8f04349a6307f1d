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
//! line per domain and `done`. It serves its clients at once from one
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

use ccci_common::names::quote_path;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ccci_common::supervise::Loss;
use ccci_common::{exit, say, sys};

use crate::etcd::{Config as EtcdConfig, Etcd};
use crate::report::{describe, locker_of, say_busy};
use crate::{acquire_all, Acquired, Backend, BusyDomain, Claim, FlockDir, Holder, Wait};

/// How long a client may take, from being accepted, to send its whole
/// request and take the keeper's whole answer; and how long a client waits
/// for the keeper's answer to each line.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request line a keeper reads.
const REQUEST_MAX: u64 = 64 * 1024;
/// The readiness message.
const READY: &[u8] = b"ready\n";
/// How often a keeper whose locks can be lost (etcd) looks whether they were.
const LOSS_TICK: Duration = Duration::from_millis(200);

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
    pub domains: Vec<String>,
    /// `-n` / `-w`.
    pub wait: Wait,
    /// The lock dir: the locks' and the keeper's socket's place; with
    /// `etcd`, only the socket's.
    pub lock_dir: PathBuf,
    /// Lock on etcd instead of in the lock dir.
    pub etcd: Option<EtcdConfig>,
    /// Recorded in the lockfiles.
    pub run_id: Option<String>,
    /// Report waiting on stderr.
    pub verbose: bool,
}

/// The socket file name of keeper `pid`.
fn socket_name(pid: u32) -> String {
    format!(".keeper-{pid}.sock")
}

/// A path that reaches `name` in `dir` through the directory's descriptor.
fn via_fd(dir: &FlockDir, name: &str) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}/{name}",
        dir.safe_dir().as_fd().as_raw_fd()
    ))
}

/// Whether the process behind `pidfd` has exited.
fn exited(pidfd: BorrowedFd<'_>) -> anyhow::Result<bool> {
    let revents = sys::poll(&[(pidfd, libc::POLLIN)], Some(Duration::ZERO))
        .context("cannot poll the parent's pidfd")?;
    Ok(revents[0] != 0)
}

/// A pidfd of `parent`, which must be running (else an error: status 125).
fn open_parent(parent: u32) -> anyhow::Result<OwnedFd> {
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
enum State {
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

fn state<B: Backend>(backend: &B, domain: &str, parent: u32) -> anyhow::Result<State> {
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

/// The keeper's answer about one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// `held`: the keeper holds it for the parent named.
    Held,
    /// `release`: unlinked while held, then released.
    Released,
    /// Not held by this keeper for the parent named.
    NotHeld,
    /// The release failed (the lock is released, the lockfile may stay).
    Failed(String),
}

/// Sends `op parent domains` to keeper `keeper` and returns its answers, in
/// the order of `domains`; `None` when no keeper listens (it is gone: no
/// socket, or nobody accepting on it). An error when the keeper does not
/// finish its answer.
fn ask(
    dir: Option<&FlockDir>,
    keeper: u32,
    op: &str,
    parent: u32,
    domains: &[&str],
) -> anyhow::Result<Option<Vec<Answer>>> {
    let Some(dir) = dir else {
        return Ok(None); // no lock dir: no keeper's socket either
    };
    let name = socket_name(keeper);
    let shown = dir.safe_dir().join(&name);
    let stream = match UnixStream::connect(via_fd(dir, &name)) {
        Ok(stream) => stream,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
            return Ok(None)
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot reach keeper {keeper} at {}",
                quote_path(&shown)
            )))
        }
    };
    let (pid, uid) = sys::peer_cred(stream.as_fd())
        .with_context(|| format!("cannot check keeper {keeper}'s credentials"))?;
    let me = nix::unistd::geteuid().as_raw();
    if pid != keeper || uid != me {
        bail!(
            "{} belongs to pid {pid}, uid {uid}, not to keeper {keeper}, uid {me}; refusing to use it",
            quote_path(&shown)
        );
    }
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = format!("{op} {parent}");
    for d in domains {
        line.push(' ');
        line.push_str(d);
    }
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .with_context(|| format!("cannot talk to keeper {keeper}"))?;
    let mut answers = vec![None; domains.len()];
    let reader = BufReader::new(&stream).take(REQUEST_MAX);
    for reply in reader.lines() {
        let reply = reply.with_context(|| format!("keeper {keeper} did not answer"))?;
        if reply == "done" {
            return answers
                .into_iter()
                .zip(domains)
                .map(|(a, d)| {
                    a.ok_or_else(|| anyhow::anyhow!("keeper {keeper} said nothing about {d}"))
                })
                .collect::<anyhow::Result<_>>()
                .map(Some);
        }
        let (word, rest) = reply.split_once(' ').unwrap_or((&reply, ""));
        let (domain, why) = rest.split_once(' ').unwrap_or((rest, ""));
        let answer = match word {
            "held" => Answer::Held,
            "released" => Answer::Released,
            "not-held" => Answer::NotHeld,
            "failed" => Answer::Failed(why.to_string()),
            "refused" => bail!("keeper {keeper} refused the request: {rest}"),
            _ => bail!("keeper {keeper} answered {reply:?}"),
        };
        if let Some(i) = domains.iter().position(|d| *d == domain) {
            answers[i] = Some(answer);
        }
    }
    bail!("keeper {keeper} ended its answer early (killed?)")
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
    let todo = match &req.etcd {
        None => not_held(&dir, &dir, req)?,
        Some(config) => not_held(&Etcd::new(config.clone()), &dir, req)?,
    };
    if todo.is_empty() {
        return Ok(exit::SUCCESS);
    }
    start_keeper(req, &todo, pidfd, &dir)
}

/// The domains of `req` that no live keeper holds for its parent yet.
fn not_held<B: Backend>(
    backend: &B,
    dir: &FlockDir,
    req: &HoldRequest,
) -> anyhow::Result<Vec<String>> {
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
fn start_keeper(
    req: &HoldRequest,
    domains: &[String],
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
    if let Some(etcd) = &req.etcd {
        cmd.args(crate::etcd::args::EtcdArgs::to_args(etcd));
    }
    cmd.args(domains); // valid domains never start with "-"
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

/// `ccci-lock --release`: see the module doc. 0 when every domain was held
/// for `parent` and is released; 1 when some were not held (the others are
/// released); 125, releasing nothing, when any is held by someone else.
///
/// With `etcd`, who holds a domain is read from its claim on etcd, and its
/// keeper is reached through its socket in the local `lock_dir`: a domain
/// held by a keeper on another host is refused (125).
pub fn release(
    parent: u32,
    lock_dir: &Path,
    etcd: Option<&EtcdConfig>,
    domains: &[String],
) -> anyhow::Result<u8> {
    let dir = FlockDir::open(lock_dir, false)?;
    match (etcd, dir) {
        (Some(config), dir) => {
            release_on(&Etcd::new(config.clone()), dir.as_ref(), parent, domains)
        }
        (None, Some(dir)) => release_on(&dir, Some(&dir), parent, domains),
        (None, None) => {
            for domain in domains {
                say!(
                    "{domain} is not held (no lock dir {})",
                    quote_path(lock_dir)
                );
            }
            Ok(exit::FAILURE)
        }
    }
}

fn release_on<B: Backend>(
    backend: &B,
    dir: Option<&FlockDir>,
    parent: u32,
    domains: &[String],
) -> anyhow::Result<u8> {
    let mut by_keeper: Vec<(u32, Vec<&str>)> = Vec::new();
    let mut not_held = false;
    let mut refused = false;
    for domain in domains {
        match state(backend, domain, parent)? {
            State::Keeper(keeper) => match by_keeper.iter_mut().find(|(k, _)| *k == keeper) {
                Some((_, list)) => list.push(domain),
                None => by_keeper.push((keeper, vec![domain])),
            },
            State::Free { last } => {
                not_held = true;
                match last.filter(|h| h.parent == Some(parent)) {
                    Some(h) => say!(
                        "{domain} is not held: its keeper for pid {parent} (pid {}) is gone; \
                         the lockfile stays for ccci-janitor",
                        h.pid.map_or("?".into(), |p| p.to_string())
                    ),
                    None => say!("{domain} is not held"),
                }
            }
            State::Other(holder, locker) => {
                refused = true;
                say!(
                    "{domain} is held by {}, not for pid {parent}; refusing to release it",
                    describe(holder.as_ref(), locker)
                );
            }
            State::Elsewhere(host) => {
                refused = true;
                say!(
                    "{domain} is held by a keeper for pid {parent} on host {host}, not on this \
                     host; run --release there; refusing to release it"
                );
            }
        }
    }
    if refused {
        say!("nothing released");
        return Ok(exit::TOOL_FAILED);
    }
    let mut failed = false;
    for (keeper, list) in by_keeper {
        let answers = match ask(dir, keeper, "release", parent, &list) {
            Ok(Some(answers)) => answers,
            Ok(None) => {
                not_held = true;
                for domain in &list {
                    say!(
                        "{domain} is not held: its keeper for pid {parent} (pid {keeper}) is \
                         gone; the lockfile stays for ccci-janitor"
                    );
                }
                continue;
            }
            Err(e) => {
                say!("{e:#}");
                failed = true;
                continue;
            }
        };
        for (domain, answer) in list.iter().zip(answers) {
            match answer {
                Answer::Released => {}
                Answer::NotHeld | Answer::Held => {
                    not_held = true;
                    say!("{domain} is not held for pid {parent} (any more)");
                }
                Answer::Failed(why) => {
                    failed = true;
                    say!("{domain}: {why}");
                }
            }
        }
    }
    Ok(if failed {
        exit::TOOL_FAILED
    } else if not_held {
        exit::FAILURE
    } else {
        exit::SUCCESS
    })
}

/// The two descriptors a keeper inherits: `PIDFD,READYFD`.
pub fn parse_keeper_fds(value: &str) -> Result<(i32, i32), String> {
    let bad = || format!("not two descriptor numbers: {value:?}");
    let (a, b) = value.split_once(',').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// The pid a pidfd refers to (`Pid:` in its fdinfo); `None` when the
/// process has exited (the kernel shows -1).
fn pidfd_pid(pidfd: BorrowedFd<'_>) -> anyhow::Result<Option<u32>> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let info = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("descriptor {} is not a pidfd", pidfd.as_raw_fd()))?;
    Ok(pid.parse::<u32>().ok())
}

/// The keeper's whole life (the hidden `--keeper-fds` mode); see the module
/// doc. Its status reaches the `--hold` process only before `ready`.
pub fn keeper(req: &HoldRequest, fds: (i32, i32)) -> anyhow::Result<u8> {
    let _ = sys::set_process_name("ccci-lock");
    let pidfd = sys::adopt_inherited_fd(fds.0).context("no pidfd inherited")?;
    let ready = sys::adopt_inherited_fd(fds.1).context("no readiness pipe inherited")?;
    std::env::set_current_dir("/").context("cannot change to /")?;
    match pidfd_pid(pidfd.as_fd())? {
        Some(pid) if pid == req.parent => {}
        Some(pid) => bail!("the inherited pidfd names pid {pid}, not {}", req.parent),
        None => bail!("--parent {} exited before its locks were taken", req.parent),
    }
    let dir = FlockDir::open(&req.lock_dir, true)?
        .ok_or_else(|| anyhow::anyhow!("lock dir {} vanished", quote_path(&req.lock_dir)))?;
    // Before any thread starts: see supervise::Loss.
    let loss = Loss::new().context("cannot block the lost-lock signal")?;
    match &req.etcd {
        None => keep(req, &dir, &dir, pidfd, ready, &loss, None),
        Some(config) => keep(
            req,
            &Etcd::new(config.clone()),
            &dir,
            pidfd,
            ready,
            &loss,
            Some(LOSS_TICK),
        ),
    }
}

/// The keeper's life on `backend`, once its lock dir (for its socket) is
/// open. `tick`: how often to look whether a lock was lost (`None`: the
/// backend's locks are never lost while held).
fn keep<B>(
    req: &HoldRequest,
    backend: &B,
    dir: &FlockDir,
    pidfd: OwnedFd,
    ready: OwnedFd,
    loss: &Loss,
    tick: Option<Duration>,
) -> anyhow::Result<u8>
where
    B: Backend + Clone + Send + 'static,
    B::Claim: Send + 'static,
{
    let Some(mut claims) = acquire_watching(req, backend, pidfd.as_fd(), ready.as_fd())? else {
        return Ok(exit::BUSY);
    };
    for claim in &mut claims {
        claim.watch_loss(loss.notifier());
    }
    if sys::poll(&[(ready.as_fd(), 0)], Some(Duration::ZERO))?[0] != 0 {
        // The --hold process went away while we took the locks: give them
        // back unstamped (a lockfile we created is removed while held).
        for claim in claims {
            claim.give_up()?;
        }
        return Ok(exit::TOOL_FAILED);
    }
    // The socket exists before any record names this keeper, so whoever
    // reads a record can reach its keeper.
    let name = socket_name(std::process::id());
    let listener = bind(dir, &name)?;
    let mut holder = Holder::this_process(req.run_id.clone());
    holder.parent = Some(req.parent);
    for claim in &mut claims {
        claim.stamp(&holder)?;
    }
    sys::stdio_to_dev_null().context("cannot point stdio at /dev/null")?;
    if File::from(ready).write_all(READY).is_err() {
        // The --hold process is gone: nobody learned of this hold. The
        // stamped lockfiles stay (a claim is never dropped without need).
        let _ = dir.safe_dir().remove_file(&name);
        return Ok(exit::TOOL_FAILED);
    }
    let lost = || loss.is_lost();
    let watch = Watch {
        pidfd: pidfd.as_fd(),
        lost: &lost,
        tick,
    };
    serve(req.parent, dir, &name, &listener, &watch, claims);
    if loss.is_lost() {
        stop_parent(req.parent, pidfd.as_fd(), crate::DEFAULT_LOST_GRACE);
    }
    Ok(exit::SUCCESS)
}

/// A lock held for `parent` was lost (its etcd lease expired or was
/// revoked): the harness must not go on deploying without it, as a
/// COMMAND under ccci-lock must not (SPEC §2, §8). `parent` and every
/// descendant of it get SIGTERM, and SIGKILL after `grace` if `parent` is
/// still there then. `parent` is signalled through its pidfd only, so a
/// reused pid is never hit; its descendants as [`ccci_common::tree`] does.
fn stop_parent(parent: u32, pidfd: BorrowedFd<'_>, grace: Duration) {
    let mut tree = ccci_common::tree::Tree::of(parent);
    // Descendants first: a harness that ends at once on the signal would
    // leave its children to init before the walk found them.
    let mut signal_all = |sig| {
        let _ = tree.signal(sig, None);
        let _ = sys::pidfd_signal(pidfd, sig);
    };
    signal_all(libc::SIGTERM);
    let until = Instant::now() + grace;
    loop {
        if exited(pidfd).unwrap_or(true) {
            return;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // A pidfd is readable once its process has exited.
        let _ = sys::poll(&[(pidfd, libc::POLLIN)], Some(left));
    }
    signal_all(libc::SIGKILL);
}

/// Binds the keeper's control socket, replacing a stale one that a killed
/// keeper with our pid left behind (no live process but us has our pid).
fn bind(dir: &FlockDir, name: &str) -> anyhow::Result<UnixListener> {
    dir.safe_dir()
        .remove_file(name)
        .with_context(|| format!("cannot remove {}", quote_path(&dir.safe_dir().join(name))))?;
    UnixListener::bind(via_fd(dir, name)).with_context(|| {
        format!(
            "cannot create socket {}",
            quote_path(&dir.safe_dir().join(name))
        )
    })
}

/// Takes every lock of `req` (sorted, all or nothing) in a thread, while
/// this one watches the parent and the readiness pipe: if the parent exits
/// or the `--hold` process is gone, the keeper gives up (an error). `None`:
/// a domain was busy (reported).
fn acquire_watching<B>(
    req: &HoldRequest,
    backend: &B,
    pidfd: BorrowedFd<'_>,
    ready: BorrowedFd<'_>,
) -> anyhow::Result<Option<Vec<B::Claim>>>
where
    B: Backend + Clone + Send + 'static,
    B::Claim: Send + 'static,
{
    let (wake_r, wake_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let (tx, rx) = mpsc::channel();
    {
        let backend = backend.clone();
        let req = req.clone();
        std::thread::Builder::new()
            .name("hold-acquire".into())
            .spawn(move || {
                let got = acquire_sorted(&backend, &req);
                let _ = tx.send(got);
                drop(wake_w); // wakes the poll below
            })
            .context("cannot start the acquiring thread")?;
    }
    loop {
        let revents = sys::poll(
            &[
                (pidfd, libc::POLLIN),
                (ready, 0),
                (wake_r.as_fd(), libc::POLLIN),
            ],
            None,
        )
        .context("cannot poll")?;
        if revents[0] != 0 {
            bail!(
                "--parent {} exited while waiting for the locks; holding nothing",
                req.parent
            );
        }
        if revents[1] != 0 {
            // The --hold process is gone (its end of the pipe is closed).
            return Ok(None);
        }
        if revents[2] != 0 {
            break;
        }
    }
    match rx
        .recv()
        .context("the acquiring thread ended without an answer")??
    {
        Acquired::Held(claims) => Ok(Some(claims)),
        Acquired::Busy(busy) => {
            let locker = locker_of(backend, &busy.domain);
            say_busy(&busy, req.domains.len() > 1, locker);
            Ok(None)
        }
    }
}

/// Every domain of `req`, sorted, all or none ([`acquire_all`]): on a
/// busy one, the ones taken so far are given back.
fn acquire_sorted<B: Backend>(
    backend: &B,
    req: &HoldRequest,
) -> anyhow::Result<Acquired<Vec<B::Claim>, BusyDomain>> {
    let verbose = req.verbose;
    acquire_all(backend, &req.domains, req.wait, &mut |domain, holder| {
        if verbose {
            let locker = locker_of(backend, domain);
            ccci_common::say_debug!("waiting for {domain}: held by {}", describe(holder, locker));
        }
    })
}

/// What ends a keeper besides a release: the parent's exit (its pidfd),
/// and a lock lost (`lost`, looked at every `tick`; etcd).
struct Watch<'a> {
    pidfd: BorrowedFd<'a>,
    lost: &'a dyn Fn() -> bool,
    tick: Option<Duration>,
}

/// One client of the keeper's socket, served without blocking.
struct Client {
    stream: UnixStream,
    /// The whole request must be read and answered by then.
    until: Instant,
    request: Vec<u8>,
    /// The answer, once the request is whole; written from `sent` on.
    reply: Option<Vec<u8>>,
    sent: usize,
}

impl Client {
    /// Reads what has arrived; `true` once the request is whole (a line,
    /// or the client stopped sending, or it is too long to be one).
    fn read(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if buf[..n].contains(&b'\n') || self.request.len() as u64 >= REQUEST_MAX {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what it can of the answer; `true` once all of it is sent.
    fn write(&mut self) -> io::Result<bool> {
        let Some(reply) = &self.reply else {
            return Ok(false);
        };
        while self.sent < reply.len() {
            match (&self.stream).write(&reply[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// The keeper's main loop: until the parent exits, a lock is lost or every
/// claim is released (and its answer sent), watch the pidfd and serve the
/// clients of `listener`.
///
/// One `poll` over the pidfd, the lost-lock signal (a signalfd), the
/// listening socket and every client, none of which blocks: several
/// clients are served at once, each must send its whole request and take
/// its whole answer within [`IO_TIMEOUT`] of being accepted or is dropped,
/// and the parent's exit is seen the moment its pidfd is readable, whatever
/// the clients do. (Before, one client at a time with per-read timeouts: a
/// client sending a byte every 8 s kept a dead parent's locks held 31.7 s.)
fn serve<C: Claim>(
    parent: u32,
    dir: &FlockDir,
    name: &str,
    listener: &UnixListener,
    watch: &Watch<'_>,
    mut claims: Vec<C>,
) {
    let lost_signal = {
        let mut mask = nix::sys::signal::SigSet::empty();
        if let Ok(sig) = nix::sys::signal::Signal::try_from(sys::loss_signal()) {
            mask.add(sig);
        }
        nix::sys::signalfd::SignalFd::with_flags(
            &mask,
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
        )
        .ok()
    };
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let me = nix::unistd::geteuid().as_raw();
    let mut clients: Vec<Client> = Vec::new();
    let last_gone = || {
        let _ = dir.safe_dir().remove_file(name);
    };
    // Until every claim is released and every answer sent, or a lock is lost.
    loop {
        let answering = clients.iter().any(|c| c.reply.is_some());
        if (claims.is_empty() && !answering) || (watch.lost)() {
            break;
        }
        let now = Instant::now();
        clients.retain(|c| c.until > now); // out of time: dropped
        let mut fds = vec![(watch.pidfd, libc::POLLIN)];
        if !claims.is_empty() {
            fds.push((listener.as_fd(), libc::POLLIN));
        }
        let first_client = fds.len() + usize::from(lost_signal.is_some());
        if let Some(signal) = &lost_signal {
            fds.push((signal.as_fd(), libc::POLLIN));
        }
        for client in &clients {
            let events = if client.reply.is_some() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push((client.stream.as_fd(), events));
        }
        // Rounded up, so a deadline a fraction of a millisecond away is
        // not polled for in a busy loop.
        let next = clients
            .iter()
            .map(|c| c.until.saturating_duration_since(now) + Duration::from_millis(1))
            .min();
        let timeout = match (watch.tick, next) {
            (Some(t), Some(n)) => Some(t.min(n)),
            (t, n) => t.or(n),
        };
        let Ok(revents) = sys::poll(&fds, timeout) else {
            break;
        };
        if revents[0] != 0 {
            break; // the parent exited: keep the lockfiles for the janitor
        }
        if let Some(signal) = &lost_signal {
            while let Ok(Some(_)) = signal.read_signal() {} // the flag is read above
        }
        if !claims.is_empty() && revents[1] != 0 {
            while let Ok((stream, _)) = listener.accept() {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let mut client = Client {
                    stream,
                    until: Instant::now() + IO_TIMEOUT,
                    request: Vec::new(),
                    reply: None,
                    sent: 0,
                };
                match sys::peer_cred(client.stream.as_fd()) {
                    Ok((_, uid)) if uid == me => {}
                    Ok((_, uid)) => {
                        client.reply =
                            Some(format!("refused uid {uid} is not the keeper's\n").into());
                    }
                    Err(_) => continue,
                }
                clients.push(client);
            }
        }
        let mut finished = vec![false; clients.len()];
        for (i, client) in clients.iter_mut().enumerate() {
            if revents.get(first_client + i).copied().unwrap_or(0) == 0 {
                continue;
            }
            if client.reply.is_none() {
                match client.read() {
                    Ok(true) => {
                        let line = String::from_utf8_lossy(&client.request);
                        let line = line.lines().next().unwrap_or_default().to_string();
                        client.reply =
                            Some(answer(parent, watch, &line, &mut claims, &last_gone).into());
                    }
                    Ok(false) => continue,
                    Err(_) => {
                        finished[i] = true;
                        continue;
                    }
                }
            }
            finished[i] = !matches!(client.write(), Ok(false));
        }
        let mut i = 0;
        clients.retain(|_| {
            i += 1;
            !finished[i - 1]
        });
    }
    let _ = dir.safe_dir().remove_file(name);
    // Dropping the claims releases the locks and keeps the lockfiles (a
    // lost lock is already released).
}

/// The answer to one request `line` (see the module doc for the protocol).
/// When the last claim is released, `last_gone` runs before the answer is
/// sent, so a `--release` that returns leaves no socket file behind.
fn answer<C: Claim>(
    parent: u32,
    watch: &Watch<'_>,
    line: &str,
    claims: &mut Vec<C>,
    last_gone: &dyn Fn(),
) -> String {
    let mut out = String::new();
    let mut words = line.split_whitespace();
    let (op, asked) = (
        words.next(),
        words.next().and_then(|p| p.parse::<u32>().ok()),
    );
    let ours = asked == Some(parent) && !exited(watch.pidfd).unwrap_or(true) && !(watch.lost)();
    for domain in words {
        let index = claims
            .iter()
            .position(|c| c.domain() == domain)
            .filter(|_| ours);
        let reply = match (op, index) {
            (_, None) => format!("not-held {domain}"),
            (Some("held"), Some(_)) => format!("held {domain}"),
            (Some("release"), Some(i)) => match claims.swap_remove(i).remove() {
                Ok(()) => format!("released {domain}"),
                Err(e) => format!("failed {domain} {e:#}"),
            },
            (_, Some(_)) => {
                out.push_str("refused unknown request\n");
                return out;
            }
        };
        out.push_str(&reply);
        out.push('\n');
    }
    if claims.is_empty() {
        last_gone();
    }
    out.push_str("done\n");
    out
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
    fn keeper_fds_parse() {
        assert_eq!(parse_keeper_fds("3,4"), Ok((3, 4)));
        assert!(parse_keeper_fds("3").is_err());
        assert!(parse_keeper_fds("a,4").is_err());
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
