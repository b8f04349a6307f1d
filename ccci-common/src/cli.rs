//! The frame every tool's `main` runs in: parse, run, map to an exit status.
//!
//! - `--help` and `--version` print to stdout and exit 0.
//! - Usage errors are clap's messages, prefixed with the tool's name, status 2,
//!   except for a bad value: clap would print it raw, so it is reported as
//!   `invalid value <quoted> for <--flag or POSITIONAL>: <reason>` or
//!   `CCCI_X=<quoted> is …`, quoted by [`quote`] (see `clap_error`).
//! - [`UsageError`] (bad input found after parsing) is status 2.
//! - Any other error is printed as `tool: what: why` and is status 125.
//! - A closed pipe on stdout (`ccci-lock --list | head -1`) is not an error
//!   for a listing; output that must arrive whole (shell for `eval`, a
//!   path, a value) is written with [`print_all`], and a stdout closed
//!   before it was all written is status 125, saying so.
//! - A stdout that is already closed when a tool starts (`>&-`) is not seen
//!   by it: Rust's runtime opens descriptors 0-2 on `/dev/null` before any
//!   tool code runs (so no file the tool opens can take their number), and
//!   output then goes to `/dev/null` whole, as with `>/dev/null`.
//! - A tool run from cron ([`stamp_stderr`]) starts each stderr line with an
//!   RFC 3339 timestamp, unless stderr is the journal, which stamps lines
//!   itself (`JOURNAL_STREAM` names the journal's stream as `DEV:INODE`).
//! - A run that returns [`exit::Ended::Signal`] ends by that signal, after
//!   its cleanup (SPEC §1 "Signal deaths propagate").
//!
//! # Naming where a bad value came from
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
//! [`main`] keeps clap's matches, so [`checked`] (and [`source`]) can ask
//! clap where the value came from. The message is
//! `CCCI_RUN_ID='build 42' is not a valid run id: …` for a variable and
//! `invalid value 'build 42' for --run-id: not a valid run id: …` for a flag,
//! status 2; a non-UTF-8 value is quoted as `$'\xff'`. [`checked_path`] does
//! the same for a path a variable may give (only its UTF-8-ness is not
//! required; see there).

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::exit;

static TOOL: OnceLock<&'static str> = OnceLock::new();
static STAMP: AtomicBool = AtomicBool::new(false);
/// Whether stderr is the journal: then every line starts with its
/// sd-daemon(3) priority (SPEC §1 "Logs under systemd").
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// How a stderr line counts under the journal (sd-daemon(3) priorities),
/// so that `journalctl -p warning` shows exactly warnings and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// `<3>`: an error; the default of [`say!`](crate::say).
    Error = 3,
    /// `<4>`: a warning (a possible leaked run, a refused or odd file).
    Warning = 4,
    /// `<6>`: an action (reaped, unlinked, removed).
    Action = 6,
    /// `<7>`: what `-v` adds.
    Debug = 7,
}

/// Whether stderr is the journal (see [`Priority`]).
pub fn stderr_to_journal() -> bool {
    JOURNAL.load(Ordering::Relaxed)
}

/// The parsed command line and its definition, kept by [`main`] for
/// [`source`].
static PARSED: OnceLock<(clap::Command, clap::ArgMatches)> = OnceLock::new();

/// The running tool's name, for message prefixes.
pub fn tool() -> &'static str {
    TOOL.get().copied().unwrap_or("ccci")
}

/// From now on, start every stderr line of this process with an RFC 3339
/// timestamp, unless stderr is the journal (see the module doc).
pub fn stamp_stderr() {
    STAMP.store(!stderr_to_journal(), Ordering::Relaxed);
}

/// Whether `JOURNAL_STREAM` (`DEV:INODE`, set by systemd) names our stderr.
fn stderr_is_journal() -> bool {
    names_file(std::env::var_os("JOURNAL_STREAM").as_deref(), io::stderr())
}

