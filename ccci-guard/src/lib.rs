//! Lifetime guards for a command: a parent-death signal, a refusal to run
//! orphaned, a deadline, and optionally a small supervisor (SPEC §3).
//!
//! # Guarantees
//!
//! 1. **No orphaned start.** [`install`] first resets the signal mask and
//!    dispositions (an inherited `SIG_IGN` would swallow the parent-death
//!    signal), then sets the parent-death signal, and only then compares the
//!    parent with the expected one. A parent that dies before the signal is
//!    set is seen by the comparison; one that dies after it is reported by
//!    the kernel. There is no moment in between where its death goes
//!    unnoticed, so COMMAND either never starts or is told to stop.
//! 2. **The expected parent is known before anything else runs.** Without
//!    `--parent`, the expected parent is the one read as the very first thing
//!    in `main`; the caller can close the window between its fork and our
//!    start only by naming itself (`--parent $$`).
//! 3. **Exec mode costs nothing.** The guards are process attributes that
//!    survive `execve` (the parent-death signal, for binaries that are not
//!    set-id; the `ITIMER_REAL` timer), so COMMAND replaces ccci-guard and
//!    keeps its pid. The deadline never extends one armed earlier: an alarm
//!    that is due sooner is left as it is.
//! 4. **The supervisor never lies about the outcome.** In [`supervise`]
//!    mode COMMAND runs in its own process group; signals go to the group
//!    only while COMMAND is not yet reaped (its pid pins the group id), a
//!    group that is already gone is not an error, COMMAND is always reaped,
//!    and it ends by SIGALRM if the deadline fired (a shell sees 142), else
//!    as COMMAND ended: with its exit status, or by its signal, re-raised on
//!    itself without a core dump (SPEC §1 "Signal deaths propagate"), so a
//!    `ccci-lock` around it sees the signal death and keeps its lockfile.
//!
//! # What lives where
//!
//! This file holds the guards (exec mode and the supervisor); [`cli`] the
//! command line. Starting, forwarding and the kill timer are shared with
//! `ccci-lock`, in `ccci_common::supervise`.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cli;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::time::Duration;

use anyhow::Context;
use ccci_common::exit::Ended;
use ccci_common::supervise::{self, Finished, Watch};
use ccci_common::sys;

/// The signals the supervisor passes on to COMMAND's process group: the
/// shared list. ALRM is not in SPEC §3's list; it is passed on too, so that
/// an alarm armed before ccci-guard was exec'd (an outer deadline) reaches
/// COMMAND instead of killing the supervisor.
pub use ccci_common::supervise::FORWARDED;

/// The parent-death signal to set: a signal number, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeathSignal(pub Option<libc::c_int>);

/// Parses `--pdeathsig`: `none`, a name with or without `SIG` in any case
/// (`TERM`, `SIGKILL`, `hup`), or a signal number (`15`, real-time ones too).
pub fn parse_death_signal(value: &str) -> Result<DeathSignal, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(DeathSignal(None));
    }
    let valid = 1..=libc::SIGRTMAX();
    if let Ok(number) = value.parse::<libc::c_int>() {
        if valid.contains(&number) && !value.starts_with('+') {
            return Ok(DeathSignal(Some(number)));
        }
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match name.parse::<nix::sys::signal::Signal>() {
        Ok(sig) => Ok(DeathSignal(Some(sig as libc::c_int))),
        Err(_) => Err(format!(
            "not a signal: use a name such as TERM, SIGKILL or HUP, a number from 1 to {}, \
             or none",
            valid.end()
        )),
    }
}

/// ccci-guard's parent is not the one it must have: COMMAND is not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The parent it must have (`--parent`, or the one it started with).
    pub expected: u32,
    /// Its parent now.
    pub actual: u32,
    /// ccci-guard's own pid.
    pub own: u32,
    /// Whether a process `expected` still exists (then it is not our parent).
    pub expected_exists: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refusal {
            expected,
            actual,
            own,
            expected_exists,
        } = *self;
        write!(f, "refusing to run: parent {expected} has exited")?;
        if expected == own {
            write!(
                f,
                ": {own} is ccci-guard itself, so the shell exec'd it (an 'exec', or the last \
                 command of a 'bash -c' string); keep the shell as the parent when passing \
                 --parent $$"
            )
        } else if expected_exists {
            write!(
                f,
                " or is not the parent of ccci-guard (that is {actual}); --parent must name \
                 the process that starts ccci-guard (a subshell or pipeline stage has a pid \
                 of its own)"
            )
        } else {
            write!(f, " (ccci-guard's parent is now {actual})")
        }
    }
}

impl std::error::Error for Refusal {}

/// This process's parent now.
pub fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// Compares this process's parent with `expected`.
pub fn check_parent(expected: u32) -> Result<(), Refusal> {
    let actual = parent_pid();
    if actual == expected {
        Ok(())
    } else {
        Err(Refusal {
            expected,
            actual,
            own: std::process::id(),
            expected_exists: ccci_common::proc::alive(expected),
        })
    }
}

