//! Running a child and staying its parent: signal forwarding, a deadline,
//! a kill timer, and a status that is always the child's own.
//!
//! The pattern is coreutils timeout(1)'s: the signals we care about are
//! blocked *before* the child is started, so none can arrive between its
//! start and the wait loop and be lost; the child unblocks them just before
//! it execs (see [`crate::sys::spawn`], which starts it as posix_spawn does,
//! without copying our memory). The loop takes one pending signal at a
//! time with `sigtimedwait`, so no handler runs and nothing is async.
//!
//! Guarantees:
//! - A signal is only ever sent to the child's pid while the child is not yet
//!   reaped (a zombie's pid cannot be reused), and to its process group only
//!   while that group can still exist; `ESRCH` (already gone) is not an error.
//! - The child is always reaped before [`Supervised::wait`] returns.
//! - When the child shares our process group, `SIGINT` and `SIGQUIT` from the
//!   terminal (sent by the kernel to the whole foreground group) reached it
//!   already and are not sent a second time.
//! - A [`Loss`] (what the child runs under, such as an etcd lock lease, was
//!   lost) stops the child: SIGTERM at once, SIGKILL after a grace. It is
//!   noticed without polling and without a window: the loss sets a flag,
//!   then sends [`sys::loss_signal`] to the thread that made the [`Loss`],
//!   which blocked that signal when it made it, before anything that can be
//!   lost existed. A loss before the child starts is therefore either seen
//!   in the flag, which the loop reads before its first wait, or pending as
//!   the signal, which its first wait takes.
//!
//! # Starting a COMMAND, the same way in every tool
//!
//! [`command`] turns the `-- COMMAND [ARG...]` of a command line into a
//! [`Program`]; [`run`] starts it under a [`Watch`] and waits, and when it
//! cannot be started says `cannot run 'prog': why` (quoted visibly) and
//! gives 126 or 127 (SPEC §1); [`exec`] does the same for a tool that
//! replaces itself with COMMAND. The child always gets an empty signal mask
//! and default dispositions ([`crate::sys::spawn`]); [`FORWARDED`]
//! is the one list of signals a waiting tool passes on.
//!
//! # Where what lives
//!
//! - `program`: [`Program`], [`command`], [`run`], [`exec`],
//!   [`cannot_start`], [`Finished`].
//! - `supervised`: [`Watch`], [`spawn`], [`Supervised`] and its wait loop,
//!   [`Outcome`].
//! - `loss`: [`Loss`], [`LossNotifier`].

use crate::sys;

mod loss;
mod program;
mod supervised;
#[cfg(test)]
mod tests;

pub use loss::{Loss, LossNotifier};
pub use program::{cannot_start, command, exec, run, Finished, Program};
pub use supervised::{spawn, Outcome, Supervised, Watch};

/// The signals a tool that waits for a COMMAND passes on to it: TERM, INT,
/// HUP, QUIT, ALRM, USR1 and USR2 (SPEC §2, §3, §4). ALRM is among them so
/// that an alarm armed before the tool was exec'd (an outer deadline)
/// reaches COMMAND instead of killing the tool.
///
/// The same list as [`sys::GIVE_BACK_SIGNALS`], written once: a signal a
/// tool passes on is one that, while `ccci-lock` takes its locks, gives
/// back the lockfiles it created.
pub const FORWARDED: [libc::c_int; 7] = sys::GIVE_BACK_SIGNALS;
