//! Several hosts on one etcd (SPEC §8, docs/etcd.md "A fleet of hosts"):
//! each claim names the host whose run made it, and a janitor settles only
//! its own host's claims (and those of a host it was told to adopt).
//!
//! A "host" is a UTS namespace with a host name of its own (`unshare
//! --uts`), with a lock dir of its own, as two machines would have.

use std::path::PathBuf;

use ccci_tests::etcd::Etcd;
use ccci_tests::{Cmd, Output, Proc, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";
const PREFIX: &str = "/t";

struct World {
    sb: Sandbox,
    etcd: Etcd,
}

impl World {
    fn new() -> World {
        World {
            sb: Sandbox::new(),
            etcd: Etcd::start(),
        }
    }

    /// `argv` run on `host`, with that host's lock dir.
    fn on(&self, host: &str, argv: &[&str]) -> Cmd {
        self.sb
            .command("unshare")
            .args(["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", host])
            .args(argv)
            .env("CCCI_APP_LOCK_DIR", self.sb.path(&format!("locks-{host}")))
            .env("CCCI_ETCD_ENDPOINTS", self.etcd.endpoint())
            .env("CCCI_ETCD_PREFIX", PREFIX)
            .env("CCCI_ETCD_TTL", "2s")
    }

    /// Leaves an orphaned claim of `domain` made on `host`: its run's
    /// COMMAND is killed by a signal.
    fn orphan(&self, host: &str, domain: &str) {
        let run_id = format!("dead-{host}");
        self.on(host, &["ccci-lock"])
            .args(ccci_tests::orphaning(&run_id, domain))
            .run()
            .expect_code(143);
        assert_eq!(self.record(domain)["host"], host);
    }

    /// A run on `host` holding `domain` until it is sent a line.
    fn hold(&self, host: &str, domain: &str) -> Proc {
        let mut p = self
            .on(
                host,
                &[
                    "ccci-lock",
                    "--run-id",
                    "live-run",
                    domain,
                    "--",
                    "sh",
                    "-c",
                    "echo ready; read _",
                ],
            )
            .piped_stdin()
            .spawn();
        p.expect_stdout("ready");
        p
    }

    /// The reap script: records "HOST DOMAIN" in `calls`, then `then`.
    fn reap_script(&self, then: &str) -> PathBuf {
        let script = self.sb.path("reap.sh");
        std::fs::write(
            &script,
            format!(
                "echo \"$(hostname) $1\" >> '{}'\n{then}\n",
                self.sb.path("calls").display()
            ),
        )
        .unwrap();
        script
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.sb.path("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A janitor pass on `host` with `flags`, reaping with `script`.
    fn janitor(&self, host: &str, flags: &[&str], script: &std::path::Path) -> Cmd {
        let script = script.to_str().unwrap();
        let mut argv = vec!["ccci-janitor"];
        argv.extend_from_slice(flags);
        argv.extend_from_slice(&["--", "sh", script]);
        self.on(host, &argv)
    }

    fn claim_key(domain: &str) -> String {
        format!("{PREFIX}/claim/{domain}")
    }

    /// The claims (key=value), sorted.
    fn claims(&self) -> Vec<String> {
        self.etcd.dump(&format!("{PREFIX}/claim/"))
    }

    /// The claim record of `domain`.
    fn record(&self, domain: &str) -> serde_json::Value {
        let dump = self.etcd.dump(&Self::claim_key(domain));
        assert_eq!(dump.len(), 1, "{dump:?}");
        let (_, value) = dump[0].split_once('=').unwrap();
        serde_json::from_str(value).unwrap_or_else(|e| panic!("{e}: {value:?}"))
    }
}

/// The `--json` line of `domain`.
fn json_of(out: &Output, domain: &str) -> serde_json::Value {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["domain"] == domain)
        .unwrap_or_else(|| panic!("no --json line for {domain}: {out}"))
}

#[test]
fn a_janitor_never_deletes_another_hosts_orphan_and_that_hosts_janitor_reaps_it() {
    // The reported bug: host A's janitor, with A's deployed list (which
    // never names an app of B: each host has its own ~/.abra), deleted B's
    // orphan as stale-unlinked without a reap, and B's app stayed deployed.
    let w = World::new();
    w.orphan("host-b", D);
    let script = w.reap_script("exit 0");
    let a = w
        .janitor(
            "host-a",
            &["--deployed", "-", "--only", "*", "--json"],
            &script,
        )
        .stdin_bytes("# abra app ls on host-a: nothing of host-b\n")
        .run();
    a.expect_code(0);
    let line = json_of(&a, D);
    assert_eq!(line["outcome"], "foreign", "{a}");
    assert_eq!(line["run_id"], "dead-host-b");
    assert!(
        line["detail"].as_str().unwrap().contains("host-b")
            && line["detail"]
                .as_str()
                .unwrap()
                .contains("; left for host 'host-b''s janitor, which has its apps; not touched"),
        "{line}"
    );
    assert!(w.calls().is_empty(), "host-a reaped: {:?}", w.calls());
    let rec = w.record(D);
    assert_eq!(rec["host"], "host-b", "the claim was rewritten: {rec}");
    assert_eq!(rec["run_id"], "dead-host-b");

    // Host B's janitor, whose list names the app, reaps it.
    let b = w
        .janitor("host-b", &["--deployed", "-", "--only", "*"], &script)
        .stdin_bytes(format!("{D}\n"))
        .run();
    b.expect_code(0).expect_stderr(&format!("{D}: reaped"));
    assert_eq!(w.calls(), [format!("host-b {D}")]);
    assert_eq!(w.claims(), Vec::<String>::new(), "{b}");
}

#[test]
fn a_hosts_own_orphan_that_it_did_not_deploy_is_still_unlinked_by_its_janitor() {
    // Rule 2 of SPEC §4 is unchanged for a host's own claims: not in its
    // deployed list, no app to reap.
    let w = World::new();
    w.orphan("host-b", D);
    let script = w.reap_script("exit 0");
    let b = w
        .janitor(
            "host-b",
            &["--deployed", "-", "--only", "*", "--json"],
            &script,
        )
        .stdin_bytes("other.example\n")
        .run();
    b.expect_code(0);
    assert_eq!(json_of(&b, D)["outcome"], "stale-unlinked", "{b}");
    // The deployed domain without a claim is reaped at once (rule 3).
    assert_eq!(w.calls(), ["host-b other.example"]);
    assert_eq!(w.claims(), Vec::<String>::new());
}

/// `secs` ago, RFC 3339 to the second (`date -u -d @…`).
fn rfc3339_ago(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-d"])
        .arg(format!("@{}", now - secs))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// etcd's current revision.
fn revision(etcd: &Etcd) -> i64 {
    let out = etcd.ctl(&["get", "--write-out=json", "x"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

/// Every lock key etcd had under `PREFIX/lock/<domain>/` at any revision
/// from `from` to now: etcd keeps them all (no compaction in a test).
fn lock_keys_ever(etcd: &Etcd, domain: &str, from: i64) -> Vec<String> {
    let mut keys = Vec::new();
    for rev in from..=revision(etcd) {
        let out = etcd.ctl(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("--rev={rev}"),
            &format!("{PREFIX}/lock/{domain}/"),
        ]);
        keys.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    keys
}

#[test]
fn other_hosts_claims_are_only_read_and_an_old_orphan_is_said_out_loud() {
    let w = World::new();
    w.orphan("host-b", D);
    // Host C's orphan, three hours old: host C's janitor does not run.
    let old = format!(
        "{{\"pid\":4242,\"run_id\":\"old-c\",\"since\":\"{}\",\"host\":\"host-c\"}}",
        rfc3339_ago(3 * 3600)
    );
    w.etcd.ctl(&["put", &World::claim_key("c.example"), &old]);
    let mut live = w.hold("host-b", "live.example");
    let claims = w.claims();
    let before = revision(&w.etcd);
    let script = w.reap_script("exit 0");
    let a = w.janitor("host-a", &["--json"], &script).run();
    a.expect_code(0);
    assert_eq!(json_of(&a, D)["outcome"], "foreign", "{a}");
    assert_eq!(json_of(&a, "live.example")["outcome"], "live", "{a}");
    let c = json_of(&a, "c.example");
    assert_eq!(c["outcome"], "foreign");
    assert_eq!(c["run_id"], "old-c");
    assert!(c["age_s"].as_u64().unwrap() >= 3 * 3600 - 60, "{c}");
    // Without -v: host B's fresh orphan is its own janitor's business; the
    // old one of host C is a warning naming what to do.
    let said: Vec<&str> = a.stderr.lines().collect();
    assert!(
        said.iter().any(|l| l.contains("c.example: foreign")
            && l.contains("--adopt-host 'host-c'")
            && l.contains("is it running? If host 'host-c' is gone for good, a janitor")),
        "{a}"
    );
    assert!(!a.stderr.contains(D), "{a}");
    assert!(
        a.stderr.contains("1 live, ") && a.stderr.contains("2 foreign"),
        "{a}"
    );
    // Nothing was written for them: no lock key queued at any revision, no
    // claim changed.
    for d in [D, "c.example"] {
        assert_eq!(lock_keys_ever(&w.etcd, d, before), Vec::<String>::new());
    }
    assert_eq!(w.claims(), claims);
    assert!(w.calls().is_empty(), "{:?}", w.calls());
    live.send("");
    live.wait().expect_code(0);
}

#[test]
fn adopt_host_reaps_a_gone_hosts_orphans_whatever_this_hosts_list_says() {
    let w = World::new();
    w.orphan("host-b", D);
    w.orphan("host-b", "b2.example");
    w.orphan("host-c", "c.example");
    // The reap records the claim as it is while the reap runs; b2's fails.
    let records = w.sb.path("records");
    let script = w.reap_script(&format!(
        "etcdctl --endpoints \"$CCCI_ETCD_ENDPOINTS\" get --print-value-only '{PREFIX}/claim/'\"$1\" >> '{}'\n\
         test \"$1\" != b2.example",
        records.display()
    ));
    let a = w
        .janitor(
            "host-a",
            &[
                "--adopt-host",
                "host-b",
                "--deployed",
                "-",
                "--only",
                "*",
                "--json",
            ],
            &script,
        )
        .stdin_bytes("# abra app ls on host-a\n")
        .run();
    a.expect_code(1);
    assert_eq!(json_of(&a, D)["outcome"], "reaped", "{a}");
    assert_eq!(json_of(&a, "b2.example")["outcome"], "failed", "{a}");
    assert_eq!(json_of(&a, "c.example")["outcome"], "foreign", "{a}");
    assert_eq!(
        w.calls(),
        ["host-a b2.example".to_string(), format!("host-a {D}")]
    );
    // While reaped, each claim named the adopted host, with the janitor's
    // own record.
    let seen = std::fs::read_to_string(&records).unwrap();
    let seen: Vec<serde_json::Value> = seen
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for rec in &seen {
        assert_eq!(rec["host"], "host-b", "{rec}");
        assert_eq!(rec["reaper"], true, "{rec}");
    }
    // The failed one keeps host B's run's record, for the next pass.
    let kept = w.record("b2.example");
    assert_eq!(kept["host"], "host-b");
    assert_eq!(kept["run_id"], "dead-host-b");
    assert_eq!(w.record("c.example")["host"], "host-c");
    assert_eq!(w.claims().len(), 2, "{:?}", w.claims());
}

#[test]
fn a_claim_that_names_no_host_is_never_reaped_or_deleted() {
    let w = World::new();
    // Written before claims named their host, or by hand.
    let old = format!(
        "{{\"pid\":4242,\"run_id\":\"old-run\",\"since\":\"{}\"}}",
        rfc3339_ago(3600)
    );
    w.etcd.ctl(&["put", &World::claim_key(D), &old]);
    w.etcd
        .ctl(&["put", &World::claim_key("e.example"), "not a record"]);
    let claims = w.claims();
    let before = revision(&w.etcd);
    let script = w.reap_script("exit 0");
    // Even a host whose list names it, and that adopts a host, leaves it.
    let a = w
        .janitor(
            "host-a",
            &[
                "--deployed",
                "-",
                "--only",
                "*",
                "--adopt-host",
                "host-b",
                "--json",
            ],
            &script,
        )
        .stdin_bytes(format!("{D}\ne.example\n"))
        .run();
    a.expect_code(0);
    for d in [D, "e.example"] {
        assert_eq!(json_of(&a, d)["outcome"], "foreign", "{a}");
        assert!(
            a.stderr
                .lines()
                .any(|l| l.contains(&format!("{d}: foreign"))
                    && l.contains("names no host")
                    && l.contains("whose app it is; not touched: reap it on the host")),
            "{a}"
        );
        assert_eq!(lock_keys_ever(&w.etcd, d, before), Vec::<String>::new());
    }
    assert!(w.calls().is_empty(), "{:?}", w.calls());
    assert_eq!(w.claims(), claims);
}

#[test]
fn passes_of_two_hosts_run_at_once_and_two_of_one_host_do_not() {
    let w = World::new();
    w.orphan("host-a", D);
    w.orphan("host-b", "b.example");
    let fifo = w.sb.path("release");
    ccci_tests::mkfifo(&fifo);
    let script = w.reap_script(&format!(
        "if [ \"$1\" = {D} ]; then echo \"reaping-$1\"; read _ < '{}'; fi",
        fifo.display()
    ));
    let mut slow = w.janitor("host-a", &[], &script).spawn();
    slow.expect_stderr(&format!("reaping-{D}"));
    // Host B's pass is not kept waiting by host A's.
    w.janitor("host-b", &[], &script)
        .run()
        .expect_code(0)
        .expect_stderr("b.example: reaped");
    // A second pass of host A examines nothing.
    let again = w.janitor("host-a", &["--json"], &script).run();
    again
        .expect_code(0)
        .expect_stderr("another janitor pass is running");
    assert_eq!(again.stdout, "", "{again}");
    std::fs::write(&fifo, "go\n").unwrap();
    slow.wait()
        .expect_code(0)
        .expect_stderr(&format!("{D}: reaped"));
    assert_eq!(
        w.calls(),
        [format!("host-a {D}"), "host-b b.example".to_string()]
    );
    assert_eq!(w.claims(), Vec::<String>::new());
}

#[test]
fn bad_adopt_host_values_are_status_2_and_nothing_is_made() {
    let w = World::new();
    let script = w.reap_script("exit 0");
    for (value, quoted) in [("", "''"), ("a b", "'a b'"), ("a/b", "'a/b'")] {
        w.janitor("host-a", &["--adopt-host", value], &script)
            .run()
            .expect_code(2)
            .expect_stderr(quoted)
            .expect_stderr("--adopt-host");
    }
    let long = "h".repeat(65);
    w.janitor("host-a", &["--adopt-host", &long], &script)
        .run()
        .expect_code(2)
        .expect_stderr(&long);
    // Lockfiles are one host's: --adopt-host needs etcd.
    w.sb.tool("ccci-janitor")
        .args(["--adopt-host", "host-b", "--", "true"])
        .run()
        .expect_code(2)
        .expect_stderr("--adopt-host needs --etcd");
    assert!(!w.sb.lock_dir().exists());
    assert!(!w.sb.path("locks-host-a").exists());
    assert_eq!(w.etcd.dump(PREFIX), Vec::<String>::new());
    assert!(w.calls().is_empty());
}

#[test]
fn a_janitor_whose_host_name_cannot_name_its_claims_refuses_with_125() {
    let w = World::new();
    w.orphan("host-b", D);
    let claims = w.claims();
    let script = w.reap_script("exit 0");
    // A host name with a blank (the kernel takes any bytes).
    w.sb.command("unshare")
        .args(["--uts", "sh", "-c"])
        .arg(format!(
            "printf 'a b' > /proc/sys/kernel/hostname && exec ccci-janitor -- sh '{}'",
            script.display()
        ))
        .env("CCCI_ETCD_ENDPOINTS", w.etcd.endpoint())
        .env("CCCI_ETCD_PREFIX", PREFIX)
        .run()
        .expect_code(125)
        .expect_stderr("this host's name 'a b'")
        .expect_stderr("nothing reaped");
    assert_eq!(w.claims(), claims);
    assert!(w.calls().is_empty());
}
