//! The etcd backend (SPEC §8) against a real etcd: what only etcd has
//! (several hosts, lease loss, restarts, fencing, a cluster) and the SPEC §7
//! cases whose etcd form differs from the file one (8 across hosts, 11, 26).
//! Cases 1-10, 22 and 27 run on both backends from one body in
//! the lock and janitor modules (see `ccci_tests::both_backends`).
//!
//! Each test starts its own etcd (see `ccci_tests::etcd`), with a 2 s lease
//! TTL so that expiry is quick to observe.
//!
//! One file: its tests share the `World` (a sandbox pointed at one etcd)
//! and the claim helpers defined in it.

use std::time::{Duration, Instant};

use ccci_tests::etcd::{Cluster, Etcd};
use ccci_tests::{alive, wait_until, Cmd, Proc, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";
const TTL: Duration = Duration::from_secs(2);
const PREFIX: &str = "/t";

/// A sandbox whose `ccci-lock` uses `endpoints`.
struct World {
    sb: Sandbox,
    endpoints: String,
}

impl World {
    fn new(endpoints: String) -> World {
        World {
            sb: Sandbox::new(),
            endpoints,
        }
    }

    fn on(etcd: &Etcd) -> World {
        World::new(etcd.endpoint())
    }

    fn tool(&self, tool: &str) -> Cmd {
        self.setup(self.sb.tool(tool))
    }

    fn setup(&self, cmd: Cmd) -> Cmd {
        cmd.env("CCCI_ETCD_ENDPOINTS", &self.endpoints)
            .env("CCCI_ETCD_PREFIX", PREFIX)
            .env("CCCI_ETCD_TTL", format!("{}s", TTL.as_secs()))
    }

    fn lock(&self) -> Cmd {
        self.tool("ccci-lock")
    }

    fn try_lock(&self, domain: &str) -> i32 {
        self.lock().args(["-n", domain, "--", "true"]).run().code()
    }

    /// A holder whose COMMAND prints "ready rev=N" and waits for a line.
    fn hold(&self, domain: &str, flags: &[&str]) -> (Proc, i64) {
        let (p, rev) = ccci_tests::hold_until_told(self.lock(), domain, flags);
        (p, rev.expect("the holder on etcd prints its fencing token"))
    }
}

fn claim_key(domain: &str) -> String {
    format!("{PREFIX}/claim/{domain}")
}

#[test]
fn a_killed_holder_leaves_its_claim() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (holder, _) = w.hold(D, &["--run-id", "r1"]);
    holder.signal(libc::SIGKILL);
    holder.wait();
    let dump = etcd.dump(&claim_key(D));
    assert_eq!(dump.len(), 1, "{dump:?}");
    assert!(dump[0].contains("\"run_id\":\"r1\""), "{dump:?}");
    // A killed COMMAND leaves it too.
    let out = w
        .lock()
        .args(["-w", "10s", "x.example", "--", "sh", "-c", "kill -KILL $$"])
        .run();
    out.expect_code(137);
    assert_eq!(etcd.dump(&claim_key("x.example")).len(), 1);
}

#[test]
fn wait_gives_up_with_75_and_leaves_nothing() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut holder, _) = w.hold(D, &[]);
    let before = etcd.dump(PREFIX);
    let start = Instant::now();
    w.lock()
        .args(["-w", "1s", D, "--", "touch", "ran"])
        .run()
        .expect_code(75);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(!w.sb.path("ran").exists());
    assert_eq!(etcd.dump(PREFIX), before, "the waiter left a key behind");
    holder.send("");
    holder.wait().expect_code(0);
}

#[test]
fn fencing_revisions_strictly_increase() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let mut last = 0;
    for _ in 0..5 {
        let out = w
            .lock()
            .args([D, "--", "sh", "-c", "echo $CCCI_LOCK_REVISION"])
            .run();
        out.expect_code(0);
        let rev: i64 = out.stdout.trim().parse().unwrap();
        assert!(rev > last, "{last} then {rev}");
        last = rev;
    }
}

#[test]
fn two_hosts_never_hold_one_domain_at_once() {
    // Two "hosts": shells in UTS namespaces of their own with distinct
    // host names, each running ccci-lock in a loop against one etcd. Every
    // COMMAND enters a critical section marked by a directory; an overlap
    // would find it there. Each logs host and fencing token.
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let rounds = 8;
    // The claim names this host while its COMMAND runs.
    let claim = format!(
        "etcdctl --endpoints {} get --print-value-only {}",
        etcd.endpoint(),
        claim_key(D)
    );
    let script = format!(
        "hostname \"$1\"; i=0; while [ $i -lt {rounds} ]; do \
           ccci-lock {D} -- sh -c 'mkdir inside || {{ echo OVERLAP; exit 99; }}; \
             {claim} | grep -q \"\\\"host\\\":\\\"$(hostname)\\\"\" || {{ echo WRONG CLAIM; exit 98; }}; \
             echo \"$(hostname) $CCCI_LOCK_REVISION\" >> log; rmdir inside' || exit $?; \
           i=$((i+1)); done"
    );
    let hosts: Vec<Proc> = ["host-a", "host-b"]
        .iter()
        .map(|h| {
            w.setup(w.sb.command("unshare"))
                .args(["--uts", "sh", "-c", &script, "sh", h])
                .spawn()
        })
        .collect();
    for host in hosts {
        host.wait().expect_code(0);
    }
    let log = std::fs::read_to_string(w.sb.path("log")).unwrap();
    let entries: Vec<(&str, i64)> = log
        .lines()
        .map(|l| {
            let (h, r) = l.split_once(' ').unwrap();
            (h, r.parse().unwrap())
        })
        .collect();
    assert_eq!(entries.len(), 2 * rounds, "{log}");
    assert!(entries.iter().any(|e| e.0 == "host-a") && entries.iter().any(|e| e.0 == "host-b"));
    assert!(
        entries.windows(2).all(|p| p[0].1 < p[1].1),
        "fencing tokens not increasing in lock order:\n{log}"
    );
}

