//! The `ccci-abradir` command line (SPEC §5): the clap definition and the
//! code that runs it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use ccci_common::args::{self, RunsDirArg};
use ccci_common::cli::{print_all, UsageError};
use ccci_common::dirs::{self, RUNS_DIR};
use ccci_common::fs::SafeDir;
use ccci_common::run::RunArgs;
use ccci_common::{exit, names};

use crate::{Canonical, Recipe};

const AFTER_HELP: &str = "\
Builds <runs dir>/<run id>-<pid>/abra/ and prints one line for eval:
  export ABRA_DIR='...'
Inside, servers is a symlink to <canonical>/servers (app .env files written
through it land in the canonical tree), catalogue a symlink to
<canonical>/catalogue when that exists, and recipes/ a private directory;
--recipe NAME adds recipes/NAME, a private local git clone of
<canonical>/recipes/NAME (objects hardlinked where the file system allows,
copied otherwise; the canonical clone is never written). The layout is complete before the line is printed.
A second call of the same run verifies the tree and adds missing recipes; a
tree whose servers is not the expected symlink is refused (125).

`clean` removes the run's tree <runs dir>/<run key>/ and nothing else;
servers and catalogue are unlinked, never followed, so canonical files are
never deleted. A missing tree is fine; a tree owned by another uid, or a
symlink in its place, is refused (125).

`gc` removes the trees of runs whose harness process is gone (a reused pid is
told apart by the start time recorded in each tree's .harness, as ccci-state
gc does), and the hidden temporaries (.<name>.<pid>.tmp) of calls that were
killed; it never follows servers or catalogue and skips foreign-owned
entries. From cron, next to ccci-janitor and ccci-state gc.

Usage in a harness:
  out=$(ccci-abradir --recipe \"$RECIPE\"); eval \"$out\"
  ...
  ccci-abradir clean

Environment:
  CCCI_RUN_ID              the run id (like --run-id; default: manual)
  CCCI_HARNESS_PID         the harness pid (like --pid; default: the parent pid)
  CCCI_RUNS_DIR            the runs dir (like --runs-dir)
  CCCI_CANONICAL_ABRA_DIR  the canonical abra dir (like --canonical)
  HOME                     the default canonical abra dir is $HOME/.abra
  PATH                     where git is found
The lock, state and runs dirs (CCCI_APP_LOCK_DIR, CCCI_STATE_DIR,
CCCI_RUNS_DIR) must be three different directories, none inside another:
otherwise status 125.";

/// Give a CI run its own ABRA_DIR: shared servers, private recipe clones.
#[derive(Debug, Parser)]
#[command(
    name = "ccci-abradir",
    version,
    after_help = ccci_common::cli::after_help(AFTER_HELP),
    override_usage = "ccci-abradir [--run-id ID] [--pid PID] [--runs-dir DIR] [--canonical DIR] [--recipe NAME]...\n       ccci-abradir clean [--run-id ID] [--pid PID] [--runs-dir DIR]\n       ccci-abradir gc [--dry-run] [--runs-dir DIR]"
)]
pub struct Cli {
    /// The configuration file
    #[command(flatten)]
    pub config: ccci_common::args::ConfigArg,

    /// Which run: --run-id and --pid.
    #[command(flatten)]
    pub run: RunArgs,

    /// Where the run trees are
    #[command(flatten)]
    pub runs_dir: RunsDirArg,

