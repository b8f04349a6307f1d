//! Lines on stderr: each starts with the tool's name; under cron with an
//! RFC 3339 time stamp ([`stamp_stderr`]); under the journal with its
//! sd-daemon(3) priority instead ([`Priority`]), so `journalctl -p warning`
//! shows exactly warnings and errors (SPEC §1 "Logs under systemd").

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

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

/// Names the running tool, and sees whether stderr is the journal; once,
/// first thing in [`super::main`].
pub(super) fn start(tool: &'static str) {
    let _ = TOOL.set(tool);
    JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
}

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
pub(super) fn stderr_text(text: &str) -> String {
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

/// The current time as RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
