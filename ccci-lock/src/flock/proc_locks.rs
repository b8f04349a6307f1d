//! Reading `/proc/locks`: who holds a `flock(2)` lock, found without taking
//! or waiting for any lock ([`flock_holder`]), and a snapshot of the table
//! for a caller that looks at many lockfiles in a row (`LockSnapshot`).
//!
//! Looking never blocks anyone: whether a lockfile is held, and by which
//! pid, comes from here, matched by device and inode, never from a probe
//! lock (a shared probe lock, as before, made a concurrent `-n` on a free
//! domain fail with 75).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use nix::sys::stat::FileStat;

/// A `flock(2)` lock found in `/proc/locks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLock {
    /// The pid that took it, as the kernel reports it (`None`: not visible
    /// from this pid namespace). The lock belongs to an open file, so this
    /// process may have ended while a child that inherited the descriptor
    /// keeps it.
    pub pid: Option<u32>,
    /// `LOCK_EX` rather than `LOCK_SH`.
    pub exclusive: bool,
}

/// Who holds a `flock(2)` lock on `file`, per `/proc/locks`, found without
/// taking or waiting for any lock. `None`: nobody. Locks are matched by the
/// file's device and inode, so this needs a file system whose `stat` device
/// is the one the kernel's lock table shows (tmpfs, ext4, xfs: yes; a
/// btrfs subvolume or overlayfs may not be).
///
/// The kernel hands `/proc/locks` out a page at a time and walks its table
/// again for each page, so a table longer than a page that changes while it
/// is read can skip entries: a lock held all along may be missing from one
/// reading. An entry is never made up, so "held" is believed at once and
/// "free" only after [`TABLE_READS`] readings agree.
pub fn flock_holder(file: &File) -> io::Result<Option<KernelLock>> {
    let meta = file.metadata()?;
    flock_holder_of(meta.dev(), meta.ino())
}

/// [`flock_holder`] of the file `dev`/`ino`.
pub(super) fn flock_holder_of(dev: u64, ino: u64) -> io::Result<Option<KernelLock>> {
    for _ in 0..TABLE_READS {
        let table = lock_table()?;
        if let Some(lock) = find_flock(&table, dev, ino) {
            return Ok(Some(lock));
        }
        if table.len() < TABLE_PAGE {
            break; // read in one piece: nothing was skipped
        }
    }
    Ok(None)
}

/// How many readings of a long `/proc/locks` must miss a lock before
/// [`flock_holder`] calls it free.
const TABLE_READS: usize = 3;

/// Below this many bytes `/proc/locks` arrives in one read (one page).
const TABLE_PAGE: usize = 4096;

/// The text of `/proc/locks`, as the kernel makes it now. The file is
/// opened once per process (close-on-exec) and read from offset 0 each
/// time, which makes the kernel generate the table afresh: a janitor pass
/// that looks at 10,000 young claims spends a quarter of the time an
/// open/read/close per look would.
fn lock_table() -> io::Result<String> {
    static PROC_LOCKS: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    let file = match PROC_LOCKS.get() {
        Some(file) => file,
        None => {
            let opened = File::open("/proc/locks")?;
            PROC_LOCKS.get_or_init(|| opened)
        }
    };
    thread_local! {
        // Zeroed once and reused: a fresh buffer per reading cost more than
        // the reading itself.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16384]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        String::from_utf8(buf[..len].to_vec()).map_err(io::Error::other)
    })
}

/// The first granted `FLOCK` entry of a `/proc/locks` text for the file
/// `dev`/`ino` (entries marked `->` are waiters, not holders).
fn find_flock(table: &str, dev: u64, ino: u64) -> Option<KernelLock> {
    let want = table_id(dev, ino);
    granted_flocks(table).find_map(|(id, lock)| (id == want).then_some(lock))
}

/// How `/proc/locks` names the file `dev`/`ino`: (major, minor, inode).
fn table_id(dev: u64, ino: u64) -> (u64, u64, u64) {
    (nix::sys::stat::major(dev), nix::sys::stat::minor(dev), ino)
}

