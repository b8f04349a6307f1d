//! The `ccci-janitor` command line (SPEC §4): the clap definition, the
//! checks of flags that need no file, and the dispatch to `--print-config`,
//! `--check` ([`crate::check`]) or one pass ([`crate::one_pass`]), with the
//! summary line and the `--metrics` file after it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use ccci_common::args::LockDirArg;
use ccci_common::cli::UsageError;
use ccci_common::duration;
use ccci_common::exit::{self, Ended};
use ccci_common::Domain;

use crate::inputs::{is_stdin, read_input, where_and_which};
use crate::one_pass::one_pass;
use crate::tally::{MetricsFile, Tally};
use crate::{read_deployed, Glob};

const AFTER_HELP: &str = "\
One pass at a time: a pass holds <lock dir>/.janitor.lock for its whole
length; a janitor that finds another pass running says so and exits 0
without examining anything.

For each candidate, sorted: every <DOMAIN>.lock in the lock dir and every
domain of --deployed (one per line; '#' comments and blank lines ignored):
  - warm (--warm, --warm-file), or not a CI app (--only, --only-file given
    and none matches): skipped before any file operation;
  - lockfile held: a live run, never touched; held longer than --leak-after:
    warning 'possible leaked run';
  - lockfile free: younger than --min-age: left alone; with --deployed and
    not in it: the lockfile is unlinked, no reap; otherwise REAP_COMMAND runs
    with the domain as its last argument, WHILE HOLDING the lock (a new run of
    the domain waits), and the lockfile is unlinked when it exits 0;
  - deployed but no lockfile (the host rebooted): the lockfile is created and
    the domain reaped at once.
A shared server runs apps no CI run deployed (the proxy, backups), and
'abra app ls' lists them too: --deployed requires --only or --only-file
naming the CI apps (--only '*' says every deployed app is one).

