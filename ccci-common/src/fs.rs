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

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::dirs::Role;
use crate::names::quote_path;

/// A directory we checked and may write into; see the module doc.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn base_flags() -> OFlag {
    OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

fn dir_flags() -> OFlag {
    base_flags() | OFlag::O_RDONLY | OFlag::O_DIRECTORY
}

fn path_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// `uid 1001 (ci)`, or `uid 1001` when `/etc/passwd` has no name for it
/// (never through NSS: see [`crate::users`]).
pub fn describe_uid(uid: u32) -> String {
    match crate::users::user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// Why a directory is unsafe, or `None` when it is fine.
fn unsafe_reason(st: &FileStat) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        Some("is not a directory".into())
    } else if st.st_uid != me {
        Some(format!(
            "is owned by {}, not by {}",
            describe_uid(st.st_uid),
            describe_uid(me)
        ))
    } else if st.st_mode & 0o022 != 0 {
        Some(format!(
            "is writable by group or others (mode {:04o})",
            st.st_mode & 0o7777
        ))
    } else {
        None
    }
}

fn refuse(role: &Role, path: &Path, reason: &str) -> anyhow::Error {
    let fix = if reason.starts_with("is writable") {
        format!("chmod 700 {} or set {}", quote_path(path), role.env)
    } else {
        format!("choose another with {} or {}", role.flag, role.env)
    };
    anyhow::anyhow!("{} {} {reason}; {fix}", role.what, quote_path(path))
}

/// A refusal because of `ancestor`, a directory on the way to the one asked
/// for; `fix`, when given, comes before the advice to choose another.
fn refuse_ancestor(
    role: &Role,
    path: &Path,
    ancestor: &Path,
    reason: &str,
    fix: Option<String>,
) -> anyhow::Error {
    let fix = fix.map_or(String::new(), |fix| format!("{fix}, or "));
    anyhow::anyhow!(
        "{} {}: {} {reason}; {fix}choose another with {} or {}",
        role.what,
        quote_path(path),
        quote_path(ancestor),
        role.flag,
        role.env
    )
}

/// Whether an ancestor directory may stay on the path: `Ok(true)` when it
/// is sticky and writable by others (its entries must then be ours).
fn check_ancestor(role: &Role, path: &Path, here: &Path, st: &FileStat) -> anyhow::Result<bool> {
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != me {
        let reason = format!(
            "is owned by {}, not by root or {}: its owner can rename or replace what is \
             inside it",
            describe_uid(st.st_uid),
            describe_uid(me)
        );
        return Err(refuse_ancestor(role, path, here, &reason, None));
    }
    if st.st_mode & 0o022 == 0 {
        return Ok(false);
    }
    if st.st_mode & libc::S_ISVTX != 0 {
        return Ok(true);
    }
    let reason = format!(
        "is writable by group or others (mode {:04o}) and not sticky: anybody can rename or \
         replace what is inside it",
        st.st_mode & 0o7777,
    );
    let fix = format!("chmod go-w {}", quote_path(here));
    Err(refuse_ancestor(role, path, here, &reason, Some(fix)))
}

/// The components of `path`, made absolute against the current directory
/// and normalised lexically; see the module doc.
fn walk_components(path: &Path) -> io::Result<Vec<OsString>> {
    use std::path::Component;
    let absolute;
    let path = if path.is_absolute() {
        path
    } else {
        absolute = std::env::current_dir()?.join(path);
        &absolute
    };
    let mut out: Vec<OsString> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
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
        let mut fd = nix::fcntl::open("/", path_flags(), Mode::empty())
            .with_context(|| format!("cannot open / for {} {}", role.what, quote_path(path)))?;
        let mut st = nix::sys::stat::fstat(&fd).context("cannot stat /")?;
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
                        Err(e) => {
                            return Err(anyhow::Error::new(e).context(format!(
                                "cannot create {} (for {} {})",
                                quote_path(&here),
                                role.what,
                                quote_path(path)
                            )))
                        }
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
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot open {} (for {} {})",
                        quote_path(&here),
                        role.what,
                        quote_path(path)
                    )))
                }
            };
            // Below a sticky directory only root and the entry's owner can
            // have made the entry (SPEC §1): a root-owned one is as safe as
            // any root-owned ancestor. Another user's is never ours to
            // remove, so the refusal does not advise removing it.
            let me = nix::unistd::geteuid().as_raw();
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
        let mut dir = nix::dir::Dir::openat(&self.fd, ".", dir_flags(), Mode::empty())?;
        for entry in dir.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                each(name);
            }
        }
        Ok(())
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

