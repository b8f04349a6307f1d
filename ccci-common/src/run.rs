//! Run identity (SPEC §1 "Run identity"), one home for every tool that
//! needs it (`ccci-state`, `ccci-abradir`, `ccci-guard`'s `--parent`).
//!
//! A run is named by its run id (`--run-id` | `$CCCI_RUN_ID` | `manual`) and
//! its harness pid (`--pid` | `$CCCI_HARNESS_PID` | our parent pid). The run
//! key `<run-id>-<pid>` names the run's directories. The pid is part of the
//! key because run ids repeat: two manual runs, or a CI system that reuses a
//! build number after a restart, must still get separate state.
//!
//! A pid alone can be reused after its process is gone, so a run's
//! directory keeps a [`Record`] of its harness (`.harness`: pid, start time,
//! pid namespace, boot), written when the run began. [`Record::harness`]
//! says whether that harness still runs, has exited, or its pid now names
//! another process; a record written in another pid namespace is never
//! judged by this namespace's pids ([`Harness::Foreign`]), and one written
//! before a reboot names nothing that still runs.

use crate::names::quote_path;
use std::ffi::OsString;
use std::io::Read;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::{self, UsageError};
use crate::fs::{OpenHow, SafeDir};
use crate::proc;

/// The run id used when none is given.
pub const MANUAL: &str = "manual";

/// The file in a run's directory that records its harness ([`Record`]). Its
/// leading dot keeps it apart from every valid state NAME and recipe name.
pub const RECORD: &str = ".harness";

/// The most of a record file that is read.
const RECORD_MAX: u64 = 4096;

/// The flags that name a run; flatten into a tool's clap definition. The
/// values are raw: [`RunArgs::resolve`] validates them, naming the flag or
/// the variable they came from (see [`crate::cli`]).
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Run id [default: manual]
    #[arg(
        long,
        value_name = "ID",
        env = "CCCI_RUN_ID",
        hide_env_values = true,
        allow_hyphen_values = true,
        global = true
    )]
    pub run_id: Option<OsString>,

    /// Harness pid [default: the parent pid]
    #[arg(
        long,
        value_name = "PID",
        env = "CCCI_HARNESS_PID",
        hide_env_values = true,
        allow_hyphen_values = true,
        global = true
    )]
    pub pid: Option<OsString>,
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
    /// Validates the given values and resolves the identity: given values,
    /// else `manual` and the parent pid. A bad value is a [`UsageError`]
    /// that names its flag or variable.
    pub fn resolve(&self) -> Result<RunKey, UsageError> {
        let run_id = cli::checked("run_id", self.run_id.as_deref(), crate::names::run_id)?;
        let pid = cli::checked("pid", self.pid.as_deref(), parse_pid)?;
        Ok(RunKey {
            run_id: run_id.unwrap_or_else(|| MANUAL.to_string()),
            pid: pid.unwrap_or_else(parent_pid),
        })
    }

    /// Whether `--run-id` or `--pid` was typed on the command line (not
    /// taken from a variable): an explicit run wins over inherited exact
    /// paths (SPEC §6).
    pub fn explicit(&self) -> bool {
        (self.run_id.is_some() && cli::source("run_id") == "--run-id")
            || (self.pid.is_some() && cli::source("pid") == "--pid")
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
        let run_id = crate::names::run_id(run_id).ok()?;
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

/// What became of a run's harness, judged from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// The recorded process is still running: the run is live.
    Running,
    /// No process has the pid any more (or only a zombie), or the record
    /// is from an earlier boot: the run is over.
    Gone,
    /// The pid now names another process (a different start time, or none
    /// was recorded because the pid was free then): the run is over, and a
    /// new run may be using its key.
    Replaced,
    /// Recorded in another pid namespace (another container): its pid
    /// means nothing here, so the run cannot be judged and is left alone.
    Foreign,
}

/// Classifies the harness `pid` of this namespace and boot against
/// `recorded`, the start time taken when the run began (`None` when the pid
/// named no process then).
pub fn harness(pid: u32, recorded: Option<u64>) -> Harness {
    match proc::stat(pid) {
        None => Harness::Gone,
        Some(proc::Stat {
            state: 'Z' | 'X', ..
        }) => Harness::Gone,
        Some(stat) if recorded == Some(stat.start) => Harness::Running,
        Some(_) => Harness::Replaced,
    }
}

