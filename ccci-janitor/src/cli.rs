//! The `ccci-janitor` command line (SPEC §4): the clap definition and the
//! code that runs one pass with it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;
use ccci_common::{dirs, duration, exit, say};
use ccci_lock::FlockDir;

use crate::reap::ReapCommand;
use crate::{candidates, pass, read_deployed, read_warm, Examined, Glob, Level, Settings};

const AFTER_HELP: &str = "\
For each candidate, sorted: every <DOMAIN>.lock in the lock dir and every
domain of --deployed (one per line; '#' comments and blank lines ignored):
  - warm (--warm, --warm-file): skipped before any file operation;
  - lockfile held: a live run, never touched; held longer than --leak-after:
    warning 'possible leaked run';
  - lockfile free: younger than --min-age: left alone; with --deployed and
    not in it: the lockfile is unlinked, no reap; otherwise REAP_COMMAND runs
    with the domain as its last argument, WHILE HOLDING the lock (a new run of
    the domain waits), and the lockfile is unlinked when it exits 0;
  - deployed but no lockfile (the host rebooted): the lockfile is created and
    the domain reaped at once.
REAP_COMMAND runs in its own process group with CCCI_DOMAIN, CCCI_LOCK_DOMAIN
and CCCI_LOCK_FILE set, stdin from /dev/null and its stdout sent to stderr. At
--reap-timeout its process group is killed (SIGKILL) and the lockfile kept.
TERM, INT, HUP, QUIT, ALRM, USR1 and USR2 received during a reap are passed to
its process group; the pass stops after that reap, with status 128+N.

Quiet unless something happens: stderr gets actions (reaped, unlinked stale
lockfile), warnings and errors; -v adds live, young and warm domains. --json
prints one object per examined domain on stdout: domain, outcome (reaped,
would-reap, live, leaked, stale-unlinked, young, skipped, failed), holder_pid,
run_id, age_s, detail. A missing lock dir is reported and is not an error.

A domain that cannot be examined (an I/O error) is reported and the pass goes
on; the status is then 125.

Environment:
  CCCI_APP_LOCK_DIR  the lock dir (like --lock-dir)
  CCCI_DOMAIN        set for REAP_COMMAND: the domain being reaped
  CCCI_LOCK_DOMAIN   set for REAP_COMMAND: the same, as under ccci-lock
  CCCI_LOCK_FILE     set for REAP_COMMAND: the lockfile's absolute path";

/// Settle abandoned claims: reap apps whose run died, under the domain's lock.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-janitor",
    version,
    after_help = format!("{AFTER_HELP}\n\n{}", exit::help_section()),
    override_usage = "ccci-janitor [--lock-dir DIR] [--deployed FILE|-] [--warm GLOB]... [--warm-file FILE]\n                    [--min-age DURATION] [--leak-after DURATION] [--reap-timeout DURATION]\n                    [--dry-run] [--json] [-v] -- REAP_COMMAND [ARG...]"
)]
pub struct Cli {
    /// Lock dir [default: /run/lock/ccci-<uid>, or /tmp/ccci-<uid>/locks without /run/lock]
    #[arg(
        long,
        value_name = "DIR",
        env = "CCCI_APP_LOCK_DIR",
        hide_env_values = true
    )]
    pub lock_dir: Option<PathBuf>,

    /// The deployed domains, one per line ('-': stdin); lockfiles of others are unlinked without a reap
    #[arg(long, value_name = "FILE|-")]
    pub deployed: Option<PathBuf>,

    /// Never touch domains matching this shell pattern (*, ?, [...]); repeatable
    #[arg(long, value_name = "GLOB", value_parser = Glob::parse)]
    pub warm: Vec<Glob>,

    /// Never touch domains matching a pattern of this file, one per line
    #[arg(long, value_name = "FILE")]
    pub warm_file: Option<PathBuf>,

    /// Leave lockfiles younger than this alone
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "0")]
    pub min_age: Duration,

    /// Warn about locks held longer than this (by the lockfile's mtime)
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "120m")]
    pub leak_after: Duration,

    /// Kill a reap's process group after this long
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "10m")]
    pub reap_timeout: Duration,

    /// Probe and report; reap, unlink and create nothing
    #[arg(long)]
    pub dry_run: bool,

    /// One JSON object per examined domain on stdout
    #[arg(long)]
    pub json: bool,

    /// Also report live, young and warm domains on stderr
    #[arg(short, long)]
    pub verbose: bool,

    /// The command that reaps one app, given the domain as its last argument (after --)
    #[arg(
        value_name = "REAP_COMMAND",
        last = true,
        required_unless_present = "dry_run"
    )]
    pub reap_command: Vec<OsString>,
}

