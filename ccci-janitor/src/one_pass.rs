//! One pass from the command line: every input read and checked before the
//! lock dir is touched, then where the pass looks (etcd, the lock dir, or a
//! lock dir that is missing: [`crate::lockdir`], and what the last pass saw
//! of it: [`crate::boot`]), and the pass itself under the pass lock (and,
//! with etcd, the host's lock dir's pass lock too), after the records of
//! where the host's runs claim ([`crate::records`]), reporting each domain on
//! stderr and `--json` as soon as it is settled.

use std::io::Write;

use anyhow::Context;

use ccci_common::cli::UsageError;
use ccci_common::exit::{self, Ended};
use ccci_common::names::quote_path;
use ccci_common::say;
use ccci_lock::backend::Locks;
use ccci_lock::place::Place;
use ccci_lock::{Backend, FlockDir, PassLock};

use crate::boot::{Seen, Verdict};
use crate::cli::{check_flags, Cli};
use crate::inputs::{read_input, where_and_which};
use crate::reap::ReapCommand;
use crate::records::{Here, RecordsAt, RecordsFirst};
use crate::tally::Tally;
use crate::{
    candidates, missing_lock_dir, pass, read_deployed, Examined, Level, MissingLockDir, NoClaims,
    Settings,
};

/// One pass, counted in `tally`; how the process ends.
pub(crate) fn one_pass(cli: &Cli, tally: &Tally) -> anyhow::Result<Ended> {
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
    // Chosen as a wrap chooses (ccci_lock::backend), so the pass looks
    // where the runs given the same flags and variables claim.
    let locks = Locks::of(etcd, &cli.lock_dir)?;
    let lock_dir = locks.local_dir(&cli.lock_dir)?;
    if let Locks::Flock(_) = locks {
        tally.set_backend(format!(
            "lockfiles in {}",
            ccci_common::names::quote_path(&lock_dir)
        ));
    }
    if let Locks::Etcd(config) = locks {
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