#[test]
fn etcd_restarted_within_the_ttl_loses_nothing() {
    let mut etcd = Etcd::start();
    let w = World::on(&etcd);
    let ttl = Duration::from_secs(3);
    let (mut holder, _) = w.hold(D, &["--ttl", "3s", "--run-id", "r1"]);
    let held = Instant::now();
    etcd.restart();
    // The lease outlives the restart and keeps being renewed: for three
    // TTLs, the lock stays taken and the holder keeps running.
    while held.elapsed() < 3 * ttl {
        assert_eq!(w.try_lock(D), 75, "the lock was lost over a restart");
        assert!(!holder.has_exited(), "{}", holder.report());
    }
    holder.send("");
    holder.wait().expect_code(0);
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
}

#[test]
fn a_three_member_cluster_losing_one_member_keeps_working() {
    let mut cluster = Cluster::start();
    let w = World::new(cluster.endpoints());
    let (mut holder, rev1) = w.hold(D, &[]);
    cluster.members[0].kill();
    w.lock().args(["-n", D, "--", "true"]).run().expect_code(75);
    holder.send("");
    holder.wait().expect_code(0);
    let out = w
        .lock()
        .args(["-w", "10s", D, "--", "sh", "-c", "echo $CCCI_LOCK_REVISION"])
        .run();
    out.expect_code(0);
    let rev2: i64 = out.stdout.trim().parse().unwrap();
    assert!(rev2 > rev1);
}

#[test]
fn bad_input_is_status_2_and_creates_nothing() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    for (args, needle) in [
        (vec!["--etcd", "localhost:2379"], "'localhost:2379'"),
        (vec!["--etcd", "https://127.0.0.1:1/v3"], "no path"),
        (vec!["--ttl", "0"], "'0'"),
        (vec!["--ttl", "500ms"], "'500ms'"),
        (vec!["--etcd-prefix", "/"], "prefix"),
    ] {
        w.lock()
            .args(&args)
            .args([D, "--", "touch", "ran"])
            .run()
            .expect_code(2)
            .expect_stderr(needle);
    }
    w.lock()
        .env("CCCI_ETCD_ENDPOINTS", "ftp://x")
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("CCCI_ETCD_ENDPOINTS");
    let me = std::process::id().to_string();
    w.lock()
        .args(["--hold", "--parent", &me, "--ttl", "0", D])
        .run()
        .expect_code(2)
        .expect_stderr("'0'");
    assert!(!w.sb.path("ran").exists());
    assert_eq!(etcd.dump("/"), Vec::<String>::new());
}

#[test]
fn unreachable_endpoints_are_125_and_never_hang_past_wait() {
    let sb = Sandbox::new();
    // A port nobody listens on, and one that accepts but never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    for endpoints in [
        closed_url.clone(),
        silent_url.clone(),
        format!("{closed_url},{silent_url}"),
    ] {
        let start = Instant::now();
        sb.tool("ccci-lock")
            .args(["--etcd", &endpoints, "-w", "1s", D, "--", "touch", "ran"])
            .run()
            .expect_code(125)
            .expect_stderr("cannot reach etcd");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "{endpoints}: took {took:?}");
    }
    assert!(!sb.path("ran").exists());
}

#[test]
fn list_shows_held_and_free_claims() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut holder, _) = w.hold("a.example", &["--run-id", "ra"]);
    let dead = w
        .lock()
        .args(["b.example", "--", "sh", "-c", "kill -KILL $$"])
        .env("CCCI_RUN_ID", "rb")
        .run();
    dead.expect_code(137);
    let out = w.lock().arg("--list").run();
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with(&format!("a.example\theld\t{}\tra\t", holder.pid())),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with("b.example\tfree\t") && lines[1].contains("\trb\t"),
        "{}",
        out.stdout
    );
    holder.send("");
    holder.wait().expect_code(0);
}

#[test]
fn etcd_paused_past_the_ttl_stops_command_and_exits_125() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let mut holder = w
        .lock()
        .args(["--run-id", "r1", D, "--", "sh", "-c"])
        .arg("trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done")
        .spawn();
    holder.expect_stdout("ready");
    etcd.pause();
    let paused = Instant::now();
    holder.expect_stdout("got TERM");
    let took = paused.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(1),
        "COMMAND was told to stop only after {took:?} (TTL {TTL:?})"
    );
    let out = holder.wait();
    out.expect_code(125).expect_stderr("lost the lock of");
    etcd.resume();
    // The claim stays for the janitor.
    assert_eq!(etcd.dump(&claim_key(D)).len(), 1);
}

