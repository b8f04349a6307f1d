//! Directories we may write into, and files opened only through them.
//!
//! Guarantees (SPEC §1 "Directories"):
//! - A [`SafeDir`] is a real directory (never a symlink), owned by the
//!   effective uid and not writable by group or others. It is checked once,
//!   on the open descriptor, and every later operation is relative to that
//!   descriptor, so renaming or replacing the path afterwards cannot redirect
//!   us into somebody else's directory.
//! - The whole path counts, not only its last component. [`SafeDir::open`]
//!   walks the path one component at a time from a descriptor of `/`
//!   (`openat` with `O_NOFOLLOW|O_DIRECTORY`; intermediate components with
//!   `O_PATH`, so a search-only ancestor works): a symlink anywhere on the
//!   path is refused, and every ancestor must be owned by root or the
//!   effective uid and not writable by group or others, except a sticky
//!   directory such as `/tmp`, below which the next component must be owned
//!   by the effective uid. This closes the squatting race: another local user
//!   who creates `/tmp/ccci-<uid>` first (or who could rename a directory on
//!   the path) could otherwise rename the lock dir away under a running holder
//!   and let a second process lock a new file of the same name. Checking each
//!   component on the descriptor that the next `openat` starts from leaves no
//!   window between check and use.
//! - Paths are normalised lexically before the walk: a relative path is
//!   taken from the current directory (`getcwd`, which names no symlink),
//!   empty and `.` components are dropped, and `..` removes the component
//!   before it. Because no component may be a symlink, this lexical reading
//!   names the same directory the kernel would reach, and a trailing `/`,
//!   `//` or `/.` cannot make a symlink acceptable (`O_NOFOLLOW` is useless
//!   on `link/`, whose last component is empty): `link/` is opened as `link`
//!   and refused.
//! - Directories we create get mode 0700, missing parents too, each made with
//!   `mkdirat` in the walk (never through a symlink) and checked like the rest.
//! - Files are opened with `O_NOFOLLOW|O_CLOEXEC|O_NOCTTY|O_NONBLOCK` and must
//!   be regular files with one link: a symlink, FIFO, socket, device,
//!   directory, or a hard link to some other file where a file is expected is
//!   refused before anything is read, written, truncated or locked
//!   (`O_NONBLOCK` keeps a FIFO from hanging the open; it stays set, as a
//!   regular file's reads and writes and `flock(2)` ignore it).
//! - [`SafeDir::replace`] writes a new file under a temporary name and
//!   renames it into place, so a reader (or a SIGKILL at any instruction)
//!   sees the old content or the new, never a torn or empty file.
//!
//! What lives where: [`SafeDir`] here; the walk from `/` and its checks in
//! `walk`; files opened through a [`SafeDir`] and their errors in `file`;
//! a trusted file read by path (the configuration file, a password file) in
//! `trusted`; the temporary directories unit tests use in [`testing`] (with
//! the feature `testing`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

use crate::dirs::Role;
use crate::names::quote_path;

mod file;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod trusted;
mod walk;

pub use file::{FileError, FileErrorKind, OpenHow, HARD_LINKED};
pub use trusted::{open_trusted_file, read_trusted_file, read_trusted_file_if_present};
use walk::*;

/// A directory's identity: its device and inode and, where the file system
/// keeps one (ext4, xfs, btrfs, tmpfs), its birth time. The inode number
/// alone does not tell a directory from the next one: ext4 gives a new
/// directory the number of the one just removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The birth time in nanoseconds since the epoch, when known.
    pub born: Option<u128>,
}

