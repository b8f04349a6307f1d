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

use std::ffi::OsString;
use std::io::{self, Write};
use std::sync::OnceLock;

use super::say::{stderr_text, tool};
use super::UsageError;
use crate::exit;

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

/// Reports a clap error (status 2), or prints help/version (status 0).
///
/// clap prints a rejected value raw between single quotes (a CR or an escape
/// sequence does not show, a newline breaks the line), names a positional as
/// `'[DOMAIN]...'`, blames a value that a variable gave on the flag, and says
/// "invalid UTF-8 was detected" without the value. So a bad value
/// (`ValueValidation`, `InvalidValue`, `InvalidUtf8`) is reported here from
/// the error's context and the command line, with [`quote`], naming the flag
/// (`--wait`), the positional (`DOMAIN`) or the variable (`CCCI_RUN_ID=…`)
/// it came from. Every other error is clap's own text.
pub(super) fn clap_error(e: clap::Error, command: &clap::Command) -> u8 {
    if !e.use_stderr() {
        // --help, --version
        let _ = write!(io::stdout().lock(), "{}", e.render());
        return exit::SUCCESS;
    }
    let mut command = command.clone();
    command.build();
    let args: Vec<OsString> = std::env::args_os().collect();
    let text = match bad_value_message(&e, &command, &args, |var| std::env::var_os(var)) {
        Some(message) => format!("{message}\n\nFor more information, try '--help'.\n"),
        None => {
            let text = e.render().to_string();
            text.strip_prefix("error: ").unwrap_or(&text).to_string()
        }
    };
    let text = stderr_text(&format!("{}: {}", tool(), text));
    let _ = write!(io::stderr().lock(), "{text}");
    exit::USAGE
}

/// The message for a clap error about a bad value (see [`clap_error`]), or
/// `None` for any other error. `command` is built (globals propagated);
/// `args` is the whole command line; `env` reads a variable.
fn bad_value_message(
    e: &clap::Error,
    command: &clap::Command,
    args: &[OsString],
    env: impl Fn(&str) -> Option<OsString>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::InvalidUtf8 => Some(non_utf8_argument(command, args, env)),
        kind @ (ErrorKind::ValueValidation | ErrorKind::InvalidValue) => {
            let shown = context(ContextKind::InvalidArg)?;
            let value = context(ContextKind::InvalidValue)?;
            let why = if kind == ErrorKind::ValueValidation {
                std::error::Error::source(e)
                    .map_or_else(|| "not valid".to_string(), |s| s.to_string())
            } else {
                match e.get(ContextKind::ValidValue) {
                    Some(ContextValue::Strings(good)) => {
                        format!("not one of the possible values: {}", good.join(", "))
                    }
                    _ => "not a possible value".to_string(),
                }
            };
            let arg = find_arg(command, &|a| a.to_string() == shown);
            let value = OsString::from(value);
            // A value that the command line does not hold came from the variable.
            if let Some(var) = arg.as_ref().and_then(|a| a.get_env()) {
                let typed = owners(command, args).iter().any(|(v, _)| *v == value);
                if !typed && env(&var.to_string_lossy()).as_deref() == Some(value.as_os_str()) {
                    return Some(from_variable(&var.to_string_lossy(), &value, &why));
                }
            }
            let name = arg.map_or_else(|| strip_decoration(&shown), |a| arg_name(&a));
            Some(format!("invalid value {} for {name}: {why}", quote(&value)))
        }
        _ => None,
    }
}

/// `VAR=<quoted> is …`: a bad value that the variable `var` gave.
fn from_variable(var: &str, value: &std::ffi::OsStr, why: &str) -> String {
    let var = crate::config::variable_source(var);
    let quoted = quote(value);
    if why.starts_with("not ") {
        format!("{var}={quoted} is {why}")
    } else {
        format!("{var}={quoted} is not valid: {why}")
    }
}

/// How a message names `arg`: its long flag (`--wait`), its short flag, or
/// for a positional its value name (`DOMAIN`).
fn arg_name(arg: &clap::Arg) -> String {
    if let Some(long) = arg.get_long() {
        format!("--{long}")
    } else if let Some(short) = arg.get_short() {
        format!("-{short}")
    } else if let Some(name) = arg.get_value_names().and_then(|n| n.first()) {
        name.to_string()
    } else {
        arg.get_id().as_str().to_uppercase()
    }
}

