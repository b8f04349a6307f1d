//! Naming where a bad value came from.
//!
//! SPEC §1 wants a bad value blamed on where it came from: the flag the user
//! typed, or the variable the environment set
//! (`CCCI_RUN_ID='build 42' is not a valid run id`). clap's `env =` together
//! with a `value_parser` blames the flag even when the user never typed it,
//! and refuses a non-UTF-8 value without quoting it. So a flag that may come
//! from a variable is declared *without* a `value_parser`, as a raw
//! `OsString` (or `PathBuf`), and validated after parsing with [`checked`]:
//!
//! ```ignore
//! #[arg(long, value_name = "ID", env = "CCCI_RUN_ID", hide_env_values = true)]
//! pub run_id: Option<OsString>,
//! ...
//! let run_id = cli::checked("run_id", cli.run_id.as_deref(), names::run_id)?;
//! ```
//!
//! [`super::main`] keeps clap's matches, so [`checked`] (and [`source`]) can ask
//! clap where the value came from. The message is
//! `CCCI_RUN_ID='build 42' is not a valid run id: …` for a variable and
//! `invalid value 'build 42' for --run-id: not a valid run id: …` for a flag,
//! status 2; a non-UTF-8 value is quoted as `$'\xff'`. [`checked_path`] does
//! the same for a path a variable may give (only its UTF-8-ness is not
//! required; see there).
//!
//! What lives where: the source of a value checked after parsing here; a
//! bad value that clap itself refused, reported with it quoted and its
//! source named, in `clap_errors`; which argument each command-line value
//! is given to (what `clap_errors` needs to tell a typed value from a
//! variable's) in `owners`.

use std::sync::OnceLock;

use super::UsageError;

mod clap_errors;
mod owners;

pub(super) use clap_errors::clap_error;

/// The parsed command line and its definition, kept by [`main`] for
/// [`source`].
pub(super) static PARSED: OnceLock<(clap::Command, clap::ArgMatches)> = OnceLock::new();

/// Whether the argument `id` (the field name, `lock_dir`) was given on the
/// command line (not by its variable, nor by default).
pub fn given_on_command_line(id: &str) -> bool {
    let Some((_, matches)) = PARSED.get() else {
        return false;
    };
    matches.try_contains_id(id).is_ok()
        && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// Where the value of the argument `id` (the field name, `run_id`) came
/// from, for messages: its variable (`CCCI_RUN_ID`) when the environment
/// set it, else its flag (`--run-id`). Without the matches of [`super::main`] (in
/// unit tests) the flag is derived from `id`.
pub fn source(id: &str) -> String {
    let flag = || format!("--{}", id.replace('_', "-"));
    let Some((command, matches)) = PARSED.get() else {
        return flag();
    };
    let find = |cmd: &clap::Command| cmd.get_arguments().find(|a| a.get_id() == id).cloned();
    let mut arg = find(command);
    let mut m = matches;
    let mut cmd = command;
    let mut from_env = m.try_contains_id(id).is_ok()
        && m.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
    // Globals given after a subcommand are recorded there too.
    while let Some((name, sub)) = m.subcommand() {
        let Some(sub_cmd) = cmd.find_subcommand(name) else {
            break;
        };
        if sub.try_contains_id(id).is_ok() {
            from_env = sub.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
            arg = find(sub_cmd).or(arg);
        }
        m = sub;
        cmd = sub_cmd;
    }
    match arg {
        Some(arg) if from_env => arg
            .get_env()
            .map(|v| crate::config::variable_source(&v.to_string_lossy()))
            .unwrap_or_else(flag),
        Some(arg) => arg
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(flag),
        None => flag(),
    }
}

/// `value` quoted for a message so that nothing invisible goes unseen:
/// [`crate::names::shell_quote_os`], the one quoting of the project (kept
/// here under this name for the callers that build messages).
pub fn quote(value: &std::ffi::OsStr) -> String {
    crate::names::shell_quote_os(value)
}

/// The message for a bad `value` of argument `id`, naming its source (see
/// the module doc); `why` is the validator's reason ("not a valid run id: …").
pub fn bad_value(id: &str, value: &std::ffi::OsStr, why: &str) -> UsageError {
    let source = source(id);
    let quoted = quote(value);
    UsageError(if source.starts_with("--") {
        format!("invalid value {quoted} for {source}: {why}")
    } else {
        format!("{source}={quoted} is {why}")
    })
}

/// Validates the raw value of argument `id` with `parse` (a validator of the
/// shape of [`crate::names::run_id`]); `None` stays `None`. A value that is
/// not UTF-8, or that `parse` refuses, is a [`UsageError`] naming its source.
pub fn checked<T>(
    id: &str,
    value: Option<&std::ffi::OsStr>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, UsageError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok_or_else(|| bad_value(id, value, "not valid UTF-8"))?;
    parse(text)
        .map(Some)
        .map_err(|why| bad_value(id, value, &why))
}

/// A directory path from argument `id` (flag or variable): any bytes but
/// NUL are a path, so only an empty value is refused, naming its source.
/// Paths that are printed for `eval` must be UTF-8; the caller checks that
/// where it matters.
pub fn checked_path(
    id: &str,
    value: Option<&std::path::Path>,
) -> Result<Option<std::path::PathBuf>, UsageError> {
    match value {
        Some(path) if path.as_os_str().is_empty() => {
            Err(bad_value(id, path.as_os_str(), "not a path: it is empty"))
        }
        other => Ok(other.map(std::path::Path::to_path_buf)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_visibly() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(quote(OsStr::new("build 42")), "'build 42'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quote(OsStr::new("true\r")), r"$'true\r'");
        assert_eq!(quote(OsStr::new("a\nb\x07")), r"$'a\nb\x07'");
        assert_eq!(quote(OsStr::from_bytes(b"x\xffy'")), r"$'x\xffy\''");
        // One quoting for the whole project: the same as names::shell_quote.
        for value in ["a\x1b[1m", "a\u{202e}b", "\x7f", "é"] {
            assert_eq!(quote(OsStr::new(value)), crate::names::shell_quote(value));
        }
        assert_eq!(quote(OsStr::new("a\x1b[1m")), r"$'a\e[1m'");
    }

    #[test]
    fn bad_values_name_their_source() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        // No matches kept (unit test): the flag is named.
        let e = checked("run_id", Some(OsStr::new("a/b")), crate::names::run_id).unwrap_err();
        assert!(
            e.0.starts_with("invalid value 'a/b' for --run-id: not a valid run id"),
            "{e}"
        );
        let e = checked(
            "run_id",
            Some(OsStr::from_bytes(b"\xff")),
            crate::names::run_id,
        )
        .unwrap_err();
        assert_eq!(e.0, r"invalid value $'\xff' for --run-id: not valid UTF-8");
        assert_eq!(
            checked("run_id", Some(OsStr::new("ok")), crate::names::run_id).unwrap(),
            Some("ok".to_string())
        );
        assert_eq!(checked("run_id", None, crate::names::run_id).unwrap(), None);
        assert!(checked_path("state_dir", Some(std::path::Path::new(""))).is_err());
    }
}