/// Who began a run: kept in the run's directory as one JSON line
/// ([`RECORD`]). The one record of a run's harness that `ccci-state` and
/// `ccci-abradir` both write and judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The run id.
    pub run_id: String,
    /// The harness pid.
    pub pid: u32,
    /// The harness's start time ([`proc::start_time`]); `None` when the
    /// pid named no process when the record was made.
    pub start_time: Option<u64>,
    /// When the record was made, RFC 3339.
    pub created: String,
    /// The pid namespace the pid belongs to ([`proc::pid_namespace`]);
    /// missing in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// The boot it was made in ([`proc::boot_id`]); missing in records of
    /// older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl Record {
    /// A record for `key`'s harness as it is now.
    pub fn now(key: &RunKey) -> Record {
        Record {
            run_id: key.run_id.clone(),
            pid: key.pid,
            start_time: proc::start_time(key.pid),
            created: cli::now_rfc3339(),
            pid_ns: proc::pid_namespace(),
            boot_id: proc::boot_id(),
        }
    }

    /// What became of the recorded harness. A record of another boot is
    /// [`Harness::Gone`]; one of another pid namespace is
    /// [`Harness::Foreign`] and never judged by our pids.
    pub fn harness(&self) -> Harness {
        if let (Some(then), Some(now)) = (&self.boot_id, proc::boot_id()) {
            if *then != now {
                return Harness::Gone;
            }
        }
        if let (Some(then), Some(now)) = (self.pid_ns, proc::pid_namespace()) {
            if then != now {
                return Harness::Foreign;
            }
        }
        harness(self.pid, self.start_time)
    }

    /// Whether this record is of the run `key`.
    pub fn is_for(&self, key: &RunKey) -> bool {
        self.pid == key.pid && self.run_id == key.run_id
    }

    /// The record in `dir`; `None` when it is missing or unreadable.
    pub fn read(dir: &SafeDir) -> Option<Record> {
        let file = dir.open_file(RECORD, OpenHow::Read).ok()?;
        let mut buf = Vec::new();
        file.take(RECORD_MAX).read_to_end(&mut buf).ok()?;
        serde_json::from_slice(&buf).ok()
    }

    /// Writes a record of `key`'s harness as it is now into `dir`, whole
    /// (write, then rename).
    pub fn write(dir: &SafeDir, key: &RunKey) -> anyhow::Result<Record> {
        let record = Record::now(key);
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        dir.replace(RECORD, &line)?;
        Ok(record)
    }
}

/// What a `gc` (of `ccci-state` or `ccci-abradir`) did with one run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// The harness is running: kept.
    Live,
    /// Someone holds the dir's lock right now: kept.
    InUse,
    /// No record, and the pid names a process: it cannot be told apart
    /// from the harness, so the dir is kept.
    Unrecorded,
    /// Recorded in another pid namespace: never judged by our pids, kept.
    Foreign,
    /// The harness has exited, or its pid names another process: removed.
    Removed(Harness),
    /// `--dry-run`: would be removed.
    WouldRemove(Harness),
    /// Not a directory we may touch (a symlink, a file, an unsafe or
    /// foreign-owned dir): left alone.
    Skipped(String),
    /// Removed by another process meanwhile.
    Vanished,
    /// A temporary whose writer is gone (killed mid-write): removed.
    TemporaryRemoved,
    /// `--dry-run`: a temporary whose writer is gone would be removed.
    WouldRemoveTemporary,
    /// Removal failed.
    Failed(String),
}

/// The pid of the process that made the temporary `entry`, named
/// `.<name>.<pid>.tmp` (the shape every tool gives its temporaries); `None`
/// for any other name.
pub fn temporary_maker(entry: &str) -> Option<u32> {
    let rest = entry.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, digits) = rest.rsplit_once('.')?;
    if name.is_empty() {
        return None;
    }
    let pid = parse_pid(digits).ok()?;
    (pid.to_string() == digits).then_some(pid)
}

/// One entry a `gc` looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcEntry {
    /// The run dir (or temporary).
    pub path: std::path::PathBuf,
    /// The harness pid its name carries (a temporary: its maker's pid).
    pub pid: u32,
    /// What happened.
    pub outcome: Swept,
}

/// The one rule by which a `gc` judges the run dir of `key` holding
/// `record`: `Ok(fate)` when it is to be removed (the harness has exited or
/// its pid was reused), `Err(kept)` when it stays. A dir without a record
/// of this run is removed only when no process has the pid at all.
pub fn judge(record: Option<Record>, key: &RunKey) -> Result<Harness, Swept> {
    let fate = match record.filter(|r| r.is_for(key)) {
        Some(record) => record.harness(),
        None if proc::start_time(key.pid).is_some() => return Err(Swept::Unrecorded),
        None => Harness::Gone,
    };
    match fate {
        Harness::Running => Err(Swept::Live),
        Harness::Foreign => Err(Swept::Foreign),
        Harness::Gone | Harness::Replaced => Ok(fate),
    }
}