#[test]
fn a_command_that_ignores_term_after_a_loss_is_killed_after_the_grace() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let mut holder = w
        .lock()
        .args(["--lost-grace", "1s", D, "--", "sh", "-c"])
        .arg("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done")
        .spawn();
    holder.expect_stdout("ready");
    // Revoking the lease behind the holder's back is a loss too.
    let lease = etcd.ctl(&["lease", "list"]);
    let id = lease.lines().nth(1).expect("one lease").trim().to_string();
    etcd.ctl(&["lease", "revoke", &id]);
    holder.expect_stdout("got TERM");
    let out = holder.wait();
    out.expect_code(125).expect_stderr("SIGKILL");
}

#[test]
fn etcdctl_lock_and_ccci_lock_exclude_each_other() {
    // The same lock recipe and key layout as etcd's own lock service.
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let name = format!("{PREFIX}/lock/{D}");
    // etcdctl gives its command no stdin: it waits on a FIFO instead.
    let fifo = w.sb.path("release");
    ccci_tests::mkfifo(&fifo);
    let mut theirs =
        w.sb.command("etcdctl")
            .args(["--endpoints", &etcd.endpoint(), "lock", &name, "--"])
            .args([
                "sh",
                "-c",
                &format!("echo held; read _ < '{}'", fifo.display()),
            ])
            .spawn();
    theirs.expect_stdout("held");
    assert_eq!(w.try_lock(D), 75);
    std::fs::write(&fifo, "go\n").unwrap();
    theirs.wait().expect_code(0);
    assert_eq!(w.try_lock(D), 0);

    let (mut ours, _) = w.hold(D, &[]);
    let mut theirs =
        w.sb.command("etcdctl")
            .args(["--endpoints", &etcd.endpoint(), "lock", &name, "--"])
            .args(["echo", "etcdctl got it"])
            .spawn();
    // etcdctl waits in etcd for our key to go; it must not get the lock.
    wait_until("etcdctl queues behind us", || {
        etcd.ctl(&["get", "--prefix", "--keys-only", &format!("{name}/")])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
            == 2
    });
    assert_eq!(theirs.stdout_so_far(), "", "etcdctl got a held lock");
    ours.send("");
    ours.wait().expect_code(0);
    theirs.expect_stdout("etcdctl got it");
    theirs.wait().expect_code(0);
}

// ccci-janitor on etcd: SPEC §7 cases 8 (across hosts) and 11 with claims in
// place of lockfiles.

/// Leaves an orphaned claim: its holder's COMMAND is killed by a signal.
fn orphan(w: &World, etcd: &Etcd, domain: &str) {
    w.lock()
        .args(ccci_tests::orphaning("dead-run", domain))
        .run()
        .expect_code(143);
    assert_eq!(etcd.dump(&claim_key(domain)).len(), 1);
}

/// A reap script recording `$*|$CCCI_DOMAIN` in `calls`, then running `then`.
fn reap_script(w: &World, then: &str) -> std::path::PathBuf {
    let script = w.sb.path("reap.sh");
    let calls = w.sb.path("calls");
    std::fs::write(
        &script,
        format!(
            "echo \"$*|$CCCI_DOMAIN\" >> '{}'\n{then}\n",
            calls.display()
        ),
    )
    .unwrap();
    script
}

fn calls(w: &World) -> Vec<String> {
    std::fs::read_to_string(w.sb.path("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn janitor(w: &World, flags: &[&str], script: &std::path::Path) -> Cmd {
    w.tool("ccci-janitor")
        .args(flags)
        .args(["--", "sh"])
        .arg(script)
}

#[test]
fn case_08_on_etcd_racing_janitors_on_two_hosts_reap_each_orphan_exactly_once() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    // Orphans of two "hosts" (UTS namespaces with host names of their own,
    // each with a lock dir of its own), four each.
    let domains: Vec<String> = (0..8).map(|i| format!("app-{i:02}.example")).collect();
    let on_host = |host: &str, script: String| {
        w.setup(w.sb.command("unshare"))
            .args(["--uts", "sh", "-c"])
            .arg(format!("hostname {host}; {script}"))
            .env("CCCI_APP_LOCK_DIR", w.sb.path(&format!("locks-{host}")))
    };
    for (i, d) in domains.iter().enumerate() {
        let host = ["jan-a", "jan-b"][i % 2];
        on_host(host, format!("ccci-lock {d} -- sh -c 'kill -TERM $$'"))
            .run()
            .expect_code(143);
    }
    let script = w.sb.path("reap.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"$1|$(hostname)\" >> '{}'\n",
            w.sb.path("calls").display()
        ),
    )
    .unwrap();
    // Janitors on three hosts, one pass after another as fast as they can,
    // racing for the pass locks and the claims: jan-a also adopts jan-b's
    // claims, so two hosts race for each of those; jan-c has none.
    let janitors: Vec<Proc> = [
        ("jan-a", "--adopt-host jan-b"),
        ("jan-b", ""),
        ("jan-c", ""),
    ]
    .iter()
    .map(|(h, flags)| {
        on_host(
            h,
            format!(
                "for i in 1 2 3; do ccci-janitor {flags} -- sh '{}' || exit $?; done",
                script.display()
            ),
        )
        .spawn()
    })
    .collect();
    for j in janitors {
        j.wait().expect_code(0);
    }
    let calls = calls(&w);
    let mut reaped: Vec<String> = calls
        .iter()
        .map(|c| c.split('|').next().unwrap().to_string())
        .collect();
    reaped.sort();
    assert_eq!(reaped, domains, "each orphan must be reaped exactly once");
    for c in &calls {
        let (d, host) = c.split_once('|').unwrap();
        let i: usize = d[4..6].parse().unwrap();
        let allowed: &[&str] = if i.is_multiple_of(2) {
            &["jan-a"]
        } else {
            &["jan-a", "jan-b"]
        };
        assert!(allowed.contains(&host), "{d} reaped on {host}: {calls:?}");
    }
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
}

