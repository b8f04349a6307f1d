//! The keeper process (see "How a hold starts" and "How a hold ends" in
//! [`super`]): takes the locks, serves its clients from one `poll` loop
//! that also watches PID's pidfd, and stops PID's tree when a lease is
//! lost.

use ccci_common::names::quote_path;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ccci_common::supervise::Loss;
use ccci_common::{exit, sys, Domain};

use crate::backend::Job;
use crate::report::{describe, locker_of, say_busy};
use crate::{acquire_all, Acquired, Backend, BusyDomain, Claim, FlockDir, Holder};

use super::*;

/// The readiness message.
pub(super) const READY: &[u8] = b"ready\n";
/// How often a keeper whose locks can be lost (etcd) looks whether they were.
pub(super) const LOSS_TICK: Duration = Duration::from_millis(200);

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
    let keep = Keep {
        req,
        dir: &dir,
        pidfd,
        ready,
        loss: &loss,
        tick: req.locks.can_lose_locks().then_some(LOSS_TICK),
    };
    req.locks.run_at(&dir, keep)
}

/// The keeper's life on a backend, once its lock dir (for its socket) is
/// open. `tick`: how often to look whether a lock was lost (`None`: the
/// backend's locks are never lost while held).
pub(super) struct Keep<'a> {
    req: &'a HoldRequest,
    dir: &'a FlockDir,
    pidfd: OwnedFd,
    ready: OwnedFd,
    loss: &'a Loss,
    tick: Option<Duration>,
}

impl Job for Keep<'_> {
    type Output = u8;

    fn run<B>(self, backend: &B) -> anyhow::Result<u8>
    where
        B: Backend + Clone + Send + 'static,
        B::Claim: Send + 'static,
    {
        let Keep {
            req,
            dir,
            pidfd,
            ready,
            loss,
            tick,
        } = self;
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
}

/// A lock held for `parent` was lost (its etcd lease expired or was
/// revoked): the harness must not go on deploying without it, as a
/// COMMAND under ccci-lock must not (SPEC §2, §8). `parent` and every
/// descendant of it get SIGTERM, and SIGKILL after `grace` if `parent` is
/// still there then. `parent` is signalled through its pidfd only, so a
/// reused pid is never hit; its descendants as [`ccci_common::tree`] does.
pub(super) fn stop_parent(parent: u32, pidfd: BorrowedFd<'_>, grace: Duration) {
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

/// Takes every lock of `req` (sorted, all or nothing) in a thread, while
/// this one watches the parent and the readiness pipe: if the parent exits
/// or the `--hold` process is gone, the keeper gives up (an error). `None`:
/// a domain was busy (reported).
pub(super) fn acquire_watching<B>(
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
pub(super) fn acquire_sorted<B: Backend>(
    backend: &B,
    req: &HoldRequest,
) -> anyhow::Result<Acquired<Vec<B::Claim>, BusyDomain>> {
    let verbose = req.verbose;
    acquire_all(
        backend,
        &req.domains,
        req.wait,
        None,
        &mut |domain, holder| {
            if verbose {
                let locker = locker_of(backend, domain);
                ccci_common::say_debug!(
                    "waiting for {domain}: held by {}",
                    describe(holder, locker)
                );
            }
        },
    )
}

/// What ends a keeper besides a release: the parent's exit (its pidfd),
/// and a lock lost (`lost`, looked at every `tick`; etcd).
pub(super) struct Watch<'a> {
    pidfd: BorrowedFd<'a>,
    lost: &'a dyn Fn() -> bool,
    tick: Option<Duration>,
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
pub(super) fn serve<C: Claim>(
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
pub(super) fn answer<C: Claim>(
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
        // Parsed where it arrives: text that is no domain names no claim.
        let index = Domain::parse(domain)
            .ok()
            .and_then(|domain| claims.iter().position(|c| *c.domain() == domain))
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

/// The two descriptors a keeper inherits: `PIDFD,READYFD`.
pub fn parse_keeper_fds(value: &str) -> Result<(i32, i32), String> {
    let bad = || format!("not two descriptor numbers: {value:?}");
    let (a, b) = value.split_once(',').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// The pid a pidfd refers to (`Pid:` in its fdinfo); `None` when the
/// process has exited (the kernel shows -1).
pub(super) fn pidfd_pid(pidfd: BorrowedFd<'_>) -> anyhow::Result<Option<u32>> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let info = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("descriptor {} is not a pidfd", pidfd.as_raw_fd()))?;
    Ok(pid.parse::<u32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeper_fds_parse() {
        assert_eq!(parse_keeper_fds("3,4"), Ok((3, 4)));
        assert!(parse_keeper_fds("3").is_err());
        assert!(parse_keeper_fds("a,4").is_err());
    }
}