/// Installs the guards that hold in both modes, in the order that leaves no
/// gap (see the module doc): signal state reset, parent-death signal,
/// parent check. A [`Refusal`] means COMMAND must not run.
pub fn install(expected_parent: u32, death_signal: DeathSignal) -> anyhow::Result<()> {
    sys::reset_signals();
    if let DeathSignal(Some(sig)) = death_signal {
        sys::set_parent_death_signal(sig).with_context(|| {
            format!(
                "cannot set the parent-death signal {}",
                sys::signal_name(sig)
            )
        })?;
    }
    check_parent(expected_parent)?;
    Ok(())
}

/// Arms this process's alarm timer for `deadline`, unless an alarm armed
/// earlier is due sooner. The timer survives exec.
pub fn arm_deadline(deadline: Duration) -> io::Result<()> {
    match sys::alarm_timer()? {
        Some(left) if left <= deadline => Ok(()),
        _ => sys::set_alarm_timer(Some(deadline)),
    }
}

/// Replaces this process with `argv`; returns only when that failed, with
/// the status to exit with (126 or 127).
pub fn exec(argv: &[OsString]) -> anyhow::Result<Ended> {
    Ok(Ended::Code(supervise::exec(&mut supervise::command(argv)?)))
}

/// How the supervisor watches COMMAND.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervision {
    /// COMMAND's parent-death signal (the supervisor being its parent).
    pub death_signal: Option<libc::c_int>,
    /// When the group gets SIGALRM.
    pub deadline: Option<Duration>,
    /// How long after the deadline the group gets SIGKILL.
    pub kill_after: Option<Duration>,
    /// Cover COMMAND's whole tree (a child subreaper; every signal to every
    /// descendant, also one that left the group; wait until all have
    /// exited): see `Watch::whole_tree`. Off only where this process has
    /// other children.
    pub whole_tree: bool,
}

/// Runs `argv` as a child in its own process group and stays its parent:
/// [`FORWARDED`] signals go to the group, the deadline sends SIGALRM to the
/// group and `kill_after` later SIGKILL. Returns `Ended::Signal(SIGALRM)`
/// if the deadline fired, else how COMMAND ended (its status, or the signal
/// that killed it; 126/127 if it could not start). With `whole_tree`,
/// every signal also reaches descendants that left the group, and the
/// supervisor returns only when COMMAND and all its descendants have
/// exited.
pub fn supervise(argv: &[OsString], how: Supervision) -> anyhow::Result<Ended> {
    let mut cmd = supervise::command(argv)?;
    let watch = Watch {
        forward: FORWARDED.to_vec(),
        own_group: true,
        deadline: how.deadline,
        deadline_signal: libc::SIGALRM,
        kill_after: how.kill_after,
        death_signal: how.death_signal,
        whole_tree: how.whole_tree,
    };
    Ok(
        match supervise::run(&mut cmd, watch).context("cannot wait for COMMAND")? {
            Finished::Ran(outcome) if outcome.deadline_fired => Ended::Signal(libc::SIGALRM),
            finished => finished.ended(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn death_signals_by_name_number_or_none() {
        let sig = |v: &str| parse_death_signal(v).map(|d| d.0);
        assert_eq!(sig("TERM"), Ok(Some(libc::SIGTERM)));
        assert_eq!(sig("SIGTERM"), Ok(Some(libc::SIGTERM)));
        assert_eq!(sig("kill"), Ok(Some(libc::SIGKILL)));
        assert_eq!(sig("SigHup"), Ok(Some(libc::SIGHUP)));
        assert_eq!(sig("9"), Ok(Some(9)));
        assert_eq!(sig("34"), Ok(Some(34)));
        assert_eq!(sig("none"), Ok(None));
        assert_eq!(sig("NONE"), Ok(None));
        for bad in [
            "",
            "0",
            "-15",
            "+15",
            "65",
            "99999999999",
            "TERMX",
            "SIG",
            "SIGSIGTERM",
            "15s",
            " TERM",
        ] {
            assert!(sig(bad).is_err(), "{bad:?} parsed as {:?}", sig(bad));
        }
    }

    #[test]
    fn parent_check_compares_with_the_real_parent() {
        let parent = parent_pid();
        assert_eq!(check_parent(parent), Ok(()));
        let refusal = check_parent(parent + 1).unwrap_err();
        assert_eq!(refusal.actual, parent);
        assert_eq!(refusal.own, std::process::id());
    }

    #[test]
    fn refusals_name_the_parent_and_the_likely_cause() {
        let own = std::process::id();
        let text = |expected, expected_exists| {
            Refusal {
                expected,
                actual: 1,
                own,
                expected_exists,
            }
            .to_string()
        };
        assert_eq!(
            text(4321, false),
            "refusing to run: parent 4321 has exited (ccci-guard's parent is now 1)"
        );
        assert!(
            text(own, true).starts_with(&format!(
                "refusing to run: parent {own} has exited: {own} is ccci-guard itself"
            )),
            "{}",
            text(own, true)
        );
        assert!(
            text(4321, true).starts_with(
                "refusing to run: parent 4321 has exited or is not the parent of ccci-guard \
                 (that is 1)"
            ),
            "{}",
            text(4321, true)
        );
    }

    #[test]
    fn a_dead_parent_is_told_from_a_live_stranger() {
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        assert!(!check_parent(dead).unwrap_err().expected_exists);
        assert!(
            check_parent(std::process::id())
                .unwrap_err()
                .expected_exists
        );
    }
}
