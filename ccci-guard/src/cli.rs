//! The `ccci-guard` command line (SPEC §3): the clap definition, which also
//! feeds the man page and completions, and the code that runs it.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use ccci_common::duration;
use ccci_common::exit::Ended;
use ccci_common::run::parse_pid;

use crate::{
    arm_deadline, exec, install, parent_pid, parse_death_signal, supervise, DeathSignal,
    Supervision,
};

const AFTER_HELP: &str = "\
Order of the guards: the signal mask and the dispositions of TERM, INT, HUP,
QUIT, ALRM, PIPE, CHLD, USR1, USR2, TTIN and TTOU are reset; the parent-death
signal is set; then the parent is checked. If it is not the expected one
(--parent PID, else the parent ccci-guard started with), ccci-guard exits 125
and COMMAND never runs. A parent that dies later sends the parent-death signal.

Default mode: the deadline is armed on the process's alarm timer and ccci-guard
execs COMMAND, which keeps the pid, the parent-death signal and the timer
(an alarm armed earlier that is due sooner is kept). A COMMAND that traps ALRM
chooses its own exit status.

--supervise (implied by --kill-after): ccci-guard stays COMMAND's parent and
runs it in a process group of its own, with the same parent-death signal.
TERM, INT, HUP, QUIT, USR1, USR2 (and ALRM) received by ccci-guard go to the
group; at the deadline the group gets ALRM, and --kill-after later KILL.
If the deadline fired, ccci-guard ends by SIGALRM (a shell sees 142); if
COMMAND was killed by signal N, ccci-guard ends by signal N (128+N), without
a core dump, as timeout(1) does; otherwise it exits with COMMAND's status.
Processes of the group that outlive COMMAND are left alone, as timeout(1)
leaves them.

Typical use, from the harness shell (not exec'd, so $$ stays the parent):
  ccci-guard --parent $$ --deadline 60m -- ccci-lock \"$DOMAIN\" -- ./run-tests.sh

Environment:
  ccci-guard reads no variables; COMMAND gets the environment unchanged.";

/// Run COMMAND with lifetime guards: parent-death signal, orphan refusal,
/// deadline, and optionally a small supervisor.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-guard",
    version,
    after_help = ccci_common::cli::after_help(AFTER_HELP),
    override_usage = "ccci-guard [--parent PID] [--pdeathsig SIG|none] [--deadline DURATION]\n                  [--supervise] [--kill-after DURATION] -- COMMAND [ARG...]"
)]
pub struct Cli {
    /// The configuration file
    #[command(flatten)]
    pub config: ccci_common::args::ConfigArg,

    /// The process that must be ccci-guard's parent [default: the parent it started with]
    #[arg(long, value_name = "PID", allow_hyphen_values = true, value_parser = parse_pid)]
    pub parent: Option<u32>,

    /// Signal sent when the parent dies: a name (TERM, SIGKILL), a number, or none
    #[arg(long, value_name = "SIG|none", default_value = "TERM", allow_hyphen_values = true,
          value_parser = parse_death_signal)]
    pub pdeathsig: DeathSignal,

    /// Send SIGALRM after DURATION (90s, 2m, 1h30m, 500ms, bare seconds; more than 0)
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true,
          value_parser = duration::positive)]
    pub deadline: Option<Duration>,

    /// Stay COMMAND's parent: own process group, forwarded signals, end by ALRM (142) at the deadline
    #[arg(long)]
    pub supervise: bool,

    /// Send SIGKILL to COMMAND's group DURATION after the deadline (implies --supervise)
    #[arg(long, value_name = "DURATION", requires = "deadline", allow_hyphen_values = true,
          value_parser = duration::positive)]
    pub kill_after: Option<Duration>,

    /// The command to run (after --)
    #[arg(value_name = "COMMAND", last = true, required = true)]
    pub command: Vec<OsString>,
}

/// The whole of `ccci-guard`'s `main`: the parent is read before anything
/// else, so "the parent it started with" is as early as it can be.
pub fn main() -> ExitCode {
    let started_with = parent_pid();
    ccci_common::cli::main("ccci-guard", move |cli: Cli| run(cli, started_with))
}

/// Runs a parsed command line; `started_with` is the parent read at start.
/// Returns the exit status, unless COMMAND was exec'd.
pub fn run(cli: Cli, started_with: u32) -> anyhow::Result<Ended> {
    install(cli.parent.unwrap_or(started_with), cli.pdeathsig)?;
    if cli.supervise || cli.kill_after.is_some() {
        return supervise(
            &cli.command,
            Supervision {
                death_signal: cli.pdeathsig.0,
                deadline: cli.deadline,
                kill_after: cli.kill_after,
                whole_tree: true,
            },
        );
    }
    if let Some(deadline) = cli.deadline {
        arm_deadline(deadline).context("cannot arm the deadline timer")?;
    }
    exec(&cli.command)
}

#[cfg(test)]
mod tests {
    use super::*;

    ccci_common::clap_definition_test!(Cli);

    #[test]
    fn defaults_and_the_double_dash() {
        assert!(Cli::try_parse_from(["ccci-guard", "true"]).is_err());
        let cli = Cli::try_parse_from(["ccci-guard", "--", "sh", "-c", "exit 3"]).unwrap();
        assert_eq!(cli.pdeathsig, DeathSignal(Some(libc::SIGTERM)));
        assert_eq!(cli.parent, None);
        assert_eq!(cli.deadline, None);
        assert!(!cli.supervise);
        assert_eq!(cli.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn durations_must_be_positive_and_kill_after_needs_a_deadline() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["ccci-guard"].iter().chain(args).chain(&["--", "true"]))
        };
        let cli = parse(&["--deadline", "500ms", "--kill-after", "2s"]).unwrap();
        assert_eq!(cli.deadline, Some(Duration::from_millis(500)));
        assert_eq!(cli.kill_after, Some(Duration::from_secs(2)));
        for bad in [
            &["--deadline", "0"][..],
            &["--deadline", "0s"],
            &["--deadline", "-1"],
            &["--deadline", "5x"],
            &["--kill-after", "5s"],
            &["--deadline", "1s", "--kill-after", "0"],
            &["--parent", "0"],
            &["--parent", "x"],
            &["--pdeathsig", "TERMX"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
