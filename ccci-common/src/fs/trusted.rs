//! A file read by path, trusted only when nobody but root and the
//! effective uid can have written it or anything on its path.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::dirs::Role;
use crate::names::quote_path;

use super::walk::*;
use super::*;

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
    let me = crate::dirs::euid();
    let ours = |uid: u32| uid == 0 || uid == me;
    let mut here = PathBuf::from("/");
    let (mut fd, mut st) = open_root(role, path)?;
    let mut sticky = check_ancestor(role, path, &here, &st)?;
    for name in dirs {
        here.push(name);
        (fd, st) = match open_dir_at(&fd, name.as_os_str(), false) {
            Ok(next) => next,
            Err(OpenDir::Errno(Errno::ENOENT)) => return Ok(None),
            Err(OpenDir::NotDir(reason)) => {
                return Err(refuse_ancestor(role, path, &here, reason, None));
            }
            Err(OpenDir::Errno(e)) => return Err(failed_on_the_way(e, "open", &here, role, path)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::private_tempdir as tmp;
    use std::os::unix::fs::{symlink, PermissionsExt};

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
}
