//! The decisions of a pass, on a real lock dir with real flocks; the reap is
//! a closure that records what it was given.
//!
//! This file holds what every test module shares: the lock dir of a test
//! ([`World`]), the passes it runs, and the backends that wrap the lock dir
//! to inject what cannot be timed from outside (built with `forward_to!`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use ccci_lock::{Acquired, Backend, Claim, FlockClaim, FlockDir, Holder, PassLock, Probe, Wait};

use super::*;
use ccci_common::exit::Ended;
use ccci_common::Domain;

/// The methods of [`Backend`] that a test backend passes on unchanged to
/// its lock dir, the field `$inner`: taking a lock, creating a claim and
/// listing the domains.
macro_rules! forward_to {
    ($inner:tt) => {
        type Claim = FlockClaim;

        fn acquire(
            &self,
            domain: &Domain,
            wait: Wait,
            waiting: &mut dyn FnMut(Option<&Holder>),
        ) -> anyhow::Result<Acquired<FlockClaim>> {
            self.$inner.acquire(domain, wait, waiting)
        }

        fn create(&self, domain: &Domain) -> anyhow::Result<Option<FlockClaim>> {
            self.$inner.create(domain)
        }

        fn domains(&self) -> anyhow::Result<Vec<Domain>> {
            self.$inner.domains()
        }
    };
}

mod hosts;
mod inputs;
mod lockdir;
mod outcome;
mod pass;
mod races;

struct World {
    _tmp: tempfile::TempDir,
    dir: FlockDir,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = FlockDir::open(&tmp.path().join("locks"), true)
            .unwrap()
            .unwrap();
        World { _tmp: tmp, dir }
    }

    fn lockfile(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{name}.lock"))
    }

    /// Takes the lock of the domain `name` (creating its lockfile) and stamps it.
    fn hold(&self, name: &str) -> FlockClaim {
        match self
            .dir
            .acquire(&d(name), Wait::Never, &mut |_| {})
            .unwrap()
        {
            Acquired::Held(mut claim) => {
                claim
                    .stamp(&Holder::this_process(Some("run-1".into())))
                    .unwrap();
                claim
            }
            Acquired::Busy(h) => panic!("busy: {h:?}"),
        }
    }

    /// A lockfile left by a run that died, last stamped `age` ago.
    fn orphan(&self, name: &str, age: Duration) {
        drop(self.hold(name));
        self.set_age(name, age);
    }

    fn set_age(&self, name: &str, age: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(self.lockfile(name))
            .unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    /// Runs a pass; returns what was examined, the domains reaped (in order,
    /// with their CCCI_DOMAIN) and the summary.
    fn pass(&self, settings: &Settings, ok: bool) -> (Vec<Examined>, Vec<Domain>, Summary) {
        self.pass_with(
            settings,
            &mut |domain: &Domain, env: &[(&'static str, OsString)]| {
                let var = env.iter().find(|(k, _)| *k == "CCCI_DOMAIN").unwrap();
                assert_eq!(var.1, domain.as_str());
                ReapEnd {
                    ok,
                    detail: format!("reap of {domain}"),
                    stop: None,
                }
            },
        )
    }

    fn pass_with(
        &self,
        settings: &Settings,
        reaper: &mut dyn Reaper,
    ) -> (Vec<Examined>, Vec<Domain>, Summary) {
        let domains = candidates(&self.dir, settings.deployed.as_ref()).unwrap();
        let mut seen = Vec::new();
        let mut reaped = Vec::new();
        let mut recording = |domain: &Domain, env: &[(&'static str, OsString)]| {
            reaped.push(domain.clone());
            reaper.reap(domain, env)
        };
        let summary = pass(&self.dir, settings, &domains, &mut recording, &mut |e| {
            seen.push(e.clone());
            Ok(())
        })
        .unwrap();
        (seen, reaped, summary)
    }
}

fn exact() -> Settings {
    Settings {
        leak_after: Duration::from_secs(7200),
        exact: true,
        ..Settings::default()
    }
}

fn outcomes(seen: &[Examined]) -> Vec<(&str, Outcome)> {
    seen.iter()
        .map(|e| (e.domain.as_str(), e.outcome))
        .collect()
}

/// Runs a pass over `backend` whose reap must never run; returns what was
/// examined.
fn pass_reaping_nothing<B: Backend>(backend: &B, settings: &Settings) -> Vec<Examined> {
    let domains = candidates(backend, settings.deployed.as_ref()).unwrap();
    let mut seen = Vec::new();
    let mut reaper = |domain: &Domain, _: &[(&'static str, OsString)]| -> ReapEnd {
        panic!("{domain} was reaped")
    };
    pass(backend, settings, &domains, &mut reaper, &mut |e| {
        seen.push(e.clone());
        Ok(())
    })
    .unwrap();
    seen
}

fn deployed(names: &[&str]) -> Option<HashSet<Domain>> {
    Some(names.iter().map(|n| d(n)).collect())
}

/// The domain `name`, which must be valid.
fn d(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

fn globs(patterns: &[&str]) -> Patterns {
    Patterns::new(patterns.iter().map(|p| Glob::parse(p).unwrap()).collect()).unwrap()
}

/// The lock dir, but `probe` (which takes a lock) panics: for the claims
/// that a pass must only look at.
struct NoProbes(FlockDir);

impl Backend for NoProbes {
    forward_to!(0);

    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<FlockClaim>> {
        panic!("{domain} was locked to be looked at")
    }

    fn list(&self) -> anyhow::Result<Vec<ccci_lock::Status>> {
        self.0.list()
    }

    fn status(&self, domain: &Domain) -> anyhow::Result<Option<ccci_lock::Status>> {
        self.0.status(domain)
    }

    fn peek_age(&self, domain: &Domain) -> anyhow::Result<Option<Duration>> {
        self.0.peek_age(domain)
    }
}