impl DirId {
    /// Whether `other` is the same directory: the same device and inode,
    /// and the same birth time when both know one.
    pub fn same_as(&self, other: &DirId) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && match (self.born, other.born) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A directory we checked and may write into; see the module doc.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `uid 1001 (ci)`, or `uid 1001` when `/etc/passwd` has no name for it
/// (never through NSS: see [`crate::users`]).
pub fn describe_uid(uid: u32) -> String {
    match crate::users::user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

impl SafeDir {
    /// Opens `path` as `role`'s directory, walking and checking the whole
    /// path (see the module doc). With `create`, missing directories are
    /// made 0700 on the way; without it, a missing one is `Ok(None)` and
    /// nothing is created.
    pub fn open(role: &Role, path: &Path, create: bool) -> anyhow::Result<Option<SafeDir>> {
        let names = walk_components(path)
            .with_context(|| format!("cannot resolve {} {}", role.what, quote_path(path)))?;
        let mut here = PathBuf::from("/");
        let (mut fd, mut st) = open_root(role, path)?;
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let sticky = check_ancestor(role, path, &here, &st)?;
            let parent = here.clone();
            here.push(name);
            let opened = match open_dir_at(&fd, name, last) {
                Err(OpenDir::Errno(Errno::ENOENT)) if create => {
                    match nix::sys::stat::mkdirat(
                        &fd,
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(failed_on_the_way(e, "create", &here, role, path)),
                    }
                    open_dir_at(&fd, name, last)
                }
                other => other,
            };
            let next = match opened {
                Ok((next, next_st)) => {
                    st = next_st;
                    next
                }
                Err(OpenDir::Errno(Errno::ENOENT)) => return Ok(None),
                Err(OpenDir::NotDir(reason)) => {
                    return Err(if last {
                        refuse(role, path, reason)
                    } else {
                        refuse_ancestor(role, path, &here, reason, None)
                    });
                }
                Err(OpenDir::Errno(e)) => {
                    return Err(failed_on_the_way(e, "open", &here, role, path))
                }
            };
            // Below a sticky directory only root and the entry's owner can
            // have made the entry (SPEC §1): a root-owned one is as safe as
            // any root-owned ancestor. Another user's is never ours to
            // remove, so the refusal does not advise removing it.
            let me = crate::dirs::euid();
            if sticky && !last && st.st_uid != me && st.st_uid != 0 {
                return Err(refuse_ancestor(
                    role,
                    path,
                    &here,
                    &format!(
                        "is owned by {}, not by root or {}, in the sticky directory {} where \
                         anybody can create it first",
                        describe_uid(st.st_uid),
                        describe_uid(me),
                        quote_path(&parent)
                    ),
                    None,
                ));
            }
            fd = next;
        }
        if names.is_empty() {
            // The root itself: reopen it readable, like any last component.
            fd = nix::fcntl::open("/", dir_flags(), Mode::empty()).context("cannot open /")?;
        }
        if let Some(reason) = unsafe_reason(&st) {
            return Err(refuse(role, path, &reason));
        }
        Ok(Some(SafeDir {
            fd,
            path: path.to_path_buf(),
        }))
    }

    /// Like [`SafeDir::open`] with `create`, for callers that always create.
    pub fn create(role: &Role, path: &Path) -> anyhow::Result<SafeDir> {
        match SafeDir::open(role, path, true)? {
            Some(dir) => Ok(dir),
            None => bail!(
                "{} {} vanished while being created",
                role.what,
                quote_path(path)
            ),
        }
    }

    /// Opens (with `create`, makes 0700) the subdirectory `name`, with the
    /// same checks as [`SafeDir::open`] and without following a symlink.
    pub fn subdir(&self, role: &Role, name: &str, create: bool) -> anyhow::Result<Option<SafeDir>> {
        let path = self.path.join(name);
        if create {
            match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot create {}", quote_path(&path))))
                }
            }
        }
        let (fd, st) = match open_dir_at(&self.fd, OsStr::new(name), true) {
            Ok(opened) => opened,
            Err(OpenDir::Errno(Errno::ENOENT)) => return Ok(None),
            Err(OpenDir::NotDir(reason)) => return Err(refuse(role, &path, reason)),
            Err(OpenDir::Errno(e)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot open {} {}",
                    role.what,
                    quote_path(&path)
                )))
            }
        };
        if let Some(reason) = unsafe_reason(&st) {
            return Err(refuse(role, &path, &reason));
        }
        Ok(Some(SafeDir { fd, path }))
    }

    /// The path this directory was opened by (for messages and children).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This directory's identity ([`DirId`]), from its descriptor: the
    /// directory that was opened, whatever its path names now.
    pub fn identity(&self) -> io::Result<DirId> {
        use std::os::unix::fs::MetadataExt;
        // One statx(2) on the descriptor; a file system that keeps no birth
        // time answers `created()` with an error.
        let meta = File::from(self.fd.try_clone()?).metadata()?;
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        Ok(DirId {
            dev: meta.dev(),
            ino: meta.ino(),
            born,
        })
    }

    /// The path of `name` inside this directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the regular file `name` in this directory; see the module doc.
    pub fn open_file(&self, name: &str, how: OpenHow) -> Result<File, FileError> {
        self.open_file_stat(name, how).map(|(file, _)| file)
    }

    /// [`SafeDir::open_file`], with the `fstat` of the open file that the
    /// checks were made on: its identity (device, inode), which an open
    /// descriptor keeps for good, and its size and times as they were at
    /// the open.
    pub fn open_file_stat(&self, name: &str, how: OpenHow) -> Result<(File, FileStat), FileError> {
        let err = |kind| FileError {
            path: self.path.join(name),
            kind,
        };
        let flags = base_flags()
            | OFlag::O_NONBLOCK
            | match how {
                OpenHow::Read => OFlag::O_RDONLY,
                OpenHow::ReadWrite => OFlag::O_RDWR,
                OpenHow::Create => OFlag::O_RDWR | OFlag::O_CREAT,
                OpenHow::CreateNew => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            };
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| {
                err(match e {
                    Errno::ENOENT => FileErrorKind::Missing,
                    Errno::EEXIST => FileErrorKind::Exists,
                    Errno::ELOOP => FileErrorKind::Symlink,
                    Errno::EISDIR => FileErrorKind::NotRegular("a directory"),
                    Errno::ENXIO => FileErrorKind::NotRegular("a FIFO or socket"),
                    e => FileErrorKind::Io(io::Error::from(e)),
                })
            })?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| err(FileErrorKind::Io(e.into())))?;
        if let Some(kind) = non_regular_kind(st.st_mode) {
            return Err(err(FileErrorKind::NotRegular(kind)));
        }
        if st.st_nlink > 1 {
            // Another name for this file may be somebody else's file: the
            // holder record or a counter must never be written into it.
            return Err(err(FileErrorKind::NotRegular(HARD_LINKED)));
        }
        // O_NONBLOCK stays set: it has no effect on a regular file's reads
        // and writes, nor on flock(2), which blocks or not by LOCK_NB alone;
        // clearing it cost two fcntl(2) calls per file.
        Ok((File::from(fd), st))
    }

    /// `lstat` of `name` in this directory; `None` when it does not exist.
    pub fn stat(&self, name: &str) -> io::Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the directory entry `name` still names the open `file`
    /// (same device and inode). This is the lock protocol's identity check.
    pub fn names_file(&self, name: &str, file: &File) -> io::Result<bool> {
        let open = nix::sys::stat::fstat(file)?;
        Ok(match self.stat(name)? {
            Some(st) => st.st_dev == open.st_dev && st.st_ino == open.st_ino,
            None => false,
        })
    }

    /// Removes the file `name`; a missing file is not an error.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        match nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the empty directory `name`; a missing one is not an error.
    pub fn remove_dir(&self, name: &str) -> io::Result<()> {
        match nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this directory, without `.` and `..`, in no particular order.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        let mut out = Vec::new();
        self.each_name(|name| out.push(name.to_os_string()))?;
        Ok(out)
    }

    /// Calls `each` with every name in this directory, without `.` and
    /// `..`, in no particular order, as the directory is read: a caller
    /// that keeps only some names, or keeps them compactly, never holds
    /// them all as separate strings.
    pub fn each_name(&self, mut each: impl FnMut(&OsStr)) -> io::Result<()> {
        // A descriptor of its own: reading moves its offset.
        let dir = nix::fcntl::openat(&self.fd, ".", dir_flags(), Mode::empty())?;
        crate::sys::each_dir_entry(dir.as_fd(), |name| {
            if name != "." && name != ".." {
                each(name);
            }
        })
    }

    /// The names in this directory that are UTF-8, sorted: what a `gc`
    /// walks (none of our own names is anything else).
    pub fn sorted_names(&self) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .names()?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Replaces `name` with `content`: written to a temporary file in this
    /// directory (mode 0600), then renamed over `name`. Readers and a SIGKILL
    /// at any point see the old content or the new, never a mix.
    pub fn replace(&self, name: &str, content: &[u8]) -> anyhow::Result<()> {
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        self.remove_file(&tmp)
            .with_context(|| format!("cannot remove {}", quote_path(&self.join(&tmp))))?;
        let mut file = self.open_file(&tmp, OpenHow::CreateNew)?;
        let written = file.write_all(content).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = self.remove_file(&tmp);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot write {}", quote_path(&self.join(&tmp)))));
        }
        nix::fcntl::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(|e| {
            let _ = self.remove_file(&tmp);
            anyhow::Error::new(e)
                .context(format!("cannot replace {}", quote_path(&self.join(name))))
        })
    }
}

impl AsFd for SafeDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests;
