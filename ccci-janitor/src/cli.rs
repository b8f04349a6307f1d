//! The `ccci-janitor` command line (SPEC §4): the clap definition and the
//! code that runs one pass with it.

use ccci_common::names::quote_path;
use std::ffi::OsString;
use std::io::{Read, Write};

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use ccci_common::args::{self, LockDirArg};
use ccci_common::cli::UsageError;
use ccci_common::exit::{self, Ended};
use ccci_common::names::shell_quote_os;
use ccci_common::{dirs, duration, say};
use ccci_lock::place::Place;
use ccci_lock::{Backend, FlockDir, PassLock};

use crate::boot::{Seen, Verdict};
use crate::reap::ReapCommand;
use crate::tally::{MetricsFile, Tally};
use crate::{
    candidates, missing_lock_dir, pass, read_deployed, read_patterns, Examined, Glob, Level,
    MissingLockDir, NoClaims, Patterns, Settings,
};

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
    after_help = format!("{AFTER_HELP}\n\n{}\n\n{}", ccci_common::config::help_note(), exit::help_section()),
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

fn is_stdin(path: &Option<PathBuf>) -> bool {
    path.as_deref() == Some(Path::new("-"))
}

fn read_input(path: &Path, flag: &str) -> Result<(String, String), UsageError> {
    let (source, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        let read = std::io::stdin().lock().read_to_end(&mut bytes);
        (format!("{flag} (stdin)"), read.map(|_| bytes))
    } else {
        let source = format!("{flag} {}", shell_quote_os(path.as_os_str()));
        (source, std::fs::read(path))
    };
    match bytes {
        Ok(bytes) => Ok((String::from_utf8_lossy(&bytes).into_owned(), source)),
        Err(e) => Err(UsageError(format!("cannot read {source}: {e}"))),
    }
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

/// The patterns of the variable `var` (`CCCI_ONLY`, `CCCI_WARM`):
/// space-separated; a bad one is a usage error naming the variable (and
/// the configuration file's line when the file set it).
fn patterns_of_variable(var: &str) -> Result<Vec<Glob>, UsageError> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(Vec::new());
    };
    let source = ccci_common::config::variable_source(var);
    let text = value.to_str().ok_or_else(|| {
        UsageError(format!(
            "{source}={} is not valid UTF-8",
            ccci_common::cli::quote(&value)
        ))
    })?;
    text.split_whitespace()
        .map(|p| {
            Glob::parse(p).map_err(|why| {
                UsageError(format!(
                    "{source}={} is not valid: pattern {}: {why}",
                    ccci_common::names::shell_quote(text),
                    ccci_common::names::shell_quote(p)
                ))
            })
        })
        .collect()
}

/// The patterns of `flag` and of its `-file` variant; when neither is
/// given, those of the variable `var` (SPEC §4: the flags replace it).
fn patterns(
    globs: &[Glob],
    file: Option<&Path>,
    file_flag: &str,
    var: &str,
) -> anyhow::Result<Option<Patterns>> {
    let mut all = globs.to_vec();
    if all.is_empty() && file.is_none() {
        all = patterns_of_variable(var)?;
    }
    if let Some(path) = file {
        let (text, source) = read_input(path, file_flag)?;
        let read = read_patterns(&text, &source)?;
        if read.is_empty() {
            return Err(UsageError(format!(
                "{source} names no pattern: it would match no domain"
            ))
            .into());
        }
        all.extend(read);
    }
    if all.is_empty() {
        return Ok(None);
    }
    Ok(Some(Patterns::new(all)?))
}

