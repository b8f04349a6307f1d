//! Waiting for a lock (`-w` / `-n`): without waiting, as long as it takes
//! (a blocking `flock`, no polling), or at most a given time, through the
//! `lock-wait` thread.
//!
//! # The `Wait::AtMost` waiting thread
//!
//! A blocking `flock` cannot be given a timeout, and the alarm timer belongs
//! to whoever exec'd us (ccci-guard's deadline), so `-w` first tries without
//! waiting, then runs the blocking acquire loop in a thread named
//! `lock-wait` while the calling thread waits on a condition variable with
//! a timeout. The thread lives no longer than the
//! [`Backend::acquire`](crate::Backend::acquire) call that started it, and
//! the descriptor it waits on (opened by the thread, close-on-exec like
//! every lockfile descriptor, so no child inherits it) no longer than the
//! thread, unless it becomes the returned claim:
//! - It gets the lock in time: it hands the claim (with its descriptor) to
//!   the caller and ends.
//! - Time runs out first: under the shared mutex, the caller marks the wait
//!   as given up, so the thread can no longer hand anything over; then it
//!   wakes the thread out of `flock` with a dedicated signal
//!   ([`sys::wake_signal`], sent to that thread only, whose handler does
//!   nothing, installed without `SA_RESTART`), re-sending it every 10 ms
//!   in case it arrived just before the thread entered `flock`, and joins
//!   the thread. A thread that got the lock after the caller gave up
//!   settles it first (removes the lockfile if this process created it,
//!   as "Nothing left behind by a run that gave up" in `lock_dir` says). So after a `Busy` answer no thread, no descriptor and no
//!   lock of this call remain.
//! - The non-blocking steps of each round (open, `LOCK_NB`, identity
//!   check) run under the mutex, so the caller's "given up" and the thread's
//!   "got it" are ordered: exactly one of them wins.

use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use ccci_common::sys::{self, flock, FlockOp};

use ccci_common::Domain;

use super::claim::FlockClaim;
use super::lock_dir::{Busy, FlockDir, Round};
use crate::protocol::{Acquired, Claim, Holder, Wait};

/// How often a given-up wait re-sends the wake-up signal until its thread ends.
const REWAKE: Duration = Duration::from_millis(10);

/// What the caller of a `Wait::AtMost` and its waiting thread share.
#[derive(Default)]
struct WaitState {
    /// The caller stopped waiting: the thread must hand nothing over.
    gave_up: bool,
    /// The thread ended; with what, unless the caller gave up.
    finished: bool,
    outcome: Option<anyhow::Result<FlockClaim>>,
    /// Wakes the thread out of a blocking `flock`.
    wake: Option<sys::ThreadSignaller>,
}

#[derive(Default)]
struct WaitShared {
    state: Mutex<WaitState>,
    changed: Condvar,
}

