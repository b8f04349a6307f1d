//! The `ccci-lock` command line (SPEC §2): the clap definition, which also
//! feeds the man page and completions, and the code that runs it.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use ccci_common::args::{self, LockDirArg};
use ccci_common::cli::UsageError;
use ccci_common::dirs::LOCK_DIR;
use ccci_common::exit::{self, Ended};
use ccci_common::supervise::{self, Watch};
use ccci_common::{duration, names, say, sys};

use crate::etcd::args::EtcdArgs;
use crate::etcd::Etcd;
use crate::report::{describe, locker_of, say_busy};
use crate::{acquire_all, lockfile_name, Acquired, Backend, Claim, FlockDir, Holder, Wait};

const AFTER_HELP: &str = "\
Several DOMAINs are all taken before COMMAND starts, in sorted order, so two
runs naming overlapping sets never deadlock; -n and -w apply to the whole set,
and on status 75 none is held.

COMMAND runs as a child, with CCCI_LOCK_DOMAIN and CCCI_LOCK_FILE set and a
parent-death signal of SIGTERM. The lock is never inherited by COMMAND.
The lock covers COMMAND's whole tree: ccci-lock is a child subreaper, so a
process COMMAND started in the background, or one that left its process group
or session (setsid), stays ccci-lock's to signal and to wait for. TERM, INT,
HUP, QUIT, ALRM, USR1 and USR2 are forwarded to COMMAND and to every process
it started (INT and QUIT from the terminal reach those outside the
terminal's process group), and so is the SIGTERM/SIGKILL of a lost lock. The
lock is kept, and the lockfile removed or kept, only once COMMAND and every
one of its descendants have exited; the status is COMMAND's. COMMAND stays in
ccci-lock's process group, so it can read the terminal. When COMMAND exits,
the lockfile is removed while the
lock is still held (unless --keep). When signal N killed it, the lockfile is
left for ccci-janitor, and ccci-lock, once it has released the lock, ends by
signal N itself (a shell sees 128+N), so a ccci-lock around this one keeps
its lockfile too. A lockfile this ccci-lock created but did not end up holding
(-n or -w gave up, another DOMAIN of the set was busy) is removed before it
exits.

Before its first claim, ccci-lock makes sure its host's lock dir records where
it claims (.claims-in.files, or .claims-in.etcd-... with --etcd), so that a
janitor that looks elsewhere refuses to run instead of reaping live apps.
Writing that record (once per lock dir and place) waits for a running janitor
pass, within -n/-w; a wait that runs out is status 75.

Looking never blocks anyone: --list and -v take no lock (whether a lockfile is
held, and by which pid, is read from /proc/locks). -v says so when the
recorded holder is not running (a janitor reaping a dead run's claim, or a
foreign flock(1) user) instead of naming a dead process.

With --etcd (several hosts), the lock is etcd's lock on PREFIX/lock/DOMAIN
under a lease this process keeps alive, and the lockfile's place is taken by
the claim PREFIX/claim/DOMAIN. If the lease is lost while COMMAND runs (etcd
unreachable for the TTL, lease revoked), COMMAND gets SIGTERM, SIGKILL after
--lost-grace, and ccci-lock exits 125. See docs/etcd.md.

Environment:
  CCCI_APP_LOCK_DIR   the lock dir (like --lock-dir)
  CCCI_RUN_ID         the run id recorded in the lockfile (like --run-id)
  CCCI_LOCK_DOMAIN    set for COMMAND: the locked DOMAIN (several: sorted,
                      separated by spaces)
  CCCI_LOCK_FILE      set for COMMAND: the lockfile's absolute path (several:
                      in the same order, separated by spaces)
  CCCI_LOCK_REVISION  set for COMMAND with --etcd: the lock key's create
                      revision, a fencing token that grows with every holder
                      (several: in the same order, separated by spaces)