/// Checks the flags that need no file, so a bad command line is refused
/// before anything is read.
fn check_flags(cli: &Cli) -> Result<(), UsageError> {
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

/// Where the janitor looks (etcd, else the lock dir) and which domains
/// are CI apps and which are warm: from the flags, else `CCCI_ONLY` and
/// `CCCI_WARM`.
fn where_and_which(
    cli: &Cli,
) -> anyhow::Result<(Option<ccci_lock::etcd::Config>, Option<Patterns>, Patterns)> {
    let etcd = cli.etcd.config()?;
    let only = patterns(
        &cli.only,
        cli.only_file.as_deref(),
        "--only-file",
        "CCCI_ONLY",
    )?;
    let warm = patterns(
        &cli.warm,
        cli.warm_file.as_deref(),
        "--warm-file",
        "CCCI_WARM",
    )?
    .unwrap_or_default();
    Ok((etcd, only, warm))
}

/// `--check`: see [`crate::check`].
fn check(cli: &Cli) -> anyhow::Result<u8> {
    check_flags_for_stdin(cli)?;
    let (etcd, only, warm) = where_and_which(cli)?;
    let deployed = match &cli.deployed {
        Some(path) => {
            let (text, source) = read_input(path, "--deployed")?;
            let mut domains: Vec<String> = read_deployed(&text, &source).0.into_iter().collect();
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

/// One pass, counted in `tally`; how the process ends.
fn one_pass(cli: &Cli, tally: &Tally) -> anyhow::Result<Ended> {
    // Every input is read and checked before the lock dir is touched.
    check_flags(cli)?;
    let (etcd, only, warm) = where_and_which(cli)?;
    let deployed = match &cli.deployed {
        Some(path) => {
            let (text, source) = read_input(path, "--deployed")?;
            let (domains, warnings) = read_deployed(&text, &source);
            for warning in warnings {
                ccci_common::say_warning!("{warning}");
            }
            Some(domains)
        }
        None => None,
    };
    tally.set_backend(match &etcd {
        Some(config) => Place::etcd(&config.endpoints, &config.prefix).to_string(),
        None => "in lockfiles".into(),
    });
    let settings = Settings {
        deployed,
        only,
        warm,
        min_age: cli.min_age,
        leak_after: cli.leak_after,
        dry_run: cli.dry_run,
        exact: cli.verbose || cli.json,
        hosts: None,
    };
    if etcd.is_none() && !cli.adopt_host.is_empty() {
        return Err(UsageError(
            "--adopt-host needs --etcd (or CCCI_ETCD_ENDPOINTS): a lock dir holds the claims of \
             one host only"
                .into(),
        )
        .into());
    }
    let lock_dir = cli.lock_dir.resolve()?;
    args::check_apart(&dirs::LOCK_DIR, &lock_dir)?;
    if etcd.is_none() {
        tally.set_backend(format!(
            "lockfiles in {}",
            ccci_common::names::quote_path(&lock_dir)
        ));
    }
    if let Some(config) = etcd {
        // The host's lock dir holds only the record of where its runs
        // claim; missing, no run of this host ever claimed.
        let place = Place::etcd(&config.endpoints, &config.prefix);
        let local = FlockDir::open(&lock_dir, false)?;
        let here = Here {
            local: local.as_ref(),
            lock_dir: &lock_dir,
            place,
            records: match &local {
                Some(local) => RecordsAt::Dir(local),
                None => RecordsAt::Create(&lock_dir),
            },
        };
        let hosts = match crate::Hosts::here(cli.adopt_host.clone()) {
            Ok(hosts) => hosts,
            Err(why) => {
                say!("{why}: nothing probed, nothing reaped");
                return Ok(Ended::Code(exit::TOOL_FAILED));
            }
        };
        let backend = ccci_lock::etcd::Etcd::for_janitor_of(config, &hosts.this);
        let settings = Settings {
            hosts: Some(hosts),
            ..settings
        };
        return run_pass(cli, &settings, &backend, &here, tally);
    }
    // What the last pass saw: tells a reboot from a lock dir removed or
    // replaced under this boot (crate::boot).
    let boot_id = crate::boot::boot_id()?;
    let record = crate::boot::recall(&lock_dir)?;
    let opened = FlockDir::open(&lock_dir, false)?;
    let identity = |dir: &FlockDir| {
        dir.identity()
            .with_context(|| format!("cannot examine lock dir {}", quote_path(&lock_dir)))
    };
    let now = opened.as_ref().map(identity).transpose()?;
    if let Verdict::Removed(now) = Seen::judge(record.seen.as_ref(), &boot_id, now) {
        say!("{}", crate::boot::refusal(&lock_dir, &record, now));
        return Ok(Ended::Code(exit::TOOL_FAILED));
    }
    if let (Some(backend), Some(now)) = (opened, now) {
        if !cli.dry_run {
            crate::boot::remember(&lock_dir, &record, &boot_id, now)?;
        }
        let backend = backend.reuse_lock_table(LOCK_TABLE_AGE);
        let here = Here {
            local: None,
            lock_dir: &lock_dir,
            place: Place::Files,
            records: RecordsAt::Dir(&backend),
        };
        return run_pass(cli, &settings, &backend, &here, tally);
    }
    // Only a dry run passes over no lock dir, and it never reaps.
    let nowhere = Here {
        local: None,
        lock_dir: &lock_dir,
        place: Place::Files,
        records: RecordsAt::Create(&lock_dir),
    };
    let missing = match missing_lock_dir(&lock_dir) {
        // A reboot takes every process with the lock dir: a live one that
        // still has a file of it open says it was removed under live runs.
        MissingLockDir::Rebooted => match crate::holder_of_removed(&lock_dir) {
            Some((pid, file)) => MissingLockDir::Leave(format!(
                "pid {pid} still holds {} of it, so it was removed under live runs, not by \
                 a reboot",
                quote_path(&file)
            )),
            None => MissingLockDir::Rebooted,
        },
        leave => leave,
    };
    match missing {
        MissingLockDir::Leave(why) => {
            say!(
                "lock dir {} does not exist, and {why}: nothing probed, nothing reaped; \
                 create it, or point the janitor at the runs' lock dir (--lock-dir, \
                 CCCI_APP_LOCK_DIR in the configuration file)",
                quote_path(&lock_dir)
            );
            Ok(Ended::Code(exit::TOOL_FAILED))
        }
        MissingLockDir::Rebooted if cli.dry_run => {
            ccci_common::say_action!(
                "lock dir {} does not exist (its parent is on a tmpfs: a reboot?); \
                 dry run: it would be created and every deployed CI app reaped",
                quote_path(&lock_dir)
            );
            run_pass(cli, &settings, &NoClaims, &nowhere, tally)
        }
        MissingLockDir::Rebooted => {
            let Some(backend) = FlockDir::open(&lock_dir, true)? else {
                anyhow::bail!(
                    "lock dir {} vanished while being created",
                    quote_path(&lock_dir)
                );
            };
            ccci_common::say_action!(
                "lock dir {} did not exist (its parent is on a tmpfs: a reboot?); created it",
                quote_path(&lock_dir)
            );
            crate::boot::remember(&lock_dir, &record, &boot_id, identity(&backend)?)?;
            let backend = backend.reuse_lock_table(LOCK_TABLE_AGE);
            let here = Here {
                records: RecordsAt::Dir(&backend),
                ..nowhere
            };
            run_pass(cli, &settings, &backend, &here, tally)
        }
    }
}

/// The host this pass runs for: where it looks for claims, and the lock
/// dir that records where the host's runs claim ([`ccci_lock::place`]).
struct Here<'a> {
    /// With etcd: the host's lock dir, when it exists (with files the
    /// backend is the lock dir).
    local: Option<&'a FlockDir>,
    lock_dir: &'a Path,
    place: Place,
    /// The lock dir whose records the pass reads first, and whose records
    /// lock it takes before its first reap.
    records: RecordsAt<'a>,
}

/// Where the records lock is taken ([`ccci_lock::place`]).
#[derive(Clone, Copy)]
enum RecordsAt<'a> {
    /// In this lock dir.
    Dir(&'a FlockDir),
    /// In the lock dir at this path, created when missing (a janitor on
    /// etcd whose host's lock dir does not exist yet: a run that creates it
    /// meanwhile must find the records lock there).
    Create(&'a Path),
}

/// How long a pass waits for the records lock before its first reap: a
/// run holds it only to write one small file.
const RECORDS_WAIT: Duration = Duration::from_secs(10);

/// The pass's reaper: before the first reap, the records lock of the
/// host's lock dir and a second reading of its records
/// ([`ccci_lock::place::before_reaping`]), held to the end of the pass and
/// removed while held; then the reap command for each domain.
struct RecordsFirst<'a> {
    reap: ReapCommand,
    here: &'a Here<'a>,
    held: Option<ccci_lock::FlockClaim>,
}

impl crate::Reaper for RecordsFirst<'_> {
    fn reap(&mut self, domain: &str, env: &[(&'static str, OsString)]) -> crate::ReapEnd {
        self.reap.reap(domain, env)
    }

    fn ready(&mut self) -> Result<(), String> {
        use ccci_lock::place::{before_reaping, refusal, Reaping};
        let here = self.here;
        let opened;
        let dir = match here.records {
            RecordsAt::Dir(dir) => dir,
            RecordsAt::Create(path) => {
                opened = FlockDir::open(path, true)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| {
                        format!("lock dir {} vanished while being created", quote_path(path))
                    })?;
                &opened
            }
        };
        let wait = ccci_lock::Wait::AtMost(RECORDS_WAIT);
        match before_reaping(dir, &here.place, wait).map_err(|e| format!("{e:#}"))? {
            Reaping::Clear(lock) => {
                self.held = Some(lock);
                Ok(())
            }
            Reaping::Elsewhere(found) => Err(refusal(&here.place, here.lock_dir, &found)),
            Reaping::Busy => Err(format!(
                "the records lock of lock dir {} stayed busy for {} (a run writing where it \
                 claims, stopped?)",
                quote_path(here.lock_dir),
                crate::human(RECORDS_WAIT)
            )),
        }
    }
}

impl Drop for RecordsFirst<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.held.take() {
            // Left behind, it is only an unlocked file the next taker locks.
            let _ = ccci_lock::Claim::remove(lock);
        }
    }
}

/// How old the snapshot of the kernel's lock table may be that tells a
/// young claim held (live) from free (young) in `-v` and `--json` reports:
/// one reading per this long, not one per lockfile (see
/// `ccci_lock::FlockDir::reuse_lock_table`). Reaping never depends on it.
const LOCK_TABLE_AGE: std::time::Duration = std::time::Duration::from_millis(200);

/// One pass over the lock dir `backend`, under its pass lock.
/// The pass lock is released (and removed) when this returns, before the
/// process ends, also by a signal.
fn run_pass<B: Backend>(
    cli: &Cli,
    settings: &Settings,
    backend: &B,
    here: &Here<'_>,
    tally: &Tally,
) -> anyhow::Result<Ended> {
    let _pass_lock = match backend.pass_lock(!cli.dry_run)? {
        PassLock::Busy => {
            ccci_common::say_action!("another janitor pass is running: this one examines nothing");
            return Ok(Ended::Code(exit::SUCCESS));
        }
        held_or_missing => held_or_missing,
    };
    // With etcd, the host's lock dir's pass lock too: one pass at a time
    // reads and guards its records (see ccci_lock::place).
    let _local_pass_lock = match here.local {
        Some(local) => match local.pass_lock(!cli.dry_run)? {
            PassLock::Busy => {
                say!(
                    "another janitor pass holds the pass lock of lock dir {}: this one \
                     examines nothing",
                    ccci_common::names::quote_path(here.lock_dir)
                );
                return Ok(Ended::Code(exit::SUCCESS));
            }
            held_or_missing => Some(held_or_missing),
        },
        None => None,
    };
    // Where the host's runs claim, read before anything is listed; a lock
    // dir that does not exist yet records nothing.
    if let RecordsAt::Dir(dir) = here.records {
        let elsewhere = ccci_lock::place::elsewhere(dir.safe_dir(), &here.place)?;
        if !elsewhere.is_empty() {
            say!(
                "{}",
                ccci_lock::place::refusal(&here.place, here.lock_dir, &elsewhere)
            );
            return Ok(Ended::Code(exit::TOOL_FAILED));
        }
    }
    let domains = candidates(backend, settings.deployed.as_ref())?;
    let mut reaper = RecordsFirst {
        reap: ReapCommand {
            argv: cli.reap_command.clone(),
            timeout: cli.reap_timeout,
            verbose: cli.verbose,
        },
        here,
        held: None,
    };
    let mut stdout = std::io::stdout().lock();
    let mut examined_count = 0usize;
    let mut report = |examined: &Examined| -> anyhow::Result<()> {
        examined_count += 1;
        tally.count(examined.outcome);
        if cli.verbose || examined.level > Level::Info {
            ccci_common::cli::try_emit_at(examined.level.priority(), format_args!("{examined}"))
                .context("cannot write to stderr")?;
        }
        if cli.json {
            serde_json::to_writer(&mut stdout, &examined.json())
                .map_err(std::io::Error::from)
                .and_then(|()| stdout.write_all(b"\n"))
                .and_then(|()| stdout.flush())
                .context("cannot write --json to stdout")?;
        }
        Ok(())
    };
    let summary = match pass(backend, settings, &domains, &mut reaper, &mut report) {
        Ok(summary) => summary,
        Err(e) => {
            // Nothing examined after this point was touched.
            say!(
                "pass cut short after {examined_count} of {} domains: {e:#}",
                domains.len()
            );
            return Ok(Ended::Code(exit::TOOL_FAILED));
        }
    };
    if let Some(sig) = summary.stopped_by {
        ccci_common::say_warning!("stopped by SIG{}", ccci_common::sys::signal_name(sig));
    }
    Ok(summary.ended())
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
            "--reap-timeout=0",
            "--reap-timeout=0ms",
        ] {
            let e = Cli::try_parse_from(["ccci-janitor", flag, "--", "true"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
        }
    }
}
