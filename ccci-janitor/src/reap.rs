//! Reaping one domain while the pass holds its claim.
//!
//! - [`Reaper`] runs the reap; [`ReapEnd`] says how it ended. The pass
//!   stamps the claim with its own record (`"reaper": true`) first, removes
//!   the claim when the reap succeeded, and puts the last holder's record
//!   back when it failed, for the next pass.
//!
//! Running REAP_COMMAND for one domain, under a deadline ([`ReapCommand`]):
//!
//! - The reap runs as a child in a process group of its own, with the
//!   domain as its last argument, `CCCI_DOMAIN` (and the claim's
//!   environment, `CCCI_LOCK_DOMAIN`/`CCCI_LOCK_FILE`) set, stdin from
//!   `/dev/null` and stdout sent to our stderr: stdout carries only `--json`.
//! - At `--reap-timeout` the whole process group gets SIGKILL at once. A
//!   gentler SIGTERM could let the leader exit while a member that ignores
//!   it keeps deleting things after the lock has been released; a hung reap
//!   is retried from scratch by the next pass anyway.
//! - Signals that would stop us (those `ccci-lock` forwards: TERM, INT, HUP,
//!   QUIT, ALRM, USR1, USR2) are passed to the group; we keep the lock until
//!   the reap has exited, settle the claim by its status, and then stop.
//! - The reap gets SIGTERM as its parent-death signal: if we are killed, the
//!   lock is gone and the reap is told to stop.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use ccci_common::exit;
use ccci_common::names::shell_quote_os;
use ccci_common::supervise::{self, Program, Watch};
use ccci_common::Domain;

use ccci_lock::{Backend, Claim, Holder};

use crate::pass::Pass;
use crate::{human, Examined, Level, Outcome};

/// The REAP_COMMAND of the command line.
#[derive(Debug, Clone)]
pub struct ReapCommand {
    /// The program and its first arguments; the domain is appended.
    pub argv: Vec<OsString>,
    /// After this long the reap's process group is killed.
    pub timeout: Duration,
    /// Say when a reap starts.
    pub verbose: bool,
}

