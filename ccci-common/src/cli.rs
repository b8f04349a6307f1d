//! The frame every tool's `main` runs in: parse, run, map to an exit status.
//!
//! - `--help` and `--version` print to stdout and exit 0.
//! - Usage errors are clap's messages, prefixed with the tool's name, status 2.
//! - [`UsageError`] (bad input found after parsing) is status 2.
//! - Any other error is printed as `tool: what: why` and is status 125.
//! - A closed stdout (`ccci-lock --list | head -1`) is not an error.
//! - A run that returns [`exit::Ended::Signal`] ends by that signal, after
//!   its cleanup (SPEC §1 "Signal deaths propagate").

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::OnceLock;

use crate::exit;

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// The running tool's name, for message prefixes.
pub fn tool() -> &'static str {
    TOOL.get().copied().unwrap_or("ccci")
}

/// Writes `tool: message` to stderr; a closed stderr is ignored.
pub fn emit(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{}: {}", tool(), args);
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
    let _ = write!(io::stderr().lock(), "{}: {}", tool(), text);
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
    fn rfc3339_is_utc_to_the_second() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-27T03:35:11Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }
}
