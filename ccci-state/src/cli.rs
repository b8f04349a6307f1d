//! The `ccci-state` command line (SPEC §6): the clap definition and the code
//! that runs it. The file protocol is in the library.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use ccci_common::args::{self, StateDirArg};
use ccci_common::cli::{print_all, UsageError};
use ccci_common::dirs::STATE_DIR;
use ccci_common::run::{RunArgs, RunKey};
use ccci_common::{exit, names, say};

use crate::{file_var, Begun, Location, StateDir, HARNESS_FILES};

const AFTER_HELP: &str = "\
A run's files live in <state dir>/<run-id>-<harness pid>/NAME, so two runs
never share one, whatever app domain they deploy. `eval \"$(ccci-state env)\"`
at the start of a run creates its directory and exports CCCI_RUN_ID,
CCCI_HARNESS_PID and the exact paths of the harness's four files, so every
child uses the same files. set, incr and append replace the whole file under
a lock: no update is lost between processes, and a SIGKILL leaves the old or
the new content. A counter file that holds no number is an error (125).
gc removes the directories of runs whose harness process is gone, telling a
reused pid apart by the start time recorded by env.

Environment:
  CCCI_STATE_DIR     the state dir (like --state-dir)
  CCCI_RUN_ID        the run id (like --run-id)
  CCCI_HARNESS_PID   the harness pid (like --pid)
  CCCI_<NAME>_FILE   the exact path of state file NAME (upper-cased, '-' as
                     '_'); when set, it wins over the run key, unless the run
                     is named on the command line (--run-id or --pid): a
                     nested run never touches the outer run's files
Empty variables count as unset. clean removes <state dir>/<run key>/ and
nothing else, whatever a CCCI_<NAME>_FILE names. The lock, state and runs dirs
(CCCI_APP_LOCK_DIR, CCCI_STATE_DIR, CCCI_RUNS_DIR) must be three different
directories, none inside another: otherwise status 125.";

/// Run-keyed state files that two CI runs never share.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-state",
    version,
    after_help = ccci_common::cli::after_help(AFTER_HELP),
    override_usage = "ccci-state [--run-id ID] [--pid PID] [--state-dir DIR] env [--json]\n       \
                      ccci-state path NAME | get NAME [--default V] | set NAME VALUE | incr NAME [BY] | append NAME LINE\n       \
                      ccci-state clean | gc [--dry-run]"
)]
pub struct Cli {
    /// The configuration file
    #[command(flatten)]
    pub config: ccci_common::args::ConfigArg,

    /// Which run
    #[command(flatten)]
    pub run: RunArgs,

    /// Where the run dirs are
    #[command(flatten)]
    pub state_dir: StateDirArg,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this run's directory and print `export` lines for eval
    Env {
        /// Print one JSON object instead
        #[arg(long)]
        json: bool,
    },
    /// Print the path of state file NAME
    Path {
        /// The state file
        #[arg(value_name = "NAME", value_parser = names::state_name)]
        name: String,
    },
    /// Print the content of NAME; status 1 when it does not exist
    Get {
        /// The state file
        #[arg(value_name = "NAME", value_parser = names::state_name)]
        name: String,
        /// Print V instead of failing when NAME does not exist
        #[arg(long, value_name = "V", allow_hyphen_values = true)]
        default: Option<OsString>,
    },
    /// Replace NAME with VALUE (and a newline), atomically
    Set {
        /// The state file
        #[arg(value_name = "NAME", value_parser = names::state_name)]
        name: String,
        /// The new content
        #[arg(value_name = "VALUE", allow_hyphen_values = true)]
        value: OsString,
    },
    /// Add BY (default 1) to the counter NAME atomically; print the new value
    Incr {
        /// The counter (a missing file counts as 0)
        #[arg(value_name = "NAME", value_parser = names::state_name)]
        name: String,
        /// The amount to add, may be negative
        #[arg(value_name = "BY", allow_negative_numbers = true, default_value_t = 1)]
        by: i64,
    },
    /// Add LINE as one whole line at the end of NAME
    Append {
        /// The state file
        #[arg(value_name = "NAME", value_parser = names::state_name)]
        name: String,
        /// The line, without a newline
        #[arg(value_name = "LINE", allow_hyphen_values = true)]
        line: OsString,
    },
    /// Remove this run's directory <state dir>/<run key>/ and its files; a missing one is fine
    Clean,
    /// Remove the directories of runs whose harness process is gone
    Gc {
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let key = cli.run.resolve()?;
    let state_dir = cli.state_dir.resolve()?;
    args::check_apart(&STATE_DIR, &state_dir)?;
    // A run named on the command line is another run than the one whose
    // exact paths we may have inherited.
    let inherit = !cli.run.explicit();
    let locate = |name: &str| Location::resolve(name, &state_dir, &key, inherit);
    match cli.command {
        Command::Env { json } => env(&state_dir, &key, json),
        Command::Path { name } => {
            let mut line = locate(&name)?.path().into_os_string().into_vec();
            line.push(b'\n');
            print_all(&line)?;
            Ok(exit::SUCCESS)
        }
        Command::Get { name, default } => {
            let content = match (locate(&name)?.read()?, default) {
                (Some(content), _) => content,
                (None, Some(default)) => {
                    let mut line = default.as_bytes().to_vec();
                    line.push(b'\n');
                    line
                }
                (None, None) => return Ok(exit::FAILURE),
            };
            print_all(&content)?;
            Ok(exit::SUCCESS)
        }
        Command::Set { name, value } => {
            let loc = locate(&name)?;
            lock(&loc)?.locked.set(loc.file_name(), value.as_bytes())?;
            Ok(exit::SUCCESS)
        }
        Command::Incr { name, by } => {
            let loc = locate(&name)?;
            let value = lock(&loc)?.locked.incr(loc.file_name(), by)?;
            print_all(format!("{value}\n").as_bytes())?;
            Ok(exit::SUCCESS)
        }
        Command::Append { name, line } => {
            crate::check_line(line.as_bytes())?;
            let loc = locate(&name)?;
            lock(&loc)?
                .locked
                .append(loc.file_name(), line.as_bytes())?;
            Ok(exit::SUCCESS)
        }
        Command::Clean => {
            // Only the run's own directory: never a file a variable names.
            if let Some(state) = StateDir::open(&state_dir, false)? {
                state.clean(&key)?;
            }
            Ok(exit::SUCCESS)
        }
        Command::Gc { dry_run } => {
            // Run from cron beside the janitor: its lines are stamped alike.
            ccci_common::cli::stamp_stderr();
            gc(&state_dir, dry_run)
        }
    }
}

/// Locks a file's directory for writing, reporting a stale run dir that was
/// replaced on the way.
fn lock(loc: &Location) -> anyhow::Result<Begun> {
    Ok(reported(loc.lock()?))
}

fn reported(begun: Begun) -> Begun {
    if let Some(old) = &begun.replaced {
        say!(
            "replaced stale run dir {} (its harness pid {} now names another process)",
            names::quote_path(begun.locked.dir().path()),
            old.pid
        );
    }
    begun
}

/// `env --json`: the same six variables as the `export` lines.
#[derive(serde::Serialize)]
struct EnvJson<'a> {
    #[serde(rename = "CCCI_RUN_ID")]
    run_id: &'a str,
    #[serde(rename = "CCCI_HARNESS_PID")]
    harness_pid: String,
    #[serde(rename = "CCCI_DEPLOYS_FILE")]
    deploys: &'a Path,
    #[serde(rename = "CCCI_OPSTATE_FILE")]
    opstate: &'a Path,
    #[serde(rename = "CCCI_DEPS_FILE")]
    deps: &'a Path,
    #[serde(rename = "CCCI_DEPSKIP_FILE")]
    depskip: &'a Path,
}

