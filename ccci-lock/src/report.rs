//! Who holds a lock, in words: the messages of a busy domain, of `-v`
//! while waiting, and of the janitor (SPEC §2 "Messages").
//!
//! A holder record is diagnostics only; the kernel (or etcd) says who holds
//! the lock. [`describe`] puts the two together, and never names a dead
//! process as the holder: a record whose process is gone is said to be so,
//! and a lock held by a process the record does not name is told by that
//! process's kind (a run that has just taken it, a janitor, a foreign
//! flock(1) user).

use ccci_common::{names, proc, say};

use crate::{Backend, BusyDomain, Holder};
use ccci_common::Domain;

/// Says that `busy.domain` is held, by whom, and that we give up; `of_set`:
/// it was one of several DOMAINs (and none of them is held now).
pub fn say_busy(busy: &BusyDomain, of_set: bool, locker: Option<u32>) {
    let others = if of_set {
        " (holding none of the domains)"
    } else {
        ""
    };
    say!(
        "{} is locked by {}; giving up{others}",
        busy.domain,
        describe(busy.holder.as_ref(), locker)
    );
}

/// The pid the backend names as holding `domain` (a lookup that takes no
/// lock), for messages.
pub fn locker_of<B: Backend>(backend: &B, domain: &Domain) -> Option<u32> {
    backend.status(domain).ok().flatten().and_then(|s| s.locker)
}

/// Who holds a lock, for messages: the holder record when it names the
/// process that holds the lock (a `--hold` keeper says for which pid);
/// otherwise what is known, saying that the recorded holder is not running
/// instead of naming a dead process. `locker` is the pid the backend names
/// as holding it ([`locker_of`]).
pub fn describe(holder: Option<&Holder>, locker: Option<u32>) -> String {
    let this_host = proc::hostname();
    let Some(h) = holder.filter(|h| h.pid.is_some()) else {
        return match locker {
            Some(pid) => format!("pid {pid} (no holder record)"),
            None => "an unknown process".into(),
        };
    };
    let elsewhere = h.host.as_deref().is_some_and(|host| host != this_host);
    let current = locker.is_none_or(|l| h.pid == Some(l));
    if elsewhere || (current && h.pid.is_some_and(proc::alive)) {
        return match (h.reaper, h.parent) {
            (Some(true), _) => format!("a janitor reaping it ({})", h.describe()),
            (_, Some(parent)) => format!("a keeper for pid {parent} ({})", h.describe()),
            _ => h.describe(),
        };
    }
    let running = h.pid.is_some_and(proc::alive);
    let recorded = if running {
        h.describe()
    } else {
        format!("{}, not running", h.describe())
    };
    let Some(pid) = locker.filter(|_| !current) else {
        // Nobody holds it now, and the recorded holder is gone: it held the
        // lock a moment ago and has just finished (its exit raced our look).
        return if running {
            h.describe()
        } else {
            format!(
                "{} (it has just finished; the lock is free now)",
                h.describe()
            )
        };
    };
    // Another process holds the lock: say which kind, by its name.
    match command_name(pid).as_deref() {
        Some("ccci-lock") => format!(
            "pid {pid}, a run that has just taken it and not yet written its record \
             (last recorded holder: {recorded})"
        ),
        Some("ccci-janitor") => format!(
            "a janitor (pid {pid}) reaping a dead run's claim (last recorded holder: {recorded})"
        ),
        Some(name) => format!(
            "pid {pid} ({}), which is not its recorded holder ({recorded}): a foreign \
             flock(1) user",
            names::shell_quote(name)
        ),
        None => format!(
            "pid {pid}, which is not its recorded holder ({recorded}) and has just exited too"
        ),
    }
}

/// The command name of `pid` (`/proc/PID/comm`), if it is still running.
fn command_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_never_names_a_dead_process_as_the_holder() {
        let me = std::process::id();
        let live = Holder {
            pid: Some(me),
            run_id: Some("r1".into()),
            ..Holder::default()
        };
        assert!(describe(Some(&live), Some(me)).starts_with("pid "));
        assert!(describe(Some(&live), None).starts_with("pid "));
        let reaper = Holder {
            reaper: Some(true),
            ..live.clone()
        };
        assert!(describe(Some(&reaper), Some(me)).starts_with("a janitor reaping it"));
        // The record names us, but the kernel names another process.
        let stale = describe(Some(&live), Some(1));
        assert!(
            stale.starts_with("pid 1 (") && stale.contains("not its recorded holder"),
            "{stale}"
        );
        // A recorded pid that no longer exists (pid_max is at most 2^22).
        let dead = Holder {
            pid: Some(1 << 23),
            ..Holder::default()
        };
        // Nobody holds it now: the recorded holder has just finished (its
        // exit raced the look), which is no janitor and no foreign user.
        let said = describe(Some(&dead), None);
        assert!(said.contains("it has just finished"), "{said}");
        assert!(
            !said.contains("janitor") && !said.contains("foreign"),
            "{said}"
        );
        // Another process holds it: named by its command name.
        let said = describe(Some(&dead), Some(1));
        assert!(
            said.starts_with("pid 1 ") && said.contains("not running"),
            "{said}"
        );
        assert_eq!(describe(None, Some(7)), "pid 7 (no holder record)");
        let keeper = Holder {
            parent: Some(42),
            ..live.clone()
        };
        assert!(describe(Some(&keeper), Some(me)).starts_with("a keeper for pid 42 (pid "));
    }
}
