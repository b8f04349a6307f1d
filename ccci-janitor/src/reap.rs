//! Running REAP_COMMAND for one domain, under a deadline.
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

use crate::{human, ReapEnd, Reaper};

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
    fn command(&self, domain: &str, env: &[(&'static str, OsString)]) -> std::io::Result<Program> {
        let mut cmd = supervise::command(&self.argv).map_err(std::io::Error::other)?;
        let stdout = std::io::stderr().as_fd().try_clone_to_owned()?;
        let stdin = std::fs::File::open("/dev/null")?;
        cmd.arg(domain)
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
    fn reap(&mut self, domain: &str, env: &[(&'static str, OsString)]) -> ReapEnd {
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