--hold takes the DOMAINs (sorted, all or nothing; -n and -w as usual) and
returns 0 once a keeper process holds them for PID: the keeper has no terminal,
no stdin, stdout or stderr, and is not in the caller's process group. It keeps
the locks until `ccci-lock --release --parent PID DOMAIN...` (the lockfiles are
removed while still held, then released) or until PID exits without releasing
(the lockfiles stay, for ccci-janitor). PID is watched by a pidfd, never by its
number. --release releases only domains held for PID: a domain held by anyone
else is refused (125, nothing released), a domain not held is status 1.
Holding a domain again for the same PID is status 0 and changes nothing.
With --etcd, the keeper holds the claims under its own lease and keeps it
alive; its socket stays in the local lock dir (which holds nothing else then).
If its lease is lost, the keeper stops PID and every process PID started
(SIGTERM, SIGKILL after 10s if PID is still there), as a lost lock stops
COMMAND, and exits; the claims stay, for ccci-janitor.
--release finds the keeper through the claim's record; a hold whose record
names another host is refused (125): release it on that host.
From a harness in another language:
  subprocess.run([\"ccci-lock\", \"--hold\", \"--parent\", str(os.getpid()), domain], check=True)

--list prints DOMAIN<TAB>held|free<TAB>PID<TAB>RUN_ID<TAB>SINCE per lockfile,
'-' where unknown; for a free lock, PID, RUN_ID and SINCE are its last holder's.
With --json, one object per line with the same fields, plus parent (the PID a
--hold keeper holds it for) for a held domain.";

/// Run COMMAND while holding the lock of an app domain: one holder per domain.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-lock",
    version,
    after_help = format!("{AFTER_HELP}\n\n{}\n\n{}", ccci_common::config::help_note(), exit::help_section()),
    override_usage = "ccci-lock [-n | -w DURATION] [--lock-dir DIR | --etcd URL[,URL...]] [--run-id ID] [--keep] [-v] DOMAIN... -- COMMAND [ARG...]\n       ccci-lock --hold --parent PID [-n | -w DURATION] [--lock-dir DIR] [--etcd URL[,URL...]] [--run-id ID] DOMAIN...\n       ccci-lock --release --parent PID [--lock-dir DIR] [--etcd URL[,URL...]] DOMAIN...\n       ccci-lock --list [--json] [--lock-dir DIR | --etcd URL[,URL...]]"
)]
#[command(group = clap::ArgGroup::new("held").args(["hold", "release"]))]
pub struct Cli {
    /// The configuration file
    #[command(flatten)]
    pub config: ccci_common::args::ConfigArg,

    /// Fail with status 75 at once if the lock is held
    #[arg(
        short = 'n',
        long = "nonblock",
        visible_alias = "nb",
        conflicts_with = "wait"
    )]
    pub nonblock: bool,

    /// Wait at most DURATION (90s, 2m, 1h30m, 500ms, bare seconds), then fail with 75
    #[arg(short = 'w', long = "wait", visible_alias = "timeout", value_name = "DURATION",
          value_parser = duration::parse)]
    pub wait: Option<Duration>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub lock_dir: LockDirArg,

    /// Run id recorded in the lockfile
    #[arg(
        long,
        value_name = "ID",
        env = "CCCI_RUN_ID",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub run_id: Option<OsString>,

    /// Keep the lockfile when COMMAND exits
    #[arg(long)]
    pub keep: bool,

    /// Report waiting (with the holder's pid, run id and since when) on stderr
    #[arg(short, long)]
    pub verbose: bool,

    /// List the lockfiles of the lock dir and whether each is held
    #[arg(long, conflicts_with_all = ["nonblock", "wait", "keep", "run_id", "domains", "command", "held"])]
    pub list: bool,

    /// Take the DOMAINs and return while a keeper process holds them for PID
    #[arg(long, requires = "parent", conflicts_with_all = ["keep", "release", "command"])]
    pub hold: bool,

    /// Release DOMAINs held for PID by --hold (lockfiles removed while held)
    #[arg(long, requires = "parent", conflicts_with_all = ["nonblock", "wait", "keep", "command"])]
    pub release: bool,

    /// With --hold or --release: the process the locks are held for
    #[arg(long, value_name = "PID", requires = "held", allow_hyphen_values = true,
          value_parser = crate::hold::parse_pid)]
    pub parent: Option<u32>,

    /// Internal: run as the keeper of --hold, with these inherited descriptors
    #[arg(long, hide = true, requires = "hold", value_parser = crate::hold::parse_keeper_fds)]
    pub keeper_fds: Option<(i32, i32)>,

    /// With --list: one JSON object per line (status 2 without --list)
    #[arg(long, requires = "list")]
    pub json: bool,

    /// The app domains to lock: all are taken, in sorted order, before COMMAND starts
    #[arg(value_name = "DOMAIN", required_unless_present = "list", value_parser = names::domain)]
    pub domains: Vec<String>,

    /// Where the locks live when several hosts share them
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// With --etcd: how long COMMAND may take to stop after SIGTERM when the lock is lost [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
    pub lost_grace: Option<Duration>,

    /// The command to run while holding the lock (after --)
    #[arg(value_name = "COMMAND", last = true, required_unless_present_any = ["list", "hold", "release"])]
    pub command: Vec<OsString>,
}

