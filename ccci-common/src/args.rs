//! The directory flags, declared once for every tool (SPEC §1
//! "Directories"), and the rule that the lock, state and runs dirs are
//! three different directories.
//!
//! Flatten the one a tool uses into its clap definition:
//!
//! ```ignore
//! #[command(flatten)]
//! pub state_dir: StateDirArg,
//! ...
//! let state_dir = cli.state_dir.resolve()?;        // flag | variable | default
//! args::check_apart(&STATE_DIR, &state_dir)?;      // 125 when dirs coincide
//! ```
//!
//! A directory comes from its flag, else its variable, else the default of
//! [`crate::dirs`]; an empty value is refused naming where it came from
//! ([`crate::cli::checked_path`]). The result is absolute.

use crate::names::quote_path;
use std::path::{Component, Path, PathBuf};

use anyhow::bail;
use clap::Args;

use crate::cli::{checked_path, UsageError};
use crate::dirs::{self, Role, LOCK_DIR, RUNS_DIR, STATE_DIR};

/// `--config` / `CCCI_CONFIG`: the configuration file (SPEC §1 "One
/// configuration"). It is read by [`crate::cli::main`] before the command
/// line is parsed ([`crate::config`]); clap knows the flag for `--help`,
/// man pages and completions.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArg {
    /// Configuration file of KEY=VALUE settings [default: /etc/ccci/ccci.conf, if it exists]
    #[arg(
        long,
        value_name = "FILE",
        env = "CCCI_CONFIG",
        hide_env_values = true,
        global = true
    )]
    pub config: Option<PathBuf>,
}

/// `--lock-dir` / `CCCI_APP_LOCK_DIR`.
#[derive(Debug, Clone, Default, Args)]
pub struct LockDirArg {
    /// Lock dir [default: /run/lock/ccci-<uid>, or /tmp/ccci-<uid>/locks without /run/lock]
    #[arg(
        long,
        value_name = "DIR",
        env = "CCCI_APP_LOCK_DIR",
        hide_env_values = true,
        global = true
    )]
    pub lock_dir: Option<PathBuf>,
}

impl LockDirArg {
    /// The lock dir, absolute.
    pub fn resolve(&self) -> Result<PathBuf, UsageError> {
        resolve("lock_dir", self.lock_dir.as_deref(), dirs::default_lock_dir)
    }
}

/// `--state-dir` / `CCCI_STATE_DIR`.
#[derive(Debug, Clone, Default, Args)]
pub struct StateDirArg {
    /// State dir [default: /tmp/ccci-<uid>/state]
    #[arg(
        long,
        value_name = "DIR",
        env = "CCCI_STATE_DIR",
        hide_env_values = true,
        global = true
    )]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    /// The state dir, absolute.
    pub fn resolve(&self) -> Result<PathBuf, UsageError> {
        resolve(
            "state_dir",
            self.state_dir.as_deref(),
            dirs::default_state_dir,
        )
    }
}

/// `--runs-dir` / `CCCI_RUNS_DIR`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunsDirArg {
    /// Runs dir [default: /tmp/ccci-<uid>/runs]
    #[arg(
        long,
        value_name = "DIR",
        env = "CCCI_RUNS_DIR",
        hide_env_values = true,
        global = true
    )]
    pub runs_dir: Option<PathBuf>,
}

impl RunsDirArg {
    /// The runs dir, absolute.
    pub fn resolve(&self) -> Result<PathBuf, UsageError> {
        resolve("runs_dir", self.runs_dir.as_deref(), dirs::default_runs_dir)
    }
}

fn resolve(
    id: &str,
    given: Option<&Path>,
    default: impl FnOnce() -> PathBuf,
) -> Result<PathBuf, UsageError> {
    let path = checked_path(id, given)?.unwrap_or_else(default);
    Ok(dirs::absolute(&path))
}

/// Where `role`'s directory is for a tool that has no flag for it: its
/// variable, else its default.
pub fn from_environment(role: &Role) -> PathBuf {
    let given = std::env::var_os(role.env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let path = given.unwrap_or_else(|| match role.env {
        e if e == LOCK_DIR.env => dirs::default_lock_dir(),
        e if e == STATE_DIR.env => dirs::default_state_dir(),
        _ => dirs::default_runs_dir(),
    });
    dirs::absolute(&path)
}

/// `path` with `.` and `..` resolved by name; with the real path too when
/// it exists, so a symlinked spelling of the same directory is caught.
fn spellings(path: &Path) -> Vec<PathBuf> {
    let mut lexical = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut out = vec![lexical];
    if let Ok(real) = std::fs::canonicalize(path) {
        out.push(real);
    }
    out
}

/// Refuses (an error, status 125) to run when `own`, the directory of
/// `role` this tool uses, coincides with the other two of the lock, state
/// and runs dirs, or one lies inside another (SPEC §1): a `clean` or `gc`
/// of one would delete the others' files. The other two are read from
/// their variables or defaults.
pub fn check_apart(role: &Role, own: &Path) -> anyhow::Result<()> {
    let all = [LOCK_DIR, STATE_DIR, RUNS_DIR];
    let dirs: Vec<(Role, PathBuf)> = all
        .iter()
        .map(|r| {
            if r.env == role.env {
                (*r, own.to_path_buf())
            } else {
                (*r, from_environment(r))
            }
        })
        .collect();
    // Each directory's spellings once (a real path costs a readlink per
    // component).
    let names: Vec<Vec<PathBuf>> = dirs.iter().map(|(_, path)| spellings(path)).collect();
    for (i, (a, a_path)) in dirs.iter().enumerate() {
        for (j, (b, b_path)) in dirs.iter().enumerate().skip(i + 1) {
            let (a_names, b_names) = (&names[i], &names[j]);
            let relation = a_names.iter().find_map(|x| {
                b_names.iter().find_map(|y| {
                    if x == y {
                        Some("is the same directory as")
                    } else if x.starts_with(y) {
                        Some("is inside")
                    } else if y.starts_with(x) {
                        Some("contains")
                    } else {
                        None
                    }
                })
            });
            if let Some(relation) = relation {
                // Point at the other tool's variable, which is where a
                // clash usually comes from.
                let other = if a.env == role.env { b } else { a };
                let fix = if other.env == role.env {
                    format!("choose another with {} or {}", role.flag, role.env)
                } else {
                    format!(
                        "fix {} or choose another {} with {}",
                        other.env, role.what, role.flag
                    )
                };
                bail!(
                    "refusing to run: {} {} {relation} {} {}; the lock, state and runs dirs \
                     must be three different directories, none inside another; {fix}",
                    a.what,
                    quote_path(a_path),
                    b.what,
                    quote_path(b_path),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_resolve_dots_by_name() {
        assert_eq!(
            spellings(Path::new("/a/./b/../c"))[0],
            PathBuf::from("/a/c")
        );
    }
}