Patterns are shell patterns with fnmatch(3) semantics, matched against the
whole domain (the C library's fnmatch(3), no flags): *, ?, bracket
expressions such as [0-9], [!a-z] and [[:digit:]]; \\ quotes the next
character; braces are not special. A pattern that cannot be parsed (e.g.
'w[0-9', '[[:digits:]]', a trailing \\) is status 2. At most one of --deployed,
--only-file and --warm-file may be '-' (stdin).

A missing lock dir whose parent is on a tmpfs (as /run/lock is: a reboot
empties it) is created (0700) and the pass goes on, so the first pass after a
reboot reaps every deployed CI app at once. A missing lock dir anywhere else
(a typo, an unmounted disk) is reported; nothing is probed or reaped, status
125, so a timer or cron shows it failed. --dry-run creates nothing, not even
the lock dir.

A pass records the boot id and the lock dir it used in LOCK_DIR.janitor/seen,
beside the lock dir. When the lock dir is then missing, or is another
directory, and the host has not rebooted since, it was removed or replaced
under live runs (by hand, by a cleanup): the pass probes and reaps nothing
(125) and says how to accept the lock dir (remove that record). A lock dir
missing while a process still holds a file of it is refused the same way.

The janitor looks where the runs claim: every run records in its host's lock
dir where it claims (.claims-in.files, or .claims-in.etcd-... for an etcd
cluster and prefix) before it claims anything. A pass reads those records
under its pass lock (a janitor on etcd takes the lock dir's pass lock too);
one that names another place than this janitor's refuses the whole pass with
status 125, saying where the runs claim and how to point the janitor there.
Nothing is probed or reaped then.

REAP_COMMAND runs in its own process group with CCCI_DOMAIN, CCCI_LOCK_DOMAIN
and CCCI_LOCK_FILE set, stdin from /dev/null and its stdout sent to stderr. At
--reap-timeout its process group is killed (SIGKILL) and the lockfile kept.
TERM, INT, HUP, QUIT, ALRM, USR1 and USR2 received during a reap are passed to
its process group; the pass stops after that reap, keeps the lockfile of a
reap that did not exit 0, and ends by that same signal (a shell sees 128+N).

Quiet unless something happens: stderr gets actions (reaped, unlinked stale
lockfile), warnings and errors; -v adds live, young, warm and not-CI domains.
Each stderr line starts with an RFC 3339 timestamp, unless stderr is the
journal (JOURNAL_STREAM names it), which stamps lines itself. --json prints
one object per examined domain on stdout: domain, outcome (reaped,
would-reap, live, leaked, stale-unlinked, young, skipped, failed, foreign),
holder_pid, run_id, age_s, detail.

A domain that cannot be examined (an I/O error) is reported and the pass goes
on; the status is then 125. A pass cut short (stdout or stderr cannot be
written) says so and exits 125.

With --etcd (several hosts; or CCCI_ETCD_ENDPOINTS) the claims are the etcd
keys PREFIX/claim/DOMAIN instead of lockfiles, the pass lock is
PREFIX/janitor/HOST, and no lock dir is used; every rule above holds for this
host's claims. Each claim names the host whose run made it, and only that
host's abra has the app: run one janitor on every host, with that host's
--deployed list. A claim of another host (or one naming no host) that is not
held is reported as 'foreign' and never locked, reaped or deleted.
--adopt-host NAME takes over the claims of host NAME, gone for good: they are
reaped (never unlinked unreaped, since this host's --deployed list does not
list NAME's apps). See docs/etcd.md.

Environment:
  CCCI_APP_LOCK_DIR   the lock dir (like --lock-dir)
  CCCI_ONLY           space-separated patterns, as --only; --only and
                      --only-file replace them
  CCCI_WARM           space-separated patterns, as --warm; --warm and
                      --warm-file replace them
  JOURNAL_STREAM      set by systemd: stderr lines are then not timestamped
  CCCI_DOMAIN         set for REAP_COMMAND: the domain being reaped
  CCCI_LOCK_DOMAIN    set for REAP_COMMAND: the same, as under ccci-lock
  CCCI_LOCK_FILE      set for REAP_COMMAND: the lockfile's absolute path
  CCCI_LOCK_REVISION  set for REAP_COMMAND with --etcd: the fencing token";

/// Settle abandoned claims: reap apps whose run died, under the domain's lock.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-janitor",
    version,
    after_help = ccci_common::cli::after_help(AFTER_HELP),
    override_usage = "ccci-janitor [--lock-dir DIR] [--deployed FILE|-] [--only GLOB]... [--only-file FILE]\n                    [--warm GLOB]... [--warm-file FILE]\n                    [--min-age DURATION] [--leak-after DURATION] [--reap-timeout DURATION]\n                    [--dry-run] [--json] [-v] -- REAP_COMMAND [ARG...]"
)]
pub struct Cli {
    /// The configuration file
    #[command(flatten)]
    pub config: ccci_common::args::ConfigArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub lock_dir: LockDirArg,

    /// The deployed domains, one per line ('-': stdin); needs --only or --only-file. Lockfiles of others are unlinked without a reap
    #[arg(long, value_name = "FILE|-")]
    pub deployed: Option<PathBuf>,

    /// Only domains matching this shell pattern are CI apps; others are never touched; repeatable
    #[arg(long, value_name = "GLOB", value_parser = Glob::parse)]
    pub only: Vec<Glob>,

    /// Only domains matching a pattern of this file ('-': stdin), one per line, are CI apps
    #[arg(long, value_name = "FILE|-")]
    pub only_file: Option<PathBuf>,

    /// Never touch domains matching this shell pattern; repeatable
    #[arg(long, value_name = "GLOB", value_parser = Glob::parse)]
    pub warm: Vec<Glob>,

    /// Never touch domains matching a pattern of this file ('-': stdin), one per line
    #[arg(long, value_name = "FILE|-")]
    pub warm_file: Option<PathBuf>,

    /// Leave lockfiles younger than this alone
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "0")]
    pub min_age: Duration,

    /// Warn about locks held longer than this (by the lockfile's mtime)
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "120m")]
    pub leak_after: Duration,

    /// Kill a reap's process group after this long
    #[arg(long, value_name = "DURATION", value_parser = duration::positive, default_value = "10m")]
    pub reap_timeout: Duration,

    /// Probe and report; reap, unlink and create nothing
    #[arg(long)]
    pub dry_run: bool,

    /// One JSON object per examined domain on stdout
    #[arg(long)]
    pub json: bool,

    /// Also report live, young, warm and not-CI domains on stderr
    #[arg(short, long)]
    pub verbose: bool,

    /// Where the locks live when several hosts share them
    #[command(flatten)]
    pub etcd: ccci_lock::etcd::args::EtcdArgs,

    /// With --etcd: also settle the claims of host NAME, gone for good (they are reaped, whatever --deployed says); repeatable
    #[arg(long, value_name = "NAME", value_parser = adopt_host)]
    pub adopt_host: Vec<String>,

    /// Check the setup and print the effective configuration with each value's origin; change nothing (0: all checks hold, 125: a check failed)
    #[arg(long, conflicts_with_all = ["dry_run", "metrics"])]
    pub check: bool,

    /// After the pass, write its metrics to FILE (*.prom, replaced whole) for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,

    /// Print an `export KEY='VALUE'` line for every setting of the configuration file's keys that the environment or the file sets, and do nothing else (for scripts: eval "$(ccci-janitor --print-config)")
    #[arg(long, conflicts_with_all = ["deployed", "only", "only_file", "warm", "warm_file", "dry_run", "json", "metrics", "check", "reap_command"])]
    pub print_config: bool,

    /// The command that reaps one app, given the domain as its last argument (after --)
    #[arg(
        value_name = "REAP_COMMAND",
        last = true,
        required_unless_present_any = ["dry_run", "print_config", "check"]
    )]
    pub reap_command: Vec<OsString>,
}

