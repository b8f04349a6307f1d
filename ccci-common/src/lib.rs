//! What every ccci tool shares (SPEC §1), written once.
//!
//! - [`exit`]: the one exit-status table, as constants and as text for help
//!   and man pages.
//! - [`domain`]: [`Domain`], a DOMAIN checked once where it comes in, and [`DomainList`].
//! - [`names`]: DOMAIN, run id and state NAME validation; quoting for messages (invisible characters shown) and for `export` lines.
//! - [`duration`]: `90s`, `2m`, `1h30m`, `500ms`, bare seconds.
//! - [`config`]: the one configuration file every tool and script reads.
//! - [`dirs`]: default directories that never depend on session variables.
//! - [`fs`]: the safe-directory rule and files opened only through it.
//! - [`sys`]: flock, signal masks and dispositions, the parent-death signal;
//!   the only module with `unsafe`.
//! - [`supervise`]: run a child, forward signals, deadline and kill timer.
//! - [`tree`]: every descendant of this process, and signals to all of them.
//! - [`cli`]: the frame of every `main`: parse, run, exit status, messages,
//!   and bad values blamed on the flag or variable they came from.
//! - [`args`]: the directory flags, and the rule that the lock, state and
//!   runs dirs are apart.
//! - [`run`]: run identity (run id, harness pid, run key) and the record of
//!   a run's harness that tells a live run from a reused pid.
//! - [`proc`]: is a pid alive, when did it start, which namespace and boot,
//!   the host name.
//! - [`gc`]: the one sweep of a directory of run dirs (ccci-state's state
//!   dir, ccci-abradir's runs dir).
//! - [`locked`]: open → lock → verify the name still names it → retry.
//! - [`users`]: the name of a uid, for messages, from `/etc/passwd` (no NSS).

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod args;
pub mod cli;
pub mod config;
pub mod dirs;
pub mod domain;
pub mod duration;
pub mod exit;
pub mod fs;
pub mod gc;
pub mod locked;
pub mod names;
pub mod proc;
pub mod run;
pub mod supervise;
#[allow(unsafe_code)] // the one module with unsafe code (see its doc)
pub mod sys;
pub mod tree;
pub mod users;

pub use domain::{Domain, DomainList};
