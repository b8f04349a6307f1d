//! The few system calls that need `unsafe`, each behind a safe function.
//!
//! Everything that runs in a child before `exec` lives in [`spawn()`] (the
//! vfork-style start of every COMMAND), [`prepare_command`] and
//! [`detach_command`] (std `Command`s that fork: git, the lock keeper), and
//! uses only async-signal-safe calls (no allocation, no locks):
//! `sigprocmask`, `sigaction`, `prctl`, `getppid`, `setpgid`, `dup2`,
//! `kill`, `execve`.
//!
//! # Where what lives
//!
//! - `spawn`: [`SpawnPlan`] and [`spawn()`], the start of every COMMAND.
//! - `command`: [`prepare_command`], [`detach_command`], the hooks of std
//!   `Command`s.
//! - `signals`: masks, dispositions, [`wait_signal`], [`RESET_SIGNALS`],
//!   [`spawn_without_signals`], [`signal_name`].
//! - `thread_signal`: signals to one thread ([`ThreadSignal`]), the
//!   real-time signals ccci uses, [`interrupt_on`], dnotify.
//! - `give_back`: [`GiveBackOnSignal`], lockfiles a signal removes.
//! - `end`: [`end_by_signal`], ending as the signal would have.
//! - `timer`: [`set_alarm_timer`], [`alarm_timer`] (`ITIMER_REAL`).
//! - `lock`: [`flock`], [`flock_or_interrupted`].
//! - `process`: this process and its children: name, parent-death signal,
//!   subreaper, [`wait_pid`], [`wait_any`].
//! - `pidfd`: [`pidfd_open`], [`pidfd_signal`].
//! - `fds`: [`poll`], [`adopt_inherited_fd`], [`stdio_to_dev_null`],
//!   [`peer_cred`], [`each_dir_entry`].
//! - `pattern`: [`fnmatch`].
//! - `arena`: [`Arena`], the tools' allocator.
//!
//! Every item is used as `ccci_common::sys::X`; the files are private.
//!
//! # `unsafe`
//!
//! This module and its files are the only place in ccci with `unsafe`
//! code. Each `unsafe` block (and `unsafe impl`) is as small as the calls
//! that need it and carries a `// SAFETY:` comment saying why it is sound:
//! which memory the call reads or writes (stack-local, borrowed for the
//! call, or owned and kept alive), and for code that runs in a signal
//! handler or between `fork`/`clone` and `exec`, that it calls only
//! async-signal-safe functions and allocates nothing. Every function
//! outside is safe to call with any argument.

mod arena;
mod command;
mod end;
mod fds;
mod give_back;
mod lock;
mod pattern;
mod pidfd;
mod process;
mod signals;
mod spawn;
mod thread_signal;
mod timer;

pub use arena::{Arena, ARENA};
pub use command::{detach_command, prepare_command};
pub use end::end_by_signal;
pub use fds::{adopt_inherited_fd, each_dir_entry, peer_cred, poll, stdio_to_dev_null};
pub use give_back::{GiveBackOnSignal, GIVE_BACK_SIGNALS};
pub use lock::{flock, flock_or_interrupted, FlockOp};
pub use pattern::fnmatch;
pub use pidfd::{pidfd_open, pidfd_signal};
pub use process::{
    set_child_subreaper, set_parent_death_signal, set_process_name, wait_any, wait_pid, Waited,
};
pub use signals::{
    block_signals, default_disposition, reset_signals, restore_mask, signal_name,
    spawn_without_signals, unblock_signals, wait_signal, Caught, RESET_SIGNALS,
};
pub use spawn::{spawn, SpawnPlan};
pub use thread_signal::{
    dir_change_signal, interrupt_on, loss_signal, notify_dir_changes, wake_signal, ThreadSignal,
    ThreadSignaller,
};
pub use timer::{alarm_timer, set_alarm_timer};

use timer::saturating_secs;