/// clap's `'[DOMAIN]...'` or `'--wait <DURATION>'` as `DOMAIN` or `--wait`.
fn strip_decoration(shown: &str) -> String {
    let first = shown.split_whitespace().next().unwrap_or(shown);
    first
        .trim_end_matches("...")
        .trim_matches(|c| matches!(c, '[' | ']' | '<' | '>'))
        .to_string()
}

/// The first argument of `command` or its subcommands that `pred` accepts.
fn find_arg(command: &clap::Command, pred: &dyn Fn(&clap::Arg) -> bool) -> Option<clap::Arg> {
    command
        .get_arguments()
        .find(|a| pred(a))
        .cloned()
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_arg(sub, pred))
        })
}

/// Whether `arg` takes its values as raw bytes (`OsString`, `PathBuf`),
/// so a non-UTF-8 value is not what clap refused.
fn takes_raw_bytes(arg: &clap::Arg) -> bool {
    use std::any::TypeId;
    let id = arg.get_value_parser().type_id();
    id == TypeId::of::<OsString>() || id == TypeId::of::<std::path::PathBuf>()
}

/// Each value on the command line `args` (program name first) with the
/// argument of `command` it is given to, as clap reads them: `--flag=V`,
/// `--flag V`, `-fV`, `-f V`, subcommands, positionals in order (one that
/// takes several values keeps the rest), and everything after `--` for the
/// trailing positional. `None`: no argument takes it (clap refuses it).
fn owners(command: &clap::Command, args: &[OsString]) -> Vec<(OsString, Option<clap::Arg>)> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    // The commands entered, outermost first: flags are looked up innermost first.
    let mut path: Vec<&clap::Command> = vec![command];
    let mut position = 0; // of the next positional in the innermost command
    let mut rest = false; // after `--`
    let mut it = args.iter().skip(1);
    let flag = |path: &[&clap::Command], pred: &dyn Fn(&clap::Arg) -> bool| {
        path.iter()
            .rev()
            .find_map(|c| c.get_arguments().find(|a| pred(a)).cloned())
    };
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    while let Some(token) = it.next() {
        let cmd = *path.last().unwrap();
        let bytes = token.as_bytes();
        let positionals: Vec<&clap::Arg> = {
            let mut p: Vec<&clap::Arg> = cmd.get_positionals().collect();
            p.sort_by_key(|a| a.get_index());
            p
        };
        if rest {
            let last = positionals
                .iter()
                .rev()
                .find(|a| a.is_last_set())
                .or(positionals.last());
            out.push((token.clone(), last.map(|a| (*a).clone())));
            continue;
        }
        if bytes == b"--" {
            rest = true;
            continue;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&b| b == b'=') {
                Some(eq) => (&long[..eq], Some(&long[eq + 1..])),
                None => (long, None),
            };
            let arg = flag(&path, &|a| a.get_long().map(str::as_bytes) == Some(name));
            match (arg, inline) {
                (arg, Some(value)) => out.push((OsString::from_vec(value.to_vec()), arg)),
                (Some(arg), None) if takes_value(&arg) => {
                    if let Some(value) = it.next() {
                        out.push((value.clone(), Some(arg)));
                    }
                }
                _ => {}
            }
            continue;
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            // A cluster of short flags; the first that takes a value takes the rest.
            let mut i = 1;
            while i < bytes.len() {
                let c = bytes[i] as char;
                let arg = flag(&path, &|a| a.get_short() == Some(c));
                i += 1;
                match arg {
                    Some(arg) if takes_value(&arg) => {
                        let value = bytes[i..].strip_prefix(b"=").unwrap_or(&bytes[i..]);
                        if !value.is_empty() {
                            out.push((OsString::from_vec(value.to_vec()), Some(arg)));
                        } else if let Some(value) = it.next() {
                            out.push((value.clone(), Some(arg)));
                        }
                        break;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            continue;
        }
        if position == 0 {
            if let Some(sub) = token.to_str().and_then(|name| {
                cmd.get_subcommands()
                    .find(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name))
            }) {
                path.push(sub);
                continue;
            }
        }
        let ordinary: Vec<&&clap::Arg> = positionals.iter().filter(|a| !a.is_last_set()).collect();
        let arg = ordinary
            .get(position)
            .or(ordinary.last())
            .map(|a| (**a).clone());
        let several = arg
            .as_ref()
            .and_then(|a| a.get_num_args())
            .is_some_and(|n| n.max_values() > 1);
        if !several {
            position += 1;
        }
        out.push((token.clone(), arg));
    }
    out
}