#[test]
fn case_11_on_etcd_warm_names_are_never_probed() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    orphan(&w, &etcd, "warm-old.example");
    orphan(&w, &etcd, "cold.example");
    let before = revision(&etcd);
    let script = reap_script(&w, "exit 0");
    let out = janitor(
        &w,
        &["--warm", "warm-*", "--deployed", "-", "--only", "*"],
        &script,
    )
    .stdin_bytes("warm-new.example\ncold.example\n")
    .run();
    out.expect_code(0).expect_stderr("cold.example: reaped");
    assert_eq!(calls(&w), ["cold.example|cold.example"]);
    // etcd keeps every revision: no key of a warm domain's lock ever existed.
    let after = revision(&etcd);
    assert!(after > before);
    for rev in before..=after {
        let keys = etcd.ctl(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("--rev={rev}"),
            PREFIX,
        ]);
        assert!(
            !keys.contains("/lock/warm-"),
            "revision {rev} has a warm lock key:\n{keys}"
        );
    }
    assert_eq!(
        etcd.dump(&claim_key("warm-new.example")),
        Vec::<String>::new()
    );
    assert_eq!(etcd.dump(&claim_key("warm-old.example")).len(), 1);
}

fn revision(etcd: &Etcd) -> i64 {
    let out = etcd.ctl(&["get", "--write-out=json", "x"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[test]
fn a_waiter_keeps_its_place_while_etcd_is_unreachable_for_less_than_the_ttl() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut holder, rev1) = w.hold(D, &["--ttl", "20s"]);
    let mut waiter = w
        .lock()
        .args([
            "-v",
            "--ttl",
            "20s",
            D,
            "--",
            "sh",
            "-c",
            "echo waiter rev=$CCCI_LOCK_REVISION",
        ])
        .spawn();
    waiter.expect_stderr("waiting for");
    // Unreachable for longer than a watch session and one request's deadline
    // together (5 s + 5 s), well within the TTL: the waiter must neither give
    // up nor lose its place.
    etcd.pause();
    std::thread::sleep(Duration::from_secs(11));
    etcd.resume();
    assert!(!waiter.has_exited(), "{}", waiter.report());
    holder.send("");
    holder.wait().expect_code(0);
    let line = waiter.expect_stdout("waiter rev=");
    let rev2: i64 = line.trim_start_matches("waiter rev=").parse().unwrap();
    assert!(rev2 > rev1);
    waiter.wait().expect_code(0);
}

#[test]
fn a_clean_exit_while_etcd_is_briefly_unreachable_still_removes_the_claim() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut holder, _) = w.hold(D, &["--ttl", "20s"]);
    etcd.pause();
    holder.send(""); // COMMAND exits 0 while etcd answers nothing
                     // Longer than one request's deadline (5 s), well within the TTL.
    std::thread::sleep(Duration::from_secs(7));
    assert!(!holder.has_exited(), "{}", holder.report());
    etcd.resume();
    let out = holder.wait();
    out.expect_code(0);
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
}

// --hold / --release on etcd (SPEC §8): the keeper holds the locks with its
// lease; its socket stays in the local lock dir.

/// A stand-in harness: a shell that prints its pid and waits for a line.
fn harness(w: &World) -> (Proc, u32) {
    let mut p = w.sb.sh("echo pid=$$; read _").piped_stdin().spawn();
    let line = p.expect_stdout("pid=");
    (p, line.trim_start_matches("pid=").parse().unwrap())
}

fn hold_for(w: &World, parent: u32, args: &[&str]) -> ccci_tests::Output {
    w.lock()
        .args(["--hold", "--parent", &parent.to_string()])
        .args(args)
        .run()
}

fn release_for(w: &World, parent: u32, domains: &[&str]) -> ccci_tests::Output {
    w.lock()
        .args(["--release", "--parent", &parent.to_string()])
        .args(domains)
        .run()
}

/// The claim record of `domain` on etcd.
fn claim_record(etcd: &Etcd, domain: &str) -> serde_json::Value {
    let dump = etcd.dump(&claim_key(domain));
    assert_eq!(dump.len(), 1, "{dump:?}");
    let (_, value) = dump[0].split_once('=').unwrap();
    serde_json::from_str(value).unwrap_or_else(|e| panic!("{e}: {value:?}"))
}

/// Lock keys under the prefix (a held or queued lock).
fn lock_keys(etcd: &Etcd) -> Vec<String> {
    etcd.dump(&format!("{PREFIX}/lock/"))
}

const DEP: &str = "mari-5c1d0e.ci.example.org";

