//! How a file is opened through a [`super::SafeDir`], and why it could not be.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::names::quote_path;

/// The [`FileErrorKind::NotRegular`] kind of a regular file with more than
/// one hard link: where a tool's own file is expected, it is refused.
pub const HARD_LINKED: &str = "a file with more than one hard link";

/// How [`super::SafeDir::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenHow {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; created 0600 when missing.
    Create,
    /// Read and write; created 0600, and it must not exist yet (`O_EXCL`).
    CreateNew,
}

/// A file that could not be opened, and why; callers branch on `kind`.
#[derive(Debug)]
pub struct FileError {
    /// The file's path, for messages.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: FileErrorKind,
}

/// Why [`super::SafeDir::open_file`] failed.
#[derive(Debug)]
pub enum FileErrorKind {
    /// No such file (and none was to be created).
    Missing,
    /// `OpenHow::CreateNew`, and the file exists.
    Exists,
    /// A symlink: never followed.
    Symlink,
    /// Not a regular file: "a directory", "a FIFO", …, or a regular file
    /// with more than one link ([`HARD_LINKED`]).
    NotRegular(&'static str),
    /// Any other I/O error.
    Io(io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = quote_path(&self.path);
        match &self.kind {
            FileErrorKind::Missing => write!(f, "{path} does not exist"),
            FileErrorKind::Exists => write!(f, "{path} exists already"),
            FileErrorKind::Symlink => {
                write!(f, "{path} is a symlink; refusing to follow it (remove it)")
            }
            FileErrorKind::NotRegular(HARD_LINKED) => write!(
                f,
                "{path} has more than one hard link (another name for it may be another \
                 file's); refusing to use it (remove it)"
            ),
            FileErrorKind::NotRegular(kind) => {
                write!(
                    f,
                    "{path} is {kind}, not a regular file; refusing to use it"
                )
            }
            FileErrorKind::Io(e) => write!(f, "cannot open {path}: {e}"),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            FileErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}
