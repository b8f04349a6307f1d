//! The `ccci-lock` command line (SPEC §2): the clap definition, which also
//! feeds the man page and completions, its parsing, and the dispatch to the
//! code that runs it: the wrap ([`crate::wrap`]), `--list` ([`crate::list`]),
//! `--hold` and `--release` ([`crate::hold`]), each on the backend that
//! [`crate::backend`] chooses.

use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;

use ccci_common::args::LockDirArg;
use ccci_common::cli::UsageError;
use ccci_common::exit::{self, Ended};
use ccci_common::{duration, names, Domain};

use crate::etcd::args::EtcdArgs;
use crate::list::List;
use crate::wrap::LockAndRun;
use crate::Wait;

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
    after_help = ccci_common::cli::after_help(AFTER_HELP),
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
    #[arg(value_name = "DOMAIN", required_unless_present = "list", value_parser = Domain::parse)]
    pub domains: Vec<Domain>,

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

// The backend choice and the wrap, where they were defined before they had
// modules of their own.
pub use crate::backend::{Job, Locks};
pub use crate::wrap::{merged_env, run_holding, RunHow};

/// Runs a parsed command line; returns how to end: an exit status, or
/// COMMAND's signal (SPEC §1 "Signal deaths propagate").
pub fn run(cli: Cli) -> anyhow::Result<Ended> {
    if cli.json && !cli.list {
        // clap's `requires` counts --list's default value as present.
        return Err(UsageError("--json needs --list".into()).into());
    }
    let run_id = ccci_common::cli::checked("run_id", cli.run_id.as_deref(), names::run_id)?;
    let locks = Locks::from_cli(&cli.lock_dir, &cli.etcd)?;
    if cli.list {
        let listed = locks.run(false, List { json: cli.json })?;
        return Ok(listed.unwrap_or(Ended::Code(exit::SUCCESS))); // no lock dir: no locks
    }
    // `--hold` and `--release` are dispatched below, after the domain check.
    for domain in &cli.domains {
        // The lock dir's own rule (a lockfile name's length): a domain that
        // breaks it fails before anything is created.
        locks.check_domain(domain)?;
    }
    if let Some(parent) = cli.parent {
        return hold_or_release(&cli, &locks, parent, run_id).map(Ended::Code);
    }
    let job = |wait| LockAndRun {
        command: &cli.command,
        keep: cli.keep,
        verbose: cli.verbose,
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
    let lock_dir = locks.local_dir(&cli.lock_dir)?;
    let mut domains = cli.domains.clone();
    domains.sort();
    domains.dedup();
    if cli.release {
        return crate::hold::release(parent, locks, &lock_dir, &domains);
    }
    let req = crate::hold::HoldRequest {
        parent,
        domains,
        wait: wait_of(cli),
        lock_dir,
        locks: locks.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    ccci_common::clap_definition_test!(Cli);

    #[test]
    fn command_needs_the_double_dash() {
        assert!(Cli::try_parse_from(["ccci-lock", "d", "true"]).is_err());
        let cli = Cli::try_parse_from(["ccci-lock", "-w", "2m", "d", "--", "true", "-x"]).unwrap();
        assert_eq!(cli.wait, Some(Duration::from_secs(120)));
        assert_eq!(cli.command, ["true", "-x"]);
    }

    #[test]
    fn nonblock_and_wait_conflict() {
        assert!(Cli::try_parse_from(["ccci-lock", "-n", "-w", "1s", "d", "--", "true"]).is_err());
    }
}