#[test]
fn hold_and_release_on_etcd_round_trip_leaves_nothing() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut h, pid) = harness(&w);
    hold_for(&w, pid, &["--run-id", "build-7", D, DEP]).expect_code(0);
    let held = Instant::now();
    assert_eq!(w.try_lock(D), 75);
    assert_eq!(w.try_lock(DEP), 75);
    let rec = claim_record(&etcd, D);
    assert_eq!(rec["parent"], pid);
    assert_eq!(rec["run_id"], "build-7");
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(rec["host"], here.trim());
    let keeper = rec["pid"].as_u64().unwrap() as u32;
    assert_eq!(claim_record(&etcd, DEP)["pid"], keeper);
    assert!(alive(keeper));
    // Its socket is in the local lock dir; no lockfile is made there.
    let names = ccci_tests::lock_dir_entries(&w.sb.lock_dir());
    assert_eq!(names, [format!(".keeper-{keeper}.sock")]);
    // The keeper keeps its lease alive: for three TTLs the locks stay taken.
    while held.elapsed() < 3 * TTL {
        assert_eq!(w.try_lock(D), 75, "the hold was lost");
        assert!(alive(keeper), "the keeper has exited");
    }
    // Holding again for the same PID is 0 and changes nothing.
    let before = etcd.dump(PREFIX);
    hold_for(&w, pid, &["-n", D]).expect_code(0);
    assert_eq!(etcd.dump(PREFIX), before);

    release_for(&w, pid, &[D]).expect_code(0);
    assert_eq!(etcd.dump(&claim_key(D)), Vec::<String>::new());
    assert_eq!(w.try_lock(DEP), 75);
    release_for(&w, pid, &[DEP]).expect_code(0);
    wait_until("the keeper has exited", || !alive(keeper));
    // The claims were deleted while held, then the lease revoked: nothing
    // is left, and both locks are free at once.
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
    assert_eq!(w.try_lock(D), 0);
    assert!(ccci_tests::lock_dir_entries(&w.sb.lock_dir()).is_empty());
    h.send("");
    h.wait().expect_code(0);
}

#[test]
fn sigkill_of_the_parent_on_etcd_frees_the_lock_and_the_janitor_reaps_once() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (h, pid) = harness(&w);
    hold_for(&w, pid, &["--run-id", "held-run", D]).expect_code(0);
    let keeper = claim_record(&etcd, D)["pid"].as_u64().unwrap() as u32;
    h.signal(libc::SIGKILL);
    let killed = Instant::now();
    wait_until("the lock is free again", || lock_keys(&etcd).is_empty());
    let took = killed.elapsed();
    assert!(took <= TTL + Duration::from_secs(1), "free after {took:?}");
    wait_until("the keeper has exited", || !alive(keeper));
    assert_eq!(claim_record(&etcd, D)["parent"], pid, "the claim stays");
    release_for(&w, pid, &[D])
        .expect_code(1)
        .expect_stderr("is gone");
    let script = reap_script(&w, "exit 0");
    janitor(&w, &[], &script)
        .run()
        .expect_code(0)
        .expect_stderr(&format!("{D}: reaped"));
    janitor(&w, &[], &script).run().expect_code(0);
    assert_eq!(calls(&w), [format!("{D}|{D}")], "reaped exactly once");
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
    h.wait().expect_code(137);
}

#[test]
fn release_on_etcd_of_another_pids_hold_is_refused() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut a, pid_a) = harness(&w);
    let (mut b, pid_b) = harness(&w);
    hold_for(&w, pid_a, &[D]).expect_code(0);
    hold_for(&w, pid_b, &[DEP]).expect_code(0);
    let before = etcd.dump(PREFIX);
    release_for(&w, pid_b, &[D, DEP])
        .expect_code(125)
        .expect_stderr(&format!("not for pid {pid_b}"));
    assert_eq!(etcd.dump(PREFIX), before, "nothing released");
    assert_eq!(w.try_lock(DEP), 75);
    release_for(&w, pid_a, &[D]).expect_code(0);
    release_for(&w, pid_b, &[DEP]).expect_code(0);
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
    a.send("");
    b.send("");
    a.wait().expect_code(0);
    b.wait().expect_code(0);
}

#[test]
fn release_on_etcd_of_a_hold_on_another_host_is_refused() {
    // A "host" of its own: a UTS namespace with another host name, where
    // a harness holds D; here, a process with the same pid number would
    // find a claim naming host-b.
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let mut other = w
        .setup(w.sb.command("unshare"))
        .args(["--uts", "sh", "-c"])
        .arg(format!(
            "hostname host-b; ccci-lock --hold --parent $$ {D} || exit 9; echo held; read _; \
             ccci-lock --release --parent $$ {D}"
        ))
        .piped_stdin()
        .spawn();
    other.expect_stdout("held");
    let rec = claim_record(&etcd, D);
    assert_eq!(rec["host"], "host-b");
    let parent = rec["parent"].as_u64().unwrap() as u32;
    release_for(&w, parent, &[D])
        .expect_code(125)
        .expect_stderr("on host host-b");
    assert_eq!(w.try_lock(D), 75);
    other.send("");
    other.wait().expect_code(0);
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
}