fn read_input(path: &Path, flag: &str) -> Result<(String, String), UsageError> {
    let (source, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        let read = std::io::stdin().lock().read_to_end(&mut bytes);
        (format!("{flag} (stdin)"), read.map(|_| bytes))
    } else {
        let source = format!("{flag} {}", shell_quote(&path.to_string_lossy()));
        (source, std::fs::read(path))
    };
    match bytes {
        Ok(bytes) => Ok((String::from_utf8_lossy(&bytes).into_owned(), source)),
        Err(e) => Err(UsageError(format!("cannot read {source}: {e}"))),
    }
}

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // Every input is read and checked before the lock dir is touched.
    let mut warm = cli.warm.clone();
    if let Some(path) = &cli.warm_file {
        let (text, source) = read_input(path, "--warm-file")?;
        warm.extend(read_warm(&text, &source)?);
    }
    let deployed = match &cli.deployed {
        Some(path) => {
            let (text, source) = read_input(path, "--deployed")?;
            let (domains, warnings) = read_deployed(&text, &source);
            for warning in warnings {
                say!("{warning}");
            }
            Some(domains)
        }
        None => None,
    };
    let lock_dir = cli.lock_dir.clone().unwrap_or_else(dirs::default_lock_dir);
    let Some(backend) = FlockDir::open(&lock_dir, false)? else {
        say!(
            "lock dir {} does not exist: nothing to settle",
            lock_dir.display()
        );
        return Ok(exit::SUCCESS);
    };
    let settings = Settings {
        deployed,
        warm,
        min_age: cli.min_age,
        leak_after: cli.leak_after,
        dry_run: cli.dry_run,
        exact: cli.verbose || cli.json,
    };
    let domains = candidates(&backend, settings.deployed.as_ref())?;
    let mut reaper = ReapCommand {
        argv: cli.reap_command.clone(),
        timeout: cli.reap_timeout,
        verbose: cli.verbose,
    };
    let mut stdout = std::io::stdout().lock();
    let mut report = |examined: &Examined| -> anyhow::Result<()> {
        if cli.verbose || examined.level > Level::Info {
            say!("{examined}");
        }
        if cli.json {
            serde_json::to_writer(&mut stdout, &examined.json())?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
        }
        Ok(())
    };
    let summary = pass(&backend, &settings, &domains, &mut reaper, &mut report)?;
    if let Some(sig) = summary.stopped_by {
        say!("stopped by SIG{}", ccci_common::sys::signal_name(sig));
    }
    Ok(summary.status())
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
    fn defaults_and_the_double_dash() {
        let cli = Cli::try_parse_from(["ccci-janitor", "--", "reap", "-x"]).unwrap();
        assert_eq!(cli.min_age, Duration::ZERO);
        assert_eq!(cli.leak_after, Duration::from_secs(120 * 60));
        assert_eq!(cli.reap_timeout, Duration::from_secs(600));
        assert_eq!(cli.reap_command, ["reap", "-x"]);
        assert!(Cli::try_parse_from(["ccci-janitor", "reap"]).is_err());
        assert!(Cli::try_parse_from(["ccci-janitor"]).is_err());
        assert!(Cli::try_parse_from(["ccci-janitor", "--dry-run"]).is_ok());
    }

    #[test]
    fn bad_patterns_and_durations_are_usage_errors() {
        for flag in [
            "--warm=warm-[0-9",
            "--warm=",
            "--min-age=1x",
            "--leak-after=-5m",
            "--reap-timeout=",
        ] {
            let e = Cli::try_parse_from(["ccci-janitor", flag, "--", "true"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
        }
    }
}
