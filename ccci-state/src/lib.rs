//! Run-keyed state files (SPEC §6) and run identity (SPEC §1).
//!
//! A CI run keeps a few small files: a deploy counter, the op state, the
//! dependency lists. They used to be keyed by app domain, and two runs of
//! one domain polluted and deleted each other's files (docs/concurrency.md,
//! "Run state"). This crate keys them by run instead.
//!
//! # Guarantees
//!
//! 1. **Two runs never share a file.** A run's files live in
//!    `<state dir>/<run key>/NAME`, where the run key is the run id plus
//!    the harness pid ([`identity`]); the app domain plays no part.
//!    Children are given exact paths (`CCCI_<NAME>_FILE`, see [`file_var`]),
//!    which win over the key wherever they are set.
//! 2. **Whole files.** Every change writes the complete new content under a
//!    temporary name and renames it over the old file
//!    ([`SafeDir::replace`]); `append` too. A reader, or a SIGKILL at any
//!    instruction, sees the old content or the new, never an empty or torn
//!    file, and readers need no lock.
//! 3. **No lost update.** A writer holds an exclusive `flock` on the
//!    directory that contains the file for the whole read-modify-replace
//!    ([`Locked`]). Writers by run key and by exact path lock the same
//!    directory inode, so they exclude each other as well.
//! 4. **Removal only under the lock.** A run dir is emptied and removed only
//!    by a process holding its lock (`clean`, `gc`, replacing a stale dir),
//!    and a process that obtains the lock first checks that the path still
//!    names the directory it locked, else starts over: the lockfile rule of
//!    `ccci-lock`, applied to directories. A write therefore never lands in
//!    a directory that is being or has been removed.
//! 5. **Pid reuse is detected.** A run dir records its harness's pid and
//!    start time ([`RECORD`]). When that pid now names another process, the
//!    dir belongs to an earlier run whose key was reused: writers replace it
//!    with a fresh one, readers ignore it, `gc` removes it. The dir of a
//!    running harness is never removed by `gc`.
//!
//! All directories are [`SafeDir`]s (owned by us, 0700, never a symlink)
//! and files are opened relative to them without following symlinks.

#![warn(missing_docs)]

pub mod cli;
pub mod identity;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use ccci_common::cli::UsageError;
use ccci_common::dirs::{self, Role, STATE_DIR};
use ccci_common::fs::{FileError, FileErrorKind, OpenHow, SafeDir};
use ccci_common::names::shell_quote;
use ccci_common::sys::{flock, FlockOp};
use nix::sys::stat::FileStat;
use serde::{Deserialize, Serialize};

use identity::{Harness, RunKey};

/// The harness's four state files, exported by `ccci-state env`.
pub const HARNESS_FILES: [&str; 4] = ["deploys", "opstate", "deps", "depskip"];

/// The file in a run dir that records the run's harness ([`Record`]). Its
/// leading dot keeps it apart from every valid state NAME.
pub const RECORD: &str = ".harness";

/// A run's directory inside the state dir, for messages.
pub const RUN_DIR: Role = Role {
    what: "run dir",
    flag: "--state-dir",
    env: "CCCI_STATE_DIR",
};

/// How often an open-lock-check loop starts over before giving up; each
/// retry means another process removed the directory meanwhile.
const ATTEMPTS: usize = 100;

/// The most of a record file that is read.
const RECORD_MAX: u64 = 4096;

/// `CCCI_<NAME>_FILE`: the variable that gives state file NAME an exact
/// path (NAME upper-cased, `-` as `_`).
pub fn file_var(name: &str) -> String {
    format!("CCCI_{}_FILE", name.to_ascii_uppercase().replace('-', "_"))
}

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

/// Who began a run: kept in the run dir as one JSON line ([`RECORD`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The run id.
    pub run_id: String,
    /// The harness pid.
    pub pid: u32,
    /// The harness's start time ([`identity::start_time`]); `None` when the
    /// pid named no process when the run dir was made.
    pub start_time: Option<u64>,
    /// When the run dir was made, RFC 3339.
    pub created: String,
}

impl Record {
    /// A record for `key`'s harness as it is now.
    pub fn now(key: &RunKey) -> Record {
        Record {
            run_id: key.run_id.clone(),
            pid: key.pid,
            start_time: identity::start_time(key.pid),
            created: ccci_common::cli::now_rfc3339(),
        }
    }

