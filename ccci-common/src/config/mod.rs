//! The one configuration file (SPEC §1 "One configuration").
//!
//! A runner's job, a cron line, a systemd unit and a Python harness on one
//! host start the tools with environments that share nothing. They agree
//! because every tool and every contrib script reads the same file:
//! `--config FILE`, else `$CCCI_CONFIG`, else [`DEFAULT_PATH`] (which may
//! be absent; a file that is named must exist).
//!
//! Guarantees:
//! - **One syntax, read alike by `sh` and systemd.** `KEY=VALUE` lines, `#`
//!   comment lines and blank lines; VALUE bare, or in single or double
//!   quotes. Only what both `. FILE` and `EnvironmentFile=` read the same
//!   way is accepted: a bare value has no blank and no character either
//!   reader treats specially (`$`, `` ` ``, `\`, quotes, `;`, `&`, `|`,
//!   `<`, `>`, `(`, `)`, `~`), a double-quoted one has no `$`, `` ` `` or
//!   `\`, nothing follows a closing quote but blanks, and no line has a
//!   carriage return. Anything else is status 2 naming `FILE:LINE`, so a
//!   value can never mean one thing to cron's shell and another to systemd.
//! - **Strict keys.** KEY is one of [`KEYS`], the one table of settings that
//!   the docs and every `--help` are checked against; any other key, a key
//!   set twice, or a variable that a tool sets for its COMMAND
//!   (`CCCI_LOCK_DOMAIN`, ...) is status 2 naming `FILE:LINE`.
//! - **Safe or refused.** The file is opened through
//!   [`crate::fs::open_trusted_file`]: no symlink anywhere on its path, a
//!   regular file that only root or the effective uid can have written.
//!   Otherwise status 125 naming it. A setting decides where locks live, so
//!   a file another user could edit would let them point the janitor away
//!   from live runs.
//! - **Precedence: flag > environment > file > built-in default.** The
//!   file's values are put into the process environment for every key the
//!   environment does not set (a variable set to the empty string counts as
//!   set: it stands for the built-in default), before the command line is
//!   parsed. So clap's `env =` and every variable reader see one answer, and
//!   a command a tool starts (a reap, a run's script, another ccci tool)
//!   inherits the same settings; an explicit `--config` is passed on as
//!   `CCCI_CONFIG`.
//! - **Blame where it came from.** A bad value from the file is reported as
//!   `FILE:LINE: CCCI_X='…' is …` ([`variable_source`]).
//!
//! What lives where: [`keys`] is the one table of settings; [`syntax`]
//! reads a file's lines (the subset sh and systemd read alike); this module
//! finds the file, applies it to the environment and says where a value
//! came from.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::cli::UsageError;
use crate::dirs::Role;
use crate::names::quote_path;

pub mod keys;
pub mod syntax;

use keys::*;
pub use keys::{find_key, help_note, Key, KEYS};
use syntax::*;

/// Where the configuration file is when neither `--config` nor
/// `CCCI_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/ccci/ccci.conf";

/// The variable that names the configuration file.
pub const ENV: &str = "CCCI_CONFIG";

/// The flag that names the configuration file.
pub const FLAG: &str = "--config";

/// The configuration file in messages.
pub const CONFIG_FILE: Role = Role {
    what: "configuration file",
    flag: FLAG,
    env: ENV,
};

/// The longest configuration file read; a longer one is refused (125).
pub const MAX_LEN: usize = 64 * 1024;

/// One `KEY=VALUE` line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: &'static str,
    /// The value, quotes removed.
    pub value: OsString,
    /// Its line number, from 1.
    pub line: usize,
}

/// The configuration file that was read, and what it set.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its absolute path.
    pub path: PathBuf,
    /// Whether `--config` or `CCCI_CONFIG` named it (else the default path).
    pub named: bool,
    /// Whether it exists (the default file may be absent).
    pub present: bool,
    /// Its settings, in file order.
    pub settings: Vec<Setting>,
    /// The keys whose value came from the file (the environment did not
    /// set them).
    pub applied: Vec<&'static str>,
}

impl Loaded {
    /// Where `key`'s value came from, when it came from this file:
    /// `(path, line)`.
    pub fn origin(&self, key: &str) -> Option<(&Path, usize)> {
        if !self.applied.contains(&key) {
            return None;
        }
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| (self.path.as_path(), s.line))
    }
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// A configuration file that could not be read, kept for a tool that
/// reports it instead of failing at once (`ccci-janitor --check`).
static DEFERRED: OnceLock<(String, bool)> = OnceLock::new();

/// Keeps the error of [`load_and_apply`] for [`deferred_error`] (the
/// message, and whether it was a usage error).
pub fn defer_error(e: &anyhow::Error) {
    let usage = e.downcast_ref::<UsageError>().is_some();
    let _ = DEFERRED.set((format!("{e:#}"), usage));
}