/// A `--adopt-host` value: a host name as claims record it.
fn adopt_host(value: &str) -> Result<String, String> {
    ccci_lock::etcd::check_host(value)?;
    Ok(value.to_string())
}

/// `export KEY='VALUE'` for every key of the configuration file that the
/// environment or the file sets (the file's values are in the environment
/// by now), single-quoted byte for byte.
fn config_exports() -> Vec<u8> {
    let mut out = Vec::new();
    for key in ccci_common::config::KEYS {
        let Some(value) = std::env::var_os(key.name).filter(|v| !v.is_empty()) else {
            continue;
        };
        out.extend_from_slice(b"export ");
        out.extend_from_slice(key.name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&ccci_common::names::export_quote_os(&value));
        out.push(b'\n');
    }
    out
}

/// Checks the flags that need no file, so a bad command line is refused
/// before anything is read.
pub(crate) fn check_flags(cli: &Cli) -> Result<(), UsageError> {
    check_flags_for_stdin(cli)?;
    let only_from_env = std::env::var_os("CCCI_ONLY").is_some_and(|v| !v.is_empty());
    if cli.deployed.is_some() && cli.only.is_empty() && cli.only_file.is_none() && !only_from_env {
        return Err(UsageError(
            "--deployed needs --only or --only-file: 'abra app ls' also lists apps no CI run \
             deployed (the proxy, backups), and every deployed app without a lockfile is reaped; \
             name the CI apps, e.g. --only \
             '????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org' or \
             CCCI_ONLY in the configuration file (--only '*' if every deployed app is one)"
                .into(),
        ));
    }
    Ok(())
}

/// At most one of the list flags reads stdin.
fn check_flags_for_stdin(cli: &Cli) -> Result<(), UsageError> {
    let stdin: Vec<&str> = [
        ("--deployed", &cli.deployed),
        ("--only-file", &cli.only_file),
        ("--warm-file", &cli.warm_file),
    ]
    .into_iter()
    .filter(|(_, path)| is_stdin(path))
    .map(|(flag, _)| flag)
    .collect();
    if stdin.len() > 1 {
        return Err(UsageError(format!(
            "{} all read stdin ('-'); at most one of --deployed, --only-file and --warm-file may",
            stdin.join(" and ")
        )));
    }
    Ok(())
}

/// Runs a parsed command line; returns how the process ends.
pub fn run(cli: Cli) -> anyhow::Result<Ended> {
    if cli.print_config {
        ccci_common::cli::print_all(&config_exports())?;
        return Ok(Ended::Code(exit::SUCCESS));
    }
    if cli.check {
        return check(&cli).map(Ended::Code);
    }
    let metrics = cli.metrics.as_deref().map(MetricsFile::parse).transpose()?;
    let tally = Tally::new("lock dir (not opened)".into());
    let ended = match one_pass(&cli, &tally) {
        Ok(ended) => ended,
        // Bad input: no pass was made, nothing to sum up.
        Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
        Err(e) => Ended::Code(ccci_common::cli::error_status(&e)),
    };
    let status = ended.shell_status();
    let _ = ccci_common::cli::try_emit_at(
        Tally::priority(status),
        format_args!("{}", tally.summary(status)),
    );
    if let Some(file) = metrics {
        let status =
            if let Err(e) = file.write(&tally.metrics(status, std::time::SystemTime::now())) {
                ccci_common::say!("cannot write the metrics: {e:#}");
                exit::TOOL_FAILED
            } else {
                status
            };
        if status != ended.shell_status() {
            return Ok(Ended::Code(status));
        }
    }
    Ok(ended)
}

/// `--check`: see [`crate::check`].
fn check(cli: &Cli) -> anyhow::Result<u8> {
    check_flags_for_stdin(cli)?;
    let (etcd, only, warm) = where_and_which(cli)?;
    let deployed = match &cli.deployed {
        Some(path) => {
            let (text, source) = read_input(path, "--deployed")?;
            let mut domains: Vec<Domain> = read_deployed(&text, &source).0.into_iter().collect();
            domains.sort();
            Some(domains)
        }
        None => None,
    };
    let lock_dir = cli.lock_dir.resolve()?;
    let inputs = crate::check::Inputs {
        lock_dir,
        etcd,
        deployed,
        only,
        warm,
        reap_command: &cli.reap_command,
        flags: crate::check::FLAGS,
    };
    crate::check::run(&inputs, cli.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    ccci_common::clap_definition_test!(Cli);

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
            "--reap-timeout=0",
            "--reap-timeout=0ms",
        ] {
            let e = Cli::try_parse_from(["ccci-janitor", flag, "--", "true"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
        }
    }
}