#[test]
fn a_keeper_whose_lease_is_lost_exits_and_leaves_the_claim() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (h, pid) = harness(&w);
    hold_for(&w, pid, &[D]).expect_code(0);
    let keeper = claim_record(&etcd, D)["pid"].as_u64().unwrap() as u32;
    etcd.pause();
    wait_until("the keeper gives up its lost lease", || !alive(keeper));
    etcd.resume();
    assert_eq!(claim_record(&etcd, D)["parent"], pid, "the claim stays");
    wait_until("the lock is free", || w.try_lock(D) == 0);
    // The harness the lock was held for is stopped, as COMMAND would be.
    h.wait().expect_ended_by(libc::SIGTERM);
}

#[test]
fn case_26_on_etcd_held_dependencies_are_never_reaped_while_the_harness_lives() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    // The etcd settings on the command line only, not in the environment:
    // the keeper must be handed them.
    let flags = format!(
        "--etcd {} --etcd-prefix {PREFIX} --ttl {}s",
        etcd.endpoint(),
        TTL.as_secs()
    );
    let script = format!(
        "ccci-lock {flags} --hold --parent $$ {DEP} || exit 9\n\
         ccci-lock {flags} {D} -- sh -c 'echo ready; read _' || exit 8\n"
    );
    let mut h =
        w.sb.sh(&script)
            .env_remove("CCCI_ETCD_ENDPOINTS")
            .env_remove("CCCI_ETCD_PREFIX")
            .env_remove("CCCI_ETCD_TTL")
            .piped_stdin()
            .spawn();
    h.expect_stdout("ready");
    let rec = claim_record(&etcd, DEP);
    assert_eq!(rec["parent"], h.pid());
    let keeper = rec["pid"].as_u64().unwrap() as u32;

    let reap = reap_script(&w, "exit 0");
    janitor(&w, &[], &reap).run().expect_code(0);
    assert_eq!(calls(&w), Vec::<String>::new(), "a live run was reaped");

    // SIGKILL of the harness's whole process group, as a runner does: the
    // keeper is not in it and ends by itself; the claims stay.
    let status = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", h.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the keeper ends with its harness", || !alive(keeper));
    h.wait();
    wait_until("both locks are free", || lock_keys(&etcd).is_empty());
    assert_eq!(etcd.dump(&format!("{PREFIX}/claim/")).len(), 2);

    janitor(&w, &[], &reap).run().expect_code(0);
    janitor(&w, &[], &reap).run().expect_code(0);
    let mut reaped = calls(&w);
    reaped.sort();
    assert_eq!(reaped, [format!("{DEP}|{DEP}"), format!("{D}|{D}")]);
    assert_eq!(etcd.dump(PREFIX), Vec::<String>::new());
}

/// A holder with `--ttl 30s` whose COMMAND says "got TERM" on SIGTERM; its
/// lease id.
fn long_lease_holder(w: &World, etcd: &Etcd) -> (Proc, String) {
    let mut holder = w
        .lock()
        .args(["--ttl", "30s", "--lost-grace", "5s", D, "--", "sh", "-c"])
        .arg("trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done")
        .spawn();
    holder.expect_stdout("ready");
    let leases = etcd.ctl(&["lease", "list"]);
    let id = leases.lines().nth(1).expect("one lease").trim().to_string();
    (holder, id)
}

#[test]
fn a_revoked_lease_stops_command_at_once_whatever_the_ttl() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut holder, id) = long_lease_holder(&w, &etcd);
    let revoked = Instant::now();
    etcd.ctl(&["lease", "revoke", &id]);
    holder.expect_stdout("got TERM");
    let took = revoked.elapsed();
    // The next keep-alive would have noticed only at TTL/3 = 10 s.
    assert!(
        took < Duration::from_secs(5),
        "COMMAND got TERM {took:?} after the revoke"
    );
    eprintln!("revoke to TERM: {took:?}");
    holder
        .wait()
        .expect_code(125)
        .expect_stderr("lost the lock of");
    assert_eq!(etcd.dump(&claim_key(D)).len(), 1, "the claim stays");
}

#[test]
fn a_deleted_lock_key_stops_command_at_once() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut holder, _) = long_lease_holder(&w, &etcd);
    let deleted = Instant::now();
    etcd.ctl(&["del", "--prefix", &format!("{PREFIX}/lock/{D}/")]);
    holder.expect_stdout("got TERM");
    let took = deleted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "TERM {took:?} after the delete"
    );
    eprintln!("delete to TERM: {took:?}");
    holder.wait().expect_code(125);
    // A clean exit of another holder is not mistaken for a loss, and the
    // lock works again.
    w.lock()
        .args(["-w", "10s", D, "--", "true"])
        .run()
        .expect_code(0);
}

/// A COMMAND for the cluster tests: it appends "NAME start T" and
/// "NAME end T" (nanoseconds) to `log`, also when TERM stops it, says
/// "ready", and ends when the file `release-NAME` appears.
fn logged(name: &str) -> Vec<String> {
    let script = format!(
        "log() {{ echo \"$1 $(date +%s%N)\" >> log; }}; log '{name} start'; \
         trap \"log '{name} end'; exit 3\" TERM; echo ready; \
         while [ ! -e release-{name} ]; do sleep 0.05; done; log '{name} end'"
    );
    ["sh".to_string(), "-c".to_string(), script]
        .into_iter()
        .collect()
}