/// The signals `ccci-lock` passes on to COMMAND (the one list, in
/// `ccci_common::supervise`).
pub use ccci_common::supervise::FORWARDED;

pub use crate::DEFAULT_LOST_GRACE;

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
pub trait Job {
    /// Does the work on `backend`; returns the exit status.
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<Ended>;
}

impl Locks {
    /// The backend the command line asks for: etcd when endpoints are
    /// given (then the lock dir is not used), else the lock dir. A bad or
    /// empty `--lock-dir` (or `CCCI_APP_LOCK_DIR`) is a usage error naming
    /// its source; a lock dir that coincides with the state or runs dir is
    /// refused (125).
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Locks> {
        if let Some(config) = cli.etcd.config()? {
            return Ok(Locks::Etcd(config));
        }
        let lock_dir = cli.lock_dir.resolve()?;
        args::check_apart(&LOCK_DIR, &lock_dir)?;
        Ok(Locks::Flock(lock_dir))
    }

    /// Checks `domain` as the chosen backend will (see
    /// [`Backend::check_domain`]), before anything is opened or created.
    pub fn check_domain(&self, domain: &str) -> Result<(), UsageError> {
        match self {
            Locks::Flock(_) => lockfile_name(domain).map(drop),
            Locks::Etcd(_) => crate::etcd::check_domain(domain),
        }
    }