    /// What became of the recorded harness.
    pub fn harness(&self) -> Harness {
        identity::harness(self.pid, self.start_time)
    }

    fn is_for(&self, key: &RunKey) -> bool {
        self.pid == key.pid && self.run_id == key.run_id
    }
}

/// The record in `dir`; `None` when it is missing or unreadable.
pub fn read_record(dir: &SafeDir) -> Option<Record> {
    let file = dir.open_file(RECORD, OpenHow::Read).ok()?;
    let mut buf = Vec::new();
    file.take(RECORD_MAX).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

fn write_record(dir: &SafeDir, key: &RunKey) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(&Record::now(key))?;
    line.push(b'\n');
    dir.replace(RECORD, &line)
}

/// The content of the file `name` in `dir`; `None` when it does not exist.
fn read_file(dir: &SafeDir, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match dir.open_file(name, OpenHow::Read) {
        Ok(mut file) => {
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", dir.join(name).display()))?;
            Ok(Some(buf))
        }
        Err(FileError {
            kind: FileErrorKind::Missing,
            ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// A directory of state files, locked for writing: an exclusive `flock` on
/// the directory's own descriptor, released when this is dropped. Every
/// change is a read-modify-replace done while holding it (guarantees 2, 3).
#[derive(Debug)]
pub struct Locked {
    dir: SafeDir,
}

impl Locked {
    fn lock(dir: SafeDir) -> anyhow::Result<Locked> {
        flock(dir.as_fd(), FlockOp::Exclusive)
            .with_context(|| format!("cannot lock {}", dir.path().display()))?;
        Ok(Locked { dir })
    }

    fn try_lock(dir: SafeDir) -> anyhow::Result<Option<Locked>> {
        let held = flock(dir.as_fd(), FlockOp::ExclusiveNonblock)
            .with_context(|| format!("cannot lock {}", dir.path().display()))?;
        Ok(held.then_some(Locked { dir }))
    }

    fn stat(&self) -> anyhow::Result<FileStat> {
        nix::sys::stat::fstat(self.dir.as_fd())
            .with_context(|| format!("cannot stat {}", self.dir.path().display()))
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
                    path.display(),
                    shell_quote(&shown)
                )
            })?,
        };
        let new = old
            .checked_add(by)
            .ok_or_else(|| anyhow!("counter {} would overflow: {old} + {by}", path.display()))?;
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
    fn remove(self, parent: &SafeDir, name: &str) -> anyhow::Result<()> {
        let mut entries = self
            .dir
            .names()
            .with_context(|| format!("cannot list {}", self.dir.path().display()))?;
        entries.sort_by_key(|entry| entry == RECORD);
        for entry in entries {
            let path = self.dir.path().join(&entry);
            let entry = entry
                .to_str()
                .ok_or_else(|| anyhow!("cannot remove {}: not our file", path.display()))?;
            self.dir.remove_file(entry).map_err(|e| {
                let e = anyhow::Error::new(e);
                if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    e.context(format!(
                        "cannot remove {}: a directory we never create; remove it by hand",
                        path.display()
                    ))
                } else {
                    e.context(format!("cannot remove {}", path.display()))
                }
            })?;
        }
        parent
            .remove_dir(name)
            .with_context(|| format!("cannot remove {}", self.dir.path().display()))
    }
}

/// A run dir opened for writing ([`StateDir::begin`], [`Location::lock`]).
#[derive(Debug)]
pub struct Begun {
    /// The locked directory.
    pub locked: Locked,
    /// The record of an earlier run whose stale dir was replaced on the way.
    pub replaced: Option<Record>,
}

/// What [`StateDir::gc`] did with one run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// The harness is running: kept.
    Live,
    /// A writer holds the dir's lock right now: kept.
    InUse,
    /// No record, and the pid names a process: it cannot be told apart
    /// from the harness, so the dir is kept.
    Unrecorded,
    /// The harness has exited, or its pid names another process: removed.
    Removed(Harness),
    /// `--dry-run`: would be removed.
    WouldRemove(Harness),
    /// Not a directory we may touch (a symlink, a file, an unsafe dir): left alone.
    Skipped(String),
    /// Removed by another process meanwhile.
    Vanished,
    /// Removal failed.
    Failed(String),
}