/// Opens the regular file at `path` for reading, when nobody but root and
/// the effective uid can have written it or anything on its path (SPEC §1
/// "One configuration": the configuration file is safe as a directory is):
/// every directory on the path is checked as [`SafeDir::open`] checks an
/// ancestor (owned by root or us, not writable by group or others unless
/// sticky, and then the entry below it owned by root or us), none may be a
/// symlink, and the file itself must be a regular file owned by root or us
/// and not writable by group or others. `role` names it in messages.
/// A missing file (or directory on the way) is `Ok(None)`.
pub fn open_trusted_file(role: &Role, path: &Path) -> anyhow::Result<Option<File>> {
    let names = walk_components(path)
        .with_context(|| format!("cannot resolve {} {}", role.what, quote_path(path)))?;
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(refuse(role, path, "is not a regular file"));
    };
    let me = nix::unistd::geteuid().as_raw();
    let ours = |uid: u32| uid == 0 || uid == me;
    let mut here = PathBuf::from("/");
    let mut fd = nix::fcntl::open("/", path_flags(), Mode::empty())
        .with_context(|| format!("cannot open / for {} {}", role.what, quote_path(path)))?;
    let mut st = nix::sys::stat::fstat(&fd).context("cannot stat /")?;
    let mut sticky = check_ancestor(role, path, &here, &st)?;
    for name in dirs {
        here.push(name);
        (fd, st) = match open_dir_at(&fd, name.as_os_str(), false) {
            Ok(next) => next,
            Err(OpenDir::Errno(Errno::ENOENT)) => return Ok(None),
            Err(OpenDir::NotDir(reason)) => {
                return Err(refuse_ancestor(role, path, &here, reason, None));
            }
            Err(OpenDir::Errno(e)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot open {} (for {} {})",
                    quote_path(&here),
                    role.what,
                    quote_path(path)
                )))
            }
        };
        if sticky && !ours(st.st_uid) {
            let reason = format!(
                "is owned by {}, not by root or {}, in a sticky directory where anybody can \
                 create it first",
                describe_uid(st.st_uid),
                describe_uid(me)
            );
            return Err(refuse_ancestor(role, path, &here, &reason, None));
        }
        sticky = check_ancestor(role, path, &here, &st)?;
    }
    let flags = base_flags() | OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    let file = match nix::fcntl::openat(&fd, file_name.as_os_str(), flags, Mode::empty()) {
        Ok(file) => File::from(file),
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(refuse(role, path, "is a symlink; refusing to follow it"));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open {} {}",
                role.what,
                quote_path(path)
            )))
        }
    };
    let st = nix::sys::stat::fstat(&file)
        .with_context(|| format!("cannot stat {} {}", role.what, quote_path(path)))?;
    if let Some(kind) = non_regular_kind(st.st_mode) {
        return Err(refuse(
            role,
            path,
            &format!("is {kind}, not a regular file"),
        ));
    }
    if !ours(st.st_uid) {
        let reason = format!(
            "is owned by {}, not by root or {}",
            describe_uid(st.st_uid),
            describe_uid(me)
        );
        return Err(refuse(role, path, &reason));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(anyhow::anyhow!(
            "{} {} is writable by group or others (mode {:04o}); chmod go-w {}, or choose \
             another with {} or {}",
            role.what,
            quote_path(path),
            st.st_mode & 0o7777,
            quote_path(path),
            role.flag,
            role.env
        ));
    }
    Ok(Some(file))
}

impl AsFd for SafeDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn non_regular_kind(mode: u32) -> Option<&'static str> {
    match SFlag::from_bits_truncate(mode & libc::S_IFMT) {
        SFlag::S_IFREG => None,
        SFlag::S_IFDIR => Some("a directory"),
        SFlag::S_IFIFO => Some("a FIFO"),
        SFlag::S_IFSOCK => Some("a socket"),
        SFlag::S_IFLNK => Some("a symlink"),
        SFlag::S_IFCHR | SFlag::S_IFBLK => Some("a device"),
        _ => Some("not a regular file"),
    }
}

