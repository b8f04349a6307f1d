//! Several hosts ([`Settings::hosts`]): lockfiles stand in for etcd claims,
//! their records naming the host whose run made them.

use super::*;

impl World {
    /// An orphan of the domain `name` whose record names `host`, last
    /// stamped `age` ago.
    fn orphan_of(&self, host: &str, name: &str, age: Duration) {
        let mut claim = self.hold(name);
        claim
            .stamp(&Holder {
                host: Some(host.to_string()),
                run_id: Some(format!("run-of-{host}")),
                ..Holder::this_process(None)
            })
            .unwrap();
        drop(claim);
        self.set_age(name, age);
    }

    fn record(&self, name: &str) -> Holder {
        serde_json::from_slice(&std::fs::read(self.lockfile(name)).unwrap()).unwrap()
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
    forward_to!(inner);

    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<FlockClaim>> {
        self.inner.probe(domain)
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
    let (seen, reaped, summary) = w.pass_with(&settings, &mut |domain: &Domain, _: &[_]| {
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
