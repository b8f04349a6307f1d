//! The decisions of a pass, on a real lock dir with real flocks; the reap is
//! a closure that records what it was given.

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use ccci_lock::{Acquired, Backend, Claim, FlockClaim, FlockDir, Holder, PassLock, Probe, Wait};

use super::*;
use ccci_common::exit::Ended;

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

    fn lockfile(&self, domain: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{domain}.lock"))
    }

    /// Takes the lock of `domain` (creating its lockfile) and stamps it.
    fn hold(&self, domain: &str) -> FlockClaim {
        match self.dir.acquire(domain, Wait::Never, &mut |_| {}).unwrap() {
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
    fn orphan(&self, domain: &str, age: Duration) {
        drop(self.hold(domain));
        self.set_age(domain, age);
    }

    fn set_age(&self, domain: &str, age: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(self.lockfile(domain))
            .unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    /// Runs a pass; returns what was examined, the domains reaped (in order,
    /// with their CCCI_DOMAIN) and the summary.
    fn pass(&self, settings: &Settings, ok: bool) -> (Vec<Examined>, Vec<String>, Summary) {
        self.pass_with(
            settings,
            &mut |domain: &str, env: &[(&'static str, OsString)]| {
                let var = env.iter().find(|(k, _)| *k == "CCCI_DOMAIN").unwrap();
                assert_eq!(var.1, domain);
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
    ) -> (Vec<Examined>, Vec<String>, Summary) {
        let domains = candidates(&self.dir, settings.deployed.as_ref()).unwrap();
        let mut seen = Vec::new();
        let mut reaped = Vec::new();
        let mut recording = |domain: &str, env: &[(&'static str, OsString)]| {
            reaped.push(domain.to_string());
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
    let mut reaper =
        |domain: &str, _: &[(&'static str, OsString)]| -> ReapEnd { panic!("{domain} was reaped") };
    pass(backend, settings, &domains, &mut reaper, &mut |e| {
        seen.push(e.clone());
        Ok(())
    })
    .unwrap();
    seen
}

fn deployed(names: &[&str]) -> Option<HashSet<String>> {
    Some(names.iter().map(|n| n.to_string()).collect())
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn an_orphan_is_reaped_once_under_its_lock_and_unlinked() {
    let w = World::new();
    w.orphan("a.example", HOUR);
    let lockfile = w.lockfile("a.example");
    let (seen, reaped, summary) = w.pass_with(&exact(), &mut |_: &str, _: &[_]| {
        // While the reap runs, the domain is locked and the lockfile is there,
        // with the janitor's own record.
        let Probe::Held { holder, .. } = w.dir.probe("a.example").unwrap() else {
            panic!("not held during the reap")
        };
        let holder = holder.unwrap();
        assert_eq!(holder.reaper, Some(true));
        assert_eq!(holder.pid, Some(std::process::id()));
        ReapEnd {
            ok: true,
            detail: String::new(),
            stop: None,
        }
    });
    assert_eq!(reaped, ["a.example"]);
    assert_eq!(outcomes(&seen), [("a.example", Outcome::Reaped)]);
    assert_eq!(seen[0].level, Level::Action);
    assert_eq!(
        seen[0].holder.as_ref().unwrap().run_id.as_deref(),
        Some("run-1")
    );
    assert!(seen[0].age.unwrap() >= HOUR);
    assert!(!lockfile.exists());
    assert_eq!(summary, Summary::default());
    let (seen, reaped, _) = w.pass(&exact(), true);
    assert!(seen.is_empty() && reaped.is_empty(), "{seen:?}");
}

#[test]
fn a_held_lock_is_live_or_leaked_and_never_reaped() {
    let w = World::new();
    let _a = w.hold("a.example");
    let _b = w.hold("b.example");
    w.set_age("b.example", 3 * HOUR);
    let (seen, reaped, summary) = w.pass(&exact(), true);
    assert!(reaped.is_empty());
    assert_eq!(
        outcomes(&seen),
        [("a.example", Outcome::Live), ("b.example", Outcome::Leaked)]
    );
    assert_eq!(seen[0].level, Level::Info);
    assert_eq!(seen[1].level, Level::Warning);
    assert!(
        seen[1].detail.contains("possible leaked run"),
        "{}",
        seen[1].detail
    );
    assert!(seen[1].detail.contains("'run-1'"), "{}", seen[1].detail);
    assert_eq!(
        seen[1].holder.as_ref().unwrap().pid,
        Some(std::process::id())
    );
    assert_eq!(summary.ended(), Ended::Code(0));
    assert!(w.lockfile("a.example").exists() && w.lockfile("b.example").exists());
}

#[test]
fn young_orphans_are_left_alone() {
    let w = World::new();
    w.orphan("a.example", Duration::from_secs(60));
    let settings = Settings {
        min_age: HOUR,
        ..exact()
    };
    let (seen, reaped, _) = w.pass(&settings, true);
    assert!(reaped.is_empty());
    assert_eq!(outcomes(&seen), [("a.example", Outcome::Young)]);
    assert!(w.lockfile("a.example").exists());
    // The lock was released: a run can take it.
    drop(w.hold("a.example"));
}

#[test]
fn without_exact_a_young_claim_is_not_even_opened() {
    let w = World::new();
    let _held = w.hold("held.example");
    w.orphan("old.example", 2 * HOUR);
    let settings = Settings {
        min_age: HOUR,
        exact: false,
        ..exact()
    };
    let (seen, reaped, _) = w.pass(&settings, true);
    assert_eq!(reaped, ["old.example"]);
    // Held, but young: reported as young, since the lock was never probed.
    assert_eq!(
        outcomes(&seen),
        [
            ("held.example", Outcome::Young),
            ("old.example", Outcome::Reaped)
        ]
    );
    // A leak still needs the probe, whatever --min-age says.
    w.set_age("held.example", 3 * HOUR);
    let settings = Settings {
        min_age: 4 * HOUR,
        ..settings
    };
    let (seen, _, _) = w.pass(&settings, true);
    assert_eq!(outcomes(&seen), [("held.example", Outcome::Leaked)]);
}

#[test]
fn with_a_deployed_list_a_stale_lockfile_is_unlinked_without_a_reap() {
    let w = World::new();
    w.orphan("gone.example", HOUR);
    w.orphan("up.example", HOUR);
    let settings = Settings {
        deployed: deployed(&["up.example"]),
        ..exact()
    };
    let (seen, reaped, _) = w.pass(&settings, true);
    assert_eq!(reaped, ["up.example"]);
    assert_eq!(
        outcomes(&seen),
        [
            ("gone.example", Outcome::StaleUnlinked),
            ("up.example", Outcome::Reaped)
        ]
    );
    assert!(seen[0].detail.contains("unlinked stale lockfile"));
    assert!(!w.lockfile("gone.example").exists());
}

#[test]
fn a_deployed_domain_without_a_lockfile_is_reaped_at_once() {
    let w = World::new();
    let settings = Settings {
        deployed: deployed(&["rebooted.example"]),
        min_age: 100 * HOUR,
        ..exact()
    };
    let (seen, reaped, _) = w.pass_with(&settings, &mut |d: &str, _: &[_]| {
        assert!(w.lockfile(d).exists(), "reaped without a lockfile to hold");
        assert!(matches!(w.dir.probe(d).unwrap(), Probe::Held { .. }));
        ReapEnd {
            ok: true,
            detail: String::new(),
            stop: None,
        }
    });
    assert_eq!(reaped, ["rebooted.example"]);
    assert_eq!(outcomes(&seen), [("rebooted.example", Outcome::Reaped)]);
    assert!(!w.lockfile("rebooted.example").exists());
}

#[test]
fn a_failed_reap_keeps_the_lockfile_and_fails_the_pass() {
    let w = World::new();
    w.orphan("a.example", HOUR);
    w.orphan("b.example", HOUR);
    let (seen, reaped, summary) = w.pass(&exact(), false);
    assert_eq!(
        reaped,
        ["a.example", "b.example"],
        "one failure does not stop the pass"
    );
    assert_eq!(seen[0].outcome, Outcome::Failed);
    assert_eq!(seen[0].level, Level::Error);
    assert!(
        seen[0].detail.contains("reap of a.example"),
        "{}",
        seen[0].detail
    );
    assert!(w.lockfile("a.example").exists());
    assert_eq!(summary.ended(), Ended::Code(1));
    // The dead run's record is back, for the next pass's report.
    let Probe::Acquired(claim) = w.dir.probe("a.example").unwrap() else {
        panic!("the failed reap kept the lock")
    };
    let record = claim.holder().unwrap();
    assert_eq!(record.run_id.as_deref(), Some("run-1"));
    assert_eq!(record.reaper, None);
}

#[test]
fn warm_domains_are_never_probed_or_created() {
    let w = World::new();
    let _live = w.hold("warm-live.example");
    w.orphan("warm-old.example", HOUR);
    std::fs::create_dir(w.lockfile("warm-dir.example")).unwrap();
    let settings = Settings {
        deployed: deployed(&["warm-new.example"]),
        warm: Patterns::new(vec![Glob::parse("warm-*").unwrap()]).unwrap(),
        ..exact()
    };
    let (seen, reaped, _) = w.pass(&settings, true);
    assert!(reaped.is_empty());
    assert!(seen
        .iter()
        .all(|e| e.outcome == Outcome::Skipped && e.level == Level::Info));
    assert_eq!(seen.len(), 4);
    assert!(!w.lockfile("warm-new.example").exists());
    assert!(w.lockfile("warm-old.example").exists());
}

fn globs(patterns: &[&str]) -> Patterns {
    Patterns::new(patterns.iter().map(|p| Glob::parse(p).unwrap()).collect()).unwrap()
}

#[test]
fn only_ci_apps_are_settled_the_others_never_probed_or_created() {
    let w = World::new();
    w.orphan("proxy.example", HOUR); // not a CI app, even with a lockfile
    w.orphan("wp-3f2a9c.ci.example", HOUR);
    std::fs::create_dir(w.lockfile("backups.example")).unwrap();
    let settings = Settings {
        deployed: deployed(&[
            "proxy.example",
            "backups.example",
            "w1.ci.example",
            "wp-3f2a9c.ci.example",
            "wp-777777.ci.example",
        ]),
        only: Some(globs(&["*-??????.ci.example", "w[[:digit:]].ci.example"])),
        warm: globs(&["w[[:digit:]].*"]),
        ..exact()
    };
    let (seen, reaped, summary) = w.pass(&settings, true);
    assert_eq!(reaped, ["wp-3f2a9c.ci.example", "wp-777777.ci.example"]);
    assert_eq!(
        outcomes(&seen),
        [
            ("backups.example", Outcome::Skipped),
            ("proxy.example", Outcome::Skipped),
            ("w1.ci.example", Outcome::Skipped),
            ("wp-3f2a9c.ci.example", Outcome::Reaped),
            ("wp-777777.ci.example", Outcome::Reaped),
        ]
    );
    assert!(seen[0].detail.starts_with("not a CI app"), "{}", seen[0]);
    assert_eq!(
        seen[0].level,
        Level::Info,
        "a directory there was not opened"
    );
    assert!(seen[2].detail.starts_with("warm"), "{}", seen[2]);
    assert!(w.lockfile("proxy.example").exists());
    assert!(
        !w.lockfile("w1.ci.example").exists(),
        "created for a warm app"
    );
    assert_eq!(summary, Summary::default());
}

#[test]
fn a_missing_lock_dir_is_created_only_under_a_tmpfs_parent() {
    // The test binary lives in the target dir, on a disk.
    let exe = std::env::current_exe().unwrap();
    let disk = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
    match missing_lock_dir(&disk.path().join("locks")) {
        MissingLockDir::Leave(why) => assert!(why.contains("not on a tmpfs"), "{why}"),
        other => panic!("{} is not a tmpfs: {other:?}", disk.path().display()),
    }
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_eq!(
        missing_lock_dir(&shm.path().join("locks")),
        MissingLockDir::Rebooted
    );
    // Only the direct parent counts.
    assert!(matches!(
        missing_lock_dir(&shm.path().join("gone/locks")),
        MissingLockDir::Leave(_)
    ));
}

#[test]
fn a_dry_run_after_a_reboot_would_reap_every_deployed_ci_app() {
    let settings = Settings {
        deployed: deployed(&["proxy.example", "wp-1.ci.example"]),
        only: Some(globs(&["*.ci.example"])),
        dry_run: true,
        ..exact()
    };
    let seen = pass_reaping_nothing(&NoClaims, &settings);
    assert_eq!(
        outcomes(&seen),
        [
            ("proxy.example", Outcome::Skipped),
            ("wp-1.ci.example", Outcome::WouldReap)
        ]
    );
}

#[test]
fn one_pass_at_a_time() {
    let w = World::new();
    let pass_lock = w.dir.path().join(ccci_lock::PASS_LOCK);
    let PassLock::Held(first) = w.dir.pass_lock(true).unwrap() else {
        panic!("the first pass did not get the pass lock")
    };
    assert!(matches!(w.dir.pass_lock(true).unwrap(), PassLock::Busy));
    assert!(matches!(w.dir.pass_lock(false).unwrap(), PassLock::Busy));
    assert_eq!(
        w.dir.domains().unwrap(),
        Vec::<String>::new(),
        "not a domain"
    );
    drop(first);
    assert!(!pass_lock.exists(), "removed when the pass ends");
    assert!(matches!(w.dir.pass_lock(false).unwrap(), PassLock::Missing));
    assert!(!pass_lock.exists(), "a dry run created the pass lock");

    // Left by a pass that was SIGKILLed: dry runs share it, a pass waits.
    std::fs::write(&pass_lock, "").unwrap();
    let PassLock::Held(dry) = w.dir.pass_lock(false).unwrap() else {
        panic!("a dry run did not get the pass lock")
    };
    assert!(matches!(w.dir.pass_lock(false).unwrap(), PassLock::Held(_)));
    assert!(matches!(w.dir.pass_lock(true).unwrap(), PassLock::Busy));
    drop(dry);
    assert!(matches!(w.dir.pass_lock(true).unwrap(), PassLock::Held(_)));
}

#[test]
fn a_directory_where_a_lockfile_should_be_is_a_warning() {
    let w = World::new();
    std::fs::create_dir(w.lockfile("dir.example")).unwrap();
    let (seen, reaped, summary) = w.pass(&exact(), true);
    assert!(reaped.is_empty());
    assert_eq!(outcomes(&seen), [("dir.example", Outcome::Skipped)]);
    assert_eq!(seen[0].level, Level::Warning);
    assert!(seen[0].detail.contains("a directory"), "{}", seen[0].detail);
    assert_eq!(summary.ended(), Ended::Code(0));
}

#[test]
fn a_dry_run_changes_nothing() {
    let w = World::new();
    w.orphan("orphan.example", HOUR);
    w.orphan("stale.example", HOUR);
    let settings = Settings {
        deployed: deployed(&["orphan.example", "rebooted.example"]),
        dry_run: true,
        ..exact()
    };
    let (seen, reaped, _) = w.pass(&settings, true);
    assert!(reaped.is_empty());
    assert_eq!(
        outcomes(&seen),
        [
            ("orphan.example", Outcome::WouldReap),
            ("rebooted.example", Outcome::WouldReap),
            ("stale.example", Outcome::Skipped),
        ]
    );
    assert!(seen.iter().all(|e| e.level == Level::Action));
    assert!(w.lockfile("orphan.example").exists());
    assert!(w.lockfile("stale.example").exists());
    assert!(!w.lockfile("rebooted.example").exists());
}

#[test]
fn a_domain_in_both_sources_is_examined_once() {
    let w = World::new();
    w.orphan("a.example", HOUR);
    let settings = Settings {
        deployed: deployed(&["a.example"]),
        ..exact()
    };
    let (seen, reaped, _) = w.pass(&settings, true);
    assert_eq!(reaped, ["a.example"]);
    assert_eq!(seen.len(), 1);
}

#[test]
fn a_stop_signal_ends_the_pass_after_the_current_reap() {
    let w = World::new();
    w.orphan("a.example", HOUR);
    w.orphan("b.example", HOUR);
    let (seen, reaped, summary) = w.pass_with(&exact(), &mut |_: &str, _: &[_]| ReapEnd {
        ok: false,
        detail: "killed by SIGTERM".into(),
        stop: Some(libc::SIGTERM),
    });
    assert_eq!(reaped, ["a.example"]);
    assert_eq!(seen.len(), 1);
    assert_eq!(summary.ended(), Ended::Signal(libc::SIGTERM));
    assert!(w.lockfile("b.example").exists());
}

#[test]
fn json_lines_have_exactly_the_spec_keys() {
    let w = World::new();
    let _live = w.hold("a.example");
    let (seen, _, _) = w.pass(&exact(), true);
    let line = serde_json::to_string(&seen[0].json()).unwrap();
    let keys = [
        "domain",
        "outcome",
        "holder_pid",
        "run_id",
        "age_s",
        "detail",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value.as_object().unwrap().len(), keys.len(), "{line}");
    assert_eq!(value["outcome"], "live");
    assert_eq!(value["run_id"], "run-1");
    for (outcome, word) in [
        (Outcome::WouldReap, "would-reap"),
        (Outcome::StaleUnlinked, "stale-unlinked"),
    ] {
        assert_eq!(serde_json::to_value(outcome).unwrap(), word);
    }
}

#[test]
fn lists_drop_comments_blanks_and_invalid_domains() {
    let text = "# deployed apps\n\na.example\n  b.example  # trailing note\nbad/name\na.example\n";
    let (domains, warnings) = read_deployed(text, "--deployed (stdin)");
    let mut sorted: Vec<_> = domains.into_iter().collect();
    sorted.sort();
    assert_eq!(sorted, ["a.example", "b.example"]);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("line 5") && warnings[0].contains("'bad/name'"),
        "{warnings:?}"
    );

    let globs = read_patterns("warm-*\n# comment\n\nexact.example\n", "f").unwrap();
    assert_eq!(globs.len(), 2);
    assert!(globs[1].matches("exact.example"));
    let e = read_patterns("ok-*\nwarm-[0-9\n", "--warm-file 'w'")
        .unwrap_err()
        .0;
    assert!(e.contains("line 2") && e.contains("'warm-[0-9'"), "{e}");
}

/// The lock dir, except that the first probe of each domain answers as if
/// another process changed the claim just before: the identity races that
/// cannot be timed from outside.
struct Racy {
    inner: FlockDir,
    first: std::cell::RefCell<HashSet<String>>,
    answer: fn() -> Probe<FlockClaim>,
}

impl Backend for Racy {
    type Claim = FlockClaim;

    fn acquire(
        &self,
        domain: &str,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        self.inner.acquire(domain, wait, waiting)
    }

    fn probe(&self, domain: &str) -> anyhow::Result<Probe<FlockClaim>> {
        if self.first.borrow_mut().insert(domain.to_string()) {
            return Ok((self.answer)());
        }
        self.inner.probe(domain)
    }

    fn create(&self, domain: &str) -> anyhow::Result<Option<FlockClaim>> {
        self.inner.create(domain)
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        self.inner.domains()
    }

    fn list(&self) -> anyhow::Result<Vec<ccci_lock::Status>> {
        self.inner.list()
    }

    fn pass_lock(&self, create: bool) -> anyhow::Result<PassLock> {
        self.inner.pass_lock(create)
    }
}

fn racy_pass(
    w: &World,
    answer: fn() -> Probe<FlockClaim>,
    settings: &Settings,
) -> (Vec<Examined>, Vec<String>) {
    let racy = Racy {
        inner: w.dir.clone(),
        first: Default::default(),
        answer,
    };
    let domains = candidates(&racy, settings.deployed.as_ref()).unwrap();
    let mut seen = Vec::new();
    let mut reaped = Vec::new();
    let mut reaper = |domain: &str, _: &[(&'static str, OsString)]| {
        reaped.push(domain.to_string());
        ReapEnd {
            ok: true,
            detail: String::new(),
            stop: None,
        }
    };
    pass(&racy, settings, &domains, &mut reaper, &mut |e| {
        seen.push(e.clone());
        Ok(())
    })
    .unwrap();
    (seen, reaped)
}

#[test]
fn a_claim_settled_by_someone_else_while_being_locked_is_skipped() {
    // Another janitor reaped and unlinked it between our open and our flock.
    let w = World::new();
    w.orphan("a.example", HOUR);
    let (seen, reaped) = racy_pass(&w, || Probe::Moved, &exact());
    assert!(reaped.is_empty());
    assert_eq!(outcomes(&seen), [("a.example", Outcome::Skipped)]);
    assert!(
        seen[0].detail.contains("got there first"),
        "{}",
        seen[0].detail
    );
    assert!(w.lockfile("a.example").exists());
}

#[test]
fn a_deployed_claim_created_by_a_run_first_is_settled_as_an_existing_one() {
    // We saw no lockfile, but a run created it before our O_EXCL create.
    let w = World::new();
    let live = w.hold("live.example");
    w.orphan("young.example", Duration::from_secs(5));
    let settings = Settings {
        deployed: deployed(&["live.example", "young.example"]),
        min_age: HOUR,
        ..exact()
    };
    let (seen, reaped) = racy_pass(&w, || Probe::Missing, &settings);
    assert!(reaped.is_empty(), "the O_EXCL loser reaped anyway");
    assert_eq!(
        outcomes(&seen),
        [
            ("live.example", Outcome::Live),
            ("young.example", Outcome::Young)
        ]
    );
    drop(live);
}

/// The lock dir, but `probe` (which takes a lock) panics: for the claims
/// that a pass must only look at.
struct NoProbes(FlockDir);

impl Backend for NoProbes {
    type Claim = FlockClaim;

    fn acquire(
        &self,
        domain: &str,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        self.0.acquire(domain, wait, waiting)
    }

    fn probe(&self, domain: &str) -> anyhow::Result<Probe<FlockClaim>> {
        panic!("{domain} was locked to be looked at")
    }

    fn create(&self, domain: &str) -> anyhow::Result<Option<FlockClaim>> {
        self.0.create(domain)
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        self.0.domains()
    }

    fn list(&self) -> anyhow::Result<Vec<ccci_lock::Status>> {
        self.0.list()
    }

    fn status(&self, domain: &str) -> anyhow::Result<Option<ccci_lock::Status>> {
        self.0.status(domain)
    }

    fn peek_age(&self, domain: &str) -> anyhow::Result<Option<Duration>> {
        self.0.peek_age(domain)
    }
}

#[test]
fn young_claims_are_told_live_or_young_without_taking_their_lock() {
    let w = World::new();
    w.orphan("a-free.example", Duration::from_secs(60));
    let _live = w.hold("b-live.example");
    let _stuck = w.hold("c-stuck.example");
    w.set_age("c-stuck.example", 3 * HOUR);
    let settings = Settings {
        min_age: 4 * HOUR,
        ..exact()
    };
    let seen = pass_reaping_nothing(&NoProbes(w.dir.clone()), &settings);
    assert_eq!(
        outcomes(&seen),
        [
            ("a-free.example", Outcome::Young),
            ("b-live.example", Outcome::Live),
            ("c-stuck.example", Outcome::Leaked),
        ]
    );
    assert_eq!(
        seen[1].holder.as_ref().unwrap().run_id.as_deref(),
        Some("run-1")
    );
}

// Several hosts (Settings::hosts): lockfiles stand in for etcd claims, their
// records naming the host whose run made them.

impl World {
    /// An orphan whose record names `host`, last stamped `age` ago.
    fn orphan_of(&self, host: &str, domain: &str, age: Duration) {
        let mut claim = self.hold(domain);
        claim
            .stamp(&Holder {
                host: Some(host.to_string()),
                run_id: Some(format!("run-of-{host}")),
                ..Holder::this_process(None)
            })
            .unwrap();
        drop(claim);
        self.set_age(domain, age);
    }

    fn record(&self, domain: &str) -> Holder {
        serde_json::from_slice(&std::fs::read(self.lockfile(domain)).unwrap()).unwrap()
    }
}

fn on_host(this: &str, adopted: &[&str], settings: Settings) -> Settings {
    Settings {
        hosts: Some(Hosts {
            this: this.to_string(),
            adopted: adopted.iter().map(|h| h.to_string()).collect(),
        }),
        ..settings
    }
}

#[test]
fn another_hosts_orphan_is_foreign_and_never_locked_to_be_looked_at() {
    let w = World::new();
    w.orphan_of("host-b", "b.example", HOUR);
    w.orphan_of("host-c", "c-old.example", 3 * HOUR);
    // Not deployed here (host A's list names none of them): still not
    // unlinked, since host A's list says nothing of other hosts' apps.
    let settings = on_host(
        "host-a",
        &[],
        Settings {
            deployed: deployed(&[]),
            only: Some(globs(&["*"])),
            ..exact()
        },
    );
    let seen = pass_reaping_nothing(&NoProbes(w.dir.clone()), &settings);
    assert_eq!(
        outcomes(&seen),
        [
            ("b.example", Outcome::Foreign),
            ("c-old.example", Outcome::Foreign)
        ]
    );
    assert_eq!(seen[0].level, Level::Info);
    assert!(seen[0].detail.contains("host-b"), "{}", seen[0].detail);
    assert_eq!(
        seen[0].holder.as_ref().unwrap().run_id.as_deref(),
        Some("run-of-host-b")
    );
    // Older than --leak-after: its janitor does not run; said out loud.
    assert_eq!(seen[1].level, Level::Warning);
    assert!(
        seen[1].detail.contains("--adopt-host 'host-c'"),
        "{}",
        seen[1].detail
    );
    assert!(w.lockfile("b.example").exists() && w.lockfile("c-old.example").exists());
    assert_eq!(w.record("b.example").host.as_deref(), Some("host-b"));
}

#[test]
fn a_claim_naming_no_host_is_left_alone_even_when_deployed_here() {
    let w = World::new();
    w.orphan("a.example", HOUR);
    let mut claim = w.hold("a.example");
    claim
        .stamp(&Holder {
            host: None,
            ..Holder::this_process(Some("old-run".into()))
        })
        .unwrap();
    drop(claim);
    std::fs::write(w.lockfile("garbled.example"), b"not a record").unwrap();
    let settings = on_host(
        "host-a",
        &["host-b"],
        Settings {
            deployed: deployed(&["a.example", "garbled.example"]),
            only: Some(globs(&["*"])),
            ..exact()
        },
    );
    let seen = pass_reaping_nothing(&NoProbes(w.dir.clone()), &settings);
    assert_eq!(
        outcomes(&seen),
        [
            ("a.example", Outcome::Foreign),
            ("garbled.example", Outcome::Foreign)
        ]
    );
    for e in &seen {
        assert_eq!(e.level, Level::Warning);
        assert!(e.detail.contains("names no host"), "{}", e.detail);
    }
    assert!(w.lockfile("a.example").exists() && w.lockfile("garbled.example").exists());
}

/// The lock dir, but its listing says every record is `host`'s: the
/// snapshot a pass starts from, taken before the claim changed hands.
struct Relabelled {
    inner: FlockDir,
    host: &'static str,
}

impl Backend for Relabelled {
    type Claim = FlockClaim;

    fn acquire(
        &self,
        domain: &str,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<FlockClaim>> {
        self.inner.acquire(domain, wait, waiting)
    }

    fn probe(&self, domain: &str) -> anyhow::Result<Probe<FlockClaim>> {
        self.inner.probe(domain)
    }

    fn create(&self, domain: &str) -> anyhow::Result<Option<FlockClaim>> {
        self.inner.create(domain)
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        self.inner.domains()
    }

    fn list(&self) -> anyhow::Result<Vec<ccci_lock::Status>> {
        let mut all = self.inner.list()?;
        for st in &mut all {
            if let Some(h) = st.holder.as_mut() {
                h.host = Some(self.host.to_string());
            }
        }
        Ok(all)
    }
}

#[test]
fn a_claim_that_changed_hands_before_it_was_locked_is_released_untouched() {
    let w = World::new();
    w.orphan_of("host-b", "b.example", HOUR);
    let backend = Relabelled {
        inner: w.dir.clone(),
        host: "host-a",
    };
    let settings = on_host(
        "host-a",
        &[],
        Settings {
            deployed: deployed(&[]),
            only: Some(globs(&["*"])),
            ..exact()
        },
    );
    let seen = pass_reaping_nothing(&backend, &settings);
    assert_eq!(outcomes(&seen), [("b.example", Outcome::Foreign)]);
    assert!(w.lockfile("b.example").exists());
    assert_eq!(w.record("b.example").host.as_deref(), Some("host-b"));
    // Released: a run takes it at once.
    drop(w.hold("b.example"));
}

#[test]
fn an_adopted_hosts_orphan_is_reaped_and_keeps_naming_that_host_while_reaped() {
    let w = World::new();
    w.orphan_of("host-b", "b.example", HOUR);
    w.orphan_of("host-b", "b-fails.example", HOUR);
    w.orphan_of("host-a", "a-stale.example", HOUR);
    let settings = on_host(
        "host-a",
        &["host-b"],
        Settings {
            // Host A's list: none of host B's apps, and not a-stale either.
            deployed: deployed(&[]),
            only: Some(globs(&["*"])),
            ..exact()
        },
    );
    let (seen, reaped, summary) = w.pass_with(&settings, &mut |domain: &str, _: &[_]| {
        let record = w.record(domain);
        assert_eq!(record.reaper, Some(true));
        assert_eq!(record.host.as_deref(), Some("host-b"));
        assert_eq!(record.pid, Some(std::process::id()));
        ReapEnd {
            ok: domain == "b.example",
            detail: "reap of it".into(),
            stop: None,
        }
    });
    assert_eq!(reaped, ["b-fails.example", "b.example"]);
    assert_eq!(
        outcomes(&seen),
        [
            ("a-stale.example", Outcome::StaleUnlinked),
            ("b-fails.example", Outcome::Failed),
            ("b.example", Outcome::Reaped),
        ]
    );
    assert!(
        seen[2].detail.contains("adopted host 'host-b'"),
        "{}",
        seen[2].detail
    );
    assert!(summary.reap_failed);
    assert!(!w.lockfile("b.example").exists());
    assert!(!w.lockfile("a-stale.example").exists());
    // A failed reap puts host B's run's record back.
    let kept = w.record("b-fails.example");
    assert_eq!(kept.host.as_deref(), Some("host-b"));
    assert_eq!(kept.run_id.as_deref(), Some("run-of-host-b"));
    assert_eq!(kept.reaper, None);
}

#[test]
fn another_hosts_live_run_past_leak_after_is_its_janitors_to_warn_about() {
    let w = World::new();
    let mut claim = w.hold("b.example");
    claim
        .stamp(&Holder {
            host: Some("host-b".into()),
            ..Holder::this_process(None)
        })
        .unwrap();
    w.set_age("b.example", 3 * HOUR);
    let seen = pass_reaping_nothing(&NoProbes(w.dir.clone()), &on_host("host-a", &[], exact()));
    assert_eq!(outcomes(&seen), [("b.example", Outcome::Leaked)]);
    assert_eq!(seen[0].level, Level::Info);
    assert!(
        seen[0].detail.contains("a run of host 'host-b'"),
        "{}",
        seen[0].detail
    );
    drop(claim);
}

#[test]
fn a_young_claim_of_this_host_is_told_from_the_snapshot_without_its_lock() {
    let w = World::new();
    w.orphan_of("host-a", "a.example", Duration::from_secs(60));
    let settings = on_host(
        "host-a",
        &[],
        Settings {
            min_age: HOUR,
            ..exact()
        },
    );
    let seen = pass_reaping_nothing(&NoProbes(w.dir.clone()), &settings);
    assert_eq!(outcomes(&seen), [("a.example", Outcome::Young)]);
}
