//! The `ccci-lock` command line (SPEC §2): the clap definition, which also
//! feeds the man page and completions, and the code that runs it.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

use ccci_common::supervise::{self, Watch};
use ccci_common::{dirs, duration, exit, names, say};

use crate::{lockfile_name, Acquired, Backend, Claim, FlockDir, Holder, Wait};

const AFTER_HELP: &str = "\
COMMAND runs as a child, with CCCI_LOCK_DOMAIN and CCCI_LOCK_FILE set and a
parent-death signal of SIGTERM. The lock is never inherited by COMMAND. TERM,
INT, HUP, QUIT, ALRM, USR1 and USR2 are forwarded to COMMAND; the lock is kept
until COMMAND has exited. When COMMAND exits, the lockfile is removed while the
lock is still held (unless --keep); when a signal killed it, the lockfile is
left for ccci-janitor.

Environment:
  CCCI_APP_LOCK_DIR  the lock dir (like --lock-dir)
  CCCI_RUN_ID        the run id recorded in the lockfile (like --run-id)
  CCCI_LOCK_DOMAIN   set for COMMAND: the locked DOMAIN
  CCCI_LOCK_FILE     set for COMMAND: the lockfile's absolute path

--list prints DOMAIN<TAB>held|free<TAB>PID<TAB>RUN_ID<TAB>SINCE per lockfile,
'-' where unknown; for a free lock, PID, RUN_ID and SINCE are its last holder's.";

/// Run COMMAND while holding the lock of an app domain: one holder per domain.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-lock",
    version,
    after_help = format!("{AFTER_HELP}\n\n{}", exit::help_section()),
    override_usage = "ccci-lock [-n | -w DURATION] [--lock-dir DIR] [--run-id ID] [--keep] [-v] DOMAIN -- COMMAND [ARG...]\n       ccci-lock --list [--json] [--lock-dir DIR]"
)]
pub struct Cli {
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

    /// Lock dir [default: /run/lock/ccci-<uid>, or /tmp/ccci-<uid>/locks without /run/lock]
    #[arg(
        long,
        value_name = "DIR",
        env = "CCCI_APP_LOCK_DIR",
        hide_env_values = true
    )]
    pub lock_dir: Option<PathBuf>,

    /// Run id recorded in the lockfile
    #[arg(long, value_name = "ID", env = "CCCI_RUN_ID", hide_env_values = true, value_parser = names::run_id)]
    pub run_id: Option<String>,

    /// Keep the lockfile when COMMAND exits
    #[arg(long)]
    pub keep: bool,

    /// Report waiting (with the holder's pid, run id and since when) on stderr
    #[arg(short, long)]
    pub verbose: bool,

    /// List the lockfiles of the lock dir and whether each is held
    #[arg(long, conflicts_with_all = ["nonblock", "wait", "keep", "run_id", "domain"])]
    pub list: bool,

    /// With --list: one JSON object per line
    #[arg(long, requires = "list")]
    pub json: bool,

    /// The app domain to lock
    #[arg(value_name = "DOMAIN", required_unless_present = "list", value_parser = names::domain)]
    pub domain: Option<String>,

    /// Where the locks live when several hosts share them
    #[command(flatten)]
    pub etcd: crate::etcd::args::EtcdArgs,

    /// With --etcd: how long COMMAND may take to stop after SIGTERM when the lock is lost
    #[arg(long, value_name = "DURATION", value_parser = crate::etcd::args::positive)]
    pub lost_grace: Option<Duration>,

    /// The command to run while holding the lock (after --)
    #[arg(value_name = "COMMAND", last = true, required_unless_present = "list")]
    pub command: Vec<OsString>,
}