/// The message for clap's `InvalidUtf8`: the first value on the command line
/// that is not UTF-8 and is given to an argument that wants text, quoted and
/// named (`invalid value $'a\xffb' for DOMAIN: not valid UTF-8`); else the
/// variable of such an argument that is not UTF-8.
fn non_utf8_argument(
    command: &clap::Command,
    args: &[OsString],
    env: impl Fn(&str) -> Option<OsString>,
) -> String {
    let why = "not valid UTF-8";
    let owners = owners(command, args);
    let bad = |raw_ok: bool| {
        owners.iter().find(|(value, arg)| {
            value.to_str().is_none() && !(raw_ok && arg.as_ref().is_some_and(takes_raw_bytes))
        })
    };
    if let Some((value, arg)) = bad(true).or_else(|| bad(false)) {
        return match arg {
            Some(arg) => format!(
                "invalid value {} for {}: {why}",
                quote(value),
                arg_name(arg)
            ),
            None => format!("argument {} is {why}", quote(value)),
        };
    }
    let from_env = find_arg(command, &|a| {
        !takes_raw_bytes(a)
            && a.get_env()
                .and_then(|var| env(&var.to_string_lossy()))
                .is_some_and(|v| v.to_str().is_none())
    });
    if let Some(var) = from_env.as_ref().and_then(|a| a.get_env()) {
        let var = var.to_string_lossy();
        if let Some(value) = env(&var) {
            return from_variable(&var, &value, why);
        }
    }
    format!("an argument is {why}")
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

    /// A command line like the tools': a flag with a value, a boolean
    /// flag, a raw path flag, a flag a variable may give, positionals with
    /// their validators, a subcommand and a trailing command.
    fn tool_command() -> clap::Command {
        use clap::{Arg, ArgAction, Command};
        let mut cmd = Command::new("t")
            .arg(
                Arg::new("wait")
                    .short('w')
                    .long("wait")
                    .value_name("DURATION")
                    .value_parser(crate::duration::parse),
            )
            .arg(
                Arg::new("nonblock")
                    .short('n')
                    .long("nonblock")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                Arg::new("dir")
                    .long("dir")
                    .value_parser(clap::value_parser!(std::path::PathBuf)),
            )
            .arg(
                Arg::new("pid")
                    .long("pid")
                    .env("CCCI_TEST_PID")
                    .value_parser(clap::value_parser!(u32)),
            )
            .arg(
                Arg::new("domain")
                    .value_name("DOMAIN")
                    .num_args(1..)
                    .value_parser(crate::names::domain),
            )
            .arg(
                Arg::new("command")
                    .value_name("COMMAND")
                    .last(true)
                    .num_args(1..)
                    .value_parser(clap::value_parser!(OsString)),
            )
            .subcommand(
                Command::new("incr")
                    .arg(
                        Arg::new("name")
                            .value_name("NAME")
                            .required(true)
                            .value_parser(crate::names::state_name),
                    )
                    .arg(
                        Arg::new("by")
                            .value_name("BY")
                            .value_parser(clap::value_parser!(i64)),
                    ),
            )
            .args_conflicts_with_subcommands(true);
        cmd.build();
        cmd
    }

    /// The message of [`clap_error`] for `args` with the variables `vars`.
    fn message(args: &[&[u8]], vars: &[(&str, &[u8])]) -> Option<String> {
        use std::os::unix::ffi::OsStringExt;
        let args: Vec<OsString> = std::iter::once(&b"t"[..])
            .chain(args.iter().copied())
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect();
        let env = |var: &str| {
            vars.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| OsString::from_vec(v.to_vec()))
        };
        for (k, v) in vars {
            // clap reads variables from the process, when an argument is
            // defined; the names are this test's own.
            std::env::set_var(k, std::ffi::OsStr::from_bytes(v));
        }
        let mut cmd = tool_command();
        let e = cmd.try_get_matches_from_mut(&args).unwrap_err();
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        bad_value_message(&e, &cmd, &args, env)
    }
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn bad_values_are_quoted_and_blamed_on_their_flag_or_positional() {
        let cases: &[(&[&[u8]], &str)] = &[
            (
                &[b"a\nb"],
                r"invalid value $'a\nb' for DOMAIN: not a valid domain",
            ),
            (
                &[b"-n", b"true\r", b"--", b"x"],
                r"invalid value $'true\r' for DOMAIN: not a valid domain",
            ),
            (
                &[b"ok", b"a\x1b[1m"],
                r"invalid value $'a\e[1m' for DOMAIN: not a valid domain",
            ),
            (
                &[b"a'b"],
                r"invalid value 'a'\''b' for DOMAIN: not a valid domain",
            ),
            (
                &[b"--wait=1\r", b"d"],
                r"invalid value $'1\r' for --wait: not a valid duration",
            ),
            (
                &[b"-w", b"1s\n", b"d"],
                r"invalid value $'1s\n' for --wait: not a valid duration",
            ),
            (
                &[b"-nw1x", b"d"],
                "invalid value '1x' for --wait: not a valid duration",
            ),
            (
                &[b"incr", b"a\xe2\x80\x8bb"],
                r"invalid value $'a\u200bb' for NAME: not a valid name",
            ),
            (
                &[b"incr", b"n", b"1\r"],
                r"invalid value $'1\r' for BY: invalid digit",
            ),
            (
                &[b"--pid=x", b"d"],
                "invalid value 'x' for --pid: invalid digit",
            ),
        ];
        for (args, expected) in cases {
            let m = message(args, &[]).unwrap();
            assert!(m.starts_with(expected), "{args:?}: {m}");
            assert!(
                !m.contains('\n') && !m.contains('\r') && !m.contains('\x1b'),
                "{m:?}"
            );
        }
    }

    #[test]
    fn non_utf8_values_are_named_and_quoted() {
        let cases: &[(&[&[u8]], &str)] = &[
            (
                &[b"a\xffb", b"--", b"x"],
                r"invalid value $'a\xffb' for DOMAIN: not valid UTF-8",
            ),
            (
                &[b"-n", b"\xc3"],
                r"invalid value $'\xc3' for DOMAIN: not valid UTF-8",
            ),
            (
                &[b"--wait", b"5\xff", b"d"],
                r"invalid value $'5\xff' for --wait: not valid UTF-8",
            ),
            (
                &[b"--wait=\xfe", b"d"],
                r"invalid value $'\xfe' for --wait: not valid UTF-8",
            ),
            (
                &[b"-w\xfe", b"d"],
                r"invalid value $'\xfe' for --wait: not valid UTF-8",
            ),
            // A raw path before the bad value is not what clap refused.
            (
                &[b"--dir=\xff", b"d\xff"],
                r"invalid value $'d\xff' for DOMAIN: not valid UTF-8",
            ),
            (
                &[b"incr", b"n\xff"],
                r"invalid value $'n\xff' for NAME: not valid UTF-8",
            ),
            (
                &[b"incr", b"n", b"\xff"],
                r"invalid value $'\xff' for BY: not valid UTF-8",
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(message(args, &[]).as_deref(), Some(*expected), "{args:?}");
        }
    }

    #[test]
    fn bad_values_from_a_variable_name_the_variable() {
        assert_eq!(
            message(&[b"d"], &[("CCCI_TEST_PID", b"1\r")]).unwrap(),
            r"CCCI_TEST_PID=$'1\r' is not valid: invalid digit found in string"
        );
        // Typed on the command line too: the flag is to blame.
        assert_eq!(
            message(&[b"--pid=x", b"d"], &[("CCCI_TEST_PID", b"x")]).unwrap(),
            "invalid value 'x' for --pid: invalid digit found in string"
        );
    }

    #[test]
    fn other_usage_errors_are_left_to_clap() {
        assert_eq!(message(&[b"--nope"], &[]), None);
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
