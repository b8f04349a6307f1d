//! The wrap (SPEC §2): take the DOMAINs, run COMMAND as a child while
//! holding them, forward signals, and settle the claims when it ends.
//!
//! The guarantees it keeps:
//!
//! - **All or none, in one order.** The DOMAINs are all taken before
//!   COMMAND starts, in sorted order ([`crate::acquire_all`]); on status 75
//!   none is held, and a lockfile this run created but did not end up
//!   holding is removed before it exits.
//! - **Not inherited.** COMMAND runs as a child with `CCCI_LOCK_DOMAIN` and
//!   `CCCI_LOCK_FILE` set ([`merged_env`]) and a parent-death signal of
//!   SIGTERM; the lock is never inherited by COMMAND.
//! - **The whole tree.** Signals are forwarded to COMMAND and to every
//!   process it started, and the lock is kept, and the lockfile removed or
//!   kept, only once all of them have exited.
//! - **The lockfile is removed only while held.** When COMMAND exits, its
//!   lockfiles are unlinked while the locks are still held (unless
//!   `--keep`), then released.
//! - **A signal death leaves the lockfile for the janitor.** When signal N
//!   killed COMMAND, the lockfiles stay for `ccci-janitor`, and once the
//!   locks are released the caller ends by signal N itself (SPEC §1 "Signal
//!   deaths propagate"), so a wrap around this one keeps its lockfile too.
//! - **A lost lock stops COMMAND.** When a claim loses its lock (an etcd
//!   lease), COMMAND is not started, or gets SIGTERM and SIGKILL after the
//!   grace; the status is 125 and the lost claims stay in place.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::Context;

use ccci_common::exit::{self, Ended};
use ccci_common::supervise::{self, Watch, FORWARDED};
use ccci_common::{say, sys, Domain};

use crate::backend::Job;
use crate::report::{describe, locker_of, say_busy};
use crate::{acquire_all, Acquired, Backend, Claim, Holder, Wait};

/// Takes the locks, then runs COMMAND under them.
pub(crate) struct LockAndRun<'a> {
    /// The command to run (`-- COMMAND [ARG...]`).
    pub command: &'a [OsString],
    /// `--keep`: see [`RunHow::keep`].
    pub keep: bool,
    /// `-v`: report waiting on stderr.
    pub verbose: bool,
    /// How long to wait for the domains (`-n`, `-w`, or for ever).
    pub wait: Wait,
    /// Recorded in the lockfiles.
    pub run_id: Option<String>,
    /// The DOMAINs, in any order.
    pub domains: &'a [Domain],
    /// See [`RunHow::lost_grace`].
    pub lost_grace: Duration,
    /// See [`RunHow::whole_tree`].
    pub whole_tree: bool,
}

impl Job for LockAndRun<'_> {
    type Output = Ended;

    fn run<B>(self, backend: &B) -> anyhow::Result<Ended>
    where
        B: Backend + Clone + Send + 'static,
        B::Claim: Send + 'static,
    {
        let wait = self.wait;
        // Before anything that can be lost is taken: see supervise::Loss.
        let loss = supervise::Loss::new().context("cannot block the lost-lock signal")?;
        let started = Instant::now();
        let verbose = self.verbose;
        let mut waited = false;
        // Known before the locks are taken, so that a releasing holder can
        // write it into the claim as it hands a lock over (etcd).
        let record = Holder::this_process(self.run_id.clone());
        let acquired = acquire_all(
            backend,
            self.domains,
            wait,
            Some(&record),
            &mut |domain, holder| {
                waited = true;
                if verbose {
                    ccci_common::say_debug!(
                        "waiting for {domain}: held by {}",
                        describe(holder, locker_of(backend, domain))
                    );
                }
            },
        )?;
        let mut claims = match acquired {
            Acquired::Held(claims) => claims,
            Acquired::Busy(busy) => {
                let locker = locker_of(backend, &busy.domain);
                say_busy(&busy, self.domains.len() > 1, locker);
                return Ok(Ended::Code(exit::BUSY));
            }
        };
        if verbose && waited {
            say!(
                "acquired {} after {:.1}s",
                domains_of(&claims),
                started.elapsed().as_secs_f64()
            );
        }
        // Stamped as acquired: `since` is now, as it always was.
        let holder = record.stamped_now();
        if let Err(e) = claims.iter_mut().try_for_each(|c| c.stamp(&holder)) {
            for claim in claims {
                let _ = claim.give_up(); // nothing ran: leave nothing we made
            }
            return Err(e);
        }
        for claim in &mut claims {
            claim.watch_loss(loss.notifier());
        }
        let how = RunHow {
            keep: self.keep,
            lost_grace: self.lost_grace,
            loss: Some(&loss),
            whole_tree: self.whole_tree,
        };
        run_holding(claims, self.command, &how)
    }
}