/// Whether `value`, as `DEV:INODE`, names the file open as `fd`.
fn names_file(value: Option<&std::ffi::OsStr>, fd: impl std::os::fd::AsFd) -> bool {
    let Some((dev, ino)) = value
        .and_then(|v| v.to_str())
        .and_then(|v| v.split_once(':'))
    else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// `text` as stderr lines: each prefixed with a timestamp when stamping.
fn stderr_text(text: &str) -> String {
    let mut out = String::new();
    stamp_lines(text, Priority::Error, &mut out);
    out
}

/// Appends `text` to `out`, each line starting with its priority under
/// the journal, or stamped with the time when stamps are on
/// ([`stderr_text`]).
fn stamp_lines(text: &str, priority: Priority, out: &mut String) {
    if JOURNAL.load(Ordering::Relaxed) {
        for line in text.lines() {
            out.push('<');
            out.push(char::from(b'0' + priority as u8));
            out.push('>');
            out.push_str(line);
            out.push('\n');
        }
        return;
    }
    if !STAMP.load(Ordering::Relaxed) {
        out.push_str(text);
        return;
    }
    use std::cell::RefCell;
    thread_local! {
        // The last stamp made, and the second it is of.
        static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with_borrow_mut(|(of, stamp)| {
        if *of != second {
            *of = second;
            *stamp = humantime::format_rfc3339_seconds(now).to_string();
        }
        for line in text.lines() {
            out.push_str(stamp);
            out.push(' ');
            out.push_str(line);
            out.push('\n');
        }
    });
}

/// Writes `tool: message` (one or more lines) to stderr, in one `write`.
/// The line is built in buffers kept for the next one: a janitor `-v` pass
/// writes a line per lockfile.
pub fn try_emit(args: fmt::Arguments<'_>) -> io::Result<()> {
    try_emit_at(Priority::Error, args)
}

/// [`try_emit`] at `priority` (see [`Priority`]).
pub fn try_emit_at(priority: Priority, args: fmt::Arguments<'_>) -> io::Result<()> {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    thread_local! {
        static BUFFERS: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
    }
    BUFFERS.with(|buffers| {
        // A message whose formatting emits again (never, in practice)
        // finds the buffers in use and gets its own.
        let mut own = (String::new(), String::new());
        let mut guard = buffers.try_borrow_mut();
        let (message, text) = match guard.as_deref_mut() {
            Ok(buffers) => buffers,
            Err(_) => &mut own,
        };
        message.clear();
        text.clear();
        let _ = writeln!(message, "{}: {}", tool(), args);
        stamp_lines(message, priority, text);
        io::stderr().lock().write_all(text.as_bytes())
    })
}

/// Writes `tool: message` to stderr; a closed stderr is ignored.
pub fn emit(args: fmt::Arguments<'_>) {
    let _ = try_emit(args);
}

/// [`emit`] at `priority`.
pub fn emit_at(priority: Priority, args: fmt::Arguments<'_>) {
    let _ = try_emit_at(priority, args);
}

/// `say!("...")`: one line on stderr, prefixed with the tool's name; an
/// error under the journal (`<3>`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::emit(format_args!($($arg)*)) };
}

/// [`say!`] for a warning (`<4>` under the journal).
#[macro_export]
macro_rules! say_warning {
    ($($arg:tt)*) => { $crate::cli::emit_at($crate::cli::Priority::Warning, format_args!($($arg)*)) };
}

/// [`say!`] for an action (`<6>` under the journal).
#[macro_export]
macro_rules! say_action {
    ($($arg:tt)*) => { $crate::cli::emit_at($crate::cli::Priority::Action, format_args!($($arg)*)) };
}

/// [`say!`] for what `-v` adds (`<7>` under the journal).
#[macro_export]
macro_rules! say_debug {
    ($($arg:tt)*) => { $crate::cli::emit_at($crate::cli::Priority::Debug, format_args!($($arg)*)) };
}

/// Invalid input noticed after parsing (status 2). The message should quote
/// the value, e.g. with [`crate::names::shell_quote`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the command line as `P`, calls `run` and turns the outcome into
/// the process's exit status (see the module doc). `run` returns a status
/// (`u8`) or an [`exit::Ended`]: `Ended::Signal(N)` ends the process by
/// signal N once `run` has returned, so every value it owned has been
/// dropped (lockfiles settled, temporaries removed) first.
pub fn main<P: clap::Parser, R: Into<exit::Ended>>(
    tool: &'static str,
    run: impl FnOnce(P) -> anyhow::Result<R>,
) -> ExitCode {
    let _ = TOOL.set(tool);
    JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
    // Before clap reads any variable: the file's values join the
    // environment where it sets none (crate::config).
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Err(e) = crate::config::load_and_apply(&args) {
        // A preflight reports a bad file among its other checks.
        let checking = args
            .iter()
            .skip(1)
            .take_while(|a| *a != "--")
            .any(|a| a == "--check");
        if !checking {
            return ExitCode::from(error_status(&e));
        }
        crate::config::defer_error(&e);
    }
    drop_empty_variables();
    let mut command = P::command();
    let parsed = command.try_get_matches_from_mut(args).and_then(|matches| {
        let parsed = P::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        let _ = PARSED.set((command.clone(), matches));
        Ok(parsed)
    });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return ExitCode::from(clap_error(e, &command)),
    };
    ExitCode::from(match run(parsed).map(Into::into) {
        Ok(exit::Ended::Code(status)) => status,
        Ok(ended @ exit::Ended::Signal(_)) => ended.end(),
        Err(e) => error_status(&e),
    })
}