/// The `[start, end]` of every COMMAND in `log`, by start; panics when two
/// overlap or one has no end.
fn no_two_holders(w: &World) -> Vec<(String, u128, u128)> {
    let log = std::fs::read_to_string(w.sb.path("log")).unwrap_or_default();
    let mut starts = std::collections::HashMap::new();
    let mut runs = Vec::new();
    for line in log.lines() {
        let mut f = line.split_whitespace();
        let (name, what, t) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let t: u128 = t.parse().unwrap();
        match what {
            "start" => {
                starts.insert(name.to_string(), t);
            }
            _ => runs.push((name.to_string(), starts.remove(name).expect("a start"), t)),
        }
    }
    assert!(starts.is_empty(), "a COMMAND never ended:\n{log}");
    runs.sort_by_key(|r| r.1);
    for pair in runs.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "{} and {} held the lock at once:\n{log}",
            pair[0].0,
            pair[1].0
        );
    }
    runs
}

fn release(w: &World, name: &str) {
    std::fs::write(w.sb.path(&format!("release-{name}")), "").unwrap();
}

#[test]
fn a_cluster_whose_leader_is_killed_mid_wrap_never_has_two_holders() {
    let mut cluster = Cluster::start();
    let w = World::new(cluster.endpoints());
    let mut a = w.lock().arg(D).arg("--").args(logged("a")).spawn();
    a.expect_stdout("ready");
    let mut b = w
        .lock()
        .args(["-w", "30s", D, "--"])
        .args(logged("b"))
        .spawn();
    wait_until("b waits", || {
        etcd_keys(&cluster, &format!("{PREFIX}/lock/{D}/")) == 2
    });
    let leader = cluster.leader();
    cluster.members[leader].kill();
    // A keeps its lock across the election (etcd extends every lease when a
    // new leader takes over) or loses it (125); B waits either way.
    release(&w, "a");
    let a = a.wait();
    assert!(matches!(a.code(), 0 | 125), "{}", a.code());
    b.expect_stdout("ready");
    release(&w, "b");
    b.wait().expect_code(0);
    assert_eq!(no_two_holders(&w).len(), 2);
    // Usable after recovery, from every member.
    cluster.members[leader].restart();
    w.lock()
        .args(["-w", "10s", D, "--", "true"])
        .run()
        .expect_code(0);
}

/// How many keys are under `prefix`, asked of the members that answer.
fn etcd_keys(cluster: &Cluster, prefix: &str) -> usize {
    let live: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.healthy())
        .map(Etcd::endpoint)
        .collect();
    ccci_tests::etcd::etcdctl(&live.join(","), &["get", "--prefix", "--keys-only", prefix])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[test]
fn a_cluster_member_in_use_stopped_past_the_ttl_costs_no_lock() {
    let cluster = Cluster::start();
    let w = World::new(cluster.endpoints());
    // A TTL long enough that keep-alives reach the other members in time on
    // a loaded 2-core host: each try of a member takes a quarter of it.
    let ttl = 3 * TTL;
    let ttl_flag = format!("{}s", ttl.as_secs());
    // Member 0 is the first endpoint: the one in use.
    let mut a = w
        .lock()
        .args(["--ttl", &ttl_flag, D, "--"])
        .args(logged("a"))
        .spawn();
    a.expect_stdout("ready");
    let mut b = w
        .lock()
        .args(["--ttl", &ttl_flag, "-w", "60s", D, "--"])
        .args(logged("b"))
        .spawn();
    wait_until("b waits", || {
        etcd_keys(&cluster, &format!("{PREFIX}/lock/{D}/")) == 2
    });
    cluster.members[0].pause();
    let paused = Instant::now();
    // For two TTLs, A still holds and B still waits: A's keep-alives went
    // to the other members.
    while paused.elapsed() < 2 * ttl {
        assert!(!a.has_exited(), "{}", a.report());
        assert!(!b.has_exited(), "{}", b.report());
        // Looked at often, without taking a core from the cluster.
        std::thread::sleep(Duration::from_millis(20));
    }
    release(&w, "a");
    a.wait().expect_code(0);
    b.expect_stdout("ready");
    cluster.members[0].resume();
    release(&w, "b");
    b.wait().expect_code(0);
    assert_eq!(no_two_holders(&w).len(), 2);
    w.lock().args(["-n", D, "--", "true"]).run().expect_code(0);
}

#[test]
fn a_cluster_that_loses_its_quorum_stops_command_and_works_again_after() {
    let mut cluster = Cluster::start();
    let w = World::new(cluster.endpoints());
    let mut a = w.lock().arg(D).arg("--").args(logged("a")).spawn();
    a.expect_stdout("ready");
    cluster.members[1].pause();
    cluster.members[2].pause();
    // No quorum: nothing can be renewed; A is told to stop by its own clock.
    let lost = Instant::now();
    a.wait().expect_code(125).expect_stderr("lost the lock of");
    let took = lost.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(1),
        "stopped after {took:?}"
    );
    cluster.members[1].resume();
    cluster.members[2].resume();
    cluster.wait_healthy();
    // Usable again (once A's lease, extended by the new leader, runs out).
    let mut b = w
        .lock()
        .args(["-w", "20s", D, "--"])
        .args(logged("b"))
        .spawn();
    b.expect_stdout("ready");
    release(&w, "b");
    b.wait().expect_code(0);
    assert_eq!(no_two_holders(&w).len(), 2);
}