/// How [`run_holding`] runs COMMAND and settles its claims.
#[derive(Debug, Clone, Copy)]
pub struct RunHow<'a> {
    /// Keep the claims when COMMAND exits normally.
    pub keep: bool,
    /// After a loss: the time between SIGTERM and SIGKILL.
    pub lost_grace: Duration,
    /// Reported when a claim loses its lock ([`Claim::watch_loss`]).
    pub loss: Option<&'a supervise::Loss>,
    /// Hold the claims until COMMAND's whole tree has exited, and signal
    /// all of it (SPEC §2; see [`Watch::whole_tree`]). Off only where this
    /// process has other children (unit tests).
    pub whole_tree: bool,
}

/// The environment for COMMAND: each claim's variables; a variable that
/// several claims set gets their values in the claims' (sorted) order,
/// separated by single spaces. So with one DOMAIN, `CCCI_LOCK_DOMAIN` is it
/// and `CCCI_LOCK_FILE` its lockfile; with several, `CCCI_LOCK_DOMAIN` is
/// the sorted list and `CCCI_LOCK_FILE` the lockfiles in the same order.
pub fn merged_env<C: Claim>(claims: &[C]) -> Vec<(&'static str, OsString)> {
    let mut merged: Vec<(&'static str, OsString)> = Vec::new();
    for (key, value) in claims.iter().flat_map(Claim::env) {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some((_, joined)) => {
                joined.push(" ");
                joined.push(value);
            }
            None => merged.push((key, value)),
        }
    }
    merged
}

fn domains_of<C: Claim>(claims: &[C]) -> String {
    let names: Vec<&str> = claims.iter().map(|c| c.domain().as_str()).collect();
    names.join(" ")
}

