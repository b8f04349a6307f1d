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
//!
//! What lives where: [`say`] writes stderr lines (tool prefix, time stamps,
//! journal priorities); [`blame`] names where a bad value came from (below);
//! [`testing`] holds the check every tool's command-line tests share; this
//! module is the frame itself.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::OnceLock;

use crate::exit;

pub mod blame;
pub mod say;
pub mod testing;

pub use blame::{bad_value, checked, checked_path, given_on_command_line, quote, source};
pub use say::{
    emit, emit_at, now_rfc3339, stamp_stderr, stderr_to_journal, tool, try_emit, try_emit_at,
    Priority,
};

/// The after-help text of every tool's `--help` (and so of its man page):
/// the tool's own `notes`, then the configuration file's note
/// ([`crate::config::help_note`]), then the exit-status table
/// ([`exit::help_section`]). For clap's `after_help = …`.
pub fn after_help(notes: &str) -> String {
    format!(
        "{notes}\n\n{}\n\n{}",
        crate::config::help_note(),
        exit::help_section()
    )
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
    say::start(tool);
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
        let _ = blame::PARSED.set((command.clone(), matches));
        Ok(parsed)
    });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return ExitCode::from(blame::clap_error(e, &command)),
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
}