/// Why [`open_dir_at`] failed.
enum OpenDir {
    /// What was there is not a directory: "is a symlink", "is not a directory".
    NotDir(&'static str),
    /// Any other error (`ENOENT`: nothing there).
    Errno(Errno),
}

/// Opens the directory `name` in `dir` without following a symlink, with
/// the `fstat` of what was opened. The entry is opened with
/// `O_PATH|O_NOFOLLOW`, which opens a symlink itself, and its type is read
/// from that descriptor: a refusal names what was opened, not what the
/// name means a moment later (a symlink swapped in and out again was
/// reported as "not a directory"). With `readable`, the directory is then
/// reopened for reading through that descriptor (`.`), which is the same
/// directory whatever happens to the name meanwhile.
fn open_dir_at(
    dir: &impl AsFd,
    name: &OsStr,
    readable: bool,
) -> Result<(OwnedFd, FileStat), OpenDir> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(OpenDir::Errno)?;
    let st = nix::sys::stat::fstat(&fd).map_err(OpenDir::Errno)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {}
        libc::S_IFLNK => return Err(OpenDir::NotDir("is a symlink")),
        _ => return Err(OpenDir::NotDir("is not a directory")),
    }
    if !readable {
        return Ok((fd, st));
    }
    let fd = nix::fcntl::openat(&fd, ".", dir_flags(), Mode::empty()).map_err(OpenDir::Errno)?;
    Ok((fd, st))
}

/// Reads a small file that must be trusted, such as a password file (SPEC
/// §1: regular, owned by root or the effective uid, not writable by group
/// or others, whole path checked). Every directory on the path is checked
/// as for [`SafeDir::open`]'s ancestors (owned by root or the effective uid,
/// not writable by group or others unless sticky, no symlink anywhere), the
/// file is opened with `O_NOFOLLOW|O_NONBLOCK` and checked on its
/// descriptor, and at most `limit` bytes are read (more is refused).
pub fn read_trusted_file(role: &Role, path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    match read_trusted_file_if_present(role, path, limit)? {
        Some(bytes) => Ok(bytes),
        None => bail!("{} {} does not exist", role.what, quote_path(path)),
    }
}

/// [`read_trusted_file`] for a file that may be absent: `Ok(None)` then.
pub fn read_trusted_file_if_present(
    role: &Role,
    path: &Path,
    limit: usize,
) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let Some(file) = open_trusted_file(role, path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {} {}", role.what, quote_path(path)))?;
    if bytes.len() > limit {
        bail!(
            "{} {} is longer than {limit} bytes; refusing to read it",
            role.what,
            quote_path(path)
        );
    }
    Ok(Some(bytes))
}

/// The [`FileErrorKind::NotRegular`] kind of a regular file with more than
/// one hard link: where a tool's own file is expected, it is refused.
pub const HARD_LINKED: &str = "a file with more than one hard link";

/// How [`SafeDir::open_file`] opens a file.
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

