//! The walk from `/` that [`super::SafeDir::open`] and the trusted-file
//! reads make: one component at a time, each checked on the descriptor the
//! next `openat` starts from (see the module doc of [`super`]).

use std::ffi::{OsStr, OsString};
use std::io::{self};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::dirs::Role;
use crate::names::quote_path;

use super::*;

pub(super) fn base_flags() -> OFlag {
    OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

pub(super) fn dir_flags() -> OFlag {
    base_flags() | OFlag::O_RDONLY | OFlag::O_DIRECTORY
}

pub(super) fn path_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Why a directory is unsafe, or `None` when it is fine.
pub(super) fn unsafe_reason(st: &FileStat) -> Option<String> {
    let me = crate::dirs::euid();
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

pub(super) fn refuse(role: &Role, path: &Path, reason: &str) -> anyhow::Error {
    let fix = if reason.starts_with("is writable") {
        format!("chmod 700 {} or set {}", quote_path(path), role.env)
    } else {
        format!("choose another with {} or {}", role.flag, role.env)
    };
    anyhow::anyhow!("{} {} {reason}; {fix}", role.what, quote_path(path))
}

/// A refusal because of `ancestor`, a directory on the way to the one asked
/// for; `fix`, when given, comes before the advice to choose another.
pub(super) fn refuse_ancestor(
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
pub(super) fn check_ancestor(
    role: &Role,
    path: &Path,
    here: &Path,
    st: &FileStat,
) -> anyhow::Result<bool> {
    let me = crate::dirs::euid();
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

/// `/`, where every walk starts (opened `O_PATH`), with its `fstat`; the
/// walk is for `role`'s `path`, which errors name.
pub(super) fn open_root(role: &Role, path: &Path) -> anyhow::Result<(OwnedFd, FileStat)> {
    let fd = nix::fcntl::open("/", path_flags(), Mode::empty())
        .with_context(|| format!("cannot open / for {} {}", role.what, quote_path(path)))?;
    let st = nix::sys::stat::fstat(&fd).context("cannot stat /")?;
    Ok((fd, st))
}

/// The error for a walk that could not `doing` ("open", "create") the
/// directory `here` on the way to `role`'s `path`:
/// `cannot open /a/b (for lock dir /a/b/c): <errno>`.
pub(super) fn failed_on_the_way(
    e: Errno,
    doing: &str,
    here: &Path,
    role: &Role,
    path: &Path,
) -> anyhow::Error {
    anyhow::Error::new(e).context(format!(
        "cannot {doing} {} (for {} {})",
        quote_path(here),
        role.what,
        quote_path(path)
    ))
}

/// The components of `path`, made absolute against the current directory
/// and normalised lexically; see the module doc.
pub(super) fn walk_components(path: &Path) -> io::Result<Vec<OsString>> {
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

pub(super) fn non_regular_kind(mode: u32) -> Option<&'static str> {
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
pub(super) enum OpenDir {
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
pub(super) fn open_dir_at(
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