/// Reports what a `gc` did on stderr, one line per removal, skip or
/// failure; returns 125 when a removal failed, else 0.
pub fn report_gc(entries: &[GcEntry]) -> u8 {
    let mut status = crate::exit::SUCCESS;
    let why = |fate: &Harness, pid: u32| match fate {
        Harness::Replaced => format!("harness pid {pid} now names another process"),
        _ => format!("harness pid {pid} has exited"),
    };
    for entry in entries {
        let path = quote_path(&entry.path);
        match &entry.outcome {
            Swept::Removed(fate) => crate::say_action!("removed {path}: {}", why(fate, entry.pid)),
            Swept::WouldRemove(fate) => {
                crate::say_action!("would remove {path}: {}", why(fate, entry.pid))
            }
            Swept::Skipped(reason) => crate::say_warning!("skipped {path}: {reason}"),
            Swept::TemporaryRemoved => crate::say_action!(
                "removed {path}: a temporary whose writer, pid {}, is gone",
                entry.pid
            ),
            Swept::WouldRemoveTemporary => crate::say_action!(
                "would remove {path}: a temporary whose writer, pid {}, is gone",
                entry.pid
            ),
            Swept::Foreign => crate::say_warning!(
                "kept {path}: recorded in another pid namespace, so harness pid {} is not \
                 judged here",
                entry.pid
            ),
            Swept::Failed(error) => {
                crate::say!("{error}");
                status = crate::exit::TOOL_FAILED;
            }
            Swept::Live | Swept::InUse | Swept::Unrecorded | Swept::Vanished => {}
        }
    }
    status
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
        let manual = RunArgs::default().resolve().unwrap();
        assert_eq!(manual.run_id, MANUAL);
        assert_eq!(manual.pid, parent_pid());
        let bad = RunArgs {
            run_id: Some("build 42".into()),
            pid: None,
        };
        let e = bad.resolve().unwrap_err().to_string();
        assert!(e.contains("'build 42'") && e.contains("--run-id"), "{e}");
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
    fn temporaries_name_their_maker() {
        assert_eq!(temporary_maker(".deploys.123.tmp"), Some(123));
        assert_eq!(temporary_maker(".ci-7-42.99.tmp"), Some(99));
        assert_eq!(temporary_maker("..harness.5.tmp"), Some(5));
        for other in [
            "deploys",
            ".deploys.tmp",
            "..5.tmp",
            ".x.05.tmp",
            ".x.y.tmp",
            "x.5.tmp",
        ] {
            assert_eq!(temporary_maker(other), None, "{other}");
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
    fn harness_states() {
        let me = std::process::id();
        let t = proc::start_time(me).unwrap();
        assert_eq!(harness(me, Some(t)), Harness::Running);
        assert_eq!(harness(me, Some(t + 1)), Harness::Replaced);
        assert_eq!(harness(me, None), Harness::Replaced);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie is a harness that has exited.
        let start = std::time::Instant::now();
        while proc::stat(pid).is_some_and(|stat| stat.state != 'Z') {
            assert!(start.elapsed().as_secs() < 30, "`true` never exited");
            std::thread::yield_now();
        }
        assert_eq!(harness(pid, proc::start_time(pid)), Harness::Gone);
        child.wait().unwrap();
        assert_eq!(harness(pid, Some(1)), Harness::Gone);
    }

    #[test]
    fn records_of_another_namespace_or_boot_are_not_judged_by_our_pids() {
        let key = RunKey {
            run_id: "t".into(),
            pid: std::process::id(),
        };
        let mine = Record::now(&key);
        assert_eq!(mine.harness(), Harness::Running);
        let foreign = Record {
            pid_ns: mine.pid_ns.map(|ns| ns + 1),
            ..mine.clone()
        };
        assert_eq!(foreign.harness(), Harness::Foreign);
        let earlier_boot = Record {
            boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
            ..mine.clone()
        };
        assert_eq!(earlier_boot.harness(), Harness::Gone);
        // A record of an older version, without namespace and boot.
        let old: Record = serde_json::from_str(&format!(
            r#"{{"run_id":"t","pid":{},"start_time":{},"created":"x"}}"#,
            key.pid,
            mine.start_time.unwrap()
        ))
        .unwrap();
        assert_eq!(old.harness(), Harness::Running);
    }
}
