//! SPEC §7 case 34 (operators): `ccci-janitor --check` holds on a good
//! setup and names each broken part with 125; every pass ends with a
//! summary line; `--metrics` is accepted by `promtool check metrics`; under
//! the journal, warnings carry `<4>`.

use std::path::{Path, PathBuf};

use ccci_tests::etcd::Etcd;
use ccci_tests::{Cmd, Proc, Sandbox};

const D: &str = "word-3f2a01.ci.example.org";
const ONLY: &str = "????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org";

fn reap_script(sb: &Sandbox) -> PathBuf {
    let script = sb.path("reap.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// A configuration file of mode 0600 with `text`.
fn config(sb: &Sandbox, text: &str) -> PathBuf {
    let path = sb.path("ccci.conf");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn make_lock_dir(sb: &Sandbox) {
    std::fs::create_dir_all(sb.lock_dir()).unwrap();
    std::fs::set_permissions(
        sb.lock_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
}

fn check(sb: &Sandbox, conf: &Path, flags: &[&str], reap: &Path) -> Cmd {
    sb.tool("ccci-janitor")
        .arg("--config")
        .arg(conf)
        .arg("--check")
        .args(flags)
        .arg("--")
        .arg(reap)
}

fn hold(sb: &Sandbox, env: &[(&str, String)]) -> Proc {
    let mut cmd = sb
        .tool("ccci-lock")
        .args([D, "--", "sh", "-c", "echo ready; read _"])
        .piped_stdin();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let mut p = cmd.spawn();
    p.expect_stdout("ready");
    p
}

#[test]
fn case_34_check_holds_on_a_good_setup_and_shows_where_each_value_comes_from() {
    let sb = Sandbox::new();
    make_lock_dir(&sb);
    let reap = reap_script(&sb);
    let conf = config(&sb, &format!("CCCI_ONLY='{ONLY}'\nCCCI_WARM='warm-*'\n"));
    let deployed = sb.path("deployed");
    std::fs::write(
        &deployed,
        format!("{D}\ntraefik.ci.example.org\nwarm-wordpress.ci.example.org\n"),
    )
    .unwrap();
    let deployed_flag = format!("--deployed={}", deployed.display());
    let out = check(&sb, &conf, &[&deployed_flag], &reap).run();
    out.expect_code(0)
        .expect_stdout(&format!("CCCI_ONLY='{ONLY}'  ({}:1)", conf.display()))
        .expect_stdout(&format!(
            "CCCI_APP_LOCK_DIR={}  (env)",
            sb.lock_dir().display()
        ))
        .expect_stdout(&format!("CI apps (candidates): {D}"))
        .expect_stdout("warm (protected): warm-wordpress.ci.example.org")
        .expect_stdout("not CI apps (never touched): traefik.ci.example.org")
        .expect_stdout("ok: REAP_COMMAND");
    assert!(!out.stdout.contains("FAILED"), "{out}");
    // A flag is named as the origin.
    let flagged = check(&sb, &conf, &["--lock-dir", "/nonexistent/ccci"], &reap).run();
    flagged.expect_stdout("CCCI_APP_LOCK_DIR=/nonexistent/ccci  (flag)");
    // --json is one object.
    let json = check(&sb, &conf, &["--json"], &reap).run();
    json.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(report["ok"], true, "{json}");
    assert!(report["checks"].as_array().unwrap().len() >= 4);
    // Nothing was created or taken: the lock dir holds no pass lock.
    assert!(ccci_tests::lock_dir_entries(&sb.lock_dir()).is_empty());
}

#[test]
fn case_34_check_names_each_broken_part_with_125() {
    let sb = Sandbox::new();
    let reap = reap_script(&sb);
    let good = config(&sb, &format!("CCCI_ONLY='{ONLY}'\n"));

    // The lock dir is missing (on a disk).
    let out = check(&sb, &good, &[], &reap).run();
    out.expect_code(125)
        .expect_stdout("FAILED: lock dir")
        .expect_stderr("check failed: lock dir");
    make_lock_dir(&sb);
    check(&sb, &good, &[], &reap).run().expect_code(0);

    // A group-writable configuration file: reported, not fatal to the others.
    std::fs::set_permissions(&good, std::os::unix::fs::PermissionsExt::from_mode(0o620)).unwrap();
    let out = check(&sb, &good, &[], &reap).run();
    out.expect_code(125)
        .expect_stdout("FAILED: configuration file")
        .expect_stdout("writable by group or others")
        .expect_stdout("ok: lock dir");
    std::fs::set_permissions(&good, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // REAP_COMMAND missing.
    check(&sb, &good, &[], Path::new("/nonexistent/reap"))
        .run()
        .expect_code(125)
        .expect_stdout("FAILED: REAP_COMMAND: '/nonexistent/reap': not found");

    // Unreachable etcd (a port nobody listens on).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etcd_flag = format!("--etcd=http://127.0.0.1:{port}");
    check(&sb, &good, &[&etcd_flag], &reap)
        .run()
        .expect_code(125)
        .expect_stdout("FAILED: etcd");

    // Runs of this host claim on etcd, the janitor looks at files.
    let etcd = Etcd::start();
    let mut live = hold(&sb, &[("CCCI_ETCD_ENDPOINTS", etcd.endpoint())]);
    check(&sb, &good, &[], &reap)
        .run()
        .expect_code(125)
        .expect_stdout("FAILED: where the runs claim")
        .expect_stdout(&format!("on etcd at {}", etcd.endpoint()));
    // Pointed there, it holds.
    let etcd_flag = format!("--etcd={}", etcd.endpoint());
    check(&sb, &good, &[&etcd_flag], &reap)
        .run()
        .expect_code(0)
        .expect_stdout("ok: etcd");
    live.send("");
    live.wait().expect_code(0);
}

#[test]
fn case_34_every_pass_ends_with_a_summary_line_also_one_that_fails() {
    let sb = Sandbox::new();
    let reap = reap_script(&sb);
    let janitor = |sb: &Sandbox| {
        sb.tool("ccci-janitor")
            .args(["--deployed", "-", "--only", "*", "--"])
            .arg(&reap)
    };
    // Missing lock dir on a disk: 125, and still a summary.
    let out = janitor(&sb).stdin_bytes("").run();
    out.expect_code(125)
        .expect_stderr("pass done: 0 reaped, 0 would-reap, 0 live")
        .expect_stderr("; status 125");
    make_lock_dir(&sb);
    // Nothing found.
    janitor(&sb)
        .stdin_bytes("")
        .run()
        .expect_code(0)
        .expect_stderr("pass done: 0 reaped")
        .expect_stderr(&format!("lockfiles in {}", sb.lock_dir().display()));
    // One reaped.
    janitor(&sb)
        .stdin_bytes(format!("{D}\n"))
        .run()
        .expect_code(0)
        .expect_stderr("pass done: 1 reaped, 0 would-reap");
}

#[test]
fn case_34_metrics_are_accepted_by_promtool_also_after_a_failed_pass() {
    let sb = Sandbox::new();
    let reap = reap_script(&sb);
    let dir = sb.path("metrics");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let file = dir.join("ccci-janitor.prom");
    let pass = |sb: &Sandbox, input: &str| {
        sb.tool("ccci-janitor")
            .arg(format!("--metrics={}", file.display()))
            .args(["--deployed", "-", "--only", "*", "--"])
            .arg(&reap)
            .stdin_bytes(input.to_string())
            .run()
    };
    let promtool = |sb: &Sandbox| {
        let out = sb
            .command("promtool")
            .args(["check", "metrics"])
            .stdin_bytes(std::fs::read(&file).unwrap())
            .run();
        out.expect_code(0);
        std::fs::read_to_string(&file).unwrap()
    };
    // A failed pass (missing lock dir): written, success 0.
    pass(&sb, "").expect_code(125);
    let text = promtool(&sb);
    assert!(
        text.contains("ccci_janitor_last_pass_success 0\n"),
        "{text}"
    );
    make_lock_dir(&sb);
    pass(&sb, &format!("{D}\n")).expect_code(0);
    let text = promtool(&sb);
    assert!(
        text.contains("ccci_janitor_last_pass_success 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ccci_janitor_domains{outcome=\"reaped\"} 1\n"),
        "{text}"
    );
    for outcome in [
        "reaped",
        "would-reap",
        "live",
        "leaked",
        "stale-unlinked",
        "young",
        "skipped",
        "failed",
    ] {
        assert!(
            text.contains(&format!("outcome=\"{outcome}\"")),
            "{outcome}"
        );
    }
    assert!(text.contains("ccci_janitor_reaps_failed 0\n"));
    // Replaced whole: no temporary is left beside it.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    // Not a .prom file: node_exporter would never read it.
    sb.tool("ccci-janitor")
        .arg(format!("--metrics={}", dir.join("m.txt").display()))
        .args(["--", "true"])
        .run()
        .expect_code(2)
        .expect_stderr(".prom");
}

#[test]
fn case_34_under_the_journal_warnings_carry_priority_4_and_actions_6() {
    let sb = Sandbox::new();
    let reap = reap_script(&sb);
    let mut holder = hold(&sb, &[]);
    sb.command("touch")
        .args(["-d", "3 hours ago"])
        .arg(sb.lockfile(D))
        .run()
        .expect_code(0);
    // JOURNAL_STREAM names the stderr the janitor gets, as systemd sets it.
    let out = sb
        .sh(&format!(
            "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec ccci-janitor -- '{}'",
            reap.display()
        ))
        .run();
    out.expect_code(0);
    let leak = out
        .stderr
        .lines()
        .find(|l| l.contains("possible leaked run"))
        .unwrap_or_else(|| panic!("no leak warning\n{out}"));
    assert!(leak.starts_with("<4>ccci-janitor: "), "{leak}");
    let summary = out
        .stderr
        .lines()
        .find(|l| l.contains("pass done"))
        .unwrap();
    assert!(summary.starts_with("<6>ccci-janitor: "), "{summary}");
    for line in out.stderr.lines() {
        assert!(line.starts_with('<'), "a line without a priority: {line}");
        assert!(
            !line.as_bytes()[1..].starts_with(b"20"),
            "a journal line stamped: {line}"
        );
    }
    // Not the journal: stamped, no priority.
    let out = sb
        .tool("ccci-janitor")
        .env("JOURNAL_STREAM", "1:1")
        .arg("--")
        .arg(&reap)
        .run();
    assert!(out.stderr.lines().all(|l| l.starts_with("20")), "{out}");
    holder.send("");
    holder.wait().expect_code(0);
}

/// `--check` reads the janitor's record of the lock dir: a lock dir that a
/// pass used and that was then replaced, with no reboot since, is a broken
/// part (every pass would refuse, 125), said with the way out; `--check`
/// itself writes no record.
#[test]
fn case_34_check_names_a_lock_dir_replaced_since_the_last_pass() {
    let sb = Sandbox::new();
    let reap = reap_script(&sb);
    let good = config(&sb, &format!("CCCI_ONLY='{ONLY}'\n"));
    make_lock_dir(&sb);
    let mut record_dir = sb.lock_dir().into_os_string();
    record_dir.push(".janitor");
    let record_dir = PathBuf::from(record_dir);
    let out = check(&sb, &good, &[], &reap).run();
    out.expect_code(0)
        .expect_stdout("ok: lock dir record: no pass has recorded the lock dir yet");
    assert!(!record_dir.exists(), "--check wrote a record");
    // A pass records the lock dir.
    sb.tool("ccci-janitor")
        .arg("--config")
        .arg(&good)
        .arg("--")
        .arg(&reap)
        .run()
        .expect_code(0);
    check(&sb, &good, &[], &reap)
        .run()
        .expect_code(0)
        .expect_stdout("names the lock dir the last pass used, in this boot");
    // Replaced by hand.
    std::fs::remove_dir(sb.lock_dir()).unwrap();
    make_lock_dir(&sb);
    check(&sb, &good, &[], &reap)
        .run()
        .expect_code(125)
        .expect_stdout("FAILED: lock dir record")
        .expect_stdout("is not the directory an earlier pass used");
}