/// Why [`SafeDir::open_file`] failed.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirs::LOCK_DIR;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tmp() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_trusted_file_is_read_only_when_safe() {
        let dir = tmp();
        let role = Role {
            what: "password file",
            flag: "--pw",
            env: "PW",
        };
        let file = dir.path().join("pw");
        std::fs::write(&file, "secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_trusted_file(&role, &file, 64).unwrap(), b"secret\n");
        let long = read_trusted_file(&role, &file, 3).unwrap_err().to_string();
        assert!(long.contains("longer than 3 bytes"), "{long}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = read_trusted_file(&role, &file, 64).unwrap_err().to_string();
        assert!(
            e.contains("writable by group or others") && e.contains("--pw"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        let e = read_trusted_file(&role, &link, 64).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let e = read_trusted_file(&role, dir.path(), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = read_trusted_file(&role, &dir.path().join("none"), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        // A directory on the way that others may write into is refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open.join("pw"), "x").unwrap();
        let e = read_trusted_file(&role, &open.join("pw"), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not sticky"), "{e}");
    }

    #[test]
    fn creates_missing_dirs_0700_with_parents() {
        let t = tmp();
        let path = t.path().join("a/b/c");
        let dir = SafeDir::create(&LOCK_DIR, &path).unwrap();
        assert_eq!(dir.path(), path);
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
    }

    #[test]
    fn missing_dir_without_create_is_none_and_stays_missing() {
        let t = tmp();
        let path = t.path().join("nope");
        assert!(SafeDir::open(&LOCK_DIR, &path, false).unwrap().is_none());
        assert!(!path.exists());
    }

    #[test]
    fn refuses_symlinked_and_world_writable_dirs() {
        let t = tmp();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.path().join("link");
        symlink(&real, &link).unwrap();
        let e = SafeDir::open(&LOCK_DIR, &link, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(e.contains("CCCI_APP_LOCK_DIR"), "{e}");

        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = SafeDir::open(&LOCK_DIR, &real, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by group or others (mode 0777)"), "{e}");
        assert!(e.contains(&format!("chmod 700 {}", real.display())), "{e}");
    }

    #[test]
    fn refuses_a_file_where_the_dir_should_be() {
        let t = tmp();
        let file = t.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = SafeDir::open(&LOCK_DIR, &file, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn open_file_refuses_symlinks_fifos_and_dirs() {
        let t = tmp();
        let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
        let target = t.path().join("target");
        symlink(&target, t.path().join("link")).unwrap();
        nix::unistd::mkfifo(&t.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();

        let kind = |name, how| dir.open_file(name, how).unwrap_err().kind;
        assert!(matches!(
            kind("link", OpenHow::Create),
            FileErrorKind::Symlink
        ));
        assert!(!target.exists(), "the symlink was followed");
        assert!(matches!(
            kind("fifo", OpenHow::Create),
            FileErrorKind::NotRegular(_)
        ));
        assert!(matches!(
            kind("fifo", OpenHow::Read),
            FileErrorKind::NotRegular(_)
        ));
        assert!(matches!(
            kind("sub", OpenHow::Create),
            FileErrorKind::NotRegular(_)
        ));
        assert!(matches!(
            kind("missing", OpenHow::Read),
            FileErrorKind::Missing
        ));
        dir.open_file("new", OpenHow::CreateNew).unwrap();
        assert!(matches!(
            kind("new", OpenHow::CreateNew),
            FileErrorKind::Exists
        ));
        assert_eq!(mode(&t.path().join("new")), 0o600);
    }

    #[test]
    fn open_file_refuses_a_hard_linked_file_and_leaves_it_alone() {
        let t = tmp();
        let dir = SafeDir::create(&LOCK_DIR, &t.path().join("locks")).unwrap();
        let other = t.path().join("precious");
        std::fs::write(&other, "keep\n").unwrap();
        std::fs::hard_link(&other, t.path().join("locks/d.lock")).unwrap();
        for how in [
            OpenHow::Read,
            OpenHow::ReadWrite,
            OpenHow::Create,
            OpenHow::CreateNew,
        ] {
            let e = dir.open_file("d.lock", how).unwrap_err();
            assert!(
                matches!(
                    e.kind,
                    FileErrorKind::NotRegular(HARD_LINKED) | FileErrorKind::Exists
                ),
                "{e}"
            );
        }
        let e = dir.open_file("d.lock", OpenHow::Create).unwrap_err();
        assert!(e.to_string().contains("more than one hard link"), "{e}");
        assert!(
            dir.replace("d.lock", b"x").is_ok(),
            "replace makes a new file"
        );
        assert_eq!(std::fs::read(&other).unwrap(), b"keep\n");
    }

    #[test]
    fn a_trailing_slash_or_dot_never_follows_a_symlink() {
        let t = tmp();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        symlink(&real, t.path().join("link")).unwrap();
        for tail in ["link/", "link//", "link/.", "link/./", "link/x/.."] {
            let path = PathBuf::from(format!("{}/{tail}", t.path().display()));
            for create in [false, true] {
                let e = SafeDir::open(&LOCK_DIR, &path, create)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("is a symlink"), "{tail}: {e}");
            }
        }
        // A symlink in the middle of the path, too; nothing made through it.
        let deep = t.path().join("link/sub/locks");
        let e = SafeDir::open(&LOCK_DIR, &deep, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{}/link is a symlink", t.path().display())),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn dot_dot_is_lexical_and_relative_paths_start_at_the_cwd() {
        let t = tmp();
        let path = t.path().join("a/../b/./c/");
        let dir = SafeDir::create(&LOCK_DIR, &path).unwrap();
        assert!(t.path().join("b/c").is_dir());
        assert!(!t.path().join("a").exists(), "a/.. creates nothing");
        assert_eq!(dir.path(), path, "the path given is kept for messages");
        assert_eq!(
            walk_components(Path::new("x/../y")).unwrap(),
            walk_components(&std::env::current_dir().unwrap().join("y")).unwrap()
        );
        assert_eq!(walk_components(Path::new("/../..//")).unwrap().len(), 0);
    }

    #[test]
    fn a_writable_ancestor_is_refused_unless_sticky() {
        let t = tmp();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = SafeDir::open(&LOCK_DIR, &open.join("locks"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "{} is writable by group or others (mode 0777) and not sticky",
                open.display()
            )),
            "{e}"
        );
        assert!(e.contains(&format!("chmod go-w {}", open.display())), "{e}");
        assert!(!open.join("locks").exists(), "nothing created under it");

        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let dir = SafeDir::create(&LOCK_DIR, &open.join("mine/locks")).unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&open.join("mine")), 0o700);
    }

    #[test]
    fn a_foreign_entry_below_a_sticky_dir_is_refused() {
        if nix::unistd::geteuid().as_raw() != 0 {
            return; // chown needs root; the integration suite covers it with a real user
        }
        let t = tmp();
        let sticky = t.path().join("tmp");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let squat = sticky.join("ccci-0");
        std::fs::create_dir(&squat).unwrap();
        std::fs::set_permissions(&squat, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&squat, Some(65534), Some(65534)).unwrap();
        for create in [false, true] {
            let e = SafeDir::open(&LOCK_DIR, &squat.join("locks"), create)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{} is owned by uid 65534", squat.display())),
                "{e}"
            );
            assert!(e.contains("in the sticky directory"), "{e}");
            assert!(!e.contains("rm ") && !e.contains("remove"), "{e}");
        }
        assert!(!squat.join("locks").exists());
        // The same foreign dir anywhere else on the path is refused too.
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = SafeDir::open(&LOCK_DIR, &squat.join("locks"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not by root or uid 0"), "{e}");
    }

    #[test]
    fn a_symlink_swapped_in_while_opening_is_reported_as_a_symlink() {
        // Another process swaps a symlink and a real directory back and forth
        // (renameat2 RENAME_EXCHANGE, atomic), as an attacker would. Every
        // refusal must say what was opened: a symlink. Before, the type was
        // looked up again after the open failed and was often the directory
        // by then: "is not a directory".
        let t = tmp();
        let (dir, link) = (t.path().join("dir"), t.path().join("link"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        symlink("dir", &link).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, parent) = (stop.clone(), t.path().to_path_buf());
            std::thread::spawn(move || {
                let at = std::fs::File::open(&parent).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    nix::fcntl::renameat2(
                        &at,
                        "dir",
                        &at,
                        "link",
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                }
            })
        };
        let mut wrong = Vec::new();
        let mut refused = 0;
        let parent = SafeDir::open(&LOCK_DIR, t.path(), false).unwrap().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let tries = [
                SafeDir::open(&LOCK_DIR, &link, false).map(drop),
                SafeDir::open(&LOCK_DIR, &link.join("sub"), false).map(drop),
                parent.subdir(&LOCK_DIR, "link", false).map(drop),
            ];
            for e in tries.into_iter().filter_map(Result::err) {
                refused += 1;
                let e = e.to_string();
                if !e.contains("is a symlink") {
                    wrong.push(e);
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(refused > 0, "the swap never hit");
        assert!(
            wrong.is_empty(),
            "{} of {refused} refusals misnamed the symlink, e.g. {}",
            wrong.len(),
            wrong[0]
        );
    }

    #[test]
    fn identity_check_sees_unlink_and_replacement() {
        let t = tmp();
        let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
        let file = dir.open_file("x.lock", OpenHow::Create).unwrap();
        assert!(dir.names_file("x.lock", &file).unwrap());
        dir.remove_file("x.lock").unwrap();
        assert!(!dir.names_file("x.lock", &file).unwrap());
        let _other = dir.open_file("x.lock", OpenHow::Create).unwrap();
        assert!(!dir.names_file("x.lock", &file).unwrap());
    }

    #[test]
    fn replace_is_whole_and_leaves_no_temporary() {
        let t = tmp();
        let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
        dir.replace("v", b"1\n").unwrap();
        dir.replace("v", b"22\n").unwrap();
        assert_eq!(std::fs::read(t.path().join("v")).unwrap(), b"22\n");
        assert_eq!(dir.names().unwrap(), vec![std::ffi::OsString::from("v")]);
    }

    #[test]
    fn subdir_is_checked_like_a_top_dir() {
        let t = tmp();
        let dir = SafeDir::create(&LOCK_DIR, t.path()).unwrap();
        let sub = dir.subdir(&LOCK_DIR, "run-1", true).unwrap().unwrap();
        assert_eq!(mode(sub.path()), 0o700);
        symlink("/", t.path().join("evil")).unwrap();
        let e = dir
            .subdir(&LOCK_DIR, "evil", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(dir.subdir(&LOCK_DIR, "absent", false).unwrap().is_none());
    }
}
