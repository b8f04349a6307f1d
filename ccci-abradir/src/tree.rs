//! Removing a directory tree without ever following a symlink.
//!
//! A run's tree holds `servers` and `catalogue`, symlinks into the canonical
//! abra dir. Removing the tree must unlink those links and never descend
//! into what they name, or `clean` would delete every app's `.env` file.
//! Every step here is relative to an open directory descriptor: an entry is
//! first unlinked as a non-directory (a symlink to a directory is removed as
//! a link); only when the kernel says it is a directory is it opened, with
//! `O_NOFOLLOW|O_DIRECTORY`, emptied the same way and removed. A symlink
//! swapped in between the two steps makes the open fail instead of being
//! followed, and the entry is unlinked as a link on the next pass.

use ccci_common::names::quote_path;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Removes `name` in `dir` (whose path is `dir_path`, for messages) and
/// everything below it; symlinks are unlinked, never followed. A missing
/// entry is not an error.
pub fn remove_tree(dir: impl AsFd, dir_path: &Path, name: &OsStr) -> anyhow::Result<()> {
    let dir = dir.as_fd();
    let path = dir_path.join(name);
    // A second pass only when the entry changed type under us; a third
    // would mean somebody keeps swapping it, and we give up.
    for _ in 0..2 {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(()),
            // Linux's answer for a directory.
            Err(Errno::EISDIR) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", quote_path(&path)));
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let sub = match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            // Replaced by a symlink or a file meanwhile: unlink it as such.
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", quote_path(&path))),
        };
        let mut sub =
            Dir::from_fd(sub).with_context(|| format!("cannot read {}", quote_path(&path)))?;
        let mut names: Vec<OsString> = Vec::new();
        for entry in sub.iter() {
            let entry = entry.with_context(|| format!("cannot read {}", quote_path(&path)))?;
            let child = OsStr::from_bytes(entry.file_name().to_bytes());
            if child != "." && child != ".." {
                names.push(child.to_os_string());
            }
        }
        for child in &names {
            remove_tree(&sub, &path, child)?;
        }
        drop(sub);
        return match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", quote_path(&path))),
        };
    }
    anyhow::bail!("cannot remove {}: it keeps changing", quote_path(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_a_tree_and_only_unlinks_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("deep/keep.env"), "X=1").unwrap();
        std::fs::write(outside.join("file"), "f").unwrap();

        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::write(tree.join("a/b/c/f"), "x").unwrap();
        std::fs::write(tree.join("top"), "x").unwrap();
        symlink(&outside, tree.join("servers")).unwrap();
        symlink(&outside, tree.join("a/b/link")).unwrap();
        symlink(outside.join("file"), tree.join("filelink")).unwrap();
        symlink("/nonexistent", tree.join("dangling")).unwrap();

        let root = std::fs::File::open(t.path()).unwrap();
        remove_tree(&root, t.path(), OsStr::new("tree")).unwrap();
        assert!(!tree.exists() && tree.symlink_metadata().is_err());
        assert_eq!(
            std::fs::read_to_string(outside.join("deep/keep.env")).unwrap(),
            "X=1"
        );
        assert_eq!(std::fs::read_to_string(outside.join("file")).unwrap(), "f");

        // Missing is fine; a top-level symlink is unlinked, not followed.
        remove_tree(&root, t.path(), OsStr::new("tree")).unwrap();
        symlink(&outside, t.path().join("top-link")).unwrap();
        remove_tree(&root, t.path(), OsStr::new("top-link")).unwrap();
        assert!(outside.join("deep/keep.env").exists());
    }
}
