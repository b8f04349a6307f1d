//! Races that cannot be timed from outside, injected by a backend whose
//! first probe of each domain answers as if another process had just
//! changed the claim.

use super::*;

/// The lock dir, except that the first probe of each domain answers as if
/// another process changed the claim just before: the identity races that
/// cannot be timed from outside.
struct Racy {
    inner: FlockDir,
    first: std::cell::RefCell<HashSet<String>>,
    answer: fn() -> Probe<FlockClaim>,
}

impl Backend for Racy {
    forward_to!(inner);

    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<FlockClaim>> {
        if self.first.borrow_mut().insert(domain.to_string()) {
            return Ok((self.answer)());
        }
        self.inner.probe(domain)
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
) -> (Vec<Examined>, Vec<Domain>) {
    let racy = Racy {
        inner: w.dir.clone(),
        first: Default::default(),
        answer,
    };
    let domains = candidates(&racy, settings.deployed.as_ref()).unwrap();
    let mut seen = Vec::new();
    let mut reaped = Vec::new();
    let mut reaper = |domain: &Domain, _: &[(&'static str, OsString)]| {
        reaped.push(domain.clone());
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
