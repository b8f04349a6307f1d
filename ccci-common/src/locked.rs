//! Open → lock → verify → retry: taking an `flock` on a file or directory
//! that other processes may unlink or replace at any moment.
//!
//! An `flock` is held on an open file, not on a name. When another process
//! unlinks the name (a finishing run removing its lockfile, a `gc` removing
//! a run dir) or renames something else into its place, a process that
//! opened the old file before and locked it after holds a lock nobody else
//! will ever contend for, while a newcomer locks the new file: two holders.
//!
//! [`lock_named`] closes that race the way every lock of ours does: after
//! the lock is taken, the descriptor is compared with what the name names
//! *now* (`fstat` of the descriptor against `fstatat(…, AT_SYMLINK_NOFOLLOW)`
//! of the name: same device and inode). Different or missing: the lock is
//! dropped and everything starts over from the open. Since whoever unlinks
//! or replaces the name does so only while holding the lock (the
//! "unlink only while holding" rule), a holder whose check passed knows the
//! name is its file for as long as it holds the lock.
//!
//! The check compares descriptors, never two path lookups, so a symlink or
//! a rename between the open and the check cannot make it pass.

use crate::names::quote_path;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::FileStat;

use crate::sys::{flock, FlockOp};

/// How often [`lock_named`] starts over before giving up; each retry means
/// another process removed or replaced the name meanwhile.
pub const ATTEMPTS: usize = 100;

/// The name a locked file or directory must still have.
#[derive(Debug, Clone, Copy)]
pub enum Name<'a> {
    /// The entry `name` in the open directory `dir`.
    At(BorrowedFd<'a>, &'a str),
    /// A path, looked up from the current directory (its last component is
    /// not followed if it is a symlink).
    Path(&'a Path),
}

impl Name<'_> {
    fn stat(&self) -> io::Result<Option<FileStat>> {
        let result = match *self {
            Name::At(dir, name) => nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
            Name::Path(path) => nix::sys::stat::lstat(path),
        };
        match result {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// What [`lock_named`] got.
#[derive(Debug)]
pub enum Acquired<T> {
    /// Locked, and the name still names it.
    Held(T),
    /// A non-blocking attempt found it locked by someone else.
    Busy,
    /// `open` found nothing to open.
    Missing,
}

/// Whether `a` and `b` are the same file.
pub fn same_file(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Whether `name` names the open `fd` right now.
pub fn still_names(fd: BorrowedFd<'_>, name: Name<'_>) -> io::Result<bool> {
    let held = nix::sys::stat::fstat(fd)?;
    Ok(name.stat()?.is_some_and(|now| same_file(&now, &held)))
}

/// Opens with `open` (`Ok(None)`: nothing there), locks with `op`, and
/// checks that `name` still names what was locked; otherwise starts over
/// (see the module doc). `path` is for messages. The lock is released when
/// the returned value is dropped (its descriptor closed).
pub fn lock_named<T: AsFd>(
    name: Name<'_>,
    path: &Path,
    op: FlockOp,
    mut open: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Acquired<T>> {
    for _ in 0..ATTEMPTS {
        let Some(opened) = open()? else {
            return Ok(Acquired::Missing);
        };
        if !flock(opened.as_fd(), op)
            .with_context(|| format!("cannot lock {}", quote_path(path)))?
        {
            return Ok(Acquired::Busy);
        }
        if still_names(opened.as_fd(), name)
            .with_context(|| format!("cannot stat {}", quote_path(path)))?
        {
            return Ok(Acquired::Held(opened));
        }
    }
    Err(unsettled(path.to_path_buf()))
}

fn unsettled(path: PathBuf) -> anyhow::Error {
    anyhow!(
        "{} kept being removed or replaced while it was being locked; try again",
        quote_path(&path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn open(path: &Path) -> anyhow::Result<Option<File>> {
        match File::open(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    #[test]
    fn held_busy_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("l");
        std::fs::write(&path, "").unwrap();
        let held = lock_named(Name::Path(&path), &path, FlockOp::Exclusive, || open(&path));
        let Ok(Acquired::Held(first)) = held else {
            panic!("{held:?}");
        };
        let again = lock_named(Name::Path(&path), &path, FlockOp::ExclusiveNonblock, || {
            open(&path)
        })
        .unwrap();
        assert!(matches!(again, Acquired::Busy), "{again:?}");
        drop(first);
        let missing = t.path().join("m");
        let none = lock_named(Name::Path(&missing), &missing, FlockOp::Exclusive, || {
            open(&missing)
        })
        .unwrap();
        assert!(matches!(none, Acquired::Missing));
    }

    #[test]
    fn a_name_replaced_after_the_open_makes_it_start_over() {
        let t = tempfile::tempdir().unwrap();
        let dir = File::open(t.path()).unwrap();
        let path = t.path().join("l");
        std::fs::write(&path, "old").unwrap();
        let mut opens = 0;
        let got = lock_named(
            Name::At(dir.as_fd(), "l"),
            &path,
            FlockOp::Exclusive,
            || {
                opens += 1;
                let f = open(&path)?;
                if opens == 1 {
                    // Someone replaces the name between our open and lock.
                    std::fs::remove_file(&path)?;
                    std::fs::write(&path, "new")?;
                }
                Ok(f)
            },
        )
        .unwrap();
        let Acquired::Held(file) = got else {
            panic!("{got:?}");
        };
        assert_eq!(opens, 2);
        assert!(still_names(file.as_fd(), Name::At(dir.as_fd(), "l")).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_name_that_keeps_changing_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("l");
        let e = lock_named(Name::Path(&path), &path, FlockOp::Exclusive, || {
            std::fs::write(&path, "")?;
            let f = open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        })
        .unwrap_err();
        assert!(e.to_string().contains("kept being removed"), "{e}");
    }
}
