//! What a pass remembers of the lock dir, so that a reboot is told from a
//! lock dir removed or replaced under live runs (SPEC §4; docs/concurrency.md
//! "A lock dir removed under live runs").
//!
//! A lock dir on a tmpfs is empty after a reboot, and the first pass then
//! reaps every deployed CI app at once. The same sight, a lock dir that is
//! missing or holds none of the claims, also follows `rm -r LOCK_DIR` or
//! `mv LOCK_DIR old; mkdir LOCK_DIR` by hand while runs are live: their
//! lockfiles are gone from the path (or are in `old`), and reaping would
//! take their apps from under them. What tells the two apart is the boot:
//! a reboot changes `/proc/sys/kernel/random/boot_id`, a removal does not.
//!
//! So a pass that uses the lock dir records, beside it and outside it, the
//! boot id and the lock dir's identity (`st_dev`, `st_ino` and, where the
//! file system keeps one, its birth time, since ext4 gives a new directory
//! the inode number of one just removed):
//! `LOCK_DIR.janitor/seen` (made 0700/0600, through [`SafeDir`], written
//! then renamed). A removal of the lock dir does not take the record with
//! it. The next pass compares ([`Seen::judge`]):
//!
//! - the same boot and the same directory: go on;
//! - another boot: the host rebooted since; what is missing was taken by the
//!   reboot; the record is renewed;
//! - **the same boot, and the lock dir is missing or is another
//!   directory: it was removed or replaced under this boot.** The pass
//!   probes and reaps nothing and ends with 125, saying how to accept the
//!   lock dir when no run was live then (remove the record);
//! - no record yet (the first pass, or a tmpfs parent emptied by a reboot
//!   took the record too): the rules without it hold (SPEC §4: a missing
//!   lock dir is created only when its parent is a tmpfs and no live
//!   process holds a file of it).
//!
//! A dry run reads the record and never writes it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ccci_common::dirs::Role;
use ccci_common::fs::{OpenHow, SafeDir};
use ccci_common::names::quote_path;

/// The record's directory, beside the lock dir: `LOCK_DIR` + this.
pub const SUFFIX: &str = ".janitor";
/// The record's file name in it.
pub const SEEN: &str = "seen";
/// Where the kernel tells the boot id (for messages).
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

const ROLE: Role = Role {
    what: "janitor record dir",
    flag: "--lock-dir",
    env: "CCCI_APP_LOCK_DIR",
};

pub use ccci_common::fs::DirId;

/// What the last pass saw: the boot it ran in and the lock dir it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The boot id then.
    pub boot_id: String,
    /// The lock dir's identity then.
    pub dir: DirId,
}

/// What the record says of the lock dir now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No record: decide without it.
    Unknown,
    /// The same boot, the same directory.
    Same,
    /// Another boot since the record: a reboot.
    Rebooted,
    /// The same boot, and the lock dir is missing (`None`) or another
    /// directory: removed or replaced under live runs, or by hand.
    Removed(Option<DirId>),
}

/// The current boot id ([`ccci_common::proc::boot_id`]).
pub fn boot_id() -> anyhow::Result<String> {
    ccci_common::proc::boot_id()
        .ok_or_else(|| anyhow::anyhow!("cannot read the boot id from {BOOT_ID}"))
}

/// The path of the record dir of `lock_dir`; `None` for a path without a
/// last component (`/`).
pub fn record_dir(lock_dir: &Path) -> Option<PathBuf> {
    let name = lock_dir.file_name()?;
    let mut with = name.to_os_string();
    with.push(SUFFIX);
    Some(lock_dir.with_file_name(with))
}

impl Seen {
    /// The record's text.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "boot_id={}\ndev={}\nino={}\n",
            self.boot_id, self.dir.dev, self.dir.ino
        );
        if let Some(born) = self.dir.born {
            text.push_str(&format!("born={born}\n"));
        }
        text
    }

    /// Parses the record's text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Seen> {
        let mut boot_id = None;
        let mut dev = None;
        let mut ino = None;
        let mut born = None;
        for line in text.lines() {
            let (key, value) = line.split_once('=')?;
            let slot = match key {
                "boot_id" => {
                    boot_id = Some(value.to_string());
                    continue;
                }
                "born" => {
                    born = Some(value.parse::<u128>().ok()?);
                    continue;
                }
                "dev" => &mut dev,
                "ino" => &mut ino,
                _ => return None,
            };
            *slot = Some(value.parse::<u64>().ok()?);
        }
        Some(Seen {
            boot_id: boot_id.filter(|b| !b.is_empty())?,
            dir: DirId {
                dev: dev?,
                ino: ino?,
                born,
            },
        })
    }

    /// What `seen` (the record, if any) says of the lock dir, found as
    /// `now` (its identity, `None` when missing) in boot `boot_id`.
    pub fn judge(seen: Option<&Seen>, boot_id: &str, now: Option<DirId>) -> Verdict {
        match seen {
            None => Verdict::Unknown,
            Some(seen) if seen.boot_id != boot_id => Verdict::Rebooted,
            Some(seen) if now.is_some_and(|now| seen.dir.same_as(&now)) => Verdict::Same,
            Some(_) => Verdict::Removed(now),
        }
    }
}

/// The record of `lock_dir`, and where it is.
#[derive(Debug)]
pub struct Record {
    /// The record file's path, for messages.
    pub path: PathBuf,
    /// What it says; `None` when there is none.
    pub seen: Option<Seen>,
}

