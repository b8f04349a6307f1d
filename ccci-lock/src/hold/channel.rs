//! The keeper's control socket (see "The control channel" in [`super`]):
//! reached through the lock dir's descriptor, one request line, one answer
//! line per domain and `done`, each end checking the other with
//! `SO_PEERCRED`. On the keeper's side, each [`Client`]'s request and
//! answer are read and written without blocking. The domains of an answer
//! are parsed into [`Domain`]s here, where they arrive.

use ccci_common::names::quote_path;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ccci_common::{sys, Domain};

use crate::FlockDir;

/// How long a client may take, from being accepted, to send its whole
/// request and take the keeper's whole answer; and how long a client waits
/// for the keeper's answer to each line.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request line a keeper reads.
pub(super) const REQUEST_MAX: u64 = 64 * 1024;
/// The socket file name of keeper `pid`.
pub(super) fn socket_name(pid: u32) -> String {
    format!(".keeper-{pid}.sock")
}

/// A path that reaches `name` in `dir` through the directory's descriptor.
pub(super) fn via_fd(dir: &FlockDir, name: &str) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}/{name}",
        dir.safe_dir().as_fd().as_raw_fd()
    ))
}

/// The keeper's answer about one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
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
pub(super) fn ask(
    dir: Option<&FlockDir>,
    keeper: u32,
    op: &str,
    parent: u32,
    domains: &[&Domain],
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
        // Parsed where it arrives; text that is no domain was never asked about.
        let asked = Domain::parse(domain).ok();
        if let Some(i) = asked.and_then(|domain| domains.iter().position(|d| **d == domain)) {
            answers[i] = Some(answer);
        }
    }
    bail!("keeper {keeper} ended its answer early (killed?)")
}

/// Binds the keeper's control socket, replacing a stale one that a killed
/// keeper with our pid left behind (no live process but us has our pid).
pub(super) fn bind(dir: &FlockDir, name: &str) -> anyhow::Result<UnixListener> {
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

/// One client of the keeper's socket, served without blocking.
pub(super) struct Client {
    pub(super) stream: UnixStream,
    /// The whole request must be read and answered by then.
    pub(super) until: Instant,
    pub(super) request: Vec<u8>,
    /// The answer, once the request is whole; written from `sent` on.
    pub(super) reply: Option<Vec<u8>>,
    pub(super) sent: usize,
}

impl Client {
    /// Reads what has arrived; `true` once the request is whole (a line,
    /// or the client stopped sending, or it is too long to be one).
    pub(super) fn read(&mut self) -> io::Result<bool> {
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
    pub(super) fn write(&mut self) -> io::Result<bool> {
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
