//! The decisions of a pass on this host's claims: reaping an orphan once
//! under its lock, leaving live and young claims alone, the deployed list,
//! warm and not-CI names, dry runs, the pass lock and a stop signal.

use super::*;

#[test]
fn an_orphan_is_reaped_once_under_its_lock_and_unlinked() {
    let w = World::new();
    w.orphan("a.example", HOUR);
    let lockfile = w.lockfile("a.example");
    let (seen, reaped, summary) = w.pass_with(&exact(), &mut |_: &Domain, _: &[_]| {
        // While the reap runs, the domain is locked and the lockfile is there,
        // with the janitor's own record.
        let Probe::Held { holder, .. } = w.dir.probe(&d("a.example")).unwrap() else {
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
    let (seen, reaped, _) = w.pass_with(&settings, &mut |d: &Domain, _: &[_]| {
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
    let Probe::Acquired(claim) = w.dir.probe(&d("a.example")).unwrap() else {
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
        Vec::<Domain>::new(),
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
    let (seen, reaped, summary) = w.pass_with(&exact(), &mut |_: &Domain, _: &[_]| ReapEnd {
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