    /// Like [`Locks::run`] with `create`, for a job that claims: first
    /// [`Locks::note_place`]. `job` is made with what is left of `wait`
    /// after that, so `-w` bounds the whole acquisition.
    pub fn run_claiming<J: Job>(
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
        let (local, place) = match self {
            Locks::Flock(dir) => (FlockDir::open(dir, true)?, crate::place::Place::Files),
            Locks::Etcd(config) => {
                let dir = lock_dir.resolve()?;
                args::check_apart(&LOCK_DIR, &dir)?;
                let place = crate::place::Place::etcd(&config.endpoints, &config.prefix);
                (FlockDir::open(&dir, true)?, place)
            }
        };
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
    pub fn run<J: Job>(&self, create: bool, job: J) -> anyhow::Result<Option<Ended>> {
        match self {
            Locks::Flock(dir) => match FlockDir::open(dir, create)? {
                Some(backend) => job.run(&backend).map(Some),
                None => Ok(None),
            },
            Locks::Etcd(config) => job.run(&Etcd::new(config.clone())).map(Some),
        }
    }
}

/// Runs a parsed command line; returns how to end: an exit status, or
/// COMMAND's signal (SPEC §1 "Signal deaths propagate").
pub fn run(cli: Cli) -> anyhow::Result<Ended> {
    if cli.json && !cli.list {
        // clap's `requires` counts --list's default value as present.
        return Err(UsageError("--json needs --list".into()).into());
    }
    let run_id = ccci_common::cli::checked("run_id", cli.run_id.as_deref(), names::run_id)?;
    let locks = Locks::from_cli(&cli)?;
    if cli.list {
        let listed = locks.run(false, List { json: cli.json })?;
        return Ok(listed.unwrap_or(Ended::Code(exit::SUCCESS))); // no lock dir: no locks
    }
    // `--hold` and `--release` are dispatched below, after the domain check.
    for domain in &cli.domains {
        locks.check_domain(domain)?; // a bad one fails before anything is created
    }
    if let Some(parent) = cli.parent {
        return hold_or_release(&cli, &locks, parent, run_id).map(Ended::Code);
    }
    let job = |wait| LockAndRun {
        cli: &cli,
        wait,
        run_id,
        domains: &cli.domains,
        lost_grace: cli.lost_grace.unwrap_or(DEFAULT_LOST_GRACE),
        whole_tree: true,
    };
    locks.run_claiming(&cli.lock_dir, wait_of(&cli), job)
}

/// `--hold` (or, with `--keeper-fds`, the keeper it starts) and
/// `--release`: see [`crate::hold`].
fn hold_or_release(
    cli: &Cli,
    locks: &Locks,
    parent: u32,
    run_id: Option<String>,
) -> anyhow::Result<u8> {
    // With etcd, the lock dir holds only the keeper's socket (SPEC §8).
    let (lock_dir, etcd) = match locks {
        Locks::Flock(dir) => (dir.clone(), None),
        Locks::Etcd(config) => {
            let dir = cli.lock_dir.resolve()?;
            args::check_apart(&LOCK_DIR, &dir)?;
            (dir, Some(config.clone()))
        }
    };
    let mut domains = cli.domains.clone();
    domains.sort();
    domains.dedup();
    if cli.release {
        return crate::hold::release(parent, &lock_dir, etcd.as_ref(), &domains);
    }
    let req = crate::hold::HoldRequest {
        parent,
        domains,
        wait: wait_of(cli),
        lock_dir,
        etcd,
        run_id,
        verbose: cli.verbose,
    };
    match cli.keeper_fds {
        Some(fds) => crate::hold::keeper(&req, fds),
        None => {
            if let Err(busy) = locks.note_place(&cli.lock_dir, req.wait)? {
                return Ok(busy.shell_status());
            }
            crate::hold::hold(&req)
        }
    }
}

/// How long `-n` / `-w` / neither says to wait.
fn wait_of(cli: &Cli) -> Wait {
    match (cli.nonblock, cli.wait) {
        (true, _) => Wait::Never,
        (false, Some(limit)) => Wait::AtMost(limit),
        (false, None) => Wait::Forever,
    }
}

/// Takes the locks, then runs COMMAND under them.
struct LockAndRun<'a> {
    cli: &'a Cli,
    /// How long to wait for the domains (`-n`, `-w`, or for ever).
    wait: Wait,
    run_id: Option<String>,
    domains: &'a [String],
    lost_grace: Duration,
    /// See [`RunHow::whole_tree`].
    whole_tree: bool,
}