/// The signals `ccci-lock` passes on to COMMAND.
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Some(config) = cli.etcd.config()? {
        let backend = crate::etcd::Etcd::new(config);
        if cli.list {
            return list_backend(&backend, cli.json);
        }
        return lock_and_run(&backend, &cli);
    }
    let lock_dir = cli.lock_dir.clone().unwrap_or_else(dirs::default_lock_dir);
    if cli.list {
        return list(&lock_dir, cli.json);
    }
    let domain = cli.domain.clone().unwrap_or_default();
    lockfile_name(&domain)?; // a too-long name fails before anything is created
    let backend = FlockDir::open(&lock_dir, true)?
        .ok_or_else(|| anyhow::anyhow!("lock dir {} vanished", lock_dir.display()))?;
    lock_and_run(&backend, &cli)
}

fn lock_and_run<B: Backend>(backend: &B, cli: &Cli) -> anyhow::Result<u8> {
    let domain = cli.domain.clone().unwrap_or_default();
    let wait = match (cli.nonblock, cli.wait) {
        (true, _) => Wait::Never,
        (false, Some(limit)) => Wait::AtMost(limit),
        (false, None) => Wait::Forever,
    };
    let started = Instant::now();
    let verbose = cli.verbose;
    let mut waited = false;
    let acquired = backend.acquire(&domain, wait, &mut |holder| {
        waited = true;
        if verbose {
            say!("waiting for {domain}: held by {}", describe(holder));
        }
    })?;
    let mut claim = match acquired {
        Acquired::Held(claim) => claim,
        Acquired::Busy(holder) => {
            say!(
                "{domain} is locked by {}; giving up",
                describe(holder.as_ref())
            );
            return Ok(exit::BUSY);
        }
    };
    if verbose && waited {
        say!(
            "acquired {domain} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    claim.stamp(&Holder::this_process(cli.run_id.clone()))?;
    run_holding(claim, &cli.command, cli.keep)
}

fn describe(holder: Option<&Holder>) -> String {
    holder.map_or_else(|| "an unknown process".into(), Holder::describe)
}

/// Runs `argv` as a child while holding `claim`, forwarding signals, and
/// settles the claim when it ends: removed (unlinked while held) after a
/// normal exit unless `keep`, left in place when a signal killed the child.
/// Returns the child's status (128+N for signal N; 126/127 when it could not
/// be started).
pub fn run_holding<C: Claim>(claim: C, argv: &[OsString], keep: bool) -> anyhow::Result<u8> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no COMMAND given"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).envs(claim.env());
    let watch = Watch {
        forward: FORWARDED.to_vec(),
        own_group: false,
        deadline: None,
        deadline_signal: libc::SIGALRM,
        kill_after: None,
        death_signal: Some(libc::SIGTERM),
    };
    let (status, signaled) = match supervise::spawn(&mut cmd, watch) {
        Ok(child) => {
            let outcome = child.wait()?;
            (
                exit::from_wait_status(outcome.status),
                outcome.status.signal().is_some(),
            )
        }
        Err(e) => {
            let program = names::shell_quote(&program.to_string_lossy());
            say!("cannot run {program}: {e}");
            (exit::from_spawn_error(&e), false)
        }
    };
    if !(signaled || keep) {
        if let Err(e) = claim.remove() {
            say!("{e:#}");
        }
    }
    Ok(status)
}

/// One line of `--list --json`: the fields of the tab-separated form.
#[derive(serde::Serialize)]
struct ListLine<'a> {
    domain: &'a str,
    state: &'a str,
    pid: Option<u32>,
    run_id: Option<&'a str>,
    since: Option<&'a str>,
}

fn list(lock_dir: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    let Some(backend) = FlockDir::open(lock_dir, false)? else {
        return Ok(exit::SUCCESS); // no lock dir: no locks
    };
    list_backend(&backend, json)
}

fn list_backend<B: Backend>(backend: &B, json: bool) -> anyhow::Result<u8> {
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

    #[test]
    fn nonblock_and_wait_conflict() {
        assert!(Cli::try_parse_from(["ccci-lock", "-n", "-w", "1s", "d", "--", "true"]).is_err());
    }
}