    /// Canonical abra dir, linked to and cloned from, never written [default: $HOME/.abra]
    #[arg(
        long,
        value_name = "DIR",
        env = "CCCI_CANONICAL_ABRA_DIR",
        hide_env_values = true
    )]
    pub canonical: Option<PathBuf>,

    /// Give the run a private clone of recipe NAME (repeatable)
    #[arg(long, value_name = "NAME", value_parser = crate::recipe_name)]
    pub recipe: Vec<String>,

    /// `clean` or `gc`, or nothing to build the run's tree.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of building the run's tree.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove the run's tree <runs dir>/<run key>/ and nothing else (servers and catalogue are unlinked, never followed)
    Clean,
    /// Remove the trees of runs whose harness process is gone, and temporaries of killed calls
    Gc {
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let runs_dir = cli.runs_dir.resolve()?;
    match cli.command {
        Some(Command::Gc { dry_run }) => {
            // Run from cron beside the janitor: its lines are stamped alike.
            ccci_common::cli::stamp_stderr();
            if !cli.recipe.is_empty() {
                return Err(UsageError("gc takes no --recipe".into()).into());
            }
            args::check_apart(&RUNS_DIR, &runs_dir)?;
            let entries = crate::gc(&runs_dir, dry_run)?;
            return Ok(ccci_common::run::report_gc(&entries));
        }
        Some(Command::Clean) => {
            let key = cli.run.resolve()?;
            if !cli.recipe.is_empty() {
                return Err(UsageError("clean takes no --recipe".into()).into());
            }
            args::check_apart(&RUNS_DIR, &runs_dir)?;
            crate::clean(&runs_dir, &key)?;
            return Ok(exit::SUCCESS);
        }
        None => {}
    }
    let key = cli.run.resolve()?;
    // ABRA_DIR is printed for eval, quoted as text: a path that is not
    // UTF-8 could not be printed as it is.
    if runs_dir.to_str().is_none() {
        return Err(UsageError(format!(
            "{}={} is not valid UTF-8, and ABRA_DIR is printed for eval; choose another runs dir",
            ccci_common::cli::source("runs_dir"),
            ccci_common::cli::quote(runs_dir.as_os_str())
        ))
        .into());
    }
    args::check_apart(&RUNS_DIR, &runs_dir)?;
    let canonical = ccci_common::cli::checked_path("canonical", cli.canonical.as_deref())?
        .or_else(dirs::default_canonical_abra_dir)
        .ok_or_else(|| {
            UsageError(
                "no canonical abra dir: HOME is unset; set --canonical or CCCI_CANONICAL_ABRA_DIR"
                    .into(),
            )
        })?;
    let canonical = Canonical::open(&canonical)?;
    let recipes = Recipe::resolve(&canonical, &cli.recipe)?;
    let runs = SafeDir::create(&RUNS_DIR, &runs_dir)?;
    let abra_dir = crate::prepare(&runs, &key, &canonical, &recipes)?;
    let mut line = b"export ABRA_DIR=".to_vec();
    line.extend(names::export_quote_os(abra_dir.as_os_str()));
    line.push(b'\n');
    print_all(&line)?;
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    ccci_common::clap_definition_test!(Cli);

    #[test]
    fn flags_work_on_either_side_of_clean() {
        let cli = Cli::try_parse_from([
            "ccci-abradir",
            "--runs-dir",
            "/r",
            "clean",
            "--run-id",
            "b-1",
            "--pid",
            "7",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Clean)));
        assert_eq!(cli.run.resolve().unwrap().key(), "b-1-7");
        assert_eq!(cli.runs_dir.runs_dir, Some(PathBuf::from("/r")));
        assert!(Cli::try_parse_from(["ccci-abradir", "clean", "--recipe", "wp"]).is_err());
        assert!(Cli::try_parse_from(["ccci-abradir", "clean", "--canonical", "/c"]).is_err());
    }

    #[test]
    fn recipes_repeat_and_are_validated() {
        let cli =
            Cli::try_parse_from(["ccci-abradir", "--recipe", "wp", "--recipe", "nc"]).unwrap();
        assert_eq!(cli.recipe, ["wp", "nc"]);
        assert!(Cli::try_parse_from(["ccci-abradir", "--recipe", "../wp"]).is_err());
        let bad = Cli::try_parse_from(["ccci-abradir", "--run-id", "a/b"]).unwrap();
        assert!(bad.run.resolve().is_err());
        let gc = Cli::try_parse_from(["ccci-abradir", "gc", "--dry-run"]).unwrap();
        assert!(matches!(gc.command, Some(Command::Gc { dry_run: true })));
    }
}