impl Job for LockAndRun<'_> {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<Ended> {
        let cli = self.cli;
        let wait = self.wait;
        // Before anything that can be lost is taken: see supervise::Loss.
        let loss = supervise::Loss::new().context("cannot block the lost-lock signal")?;
        let started = Instant::now();
        let verbose = cli.verbose;
        let mut waited = false;
        let acquired = acquire_all(backend, self.domains, wait, &mut |domain, holder| {
            waited = true;
            if verbose {
                ccci_common::say_debug!(
                    "waiting for {domain}: held by {}",
                    describe(holder, locker_of(backend, domain))
                );
            }
        })?;
        let mut claims = match acquired {
            Acquired::Held(claims) => claims,
            Acquired::Busy(busy) => {
                let locker = locker_of(backend, &busy.domain);
                say_busy(&busy, self.domains.len() > 1, locker);
                return Ok(Ended::Code(exit::BUSY));
            }
        };
        if verbose && waited {
            say!(
                "acquired {} after {:.1}s",
                domains_of(&claims),
                started.elapsed().as_secs_f64()
            );
        }
        let holder = Holder::this_process(self.run_id.clone());
        if let Err(e) = claims.iter_mut().try_for_each(|c| c.stamp(&holder)) {
            for claim in claims {
                let _ = claim.give_up(); // nothing ran: leave nothing we made
            }
            return Err(e);
        }
        for claim in &mut claims {
            claim.watch_loss(loss.notifier());
        }
        let how = RunHow {
            keep: cli.keep,
            lost_grace: self.lost_grace,
            loss: Some(&loss),
            whole_tree: self.whole_tree,
        };
        run_holding(claims, &cli.command, &how)
    }
}

/// How [`run_holding`] runs COMMAND and settles its claims.
#[derive(Debug, Clone, Copy)]
pub struct RunHow<'a> {
    /// Keep the claims when COMMAND exits normally.
    pub keep: bool,
    /// After a loss: the time between SIGTERM and SIGKILL.
    pub lost_grace: Duration,
    /// Reported when a claim loses its lock ([`Claim::watch_loss`]).
    pub loss: Option<&'a supervise::Loss>,
    /// Hold the claims until COMMAND's whole tree has exited, and signal
    /// all of it (SPEC §2; see [`Watch::whole_tree`]). Off only where this
    /// process has other children (unit tests).
    pub whole_tree: bool,
}

/// The environment for COMMAND: each claim's variables; a variable that
/// several claims set gets their values in the claims' (sorted) order,
/// separated by single spaces. So with one DOMAIN, `CCCI_LOCK_DOMAIN` is it
/// and `CCCI_LOCK_FILE` its lockfile; with several, `CCCI_LOCK_DOMAIN` is
/// the sorted list and `CCCI_LOCK_FILE` the lockfiles in the same order.
pub fn merged_env<C: Claim>(claims: &[C]) -> Vec<(&'static str, OsString)> {
    let mut merged: Vec<(&'static str, OsString)> = Vec::new();
    for (key, value) in claims.iter().flat_map(Claim::env) {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some((_, joined)) => {
                joined.push(" ");
                joined.push(value);
            }
            None => merged.push((key, value)),
        }
    }
    merged
}

fn domains_of<C: Claim>(claims: &[C]) -> String {
    let names: Vec<&str> = claims.iter().map(|c| c.domain()).collect();
    names.join(" ")
}

