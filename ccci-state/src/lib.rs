//! Run-keyed state files (SPEC §6).
//!
//! A CI run keeps a few small files: a deploy counter, the op state, the
//! dependency lists. They used to be keyed by app domain, and two runs of
//! one domain polluted and deleted each other's files (docs/concurrency.md,
//! "Run state"). This crate keys them by run instead. Run identity itself
//! (run id, harness pid, the harness record) lives in
//! [`ccci_common::run`], shared with `ccci-abradir`.
//!
//! The crate has three parts: [`files`] (the changes made to one locked
//! directory), [`rundir`] (the state dir and its run dirs) and
//! [`location`] (which file a NAME means for a run).
//!
//! # Guarantees
//!
//! 1. **Two runs never share a file.** A run's files live in
//!    `<state dir>/<run key>/NAME`, where the run key is the run id plus
//!    the harness pid; the app domain plays no part. Children are given
//!    exact paths (`CCCI_<NAME>_FILE`, see [`file_var`]), which win over
//!    the key where they are inherited; a run named on the command line
//!    (`--run-id`, `--pid`) ignores them, so a nested run never touches the
//!    outer run's files.
//! 2. **Whole files.** Every change writes the complete new content under a
//!    temporary name and renames it over the old file
//!    ([`ccci_common::fs::SafeDir::replace`]); `append` too. A reader, or a
//!    SIGKILL at any instruction, sees the old content or the new, never an
//!    empty or torn file, and readers need no lock.
//! 3. **No lost update.** A writer holds an exclusive `flock` on the
//!    directory that contains the file for the whole read-modify-replace
//!    ([`Locked`]). Writers by run key and by exact path lock the same
//!    directory inode, so they exclude each other as well.
//! 4. **Removal only under the lock.** A run dir is emptied and removed only
//!    by a process holding its lock (`clean`, `gc`, replacing a stale dir),
//!    and a process that obtains the lock first checks, by descriptor, that
//!    the name still names the directory it locked, else starts over
//!    ([`ccci_common::locked`], the same step `ccci-lock` takes for
//!    lockfiles). A write therefore never lands in a directory that is
//!    being or has been removed. `clean` removes the run's directory and
//!    nothing outside it, whatever a variable names.
//! 5. **Pid reuse is detected.** A run dir records its harness
//!    ([`ccci_common::run::Record`]: pid, start time, pid namespace, boot).
//!    When that pid now names another process, the dir belongs to an
//!    earlier run whose key was reused: writers replace it with a fresh
//!    one, readers ignore it, `gc` removes it. The dir of a running harness
//!    is never removed by `gc`, nor one recorded in another pid namespace,
//!    whose pids mean nothing here.
//!
//! All directories are [`ccci_common::fs::SafeDir`]s (owned by us, 0700,
//! never a symlink) and files are opened relative to them without following
//! symlinks.
//!
//! # What lives where
//!
//! - [`rundir`]: the state dir and its run dirs (guarantees 1, 4 and 5).
//! - [`files`]: the state files of one locked run dir (2 and 3).
//! - [`location`]: where state file NAME of a run is.
//! - [`cli`]: the command line.
//! - this file: the harness's state files and the names of the dirs in
//!   messages.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cli;
pub mod files;
pub mod location;
pub mod rundir;

use ccci_common::dirs::Role;

pub use ccci_common::run::{GcEntry, Swept};
pub use files::{check_line, parse_counter, Locked};
pub use location::{file_var, Location};
pub use rundir::{Begun, StateDir};

/// The harness's four state files, exported by `ccci-state env`.
pub const HARNESS_FILES: [&str; 4] = ["deploys", "opstate", "deps", "depskip"];

/// A run's directory inside the state dir, for messages.
pub const RUN_DIR: Role = Role {
    what: "run dir",
    flag: "--state-dir",
    env: "CCCI_STATE_DIR",
};