/// The configuration file's error that [`defer_error`] kept.
pub fn deferred_error() -> Option<&'static (String, bool)> {
    DEFERRED.get()
}

/// The configuration this process read at start ([`load_and_apply`]), if
/// it read one.
pub fn loaded() -> Option<&'static Loaded> {
    LOADED.get()
}

/// Where the value of the variable `var` came from, as messages name it:
/// `FILE:LINE: VAR` when the configuration file set it, else `VAR`.
pub fn variable_source(var: &str) -> String {
    match loaded().and_then(|l| l.origin(var)) {
        Some((path, line)) => format!("{}:{line}: {var}", quote_path(path)),
        None => var.to_string(),
    }
}

/// Where a setting's value comes from, for `--check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The environment set it.
    Env,
    /// The configuration file, at this line.
    File(PathBuf, usize),
    /// Nobody: the built-in default holds.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env => f.write_str("env"),
            Origin::File(path, line) => write!(f, "{}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Where the variable `var` comes from in this process (after
/// [`load_and_apply`]): the file, the environment, or nowhere.
pub fn origin(var: &str) -> Origin {
    if let Some((path, line)) = loaded().and_then(|l| l.origin(var)) {
        return Origin::File(path.to_path_buf(), line);
    }
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => Origin::Env,
        _ => Origin::Default,
    }
}

/// The configuration file that `args` (a whole command line, program name
/// first) and the environment name: the value of `--config FILE` or
/// `--config=FILE` before any `--`, else `CCCI_CONFIG` when set and not
/// empty; `None` for the default.
pub fn named_file(args: &[OsString], env: Option<OsString>) -> Option<(OsString, &'static str)> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        }
        if bytes == FLAG.as_bytes() {
            // clap refuses a missing value; so does the loader.
            return Some((it.next().cloned().unwrap_or_default(), FLAG));
        }
        if let Some(value) = bytes.strip_prefix(b"--config=") {
            return Some((OsString::from_vec(value.to_vec()), FLAG));
        }
    }
    env.filter(|v| !v.is_empty()).map(|v| (v, ENV))
}

/// Reads the configuration file that the command line `args` and the
/// environment name, and puts every value the environment does not set into
/// this process's environment (see the module doc). Call it once, first,
/// while the process has one thread. A bad file is a [`UsageError`] (2) or
/// another error (125), naming it.
pub fn load_and_apply(args: &[OsString]) -> anyhow::Result<()> {
    let named = named_file(args, std::env::var_os(ENV));
    let (path, named) = match &named {
        Some((value, from)) if value.is_empty() => {
            return Err(UsageError(format!(
                "{from} names no configuration file: the value is empty"
            ))
            .into())
        }
        Some((value, _)) => (crate::dirs::absolute(Path::new(value)), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = read(&path)?;
    if text.is_none() && named {
        let from = named_file(args, std::env::var_os(ENV)).map_or(ENV, |(_, from)| from);
        return Err(UsageError(format!(
            "{from} names the configuration file {}, which does not exist",
            quote_path(&path)
        ))
        .into());
    }
    let present = text.is_some();
    let settings = match &text {
        Some(text) => parse(&path, text)?,
        None => Vec::new(),
    };
    let mut applied = Vec::new();
    for setting in &settings {
        if std::env::var_os(setting.key).is_none() {
            std::env::set_var(setting.key, &setting.value);
            applied.push(setting.key);
        }
    }
    if named {
        // A ccci tool this one starts reads the same file.
        std::env::set_var(ENV, &path);
    }
    let _ = LOADED.set(Loaded {
        path,
        named,
        present,
        settings,
        applied,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_flag_is_found_before_the_double_dash_only() {
        let args = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        let env = Some(OsString::from("/env.conf"));
        assert_eq!(
            named_file(&args(&["t", "--config", "/a", "x"]), env.clone()),
            Some(("/a".into(), FLAG))
        );
        assert_eq!(
            named_file(&args(&["t", "--config=/b"]), None),
            Some(("/b".into(), FLAG))
        );
        assert_eq!(
            named_file(&args(&["t", "--", "cmd", "--config", "/c"]), env.clone()),
            Some(("/env.conf".into(), ENV))
        );
        assert_eq!(named_file(&args(&["t"]), Some(OsString::new())), None);
    }

    #[test]
    fn a_trusted_file_is_refused_when_others_can_write_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::fs::testing::private_tempdir();
        let file = dir.path().join("ccci.conf");
        std::fs::write(&file, "CCCI_RUN_ID=x\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = read(&file).unwrap_err().to_string();
        assert!(
            e.contains("is writable by group or others (mode 0620)"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&file).unwrap().is_some());
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = read(&link).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(read(&dir.path().join("missing")).unwrap().is_none());
    }
}