impl ReapCommand {
    fn command(
        &self,
        domain: &Domain,
        env: &[(&'static str, OsString)],
    ) -> std::io::Result<Program> {
        let mut cmd = supervise::command(&self.argv).map_err(std::io::Error::other)?;
        let stdout = std::io::stderr().as_fd().try_clone_to_owned()?;
        let stdin = std::fs::File::open("/dev/null")?;
        cmd.arg(domain.as_str())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin.into())
            .stdout(stdout);
        Ok(cmd)
    }

    fn program(&self) -> String {
        shell_quote_os(
            self.argv
                .first()
                .map_or(std::ffi::OsStr::new(""), |p| p.as_os_str()),
        )
    }
}

impl Reaper for ReapCommand {
    fn reap(&mut self, domain: &Domain, env: &[(&'static str, OsString)]) -> ReapEnd {
        let failed = |detail: String| ReapEnd {
            ok: false,
            detail,
            stop: None,
        };
        let mut cmd = match self.command(domain, env) {
            Ok(cmd) => cmd,
            Err(e) => return failed(format!("cannot prepare {}: {e}", self.program())),
        };
        let watch = Watch {
            forward: supervise::FORWARDED.to_vec(),
            own_group: true,
            deadline: Some(self.timeout),
            deadline_signal: libc::SIGKILL,
            kill_after: None,
            death_signal: Some(libc::SIGTERM),
            // The janitor's tests run passes in their own process.
            whole_tree: false,
        };
        if self.verbose {
            ccci_common::say_debug!("{domain}: reaping");
        }
        let child = match supervise::spawn(&mut cmd, watch) {
            Ok(child) => child,
            Err(e) => return failed(format!("cannot run {}: {e}", self.program())),
        };
        let outcome = match child.wait() {
            Ok(outcome) => outcome,
            Err(e) => return failed(format!("cannot wait for {}: {e}", self.program())),
        };
        let status = exit::from_wait_status(outcome.status);
        let detail = if outcome.status.success() {
            "exited with status 0".to_string()
        } else if outcome.deadline_fired {
            format!(
                "timed out after {}; its process group was killed",
                human(self.timeout)
            )
        } else if let Some(sig) = outcome.status.signal() {
            format!(
                "killed by SIG{} (status {status})",
                ccci_common::sys::signal_name(sig)
            )
        } else {
            format!("exited with status {status}")
        };
        ReapEnd {
            ok: outcome.status.success(),
            detail,
            stop: outcome.received,
        }
    }
}

/// How a reap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapEnd {
    /// It succeeded (status 0): the claim may be removed.
    pub ok: bool,
    /// What happened, for the report.
    pub detail: String,
    /// A signal that asked us to stop while it ran: end the pass after it.
    pub stop: Option<libc::c_int>,
}

/// Runs the reap of one domain, while the pass holds its lock.
pub trait Reaper {
    /// Reaps `domain`; `env` is the environment the reap gets
    /// (`CCCI_DOMAIN`, and the claim's own).
    fn reap(&mut self, domain: &Domain, env: &[(&'static str, OsString)]) -> ReapEnd;
    /// Called once, before the pass's first reap, while that domain's
    /// claim is held: `Err(why)` ends the pass there with nothing reaped
    /// (125). The command-line janitor takes the records lock here and
    /// reads the records of where the host's runs claim again
    /// ([`ccci_lock::place`]). The default: ready.
    fn ready(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl<F: FnMut(&Domain, &[(&'static str, OsString)]) -> ReapEnd> Reaper for F {
    fn reap(&mut self, domain: &Domain, env: &[(&'static str, OsString)]) -> ReapEnd {
        self(domain, env)
    }
}

/// The reap of a held claim.
impl<B: Backend> Pass<'_, B> {
    /// Runs the reap while holding `claim`, with our own record in it
    /// (`"reaper": true`, so that a run waiting for the domain is told a
    /// janitor is reaping it); removes the claim on success, and puts the
    /// last holder's record back on failure, for the next pass's report.
    /// The claim of an `adopted` host keeps naming that host while it is
    /// reaped: a janitor that dies during the reap leaves it to the next
    /// adopting pass, never to this host's own rules.
    pub(crate) fn reap(
        &mut self,
        mut claim: B::Claim,
        holder: Option<Holder>,
        age: Option<Duration>,
        why: &str,
        adopted: Option<String>,
    ) -> Examined {
        let domain = claim.domain().clone();
        if !self.ready {
            if let Err(why) = self.reaper.ready() {
                // Given back as found: removed if this pass created it.
                let kept = claim.give_up().err();
                self.summary.refused = true;
                let kept = kept.map_or(String::new(), |e| format!(" ({e:#})"));
                let detail = format!("not reaped: {why}{kept}");
                return Examined::new(&domain, Outcome::Skipped, Level::Error, detail.into())
                    .with(holder, age);
            }
            self.ready = true;
        }
        let mut env = claim.env();
        env.push(("CCCI_DOMAIN", domain.as_str().into()));
        let mut reaper = Holder {
            reaper: Some(true),
            ..Holder::this_process(None)
        };
        if adopted.is_some() {
            reaper.host = adopted;
        }
        // The record is diagnostics only: a claim we cannot write is still
        // ours to reap.
        let _ = claim.stamp(&reaper);
        let end = self.reaper.reap(&domain, &env);
        if end.stop.is_some() {
            self.summary.stopped_by = end.stop;
        }
        let (outcome, level, detail) = if end.ok {
            match claim.remove() {
                Ok(()) => (Outcome::Reaped, Level::Action, format!("reaped ({why})")),
                Err(e) => {
                    self.summary.errors = true;
                    (
                        Outcome::Failed,
                        Level::Error,
                        format!("reaped ({why}), but the lockfile stays: {e:#}"),
                    )
                }
            }
        } else {
            if let Some(last) = &holder {
                let _ = claim.stamp(last);
            }
            drop(claim);
            self.summary.reap_failed = true;
            (
                Outcome::Failed,
                Level::Error,
                format!(
                    "reap failed: {} ({why}); lockfile kept for the next pass",
                    end.detail
                ),
            )
        };
        Examined::new(&domain, outcome, level, detail.into()).with(holder, age)
    }
}