/// Runs `argv` as a child while holding `claims`, forwarding signals, and
/// settles the claims when it ends: removed (unlinked while held) after a
/// normal exit unless `keep`, left in place when a signal killed the child.
/// Returns how to end: the child's exit status, or `Ended::Signal(N)` when
/// signal N killed it, which the caller turns into its own death by N once
/// the claims are released (they are, when this returns); 126/127 when it
/// could not be started; 125 when a lock was lost (before COMMAND started,
/// which is then not started, or while it ran, which stops it: SIGTERM,
/// then SIGKILL after the grace), with the lost claims left in place.
pub fn run_holding<C: Claim>(
    claims: Vec<C>,
    argv: &[OsString],
    how: &RunHow<'_>,
) -> anyhow::Result<Ended> {
    let mut cmd = supervise::command(argv)?;
    let lost = || how.loss.is_some_and(supervise::Loss::is_lost);
    if lost() {
        say!(
            "lost the lock of {} before COMMAND started; not running it",
            domains_of(&claims)
        );
        return Ok(Ended::Code(exit::TOOL_FAILED));
    }
    cmd.envs(merged_env(&claims));
    let watch = Watch {
        forward: FORWARDED.to_vec(),
        own_group: false,
        deadline: None,
        deadline_signal: libc::SIGALRM,
        kill_after: None,
        death_signal: Some(libc::SIGTERM),
        whole_tree: how.whole_tree,
    };
    let ended = match supervise::spawn(&mut cmd, watch) {
        Ok(child) => {
            let outcome = child.wait_or_lose(how.loss.map(|l| (l, how.lost_grace)))?;
            if outcome.lost {
                say!(
                    "lost the lock of {} while COMMAND ran: stopped it ({})",
                    domains_of(&claims),
                    match outcome.status.signal() {
                        Some(sig) => format!("it ended by SIG{}", sys::signal_name(sig)),
                        None =>
                            format!("it exited with {}", exit::from_wait_status(outcome.status)),
                    }
                );
                return Ok(Ended::Code(exit::TOOL_FAILED));
            }
            Ended::from_wait_status(outcome.status)
        }
        Err(e) => Ended::Code(supervise::cannot_start(&cmd, &e)),
    };
    let signaled = matches!(ended, Ended::Signal(_));
    if !(signaled || how.keep || lost()) {
        for claim in claims {
            if let Err(e) = claim.remove() {
                say!("{e:#}");
            }
        }
    }
    Ok(ended)
}

/// One line of `--list --json`: the fields of the tab-separated form.
#[derive(serde::Serialize)]
struct ListLine<'a> {
    domain: &'a str,
    state: &'a str,
    pid: Option<u32>,
    run_id: Option<&'a str>,
    since: Option<&'a str>,
    /// For a held domain: the process a `--hold` keeper holds it for.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<u32>,
}

/// `--list`.
struct List {
    json: bool,
}

impl Job for List {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<Ended> {
        list(backend, self.json).map(Ended::Code)
    }
}