/// One run dir [`StateDir::gc`] looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcEntry {
    /// The run dir.
    pub path: PathBuf,
    /// The harness pid its name carries.
    pub pid: u32,
    /// What happened.
    pub outcome: Swept,
}

/// The state dir: one subdirectory per run key.
#[derive(Debug)]
pub struct StateDir {
    dir: SafeDir,
}

impl StateDir {
    /// Opens the state dir at `path` (made absolute, so the paths handed to
    /// children work from any directory). With `create`, a missing one is
    /// made 0700; without, a missing one is `Ok(None)`.
    pub fn open(path: &Path, create: bool) -> anyhow::Result<Option<StateDir>> {
        let path = dirs::absolute(path);
        Ok(SafeDir::open(&STATE_DIR, &path, create)?.map(|dir| StateDir { dir }))
    }

    /// The state dir's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<state dir>/<run key>`.
    pub fn run_path(&self, key: &RunKey) -> PathBuf {
        self.dir.join(&key.key())
    }

    /// Whether `name` still names the directory `locked` holds.
    fn still_names(&self, name: &str, locked: &Locked) -> anyhow::Result<bool> {
        let now = self
            .dir
            .stat(name)
            .with_context(|| format!("cannot stat {}", self.dir.join(name).display()))?;
        let held = locked.stat()?;
        Ok(now.is_some_and(|st| same_inode(&st, &held)))
    }

    fn unsettled(&self, name: &str) -> anyhow::Error {
        anyhow!(
            "{} kept being removed while it was being opened; try again",
            self.dir.join(name).display()
        )
    }

    /// Opens the run dir of `key` for writing: created (0700, with its
    /// record) when missing, replaced by a fresh one when it is stale (its
    /// recorded harness pid now names another process), locked either way.
    pub fn begin(&self, key: &RunKey) -> anyhow::Result<Begun> {
        let name = key.key();
        let mut replaced = None;
        for _ in 0..ATTEMPTS {
            let Some(dir) = self.dir.subdir(&RUN_DIR, &name, true)? else {
                continue; // removed between mkdir and open
            };
            let locked = Locked::lock(dir)?;
            if !self.still_names(&name, &locked)? {
                continue;
            }
            match read_record(&locked.dir) {
                Some(record) if record.is_for(key) => {
                    if record.harness() == Harness::Replaced {
                        locked.remove(&self.dir, &name)?;
                        replaced = Some(record);
                        continue;
                    }
                }
                _ => write_record(&locked.dir, key)?,
            }
            return Ok(Begun { locked, replaced });
        }
        Err(self.unsettled(&name))
    }

    /// The run dir of `key` for reading; `None` when it is missing or stale.
    pub fn lookup(&self, key: &RunKey) -> anyhow::Result<Option<SafeDir>> {
        let Some(dir) = self.dir.subdir(&RUN_DIR, &key.key(), false)? else {
            return Ok(None);
        };
        Ok(match read_record(&dir) {
            Some(record) if record.is_for(key) && record.harness() == Harness::Replaced => None,
            _ => Some(dir),
        })
    }

    /// Removes the run dir of `key` and its files; `Ok(false)` when there
    /// was none.
    pub fn clean(&self, key: &RunKey) -> anyhow::Result<bool> {
        let name = key.key();
        for _ in 0..ATTEMPTS {
            let Some(dir) = self.dir.subdir(&RUN_DIR, &name, false)? else {
                return Ok(false);
            };
            let locked = Locked::lock(dir)?;
            if !self.still_names(&name, &locked)? {
                continue;
            }
            locked.remove(&self.dir, &name)?;
            return Ok(true);
        }
        Err(self.unsettled(&name))
    }

