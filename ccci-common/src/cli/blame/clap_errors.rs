//! A bad value that clap itself refused, reported as SPEC §1 wants (see
//! [`clap_error`]): the value quoted by [`quote`] so nothing invisible goes
//! unseen, and blamed on the flag, positional or variable it came from.
//! clap's own text says neither well.

use std::ffi::OsString;
use std::io::{self, Write};

use super::owners::owners;
use super::quote;
use crate::cli::say::{stderr_text, tool};
use crate::exit;

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
pub(in crate::cli) fn clap_error(e: clap::Error, command: &clap::Command) -> u8 {
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
}