fn list<B: Backend>(backend: &B, json: bool) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    for status in backend.list()? {
        let holder = status.holder.unwrap_or_default();
        let state = if status.held { "held" } else { "free" };
        if json {
            let line = ListLine {
                domain: &status.domain,
                state,
                pid: holder.pid,
                run_id: holder.run_id.as_deref(),
                since: holder.since.as_deref(),
                parent: holder.parent.filter(|_| status.held),
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{}\t{state}\t{}\t{}\t{}",
                status.domain,
                dash(holder.pid.map(|p| p.to_string())),
                dash(holder.run_id),
                dash(holder.since),
            )?;
        }
    }
    out.flush()?;
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_needs_the_double_dash() {
        assert!(Cli::try_parse_from(["ccci-lock", "d", "true"]).is_err());
        let cli = Cli::try_parse_from(["ccci-lock", "-w", "2m", "d", "--", "true", "-x"]).unwrap();
        assert_eq!(cli.wait, Some(Duration::from_secs(120)));
        assert_eq!(cli.command, ["true", "-x"]);
    }

    /// The flock backend, except that each claim loses its lock on cue:
    /// when the file `cue` appears (COMMAND makes it), or at once (`None`),
    /// as an etcd claim does when its lease expires.
    struct Losing {
        inner: FlockDir,
        cue: Option<PathBuf>,
    }

    struct LosingClaim {
        inner: crate::FlockClaim,
        cue: Option<PathBuf>,
    }

    impl Backend for Losing {
        type Claim = LosingClaim;

        fn acquire(
            &self,
            domain: &str,
            wait: Wait,
            waiting: &mut dyn FnMut(Option<&Holder>),
        ) -> anyhow::Result<Acquired<LosingClaim>> {
            Ok(match self.inner.acquire(domain, wait, waiting)? {
                Acquired::Held(inner) => Acquired::Held(LosingClaim {
                    inner,
                    cue: self.cue.clone(),
                }),
                Acquired::Busy(h) => Acquired::Busy(h),
            })
        }

        fn probe(&self, _: &str) -> anyhow::Result<crate::Probe<LosingClaim>> {
            unimplemented!()
        }

        fn create(&self, _: &str) -> anyhow::Result<Option<LosingClaim>> {
            unimplemented!()
        }

        fn domains(&self) -> anyhow::Result<Vec<String>> {
            self.inner.domains()
        }

        fn list(&self) -> anyhow::Result<Vec<crate::Status>> {
            self.inner.list()
        }
    }

    impl Claim for LosingClaim {
        fn domain(&self) -> &str {
            self.inner.domain()
        }

        fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
            self.inner.stamp(holder)
        }

        fn age(&self) -> anyhow::Result<Duration> {
            self.inner.age()
        }

        fn env(&self) -> Vec<(&'static str, OsString)> {
            self.inner.env()
        }

        fn remove(self) -> anyhow::Result<()> {
            self.inner.remove()
        }

        fn watch_loss(&mut self, notifier: supervise::LossNotifier) {
            let Some(cue) = self.cue.clone() else {
                return notifier.notify();
            };
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !cue.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                notifier.notify();
            });
        }
    }

    /// Runs `ccci-lock d -- sh -c SCRIPT` on a [`Losing`] backend.
    fn run_losing(tmp: &std::path::Path, cue: bool, script: &str, grace: Duration) -> (u8, bool) {
        let locks = tmp.join("locks");
        let cli = Cli::try_parse_from([
            "ccci-lock".as_ref(),
            "--lock-dir".as_ref(),
            locks.as_os_str(),
            "d".as_ref(),
            "--".as_ref(),
            "sh".as_ref(),
            "-c".as_ref(),
            std::ffi::OsStr::new(script),
            "sh".as_ref(),
            tmp.as_os_str(),
        ])
        .unwrap();
        let backend = Losing {
            inner: FlockDir::open(&locks, true).unwrap().unwrap(),
            cue: cue.then(|| tmp.join("started")),
        };
        let job = LockAndRun {
            cli: &cli,
            wait: wait_of(&cli),
            run_id: None,
            domains: &["d".to_string()],
            lost_grace: grace,
            // The test harness has other children: never wait for them.
            whole_tree: false,
        };
        let status = job.run(&backend).unwrap();
        (status.shell_status(), locks.join("d.lock").exists())
    }

    #[test]
    fn a_lost_lock_stops_command_with_term_and_ccci_lock_fails_with_125() {
        let tmp = tempfile::tempdir().unwrap();
        let script = r#"trap 'echo TERM > "$1/got"; exit 3' TERM
            touch "$1/started"; while :; do sleep 0.05; done"#;
        let (status, kept) = run_losing(tmp.path(), true, script, Duration::from_secs(600));
        assert_eq!(status, exit::TOOL_FAILED);
        let got = std::fs::read_to_string(tmp.path().join("got")).unwrap();
        assert_eq!(got.trim(), "TERM");
        assert!(kept, "a lost claim is left for the janitor");
    }

    #[test]
    fn a_lock_lost_before_command_starts_means_command_never_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let (status, kept) = run_losing(
            tmp.path(),
            false,
            r#"touch "$1/started""#,
            DEFAULT_LOST_GRACE,
        );
        assert_eq!(status, exit::TOOL_FAILED);
        assert!(!tmp.path().join("started").exists());
        assert!(kept);
    }

    #[test]
    fn a_command_that_ignores_term_after_a_loss_is_killed_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let script = r#"trap '' TERM; touch "$1/started"; while :; do sleep 0.05; done"#;
        let started = Instant::now();
        let (status, _) = run_losing(tmp.path(), true, script, Duration::from_millis(200));
        assert_eq!(status, exit::TOOL_FAILED);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn nonblock_and_wait_conflict() {
        assert!(Cli::try_parse_from(["ccci-lock", "-n", "-w", "1s", "d", "--", "true"]).is_err());
    }
}
