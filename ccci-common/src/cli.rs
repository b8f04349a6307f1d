//! The frame every tool's `main` runs in: parse, run, map to an exit status.
//!
//! - `--help` and `--version` print to stdout and exit 0.
//! - Usage errors are clap's messages, prefixed with the tool's name, status 2.
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

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::exit;

static TOOL: OnceLock<&'static str> = OnceLock::new();
static STAMP: AtomicBool = AtomicBool::new(false);

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
    STAMP.store(!stderr_is_journal(), Ordering::Relaxed);
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
    if !STAMP.load(Ordering::Relaxed) {
        return text.to_string();
    }
    let now = now_rfc3339();
    text.lines().map(|line| format!("{now} {line}\n")).collect()
}

/// Writes `tool: message` (one or more lines) to stderr.
pub fn try_emit(args: fmt::Arguments<'_>) -> io::Result<()> {
    let text = stderr_text(&format!("{}: {}\n", tool(), args));
    io::stderr().lock().write_all(text.as_bytes())
}

/// Writes `tool: message` to stderr; a closed stderr is ignored.
pub fn emit(args: fmt::Arguments<'_>) {
    let _ = try_emit(args);
}

/// `say!("...")`: one line on stderr, prefixed with the tool's name.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::emit(format_args!($($arg)*)) };
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
    drop_empty_variables();
    let mut command = P::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|matches| {
            let parsed = P::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
            let _ = PARSED.set((command.clone(), matches));
            Ok(parsed)
        });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return ExitCode::from(clap_error(e)),
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
fn drop_empty_variables() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_string_lossy().starts_with("CCCI_") && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
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
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_else(flag),
        Some(arg) => arg
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(flag),
        None => flag(),
    }
}

/// `value` quoted for a message: single quotes as in the shell, or `$'…'`
/// with `\xNN` escapes when it is not UTF-8 or holds control characters,
/// so that nothing invisible goes unseen.
pub fn quote(value: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => crate::names::shell_quote(text),
        _ => {
            let mut out = String::from("$'");
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\'' => out.push_str("\\'"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if c.is_control() => {
                            let mut buf = [0; 4];
                            for b in c.encode_utf8(&mut buf).bytes() {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                        }
                        c => out.push(c),
                    }
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out.push('\'');
            out
        }
    }
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

fn clap_error(e: clap::Error) -> u8 {
    if !e.use_stderr() {
        // --help, --version
        let _ = write!(io::stdout().lock(), "{}", e.render());
        return exit::SUCCESS;
    }
    if e.kind() == clap::error::ErrorKind::InvalidUtf8 {
        // clap names neither the value nor the flag.
        emit(format_args!("{}", non_utf8_argument(std::env::args_os())));
        return exit::USAGE;
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = stderr_text(&format!("{}: {}", tool(), text));
    let _ = write!(io::stderr().lock(), "{text}");
    exit::USAGE
}

/// The message for the first argument of `args` that is not UTF-8, naming
/// the flag it was given to (`--flag VALUE` or `--flag=VALUE`), quoted.
fn non_utf8_argument(args: impl IntoIterator<Item = std::ffi::OsString>) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut previous: Option<std::ffi::OsString> = None;
    for arg in args.into_iter().skip(1) {
        if arg.to_str().is_none() {
            let bytes = arg.as_bytes();
            if bytes.starts_with(b"--") {
                if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                    let flag = String::from_utf8_lossy(&bytes[..eq]).into_owned();
                    let value = std::ffi::OsStr::from_bytes(&bytes[eq + 1..]);
                    return format!("invalid value {} for {flag}: not valid UTF-8", quote(value));
                }
            }
            return match previous.as_ref().and_then(|p| p.to_str()) {
                Some(flag) if flag.starts_with('-') && flag != "--" => {
                    format!("invalid value {} for {flag}: not valid UTF-8", quote(&arg))
                }
                _ => format!("argument {} is not valid UTF-8", quote(&arg)),
            };
        }
        previous = Some(arg);
    }
    "an argument is not valid UTF-8".to_string()
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
    }

    #[test]
    fn non_utf8_arguments_are_named_and_quoted() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let args = |v: &[&[u8]]| -> Vec<OsString> {
            v.iter().map(|a| OsString::from_vec(a.to_vec())).collect()
        };
        assert_eq!(
            non_utf8_argument(args(&[b"t", b"--deadline", b"5\xff"])),
            r"invalid value $'5\xff' for --deadline: not valid UTF-8"
        );
        assert_eq!(
            non_utf8_argument(args(&[b"t", b"--deadline=\xfe"])),
            r"invalid value $'\xfe' for --deadline: not valid UTF-8"
        );
        assert_eq!(
            non_utf8_argument(args(&[b"t", b"get", b"n\xff"])),
            r"argument $'n\xff' is not valid UTF-8"
        );
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