    /// Removes (or with `dry_run` only reports) every run dir whose harness
    /// has exited or whose pid now names another process. Dirs whose harness
    /// runs, dirs a writer holds, and entries that are not run dirs are kept.
    /// The entries are reported in name order.
    pub fn gc(&self, dry_run: bool) -> anyhow::Result<Vec<GcEntry>> {
        let mut names: Vec<String> = self
            .dir
            .names()
            .with_context(|| format!("cannot list {}", self.path().display()))?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Some(key) = RunKey::parse(&name) else {
                continue; // not a run dir of ours
            };
            let outcome = self
                .sweep(&name, &key, dry_run)
                .unwrap_or_else(|e| Swept::Failed(format!("{e:#}")));
            out.push(GcEntry {
                path: self.dir.join(&name),
                pid: key.pid,
                outcome,
            });
        }
        Ok(out)
    }

    fn sweep(&self, name: &str, key: &RunKey, dry_run: bool) -> anyhow::Result<Swept> {
        match self.dir.stat(name)? {
            None => return Ok(Swept::Vanished),
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                return Ok(Swept::Skipped("is a symlink".into()))
            }
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
                return Ok(Swept::Skipped("is not a directory".into()))
            }
            Some(_) => {}
        }
        let dir = match self.dir.subdir(&RUN_DIR, name, false) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(Swept::Vanished),
            Err(e) => return Ok(Swept::Skipped(format!("{e:#}"))),
        };
        let Some(locked) = Locked::try_lock(dir)? else {
            return Ok(Swept::InUse);
        };
        if !self.still_names(name, &locked)? {
            return Ok(Swept::Vanished);
        }
        let fate = match read_record(&locked.dir).filter(|r| r.is_for(key)) {
            Some(record) => record.harness(),
            None if identity::start_time(key.pid).is_some() => return Ok(Swept::Unrecorded),
            None => Harness::Gone,
        };
        if fate == Harness::Running {
            return Ok(Swept::Live);
        }
        if dry_run {
            return Ok(Swept::WouldRemove(fate));
        }
        match locked.remove(&self.dir, name) {
            Ok(()) => Ok(Swept::Removed(fate)),
            Err(e) => Ok(Swept::Failed(format!("{e:#}"))),
        }
    }
}

/// Where state file NAME of a run is: an exact path from the environment,
/// or the file in the run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `$CCCI_<NAME>_FILE`: the file `file` in the directory `dir`.
    Exact {
        /// The variable that named it.
        var: String,
        /// The directory (absolute).
        dir: PathBuf,
        /// The file's name in `dir`.
        file: String,
    },
    /// `<state dir>/<run key>/NAME`.
    Keyed {
        /// The state dir.
        state_dir: PathBuf,
        /// The run.
        key: RunKey,
        /// NAME.
        name: String,
    },
}

impl Location {
    /// `$CCCI_<NAME>_FILE` when it is set and not empty, else the run's own
    /// file. `name` must be a valid state NAME already.
    pub fn resolve(name: &str, state_dir: &Path, key: &RunKey) -> Result<Location, UsageError> {
        let var = file_var(name);
        match std::env::var_os(&var).filter(|v| !v.is_empty()) {
            Some(value) => Location::exact(&var, Path::new(&value)),
            None => Ok(Location::Keyed {
                state_dir: dirs::absolute(state_dir),
                key: key.clone(),
                name: name.to_string(),
            }),
        }
    }