fn env(state_dir: &Path, key: &RunKey, json: bool) -> anyhow::Result<u8> {
    if json && state_dir.to_str().is_none() {
        // JSON strings are Unicode: the path could not be given exactly.
        return Err(UsageError(format!(
            "--json cannot give the paths of the state dir {} exactly (it is not valid \
             UTF-8); use the export lines, which keep every byte",
            names::quote_path(state_dir)
        ))
        .into());
    }
    let state = StateDir::open(state_dir, true)?
        .ok_or_else(|| anyhow::anyhow!("state dir {} vanished", names::quote_path(state_dir)))?;
    drop(reported(state.begin(key)?));
    let run_dir = state.run_path(key);
    let files: Vec<PathBuf> = HARNESS_FILES.iter().map(|n| run_dir.join(n)).collect();
    let mut text = Vec::new();
    if json {
        let object = EnvJson {
            run_id: &key.run_id,
            harness_pid: key.pid.to_string(),
            deploys: &files[0],
            opstate: &files[1],
            deps: &files[2],
            depskip: &files[3],
        };
        text.extend(serde_json::to_vec(&object)?);
        text.push(b'\n');
    } else {
        // Every value as its exact bytes (paths need not be UTF-8).
        let mut export = |var: &str, value: &std::ffi::OsStr| {
            text.extend(format!("export {var}=").into_bytes());
            text.extend(names::export_quote_os(value));
            text.push(b'\n');
        };
        export("CCCI_RUN_ID", key.run_id.as_ref());
        export("CCCI_HARNESS_PID", key.pid.to_string().as_ref());
        for (name, path) in HARNESS_FILES.iter().zip(&files) {
            export(&file_var(name), path.as_os_str());
        }
    }
    print_all(&text)?;
    Ok(exit::SUCCESS)
}

fn gc(state_dir: &Path, dry_run: bool) -> anyhow::Result<u8> {
    let Some(state) = StateDir::open(state_dir, false)? else {
        return Ok(exit::SUCCESS); // no state dir: nothing to collect
    };
    Ok(ccci_common::run::report_gc(&state.gc(dry_run)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    ccci_common::clap_definition_test!(Cli);

    #[test]
    fn flags_and_values() {
        let cli =
            Cli::try_parse_from(["ccci-state", "incr", "deploys", "-2", "--run-id", "r"]).unwrap();
        assert!(matches!(cli.command, Command::Incr { by: -2, .. }));
        assert_eq!(cli.run.resolve().unwrap().run_id, "r");
        let cli = Cli::try_parse_from(["ccci-state", "set", "opstate", "--x"]).unwrap();
        assert!(matches!(cli.command, Command::Set { value, .. } if value == "--x"));
        for bad in [
            &["ccci-state", "get", "Bad"][..],
            &["ccci-state", "incr", "deploys", "1.5"],
            &["ccci-state", "clean", "extra"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &["ccci-state", "--run-id", "a/b", "env"][..],
            &["ccci-state", "--pid", "0", "env"],
        ] {
            let cli = Cli::try_parse_from(bad).unwrap();
            assert!(cli.run.resolve().is_err(), "{bad:?}");
        }
    }
}