/// The granted `FLOCK` entries of a `/proc/locks` text, each with its
/// file's (major, minor, inode).
fn granted_flocks(table: &str) -> impl Iterator<Item = ((u64, u64, u64), KernelLock)> + '_ {
    table.lines().filter_map(|line| {
        let mut fields = line.split_whitespace().skip(1).peekable();
        if fields.peek() == Some(&"->") {
            return None;
        }
        let (kind, _, access, pid, id) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if kind != "FLOCK" {
            return None;
        }
        let mut parts = id.split(':');
        let major = u64::from_str_radix(parts.next()?, 16).ok()?;
        let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
        let inode: u64 = parts.next()?.parse().ok()?;
        let lock = KernelLock {
            pid: pid.parse::<u32>().ok().filter(|&p| p > 0),
            exclusive: access == "WRITE",
        };
        Some(((major, minor, inode), lock))
    })
}

/// `/proc/locks` read once and indexed, for a caller that looks at many
/// lockfiles in a row (a janitor pass with `-v` over thousands of young
/// claims): one reading every [`LockSnapshot::max_age`] instead of one per
/// lockfile, so a pass stays linear in the number of lockfiles whatever the
/// number of locks on the host. What it reports may be that old; it only
/// ever feeds reports (held or free), never a decision to take or remove a
/// lock, which `flock` itself makes.
#[derive(Debug)]
pub(super) struct LockSnapshot {
    max_age: Duration,
    taken: Option<Instant>,
    locks: std::collections::HashMap<(u64, u64, u64), KernelLock>,
    /// The lockfile name and `lstat` of the last
    /// [`Backend::peek_age`](crate::Backend::peek_age), while `peeked` is
    /// set: a [`Backend::status`](crate::Backend::status) of the same
    /// lockfile right after it (a janitor's `-v` look at a young claim) uses
    /// it instead of making another. Like the lock table, it only feeds a
    /// report.
    peeked_name: String,
    peeked: Option<FileStat>,
}

impl LockSnapshot {
    /// A snapshot not read yet, to be read again once `max_age` old.
    pub(super) fn new(max_age: Duration) -> LockSnapshot {
        LockSnapshot {
            max_age,
            taken: None,
            locks: Default::default(),
            peeked_name: String::new(),
            peeked: None,
        }
    }

    /// Keeps the `lstat` of the lockfile `name` made by a peek, for a look
    /// at the same lockfile right after it.
    pub(super) fn keep_peeked(&mut self, name: &str, st: FileStat) {
        self.peeked_name.clear();
        self.peeked_name.push_str(name);
        self.peeked = Some(st);
    }

    /// The `lstat` of `name` kept by the last peek, if it was of `name`;
    /// used once.
    pub(super) fn take_peeked(&mut self, name: &str) -> Option<FileStat> {
        self.peeked.take().filter(|_| self.peeked_name == name)
    }

    /// Who holds a `flock` on the file `dev`/`ino`, per the snapshot, read
    /// again first when it is older than its `max_age`.
    pub(super) fn lookup(&mut self, dev: u64, ino: u64) -> io::Result<Option<KernelLock>> {
        if self.taken.is_none_or(|t| t.elapsed() > self.max_age) {
            let table = lock_table()?;
            self.locks.clear();
            for (id, lock) in granted_flocks(&table) {
                self.locks.entry(id).or_insert(lock);
            }
            self.taken = Some(Instant::now());
        }
        Ok(self.locks.get(&table_id(dev, ino)).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode_and_skip_waiters() {
        let dev = libc::makedev(0xfe, 0x01);
        let table = "\
1: POSIX  ADVISORY  WRITE 10 fe:01:77 0 EOF
2: FLOCK  ADVISORY  READ  11 fe:02:77 0 EOF
3: FLOCK  ADVISORY  WRITE 12 fe:01:77 0 EOF
3: -> FLOCK  ADVISORY  WRITE 13 fe:01:78 0 EOF
";
        assert_eq!(
            find_flock(table, dev, 77),
            Some(KernelLock {
                pid: Some(12),
                exclusive: true
            })
        );
        assert_eq!(find_flock(table, dev, 78), None, "a waiter holds nothing");
        assert_eq!(
            find_flock(table, libc::makedev(0xfe, 0x02), 77).map(|l| l.exclusive),
            Some(false)
        );
        assert_eq!(find_flock("garbage\n\n1: FLOCK", dev, 77), None);
    }
}