/// Removes empty `CCCI_*` variables from our environment: an empty
/// variable counts as unset, as it does for most Unix tools
/// (`CCCI_RUN_ID=${BUILD_ID:-}` must not be an invalid run id). Runs before
/// anything else, while the process has one thread.
///
/// They are set again, empty, for every COMMAND a tool starts
/// ([`dropped_empty`]): an empty variable also overrides the configuration
/// file, and a ccci tool that COMMAND runs must see the same override.
fn drop_empty_variables() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_string_lossy().starts_with("CCCI_") && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for key in &empty {
        std::env::remove_var(key);
    }
    let _ = DROPPED.set(empty);
}

static DROPPED: OnceLock<Vec<OsString>> = OnceLock::new();

/// The empty `CCCI_*` variables this process was started with (and
/// removed from its own environment at start).
pub fn dropped_empty() -> &'static [OsString] {
    DROPPED.get().map_or(&[], Vec::as_slice)
}

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
/// set it, else its flag (`--run-id`). Without the matches of [`main`] (in
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
fn clap_error(e: clap::Error, command: &clap::Command) -> u8 {
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

/// The status for an error that ended `run`, after reporting it.
pub fn error_status(e: &anyhow::Error) -> u8 {
    let broken_pipe = e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return exit::SUCCESS;
    }
    emit(format_args!("{e:#}"));
    if e.downcast_ref::<UsageError>().is_some() {
        exit::USAGE
    } else {
        exit::TOOL_FAILED
    }
}

/// Writes `bytes` to stdout and flushes: output that must arrive whole
/// (shell for `eval`, a path, a value). A stdout closed before everything
/// was written is an error (status 125, saying so), not the quiet success
/// a closed pipe is for a listing: an `eval "$(ccci-state env)"` whose text
/// was cut short must not look like it worked.
pub fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| {
            let what = if e.kind() == io::ErrorKind::BrokenPipe {
                "stdout was closed before all output was written".to_string()
            } else {
                format!("cannot write to stdout: {e}")
            };
            anyhow::Error::new(OutputCutShort(what))
        })
}

/// Output that did not arrive whole ([`print_all`]): status 125, even when
/// the cause was a closed pipe.
#[derive(Debug)]
struct OutputCutShort(String);

impl fmt::Display for OutputCutShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutputCutShort {}

/// The current time as RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        let usage = anyhow::Error::new(UsageError("bad 'x'".into()));
        assert_eq!(error_status(&usage), exit::USAGE);
        let io = anyhow::Error::new(io::Error::other("disk on fire")).context("cannot write");
        assert_eq!(error_status(&io), exit::TOOL_FAILED);
        let pipe = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(error_status(&pipe), exit::SUCCESS);
    }

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

    #[test]
    fn stamped_lines_each_start_with_a_timestamp() {
        assert_eq!(stderr_text("a\nb\n"), "a\nb\n");
        STAMP.store(true, Ordering::Relaxed);
        let text = stderr_text("tool: a\n  b\n");
        STAMP.store(false, Ordering::Relaxed);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("Z tool: a"), "{text}");
        assert!(lines[1].ends_with("Z   b"), "{text}");
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        // Not set, malformed, or naming another file: stamp.
        let file = tempfile::tempfile().unwrap();
        let st = nix::sys::stat::fstat(&file).unwrap();
        let other = format!("{}:{}", st.st_dev, st.st_ino + 1);
        for value in [None, Some("garbage"), Some("1:x"), Some(other.as_str())] {
            let value = value.map(std::ffi::OsStr::new);
            assert!(!names_file(value, &file), "{value:?}");
        }
        let same = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(names_file(Some(std::ffi::OsStr::new(&same)), &file));
    }

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-27T03:35:11Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }
}