/// Reads the record of `lock_dir` (creating nothing). An unsafe record dir
/// (a symlink, another user's) or an unreadable record is an error: the
/// pass cannot tell a reboot from a removal then.
pub fn recall(lock_dir: &Path) -> anyhow::Result<Record> {
    let Some(dir_path) = record_dir(lock_dir) else {
        anyhow::bail!("lock dir {} has no name", quote_path(lock_dir));
    };
    let path = dir_path.join(SEEN);
    let Some(dir) = SafeDir::open(&ROLE, &dir_path, false)? else {
        return Ok(Record { path, seen: None });
    };
    let mut file = match dir.open_file(SEEN, OpenHow::Read) {
        Ok(file) => file,
        Err(e) if matches!(e.kind, ccci_common::fs::FileErrorKind::Missing) => {
            return Ok(Record { path, seen: None })
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read the janitor's record: {e}")),
    };
    let mut text = String::new();
    (&mut file)
        .take(4096)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", quote_path(&path)))?;
    let Some(seen) = Seen::parse(&text) else {
        anyhow::bail!(
            "{} is not a janitor's record of its lock dir (boot_id=, dev=, ino=); \
             remove it if no run was live when the lock dir was last removed",
            quote_path(&path)
        );
    };
    Ok(Record {
        path,
        seen: Some(seen),
    })
}

/// Records that a pass used `lock_dir` (identity `dir`) in boot `boot_id`,
/// unless the record says so already.
pub fn remember(lock_dir: &Path, record: &Record, boot_id: &str, dir: DirId) -> anyhow::Result<()> {
    let seen = Seen {
        boot_id: boot_id.to_string(),
        dir,
    };
    if record.seen.as_ref() == Some(&seen) {
        return Ok(());
    }
    let Some(dir_path) = record_dir(lock_dir) else {
        return Ok(());
    };
    let dir = SafeDir::create(&ROLE, &dir_path)?;
    dir.replace(SEEN, seen.to_text().as_bytes())
}

/// The refusal for [`Verdict::Removed`]: what happened, and the way out.
pub fn refusal(lock_dir: &Path, record: &Record, now: Option<DirId>) -> String {
    let what = match now {
        None => "does not exist".to_string(),
        Some(_) => "is not the directory an earlier pass used".to_string(),
    };
    let how = match now {
        None => "removed",
        Some(_) => "replaced",
    };
    format!(
        "lock dir {} {what}, and the host has not rebooted since ({} says so): it was \
         {how} under this boot, by hand or by a cleanup, and the claims of runs that were \
         live then are not in it: nothing probed, nothing reaped. If no run was live then, \
         `rm {}` and the next pass takes the lock dir as it is",
        quote_path(lock_dir),
        quote_path(&record.path),
        quote_path(&record.path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(boot: &str, dir: DirId) -> Seen {
        Seen {
            boot_id: boot.into(),
            dir,
        }
    }

    fn id(dev: u64, ino: u64, born: Option<u128>) -> DirId {
        DirId { dev, ino, born }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        for born in [None, Some(1_765_000_000_123_456_789)] {
            let s = seen(
                "0e6f3b0e-6b8c-4d43-9f5e-3c1f6f0c2a11",
                id(64768, 1234, born),
            );
            assert_eq!(Seen::parse(&s.to_text()), Some(s));
        }
    }

    #[test]
    fn anything_else_is_not_a_record() {
        for text in [
            "",
            "boot_id=x\ndev=1\n",
            "boot_id=x\ndev=1\nino=two\n",
            "boot_id=\ndev=1\nino=2\n",
            "boot_id=x\ndev=1\nino=2\nmore=3\n",
            "boot_id=x\ndev=1\nino=2\nborn=yesterday\n",
            "garbage",
        ] {
            assert_eq!(Seen::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_verdict_tells_a_reboot_from_a_removal() {
        let s = seen("boot-a", id(1, 2, Some(7)));
        assert_eq!(Seen::judge(None, "boot-a", None), Verdict::Unknown);
        let same = Some(id(1, 2, Some(7)));
        assert_eq!(Seen::judge(Some(&s), "boot-a", same), Verdict::Same);
        assert_eq!(Seen::judge(Some(&s), "boot-b", None), Verdict::Rebooted);
        let other = Some(id(1, 3, Some(8)));
        assert_eq!(Seen::judge(Some(&s), "boot-b", other), Verdict::Rebooted);
        assert_eq!(
            Seen::judge(Some(&s), "boot-a", None),
            Verdict::Removed(None)
        );
        assert_eq!(
            Seen::judge(Some(&s), "boot-a", other),
            Verdict::Removed(other)
        );
        // The inode number of a removed directory, given to the next one.
        let reused = Some(id(1, 2, Some(9)));
        assert_eq!(
            Seen::judge(Some(&s), "boot-a", reused),
            Verdict::Removed(reused)
        );
        // A record without a birth time (or a file system that keeps
        // none) compares the device and inode only.
        let unborn = seen("boot-a", id(1, 2, None));
        assert_eq!(Seen::judge(Some(&unborn), "boot-a", same), Verdict::Same);
    }

    #[test]
    fn this_host_has_a_boot_id() {
        let id = boot_id().unwrap();
        assert_eq!(id, boot_id().unwrap());
    }

    #[test]
    fn the_record_dir_is_beside_the_lock_dir() {
        assert_eq!(
            record_dir(Path::new("/run/lock/ccci-0")),
            Some(PathBuf::from("/run/lock/ccci-0.janitor"))
        );
        assert_eq!(record_dir(Path::new("/")), None);
    }
}
