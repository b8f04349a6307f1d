//! The state files of one locked directory: whole-file changes under the
//! directory's lock (guarantees 2 and 3 of the crate doc).

use ccci_common::names::quote_path;
use std::io::Read;

use anyhow::{anyhow, Context};
use ccci_common::cli::UsageError;
use ccci_common::fs::{FileError, FileErrorKind, OpenHow, SafeDir};
use ccci_common::locked::{lock_named, Acquired, Name};
use ccci_common::names::shell_quote;
use ccci_common::run::RECORD;
use ccci_common::sys::FlockOp;

/// The value of a counter file: one integer, surrounding whitespace allowed.
/// `None` when it holds anything else, including nothing.
pub fn parse_counter(content: &[u8]) -> Option<i64> {
    std::str::from_utf8(content).ok()?.trim_ascii().parse().ok()
}

/// Checks that `line` is one line (no newline inside), for `append`.
pub fn check_line(line: &[u8]) -> Result<(), UsageError> {
    if line.contains(&b'\n') {
        return Err(UsageError(format!(
            "invalid value {} for LINE: it must be one line, without a newline",
            shell_quote(&String::from_utf8_lossy(line))
        )));
    }
    Ok(())
}

/// The content of the file `name` in `dir`; `None` when it does not exist.
pub fn read_file(dir: &SafeDir, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match dir.open_file(name, OpenHow::Read) {
        Ok(mut file) => {
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", quote_path(&dir.join(name))))?;
            Ok(Some(buf))
        }
        Err(FileError {
            kind: FileErrorKind::Missing,
            ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A directory of state files, locked for writing: an exclusive `flock` on
/// the directory's own descriptor, released when this is dropped, taken by
/// [`ccci_common::locked::lock_named`] so that the name is known to still
/// name the locked directory. Every change is a read-modify-replace done
/// while holding it.
#[derive(Debug)]
pub struct Locked {
    dir: SafeDir,
}

impl Locked {
    /// Opens with `open`, locks, and verifies by descriptor that `name`
    /// still names what was locked, retrying otherwise (`path` is for
    /// messages). `None`: `open` found nothing; `Some(Err(Busy))`: with
    /// `wait` false, someone else holds it.
    pub fn acquire(
        name: Name<'_>,
        path: &std::path::Path,
        wait: bool,
        open: impl FnMut() -> anyhow::Result<Option<SafeDir>>,
    ) -> anyhow::Result<Option<Result<Locked, Busy>>> {
        let op = if wait {
            FlockOp::Exclusive
        } else {
            FlockOp::ExclusiveNonblock
        };
        Ok(match lock_named(name, path, op, open)? {
            Acquired::Held(dir) => Some(Ok(Locked { dir })),
            Acquired::Busy => Some(Err(Busy)),
            Acquired::Missing => None,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &SafeDir {
        &self.dir
    }

    /// The content of `name`; `None` when it does not exist.
    pub fn read(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        read_file(&self.dir, name)
    }

    /// Replaces `name` with `value` and a newline. Like every change, it
    /// refuses a symlink or other non-regular file where the file should be,
    /// rather than silently putting a file in its place.
    pub fn set(&self, name: &str, value: &[u8]) -> anyhow::Result<()> {
        self.read(name)?;
        let mut content = value.to_vec();
        content.push(b'\n');
        self.dir.replace(name, &content)
    }

    /// Adds `by` to the counter `name` (a missing file counts as 0) and
    /// returns the new value. A file that holds no number is an error.
    pub fn incr(&self, name: &str, by: i64) -> anyhow::Result<i64> {
        let path = self.dir.join(name);
        let old = match self.read(name)? {
            None => 0,
            Some(content) => parse_counter(&content).ok_or_else(|| {
                let text = String::from_utf8_lossy(&content);
                let shown: String = text.trim_ascii().chars().take(40).collect();
                anyhow!(
                    "counter {} holds no number ({}); set a number or remove the file",
                    quote_path(&path),
                    shell_quote(&shown)
                )
            })?,
        };
        let new = old
            .checked_add(by)
            .ok_or_else(|| anyhow!("counter {} would overflow: {old} + {by}", quote_path(&path)))?;
        self.dir.replace(name, format!("{new}\n").as_bytes())?;
        Ok(new)
    }

    /// Adds `line` and a newline at the end of `name` (created if missing).
    /// A last line without its newline is completed first, so lines stay whole.
    pub fn append(&self, name: &str, line: &[u8]) -> anyhow::Result<()> {
        check_line(line)?;
        let mut content = self.read(name)?.unwrap_or_default();
        if content.last().is_some_and(|&b| b != b'\n') {
            content.push(b'\n');
        }
        content.extend_from_slice(line);
        content.push(b'\n');
        self.dir.replace(name, &content)
    }

    /// Empties and removes this directory, named `name` in `parent`, while
    /// still holding its lock (guarantee 4). The record goes last: a removal
    /// cut short by SIGKILL leaves a dir that is still recognisably stale,
    /// never an unrecorded one that the next run would adopt with old files.
    pub fn remove(self, parent: &SafeDir, name: &str) -> anyhow::Result<()> {
        let mut entries = self
            .dir
            .names()
            .with_context(|| format!("cannot list {}", quote_path(self.dir.path())))?;
        entries.sort_by_key(|entry| entry == RECORD);
        for entry in entries {
            let path = self.dir.path().join(&entry);
            let entry = entry
                .to_str()
                .ok_or_else(|| anyhow!("cannot remove {}: not our file", quote_path(&path)))?;
            self.dir.remove_file(entry).map_err(|e| {
                let e = anyhow::Error::new(e);
                if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    e.context(format!(
                        "cannot remove {}: a directory we never create; remove it by hand",
                        quote_path(&path)
                    ))
                } else {
                    e.context(format!("cannot remove {}", quote_path(&path)))
                }
            })?;
        }
        parent
            .remove_dir(name)
            .with_context(|| format!("cannot remove {}", quote_path(self.dir.path())))
    }
}

/// Someone else holds the lock (a non-blocking attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        assert_eq!(parse_counter(b"12\n"), Some(12));
        assert_eq!(parse_counter(b" -3 "), Some(-3));
        for bad in [
            &b""[..],
            b"\n",
            b"x",
            b"1 2",
            b"1.5",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lines() {
        assert!(check_line(b"a b").is_ok());
        assert!(check_line(b"").is_ok());
        let e = check_line(b"a\nb").unwrap_err().to_string();
        assert!(e.contains(r"$'a\nb'"), "{e}");
    }
}