/// Runs `argv` as a child while holding `claims`, forwarding signals, and
/// settles the claims when it ends: removed (unlinked while held) after a
/// normal exit unless `keep`, left in place when a signal killed the child.
/// Returns how to end: the child's exit status, or `Ended::Signal(N)` when
/// signal N killed it, which the caller turns into its own death by N once
/// the claims are released (they are, when this returns); 126/127 when it
/// could not be started; 125 when a lock was lost (before COMMAND started,
/// which is then not started, or while it ran, which stops it: SIGTERM,
/// then SIGKILL after the grace), with the lost claims left in place.
pub fn run_holding<C: Claim>(
    claims: Vec<C>,
    argv: &[OsString],
    how: &RunHow<'_>,
) -> anyhow::Result<Ended> {
    let mut cmd = supervise::command(argv)?;
    let lost = || how.loss.is_some_and(supervise::Loss::is_lost);
    if lost() {
        say!(
            "lost the lock of {} before COMMAND started; not running it",
            domains_of(&claims)
        );
        return Ok(Ended::Code(exit::TOOL_FAILED));
    }
    cmd.envs(merged_env(&claims));
    let watch = Watch {
        forward: FORWARDED.to_vec(),
        own_group: false,
        deadline: None,
        deadline_signal: libc::SIGALRM,
        kill_after: None,
        death_signal: Some(libc::SIGTERM),
        whole_tree: how.whole_tree,
    };
    let ended = match supervise::spawn(&mut cmd, watch) {
        Ok(child) => {
            let outcome = child.wait_or_lose(how.loss.map(|l| (l, how.lost_grace)))?;
            if outcome.lost {
                say!(
                    "lost the lock of {} while COMMAND ran: stopped it ({})",
                    domains_of(&claims),
                    match outcome.status.signal() {
                        Some(sig) => format!("it ended by SIG{}", sys::signal_name(sig)),
                        None =>
                            format!("it exited with {}", exit::from_wait_status(outcome.status)),
                    }
                );
                return Ok(Ended::Code(exit::TOOL_FAILED));
            }
            Ended::from_wait_status(outcome.status)
        }
        Err(e) => Ended::Code(supervise::cannot_start(&cmd, &e)),
    };
    let signaled = matches!(ended, Ended::Signal(_));
    if !(signaled || how.keep || lost()) {
        for claim in claims {
            if let Err(e) = claim.remove() {
                say!("{e:#}");
            }
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlockDir, DEFAULT_LOST_GRACE};
    use std::path::PathBuf;

    /// The flock backend, except that each claim loses its lock on cue:
    /// when the file `cue` appears (COMMAND makes it), or at once (`None`),
    /// as an etcd claim does when its lease expires.
    #[derive(Clone)]
    struct Losing {
        inner: FlockDir,
        cue: Option<PathBuf>,
    }

    struct LosingClaim {
        inner: crate::FlockClaim,
        cue: Option<PathBuf>,
    }

    impl Backend for Losing {
        type Claim = LosingClaim;

        fn acquire(
            &self,
            domain: &Domain,
            wait: Wait,
            waiting: &mut dyn FnMut(Option<&Holder>),
        ) -> anyhow::Result<Acquired<LosingClaim>> {
            Ok(match self.inner.acquire(domain, wait, waiting)? {
                Acquired::Held(inner) => Acquired::Held(LosingClaim {
                    inner,
                    cue: self.cue.clone(),
                }),
                Acquired::Busy(h) => Acquired::Busy(h),
            })
        }

        fn probe(&self, _: &Domain) -> anyhow::Result<crate::Probe<LosingClaim>> {
            unimplemented!()
        }

        fn create(&self, _: &Domain) -> anyhow::Result<Option<LosingClaim>> {
            unimplemented!()
        }

        fn domains(&self) -> anyhow::Result<Vec<Domain>> {
            self.inner.domains()
        }

        fn list(&self) -> anyhow::Result<Vec<crate::Status>> {
            self.inner.list()
        }
    }

    impl Claim for LosingClaim {
        fn domain(&self) -> &Domain {
            self.inner.domain()
        }

        fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
            self.inner.stamp(holder)
        }

        fn age(&self) -> anyhow::Result<Duration> {
            self.inner.age()
        }

        fn env(&self) -> Vec<(&'static str, OsString)> {
            self.inner.env()
        }

        fn remove(self) -> anyhow::Result<()> {
            self.inner.remove()
        }

        fn watch_loss(&mut self, notifier: supervise::LossNotifier) {
            let Some(cue) = self.cue.clone() else {
                return notifier.notify();
            };
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !cue.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                notifier.notify();
            });
        }
    }

    /// Runs `ccci-lock d -- sh -c SCRIPT` on a [`Losing`] backend.
    fn run_losing(tmp: &std::path::Path, cue: bool, script: &str, grace: Duration) -> (u8, bool) {
        let locks = tmp.join("locks");
        let command: Vec<OsString> = ["sh", "-c", script, "sh"]
            .into_iter()
            .map(OsString::from)
            .chain([tmp.as_os_str().to_owned()])
            .collect();
        let backend = Losing {
            inner: FlockDir::open(&locks, true).unwrap().unwrap(),
            cue: cue.then(|| tmp.join("started")),
        };
        let job = LockAndRun {
            command: &command,
            keep: false,
            verbose: false,
            wait: Wait::Forever,
            run_id: None,
            domains: &[Domain::parse("d").unwrap()],
            lost_grace: grace,
            // The test harness has other children: never wait for them.
            whole_tree: false,
        };
        let status = job.run(&backend).unwrap();
        (status.shell_status(), locks.join("d.lock").exists())
    }

    #[test]
    fn a_lost_lock_stops_command_with_term_and_ccci_lock_fails_with_125() {
        let tmp = tempfile::tempdir().unwrap();
        let script = r#"trap 'echo TERM > "$1/got"; exit 3' TERM
            touch "$1/started"; while :; do sleep 0.05; done"#;
        let (status, kept) = run_losing(tmp.path(), true, script, Duration::from_secs(600));
        assert_eq!(status, exit::TOOL_FAILED);
        let got = std::fs::read_to_string(tmp.path().join("got")).unwrap();
        assert_eq!(got.trim(), "TERM");
        assert!(kept, "a lost claim is left for the janitor");
    }

    #[test]
    fn a_lock_lost_before_command_starts_means_command_never_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let (status, kept) = run_losing(
            tmp.path(),
            false,
            r#"touch "$1/started""#,
            DEFAULT_LOST_GRACE,
        );
        assert_eq!(status, exit::TOOL_FAILED);
        assert!(!tmp.path().join("started").exists());
        assert!(kept);
    }

    #[test]
    fn a_command_that_ignores_term_after_a_loss_is_killed_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let script = r#"trap '' TERM; touch "$1/started"; while :; do sleep 0.05; done"#;
        let started = Instant::now();
        let (status, _) = run_losing(tmp.path(), true, script, Duration::from_millis(200));
        assert_eq!(status, exit::TOOL_FAILED);
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
