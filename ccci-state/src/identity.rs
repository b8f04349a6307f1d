//! Run identity (SPEC §1 "Run identity"), shared by `ccci-state` and
//! `ccci-abradir`.
//!
//! A run is named by its run id (`--run-id` | `$CCCI_RUN_ID` | `manual`) and
//! its harness pid (`--pid` | `$CCCI_HARNESS_PID` | our parent pid). The run
//! key `<run-id>-<pid>` names the run's directories. The pid is part of the
//! key because run ids repeat: two manual runs, or a CI system that reuses a
//! build number after a restart, must still get separate state.
//!
//! A pid alone can be reused after its process is gone, so code that must
//! tell "this run" from "an old run with the same key" compares the process
//! start time ([`start_time`]) recorded when the run began: [`harness`] says
//! whether the recorded harness is still running, has exited, or its pid now
//! names another process.

use clap::Args;

/// The run id used when none is given.
pub const MANUAL: &str = "manual";

/// The flags that name a run; flatten into a tool's clap definition.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Run id [default: manual]
    #[arg(long, value_name = "ID", env = "CCCI_RUN_ID", hide_env_values = true, value_parser = ccci_common::names::run_id,
          global = true)]
    pub run_id: Option<String>,

    /// Harness pid [default: the parent pid]
    #[arg(long, value_name = "PID", env = "CCCI_HARNESS_PID", hide_env_values = true, value_parser = parse_pid,
          global = true)]
    pub pid: Option<u32>,
}

/// A resolved run identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    /// The run id.
    pub run_id: String,
    /// The harness pid.
    pub pid: u32,
}

impl RunArgs {
    /// Resolves the identity: given values, else `manual` and the parent pid.
    pub fn resolve(&self) -> RunKey {
        RunKey {
            run_id: self.run_id.clone().unwrap_or_else(|| MANUAL.to_string()),
            pid: self.pid.unwrap_or_else(parent_pid),
        }
    }
}

impl RunKey {
    /// `<run-id>-<pid>`: the name of the run's directories.
    pub fn key(&self) -> String {
        format!("{}-{}", self.run_id, self.pid)
    }

    /// The identity a directory name made by [`RunKey::key`] stands for;
    /// `None` for any other name. The pid is what follows the last `-`, so
    /// run ids that contain `-` come back whole.
    pub fn parse(key: &str) -> Option<RunKey> {
        let (run_id, digits) = key.rsplit_once('-')?;
        let run_id = ccci_common::names::run_id(run_id).ok()?;
        let pid = parse_pid(digits).ok()?;
        // Only the canonical spelling: "007" would name another directory.
        (pid.to_string() == digits).then_some(RunKey { run_id, pid })
    }
}

/// Our parent's pid: the harness shell when a tool is run from it (also
/// inside `$(…)`, where the shell execs the tool in the forked subshell).
pub fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// A pid as given on the command line: a positive decimal number that fits
/// in `pid_t`.
pub fn parse_pid(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(pid) if pid > 0 && pid <= i32::MAX as u32 && !value.starts_with('+') => Ok(pid),
        _ => Err("not a valid pid: it must be a positive whole number".into()),
    }
}

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); `None` when there is no such process. Together with
/// the pid it names a process uniquely until reboot.
pub fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, started)| started)
}

/// The state letter (field 3) and start time (field 22) of `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..." — comm may contain spaces and ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `fields` now starts at field 4; starttime is field 22.
    let started = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, started))
}

/// Whether `pid` is the same process that had `started` as its start time.
pub fn is_alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// What became of a run's harness, judged from its pid and the start time
/// recorded when the run began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// The recorded process is still running: the run is live.
    Running,
    /// No process has the pid any more (or only a zombie): the run is over.
    Gone,
    /// The pid now names another process (a different start time, or none
    /// was recorded because the pid was free then): the run is over, and a
    /// new run may be using its key.
    Replaced,
}

/// Classifies the harness `pid` against `recorded`, the start time taken
/// when the run began (`None` when the pid named no process then).
pub fn harness(pid: u32, recorded: Option<u64>) -> Harness {
    match proc_stat(pid) {
        None => Harness::Gone,
        Some(('Z' | 'X', _)) => Harness::Gone,
        Some((_, now)) if recorded == Some(now) => Harness::Running,
        Some(_) => Harness::Replaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let key = RunKey {
            run_id: "build-7".into(),
            pid: 42,
        };
        assert_eq!(key.key(), "build-7-42");
        let manual = RunArgs::default().resolve();
        assert_eq!(manual.run_id, MANUAL);
        assert_eq!(manual.pid, parent_pid());
    }

    #[test]
    fn keys_parse_back() {
        for (run_id, pid) in [("build-7", 42), ("manual", 1), ("a.b_c-d-9", 2147483647)] {
            let key = RunKey {
                run_id: run_id.into(),
                pid,
            };
            assert_eq!(RunKey::parse(&key.key()), Some(key));
        }
        for bad in [
            "manual",
            "manual-",
            "-12",
            "manual-0",
            "manual-x",
            "manual-+5",
            "manual-007",
            ".tmp-12",
            "a/b-12",
        ] {
            assert_eq!(RunKey::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pid("1234"), Ok(1234));
        for bad in ["", "0", "-1", "+5", "x", "1.5", "4294967296", "2147483648"] {
            assert!(parse_pid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn start_times_tell_processes_apart() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(is_alive(me, t));
        assert!(!is_alive(me, t + 1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(start_time(pid), None);
    }

    #[test]
    fn harness_states() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert_eq!(harness(me, Some(t)), Harness::Running);
        assert_eq!(harness(me, Some(t + 1)), Harness::Replaced);
        assert_eq!(harness(me, None), Harness::Replaced);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie is a harness that has exited.
        let start = std::time::Instant::now();
        while proc_stat(pid).is_some_and(|(state, _)| state != 'Z') {
            assert!(start.elapsed().as_secs() < 30, "`true` never exited");
            std::thread::yield_now();
        }
        assert_eq!(harness(pid, start_time(pid)), Harness::Gone);
        child.wait().unwrap();
        assert_eq!(harness(pid, Some(1)), Harness::Gone);
    }
}
