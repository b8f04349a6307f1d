//! Where state file NAME of a run is: an exact path a parent handed down
//! in `CCCI_<NAME>_FILE`, or the file in the run's own directory.
//!
//! An exact path is a convenience for children of the run that `env` set
//! it for. It is never a licence to touch files elsewhere: an explicit
//! `--run-id` or `--pid` on the command line names another run, and then
//! inherited variables are ignored (a nested run never touches the outer
//! run's files); and `clean` removes only the run's own directory, never
//! a file a variable names.

use ccci_common::names::quote_path;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use ccci_common::cli::{self, UsageError};
use ccci_common::dirs::{self, Role};
use ccci_common::fs::SafeDir;
use ccci_common::locked::Name;
use ccci_common::run::RunKey;

use crate::files::{read_file, Locked};
use crate::rundir::{Begun, StateDir};

/// `CCCI_<NAME>_FILE`: the variable that gives state file NAME an exact
/// path (NAME upper-cased, `-` as `_`).
pub fn file_var(name: &str) -> String {
    format!("CCCI_{}_FILE", name.to_ascii_uppercase().replace('-', "_"))
}

/// The role of an exact path's directory in messages. The error is wrapped
/// in a context that names the variable itself.
const EXACT_DIR: Role = Role {
    what: "directory of the state file",
    flag: "`ccci-state env`",
    env: "the CCCI_<NAME>_FILE variable",
};

/// Where state file NAME of a run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `$CCCI_<NAME>_FILE`: the file `file` in the directory `dir`.
    Exact {
        /// The variable that named it.
        var: String,
        /// The directory (absolute).
        dir: PathBuf,
        /// The file's name in `dir`.
        file: String,
    },
    /// `<state dir>/<run key>/NAME`.
    Keyed {
        /// The state dir.
        state_dir: PathBuf,
        /// The run.
        key: RunKey,
        /// NAME.
        name: String,
    },
}

impl Location {
    /// With `inherit`, `$CCCI_<NAME>_FILE` when it is set and not empty;
    /// else (or without `inherit`: the run was named on the command line)
    /// the run's own file. `name` must be a valid state NAME already.
    pub fn resolve(
        name: &str,
        state_dir: &Path,
        key: &RunKey,
        inherit: bool,
    ) -> Result<Location, UsageError> {
        let var = file_var(name);
        match std::env::var_os(&var).filter(|v| !v.is_empty() && inherit) {
            Some(value) => Location::exact(&var, Path::new(&value)),
            None => Ok(Location::Keyed {
                state_dir: dirs::absolute(state_dir),
                key: key.clone(),
                name: name.to_string(),
            }),
        }
    }

    /// The exact path `path`, as given by the variable `var`: it must name a
    /// file (not end in `/`, `.` or `..`) whose name is UTF-8.
    pub fn exact(var: &str, path: &Path) -> Result<Location, UsageError> {
        let bytes = path.as_os_str().as_bytes();
        let (parent, file) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(0) => (&b"/"[..], &bytes[1..]),
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (&b"."[..], bytes),
        };
        let file = std::str::from_utf8(file)
            .ok()
            .filter(|f| !matches!(*f, "" | "." | ".."));
        let Some(file) = file else {
            return Err(UsageError(format!(
                "{var}={} is not the path of a file",
                cli::quote(path.as_os_str())
            )));
        };
        Ok(Location::Exact {
            var: var.to_string(),
            dir: dirs::absolute(Path::new(OsStr::from_bytes(parent))),
            file: file.to_string(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        match self {
            Location::Exact { dir, file, .. } => dir.join(file),
            Location::Keyed {
                state_dir,
                key,
                name,
            } => state_dir.join(key.key()).join(name),
        }
    }

    /// The file's name in its directory.
    pub fn file_name(&self) -> &str {
        match self {
            Location::Exact { file, .. } => file,
            Location::Keyed { name, .. } => name,
        }
    }

    /// The file's content; `None` when it (or its directory) does not exist,
    /// or when it belongs to a stale run dir.
    pub fn read(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Location::Exact { var, dir, file } => match open_exact(var, dir, file)? {
                Some(dir) => read_file(&dir, file),
                None => Ok(None),
            },
            Location::Keyed {
                state_dir,
                key,
                name,
            } => {
                let Some(state) = StateDir::open(state_dir, false)? else {
                    return Ok(None);
                };
                match state.lookup(key)? {
                    Some(dir) => read_file(&dir, name),
                    None => Ok(None),
                }
            }
        }
    }

    /// Locks the file's directory for writing. The run dir is created (or a
    /// stale one replaced) as [`StateDir::begin`] does; the directory of an
    /// exact path must exist already.
    pub fn lock(&self) -> anyhow::Result<Begun> {
        match self {
            Location::Exact { var, dir, file } => {
                let locked = lock_exact(var, dir, file)?.ok_or_else(|| {
                    anyhow!(
                        "{var} names {}, but {} does not exist; \
                         run `eval \"$(ccci-state env)\"` first, or fix {var}",
                        quote_path(&dir.join(file)),
                        quote_path(dir)
                    )
                })?;
                Ok(Begun {
                    locked,
                    replaced: None,
                })
            }
            Location::Keyed { state_dir, key, .. } => {
                let state = StateDir::open(state_dir, true)?
                    .ok_or_else(|| anyhow!("state dir {} vanished", quote_path(state_dir)))?;
                state.begin(key)
            }
        }
    }
}

/// Opens the directory `dir` of the exact path `$var` (= `dir/file`).
fn open_exact(var: &str, dir: &Path, file: &str) -> anyhow::Result<Option<SafeDir>> {
    SafeDir::open(&EXACT_DIR, dir, false)
        .with_context(|| format!("{var} names {}", quote_path(&dir.join(file))))
}

/// Opens and locks the directory `dir` of an exact path, checking by
/// descriptor after the lock that the path still names it; `None` when it
/// does not exist.
fn lock_exact(var: &str, dir: &Path, file: &str) -> anyhow::Result<Option<Locked>> {
    let got = Locked::acquire(Name::Path(dir), dir, true, || open_exact(var, dir, file))?;
    Ok(got.map(|held| held.expect("a waiting lock is never busy")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_for_names() {
        assert_eq!(file_var("deploys"), "CCCI_DEPLOYS_FILE");
        assert_eq!(file_var("dep-skip_2"), "CCCI_DEP_SKIP_2_FILE");
    }

    #[test]
    fn exact_paths() {
        let loc = Location::exact("V", Path::new("/a/b/c")).unwrap();
        assert_eq!(
            loc,
            Location::Exact {
                var: "V".into(),
                dir: "/a/b".into(),
                file: "c".into()
            }
        );
        assert_eq!(loc.path(), Path::new("/a/b/c"));
        let top = Location::exact("V", Path::new("/c")).unwrap();
        assert_eq!(top.path(), Path::new("/c"));
        let rel = Location::exact("V", Path::new("c")).unwrap();
        assert_eq!(rel.path(), std::env::current_dir().unwrap().join("c"));
        for bad in ["/a/", "/", "/a/.", "/a/..", ".", ".."] {
            let e = Location::exact("V", Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("V='{bad}'")), "{e}");
        }
    }
}
