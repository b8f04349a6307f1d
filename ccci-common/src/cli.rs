//! The frame every tool's `main` runs in: parse, run, map to an exit status.
//!
//! - `--help` and `--version` print to stdout and exit 0.
//! - Usage errors are clap's messages, prefixed with the tool's name, status 2.
//! - [`UsageError`] (bad input found after parsing) is status 2.
//! - Any other error is printed as `tool: what: why` and is status 125.
//! - A closed stdout (`ccci-lock --list | head -1`) is not an error.
//! - A tool run from cron ([`stamp_stderr`]) starts each stderr line with an
//!   RFC 3339 timestamp, unless stderr is the journal, which stamps lines
//!   itself (`JOURNAL_STREAM` names the journal's stream as `DEV:INODE`).
//! - A run that returns [`exit::Ended::Signal`] ends by that signal, after
//!   its cleanup (SPEC §1 "Signal deaths propagate").

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::exit;

static TOOL: OnceLock<&'static str> = OnceLock::new();
static STAMP: AtomicBool = AtomicBool::new(false);

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
    let parsed = match P::try_parse() {
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

fn clap_error(e: clap::Error) -> u8 {
    if !e.use_stderr() {
        // --help, --version
        let _ = write!(io::stdout().lock(), "{}", e.render());
        return exit::SUCCESS;
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = stderr_text(&format!("{}: {}", tool(), text));
    let _ = write!(io::stderr().lock(), "{text}");
    exit::USAGE
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