impl WaitShared {
    fn lock(&self) -> MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FlockDir {
    /// Acquires the lockfile `name` (of `domain`; `None` for the lock dir's
    /// own locks, see [`FlockClaim`]) waiting as `wait` says.
    pub(super) fn acquire_as(
        &self,
        domain: Option<&Domain>,
        name: &str,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        match wait {
            Wait::Forever => self
                .acquire_forever(domain, name, waiting)
                .map(Acquired::Held),
            Wait::Never => self.try_acquire(domain, name),
            Wait::AtMost(limit) => self.acquire_at_most(domain, name, limit, waiting),
        }
    }

    /// Waiting as long as it takes (a blocking `flock`, no polling).
    fn acquire_forever(
        &self,
        domain: Option<&Domain>,
        name: &str,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<FlockClaim> {
        let mut reported = false;
        loop {
            let Busy {
                file,
                id,
                created,
                holder,
            } = match self.round_at_path(domain, name)? {
                Ok(claim) => return Ok(claim),
                Err(busy) => busy,
            };
            if !std::mem::replace(&mut reported, true) {
                waiting(holder.as_ref());
            }
            flock(file.as_fd(), FlockOp::Exclusive)?;
            if let Some(claim) = self.claim_after_wait(domain, name, file, id, created)? {
                return Ok(claim);
            }
        }
    }

    /// The body of the `lock-wait` thread (see the module doc).
    fn wait_in_thread(&self, domain: Option<&Domain>, name: &str, shared: &WaitShared) {
        let wake = sys::ThreadSignal::new(sys::wake_signal());
        let outcome = sys::unblock_signals(&[sys::wake_signal()])
            .context("cannot unblock the wake-up signal")
            .and_then(|()| {
                shared.lock().wake = Some(wake.signaller());
                self.wait_rounds(domain, name, shared)
            });
        let mut state = shared.lock();
        match outcome {
            Ok(Some(claim)) if state.gave_up => {
                if let Err(e) = claim.give_up() {
                    ccci_common::say!("{e:#}");
                }
            }
            Ok(Some(claim)) => state.outcome = Some(Ok(claim)),
            Ok(None) => {}
            Err(e) => state.outcome = Some(Err(e)),
        }
        state.finished = true;
        shared.changed.notify_all();
    }

    /// `Ok(None)`: the caller gave up first.
    fn wait_rounds(
        &self,
        domain: Option<&Domain>,
        name: &str,
        shared: &WaitShared,
    ) -> anyhow::Result<Option<FlockClaim>> {
        loop {
            let (file, id, created) = {
                let state = shared.lock();
                if state.gave_up {
                    return Ok(None);
                }
                match self.round(domain, name)? {
                    Round::Held(claim) => return Ok(Some(claim)),
                    Round::Moved => continue,
                    Round::Busy(Busy {
                        file, id, created, ..
                    }) => (file, id, created),
                }
            };
            if !sys::flock_or_interrupted(file.as_fd())? {
                continue; // woken: the next round reads `gave_up`
            }
            if let Some(claim) = self.claim_after_wait(domain, name, file, id, created)? {
                return Ok(Some(claim));
            }
        }
    }

    fn acquire_at_most(
        &self,
        domain: Option<&Domain>,
        name: &str,
        limit: Duration,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        let holder = match self.try_acquire(domain, name)? {
            Acquired::Busy(holder) => holder,
            held => return Ok(held),
        };
        if limit.is_zero() {
            return Ok(Acquired::Busy(holder)); // `-w 0`: try once, like `-n`
        }
        waiting(holder.as_ref());
        sys::interrupt_on(sys::wake_signal()).context("cannot set up the wake-up signal")?;
        let shared = Arc::new(WaitShared::default());
        let thread = {
            let (this, shared) = (self.clone(), Arc::clone(&shared));
            let (domain, name) = (domain.cloned(), name.to_string());
            std::thread::Builder::new()
                .name("lock-wait".into())
                .spawn(move || this.wait_in_thread(domain.as_ref(), &name, &shared))
                .context("cannot start the waiting thread")?
        };
        let until = Instant::now().checked_add(limit);
        let mut state = shared.lock();
        while !state.finished {
            let left = match until {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                break;
            }
            state = shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let outcome = if state.finished {
            state.outcome.take()
        } else {
            state.gave_up = true;
            while !state.finished {
                if let Some(wake) = &state.wake {
                    wake.send();
                }
                state = shared
                    .changed
                    .wait_timeout(state, REWAKE)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            None
        };
        drop(state);
        let _ = thread.join();
        match outcome {
            Some(got) => got.map(Acquired::Held),
            None => Ok(Acquired::Busy(holder)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flock::testing::{d, held, lock_dir};
    use crate::protocol::Backend;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::mpsc;

    #[test]
    fn second_acquirer_is_busy_and_sees_the_record() {
        let (_t, dir) = lock_dir();
        let mut first = held(
            dir.acquire(&d("d.example"), Wait::Never, &mut |_| {})
                .unwrap(),
        );
        first
            .stamp(&Holder::this_process(Some("r1".into())))
            .unwrap();
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        match dir
            .acquire(&d("d.example"), Wait::Never, &mut |_| {})
            .unwrap()
        {
            Acquired::Busy(Some(h)) => {
                assert_eq!(h.pid, Some(std::process::id()));
                assert_eq!(h.run_id.as_deref(), Some("r1"));
            }
            other => panic!("{other:?}"),
        }
        let started = std::time::Instant::now();
        let mut told = None;
        let again = dir
            .acquire(
                &d("d.example"),
                Wait::AtMost(Duration::from_millis(100)),
                &mut |h| told = h.cloned(),
            )
            .unwrap();
        assert!(matches!(again, Acquired::Busy(_)));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(told.and_then(|h| h.run_id).as_deref(), Some("r1"));
    }

    #[test]
    fn a_waiter_on_an_unlinked_file_starts_over() {
        // The waiter's file is unlinked while it waits; when it wakes it must
        // notice, and lock the file now at the path instead.
        let (_t, dir) = lock_dir();
        let first = held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let claim = held(
                    dir.acquire(&d("d"), Wait::Forever, &mut |_| tx.send(()).unwrap())
                        .unwrap(),
                );
                let path = claim.path();
                let ino = std::fs::metadata(&path).unwrap();
                (claim, ino)
            })
        };
        rx.recv().unwrap();
        first.remove().unwrap();
        let (claim, meta) = waiter.join().unwrap();
        use std::os::unix::fs::MetadataExt;
        let file_ino = claim.file.metadata().unwrap().ino();
        assert_eq!(
            meta.ino(),
            file_ino,
            "the waiter holds a file that is not at the path"
        );
    }

    /// Whether `/proc/locks` shows a waiter on the file `meta` names.
    fn has_waiter(meta: &std::fs::Metadata) -> bool {
        let (major, minor) = (
            nix::sys::stat::major(meta.dev()),
            nix::sys::stat::minor(meta.dev()),
        );
        let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(" -> ") && l.contains(&id))
    }

    #[test]
    fn a_wait_that_runs_out_leaves_no_thread_waiting_and_nothing_behind() {
        // The holder removes its lockfile and releases after the waiter gave
        // up: a waiting thread left behind would then create and take a new
        // lockfile that nobody holds for long, and nobody removes.
        let (_t, dir) = lock_dir();
        let first = held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        let meta = first.file.metadata().unwrap();
        let again = dir
            .acquire(
                &d("d"),
                Wait::AtMost(Duration::from_millis(50)),
                &mut |_| {},
            )
            .unwrap();
        assert!(matches!(again, Acquired::Busy(_)));
        assert!(!has_waiter(&meta), "a waiting thread outlived the call");
        let path = first.path();
        first.remove().unwrap();
        assert!(!path.exists());
        held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap())
            .remove()
            .unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_claim_got_by_waiting_is_not_ours_to_give_up() {
        let (_t, dir) = lock_dir();
        let mut first = held(dir.acquire(&d("d"), Wait::Never, &mut |_| {}).unwrap());
        assert!(first.created);
        first.stamp(&Holder::this_process(None)).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                held(
                    dir.acquire(&d("d"), Wait::AtMost(Duration::from_secs(600)), &mut |_| {
                        tx.send(()).unwrap()
                    })
                    .unwrap(),
                )
            })
        };
        rx.recv().unwrap();
        drop(first); // released, lockfile kept (as after a killed COMMAND)
        let second = waiter.join().unwrap();
        assert!(!second.created);
        let path = second.path();
        second.give_up().unwrap();
        assert!(path.exists(), "gave up someone else's claim by removing it");
    }
}