/// The claim of `domain` as etcd keeps it: its record's run id and the
/// number of times it was written since it was created (etcd's `version`).
fn claim_run_and_version(etcd: &Etcd, domain: &str) -> (String, i64) {
    let out = etcd.ctl(&["get", &claim_key(domain), "-w", "json"]);
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let kv = &json["kvs"][0];
    let value = base64_decode(kv["value"].as_str().expect("a claim"));
    let record: serde_json::Value = serde_json::from_slice(&value).unwrap();
    let run = record["run_id"].as_str().unwrap_or("").to_string();
    (run, kv["version"].as_i64().expect("a version"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut have = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = alphabet.iter().position(|&a| a == c).expect("base64") as u32;
        bits = bits << 6 | v;
        have += 6;
        if have >= 8 {
            have -= 8;
            out.push((bits >> have) as u8);
        }
    }
    out
}

/// A hand-off takes one write: the holder that releases writes the next
/// waiter's record into the claim in the transaction that deletes its own
/// key. The claim is then written twice since it was created (the first
/// holder's stamp, the hand-over) and names the waiter while its COMMAND
/// runs; a waiter that stamped the claim itself would find it deleted and
/// create it again (version 1).
#[test]
fn a_release_hands_the_claim_to_the_next_waiter_in_its_own_write() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut first, _) = w.hold(D, &["--run-id", "first"]);
    let mut second = w
        .lock()
        .args(["--run-id", "second", "-w", "60s", D, "--"])
        .args(["sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    wait_until("the second run queues", || lock_keys(&etcd).len() == 2);
    assert_eq!(claim_run_and_version(&etcd, D), ("first".into(), 1));
    first.send("");
    first.wait().expect_code(0);
    second.expect_stdout("ready");
    assert_eq!(claim_run_and_version(&etcd, D), ("second".into(), 2));
    second.send("");
    second.wait().expect_code(0);
    assert_eq!(
        etcd.dump(PREFIX),
        Vec::<String>::new(),
        "something was left"
    );
}

/// A waiter handed the claim of one domain that then gives up on the next
/// (`-w` ran out on a second DOMAIN) leaves no claim naming it: it was
/// never its COMMAND's, nothing ran.
#[test]
fn a_waiter_handed_a_claim_that_gives_up_leaves_nothing() {
    const E: &str = "zz-9e8d.ci.example.org";
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut first, _) = w.hold(D, &["--run-id", "first"]);
    let (mut other, _) = w.hold(E, &["--run-id", "other"]);
    let second = w
        .lock()
        .args(["--run-id", "second", "-w", "3s", D, E, "--", "touch", "ran"])
        .spawn();
    wait_until("the second run queues for D", || {
        lock_keys(&etcd)
            .iter()
            .filter(|k| k.starts_with(&format!("{PREFIX}/lock/{D}/")))
            .count()
            == 2
    });
    first.send("");
    first.wait().expect_code(0);
    second.wait().expect_code(75);
    assert!(!w.sb.path("ran").exists());
    let claims = etcd.dump(&format!("{PREFIX}/claim/"));
    assert!(
        claims.iter().all(|c| !c.contains("\"second\"")),
        "a claim names the run that gave up: {claims:?}"
    );
    assert!(
        !claims.iter().any(|c| c.starts_with(&claim_key(D))),
        "{claims:?}"
    );
    other.send("");
    other.wait().expect_code(0);
}

/// A waiter watches from now (etcd hears of a deletion at once only for a
/// watch from now), so the key before it may go between its look and its
/// watch; it looks once more when the watch is there. Without that look it
/// would sleep through its turn until the watch is renewed (5 s): here,
/// past its `-w 3`. Short wraps on one domain from four loops at once hit
/// that window often.
#[test]
fn a_waiter_whose_turn_comes_before_its_watch_is_there_still_takes_it() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let script = format!(
        "i=0; while [ $i -lt 15 ]; do \
           ccci-lock -w 3 {D} -- true || {{ echo \"wrap $i: $?\"; exit 1; }}; \
           i=$((i+1)); done"
    );
    let loops: Vec<Proc> = (0..4)
        .map(|_| w.setup(w.sb.command("sh")).args(["-c", &script]).spawn())
        .collect();
    for l in loops {
        l.wait().expect_code(0);
    }
    assert_eq!(
        etcd.dump(PREFIX),
        Vec::<String>::new(),
        "something was left"
    );
}

/// A wrap that finds nobody queued takes the lock and writes its claim in
/// one transaction: the claim is written in the revision that creates the
/// wrap's lock key (with a separate stamp, it would be a later one).
#[test]
fn a_wrap_alone_writes_its_claim_with_its_lock_key() {
    let etcd = Etcd::start();
    let w = World::on(&etcd);
    let (mut first, rev) = w.hold(D, &["--run-id", "first"]);
    let out = etcd.ctl(&["get", &claim_key(D), "-w", "json"]);
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let kv = &json["kvs"][0];
    assert_eq!(
        kv["mod_revision"].as_i64(),
        Some(rev),
        "the claim was written apart from the lock key (created at {rev}): {out}"
    );
    assert_eq!(claim_run_and_version(&etcd, D), ("first".into(), 1));
    first.send("");
    first.wait().expect_code(0);
    assert_eq!(
        etcd.dump(PREFIX),
        Vec::<String>::new(),
        "something was left"
    );
}