    /// The exact path `path`, as given by the variable `var`: it must name a
    /// file (not end in `/`, `.` or `..`) whose name is UTF-8.
    pub fn exact(var: &str, path: &Path) -> Result<Location, UsageError> {
        let bytes = path.as_os_str().as_bytes();
        let (parent, file) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(0) => (&b"/"[..], &bytes[1..]),
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (&b"."[..], bytes),
        };
        let file = std::str::from_utf8(file)
            .ok()
            .filter(|f| !matches!(*f, "" | "." | ".."));
        let Some(file) = file else {
            return Err(UsageError(format!(
                "invalid value {} for {var}: it must be the path of a file",
                shell_quote(&path.to_string_lossy())
            )));
        };
        Ok(Location::Exact {
            var: var.to_string(),
            dir: dirs::absolute(Path::new(std::ffi::OsStr::from_bytes(parent))),
            file: file.to_string(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        match self {
            Location::Exact { dir, file, .. } => dir.join(file),
            Location::Keyed {
                state_dir,
                key,
                name,
            } => state_dir.join(key.key()).join(name),
        }
    }

    /// The file's name in its directory.
    pub fn file_name(&self) -> &str {
        match self {
            Location::Exact { file, .. } => file,
            Location::Keyed { name, .. } => name,
        }
    }

    /// The file's content; `None` when it (or its directory) does not exist,
    /// or when it belongs to a stale run dir.
    pub fn read(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Location::Exact { var, dir, file } => {
                match SafeDir::open(&exact_role(var), dir, false)? {
                    Some(dir) => read_file(&dir, file),
                    None => Ok(None),
                }
            }
            Location::Keyed {
                state_dir,
                key,
                name,
            } => {
                let Some(state) = StateDir::open(state_dir, false)? else {
                    return Ok(None);
                };
                match state.lookup(key)? {
                    Some(dir) => read_file(&dir, name),
                    None => Ok(None),
                }
            }
        }
    }

    /// Locks the file's directory for writing. The run dir is created (or a
    /// stale one replaced) as [`StateDir::begin`] does; the directory of an
    /// exact path must exist already.
    pub fn lock(&self) -> anyhow::Result<Begun> {
        match self {
            Location::Exact { var, dir, file } => {
                let locked = lock_exact(var, dir)?.ok_or_else(|| {
                    anyhow!(
                        "{var} names {}, but {} does not exist; \
                         run `eval \"$(ccci-state env)\"` first, or fix {var}",
                        dir.join(file).display(),
                        dir.display()
                    )
                })?;
                Ok(Begun {
                    locked,
                    replaced: None,
                })
            }
            Location::Keyed { state_dir, key, .. } => {
                let state = StateDir::open(state_dir, true)?
                    .ok_or_else(|| anyhow!("state dir {} vanished", state_dir.display()))?;
                state.begin(key)
            }
        }
    }

    /// Removes an exact-path file (under its directory's lock); a missing
    /// file or directory is fine. Keyed files go with their run dir.
    pub fn remove_exact(&self) -> anyhow::Result<()> {
        if let Location::Exact { var, dir, file } = self {
            if let Some(locked) = lock_exact(var, dir)? {
                locked
                    .dir
                    .remove_file(file)
                    .with_context(|| format!("cannot remove {}", dir.join(file).display()))?;
            }
        }
        Ok(())
    }
}

/// The role of an exact path's directory, for messages naming the variable.
fn exact_role(var: &str) -> Role {
    // A handful of bytes, once per command: leaking keeps `Role` simple.
    let var: &'static str = Box::leak(var.to_string().into_boxed_str());
    Role {
        what: Box::leak(format!("directory of {var}").into_boxed_str()),
        flag: "ccci-state env",
        env: var,
    }
}

/// Opens and locks the directory `dir` of an exact path, checking after the
/// lock that the path still names it; `None` when it does not exist.
fn lock_exact(var: &str, dir: &Path) -> anyhow::Result<Option<Locked>> {
    let role = exact_role(var);
    for _ in 0..ATTEMPTS {
        let Some(opened) = SafeDir::open(&role, dir, false)? else {
            return Ok(None);
        };
        let locked = Locked::lock(opened)?;
        let held = locked.stat()?;
        match std::fs::symlink_metadata(dir) {
            Ok(now) if now.dev() == held.st_dev && now.ino() == held.st_ino => {
                return Ok(Some(locked))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot stat {}", dir.display())))
            }
        }
    }
    Err(anyhow!(
        "{} kept being replaced while it was being opened; try again",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn me() -> RunKey {
        RunKey {
            run_id: "t".into(),
            pid: std::process::id(),
        }
    }

    #[test]
    fn variables_for_names() {
        assert_eq!(file_var("deploys"), "CCCI_DEPLOYS_FILE");
        assert_eq!(file_var("dep-skip_2"), "CCCI_DEP_SKIP_2_FILE");
    }

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

    #[test]
    fn exact_paths() {
        let loc = Location::exact("V", Path::new("/a/b/c")).unwrap();
        assert_eq!(
            loc,
            Location::Exact {
                var: "V".into(),
                dir: "/a/b".into(),
                file: "c".into()
            }
        );
        assert_eq!(loc.path(), Path::new("/a/b/c"));
        let top = Location::exact("V", Path::new("/c")).unwrap();
        assert_eq!(top.path(), Path::new("/c"));
        let rel = Location::exact("V", Path::new("c")).unwrap();
        assert_eq!(rel.path(), std::env::current_dir().unwrap().join("c"));
        for bad in ["/a/", "/", "/a/.", "/a/..", ".", ".."] {
            let e = Location::exact("V", Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn begin_records_the_harness_and_reuses_a_live_dir() {
        let t = tmp();
        let state = StateDir::open(t.path(), true).unwrap().unwrap();
        let key = me();
        let begun = state.begin(&key).unwrap();
        assert!(begun.replaced.is_none());
        begun.locked.set("opstate", b"up").unwrap();
        drop(begun);
        let record = read_record(&state.lookup(&key).unwrap().unwrap()).unwrap();
        assert_eq!(record.pid, key.pid);
        assert_eq!(record.start_time, identity::start_time(key.pid));
        let again = state.begin(&key).unwrap();
        assert!(again.replaced.is_none());
        assert_eq!(again.locked.read("opstate").unwrap().unwrap(), b"up\n");
    }

    #[test]
    fn a_stale_dir_is_replaced_and_ignored_by_readers() {
        let t = tmp();
        let state = StateDir::open(t.path(), true).unwrap().unwrap();
        let key = me();
        let begun = state.begin(&key).unwrap();
        begun.locked.incr("deploys", 5).unwrap();
        let mut stale = Record::now(&key);
        stale.start_time = stale.start_time.map(|t| t + 1);
        begun
            .locked
            .dir()
            .replace(RECORD, &serde_json::to_vec(&stale).unwrap())
            .unwrap();
        drop(begun);
        assert!(state.lookup(&key).unwrap().is_none());
        let fresh = state.begin(&key).unwrap();
        assert_eq!(fresh.replaced, Some(stale));
        assert_eq!(fresh.locked.read("deploys").unwrap(), None);
    }

    #[test]
    fn locked_operations() {
        let t = tmp();
        let state = StateDir::open(t.path(), true).unwrap().unwrap();
        let begun = state.begin(&me()).unwrap();
        let l = &begun.locked;
        assert_eq!(l.incr("deploys", 1).unwrap(), 1);
        assert_eq!(l.incr("deploys", 41).unwrap(), 42);
        assert_eq!(l.incr("deploys", -2).unwrap(), 40);
        assert_eq!(l.read("deploys").unwrap().unwrap(), b"40\n");
        l.append("deps", b"a").unwrap();
        l.append("deps", b"b c").unwrap();
        assert_eq!(l.read("deps").unwrap().unwrap(), b"a\nb c\n");
        l.dir().replace("deps", b"no newline").unwrap();
        l.append("deps", b"d").unwrap();
        assert_eq!(l.read("deps").unwrap().unwrap(), b"no newline\nd\n");
        l.set("opstate", b"").unwrap();
        l.set("opstate", b"done").unwrap();
        assert_eq!(l.read("opstate").unwrap().unwrap(), b"done\n");
        let e = l.incr("opstate", 1).unwrap_err().to_string();
        assert!(e.contains("opstate holds no number ('done')"), "{e}");
        l.set("big", i64::MAX.to_string().as_bytes()).unwrap();
        assert!(l.incr("big", 1).is_err());
        assert_eq!(
            l.read("big").unwrap().unwrap(),
            format!("{}\n", i64::MAX).as_bytes()
        );
    }

    #[test]
    fn clean_removes_everything_and_is_idempotent() {
        let t = tmp();
        let state = StateDir::open(t.path(), true).unwrap().unwrap();
        let key = me();
        state.begin(&key).unwrap().locked.set("x", b"1").unwrap();
        assert!(state.run_path(&key).is_dir());
        assert!(state.clean(&key).unwrap());
        assert!(!state.run_path(&key).exists());
        assert!(!state.clean(&key).unwrap());
    }

    #[test]
    fn gc_keeps_the_live_and_removes_the_gone() {
        let t = tmp();
        let state = StateDir::open(t.path(), true).unwrap().unwrap();
        let live = me();
        drop(state.begin(&live).unwrap());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = RunKey {
            run_id: "t".into(),
            pid: child.id(),
        };
        drop(state.begin(&gone).unwrap());
        child.wait().unwrap();
        std::fs::write(t.path().join("not-a-run"), "x").unwrap();

        let dry = state.gc(true).unwrap();
        assert_eq!(dry.len(), 2, "{dry:?}");
        assert!(state.run_path(&gone).exists());
        let swept = state.gc(false).unwrap();
        let outcome = |key: &RunKey| {
            swept
                .iter()
                .find(|e| e.path == state.run_path(key))
                .map(|e| e.outcome.clone())
        };
        assert_eq!(outcome(&live), Some(Swept::Live));
        assert_eq!(outcome(&gone), Some(Swept::Removed(Harness::Gone)));
        assert!(!state.run_path(&gone).exists());
        assert!(state.run_path(&live).exists());
        assert!(t.path().join("not-a-run").exists());
    }
}
