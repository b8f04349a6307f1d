//! Adoption on a real server (SPEC §9): the abra reaper, the janitor pass
//! from cron and systemd, and the units `make install` fills in, against the
//! stub `abra` of the harness (abra's documented command line, state in
//! files, undocumented flags refused).

use std::path::{Path, PathBuf};

use ccci_tests::{Output, Sandbox};

fn contrib(script: &str) -> PathBuf {
    ccci_tests::workspace_root().join("contrib").join(script)
}

/// `abra app new` + `abra app deploy` of `domain` on the stub.
fn deploy(sb: &Sandbox, domain: &str) {
    sb.command("abra")
        .args(["app", "new", "wordpress", "--server", "ci.example.org"])
        .args(["--domain", domain, "--no-input"])
        .run()
        .expect_code(0);
    sb.command("abra")
        .args(["app", "deploy", domain, "--no-input"])
        .run()
        .expect_code(0);
}

/// The domains `abra app ls` lists.
fn listed(sb: &Sandbox) -> String {
    let out = sb.command("abra").args(["app", "ls"]).run();
    out.expect_code(0);
    out.stdout
}

fn reap(sb: &Sandbox, domain: &str) -> Output {
    sb.command(contrib("ccci-reap-abra"))
        .arg(domain)
        .env("CCCI_REAP_POLL", "0")
        .run()
}

fn calls(swarm: &Path) -> String {
    std::fs::read_to_string(swarm.join("calls")).unwrap_or_default()
}

#[test]
fn case_30_reap_abra_undeploys_waits_and_removes_the_app() {
    let sb = Sandbox::new();
    let swarm = sb.install_abra_stub();
    let app = "wp-3f2a01.ci.example.org";
    deploy(&sb, app);
    deploy(&sb, "traefik.ci.example.org");
    assert!(swarm.join(format!("{app}.volume")).exists());

    let out = reap(&sb, app);
    out.expect_code(0).expect_stderr("undeployed and removed");
    let log = calls(&swarm);
    let undeploy = log
        .find(&format!("app undeploy {app}"))
        .expect("undeployed");
    let remove = log.find(&format!("app remove {app}")).expect("removed");
    assert!(undeploy < remove, "undeploy before remove\n{log}");
    // It waited for the stack to go: status checks between the two calls
    // (the stub's stack converges after two of them).
    assert!(
        log[undeploy..remove].matches("app ls").count() >= 3,
        "no wait for the services to go\n{log}"
    );
    for gone in ["volume", "secret", "stack"] {
        assert!(
            !swarm.join(format!("{app}.{gone}")).exists(),
            "{gone} left\n{out}"
        );
    }
    let apps = listed(&sb);
    assert!(!apps.contains(app), "still listed\n{apps}");
    assert!(
        apps.contains("traefik.ci.example.org"),
        "the proxy went too\n{apps}"
    );
    assert!(swarm.join("traefik.ci.example.org.stack").exists());
}

#[test]
fn case_30_reap_abra_is_idempotent_on_an_app_already_gone() {
    let sb = Sandbox::new();
    let swarm = sb.install_abra_stub();
    let app = "wp-3f2a02.ci.example.org";
    deploy(&sb, app);
    reap(&sb, app).expect_code(0);
    let before = calls(&swarm);
    reap(&sb, app)
        .expect_code(0)
        .expect_stderr("nothing to reap");
    let again = &calls(&swarm)[before.len()..];
    assert!(
        !again.contains("undeploy") && !again.contains("remove"),
        "a second reap touched the app\n{again}"
    );
    // Never deployed at all, or undeployed but not removed: both end gone.
    reap(&sb, "nc-000000.ci.example.org").expect_code(0);
    sb.command("abra")
        .args(["app", "new", "nextcloud", "-s", "ci.example.org"])
        .args(["-D", "nc-000001.ci.example.org", "-n"])
        .run()
        .expect_code(0);
    reap(&sb, "nc-000001.ci.example.org").expect_code(0);
    assert!(!listed(&sb).contains("nc-000001"));
}

#[test]
fn case_30_reap_abra_fails_loudly_when_abra_fails_and_the_janitor_keeps_the_claim() {
    let sb = Sandbox::new();
    let swarm = sb.install_abra_stub();
    let app = "wp-3f2a03.ci.example.org";
    deploy(&sb, app);
    // A run that died by a signal leaves its lockfile: the claim.
    sb.tool("ccci-lock")
        .args([app, "--", "sh", "-c", "kill -KILL $$"])
        .run()
        .expect_code(137);
    assert!(sb.lockfile(app).exists());

    for (fail, code) in [("fail-ls", 1), ("fail-undeploy", 1), ("fail-remove", 1)] {
        std::fs::write(swarm.join(fail), "").unwrap();
        let out = reap(&sb, app);
        out.expect_code(code)
            .expect_stderr("failed")
            .expect_stderr("cannot reach the server");
        std::fs::remove_file(swarm.join(fail)).unwrap();
    }
    // The undeploy went through on the last try; now remove fails under a janitor.
    std::fs::write(swarm.join("fail-remove"), "").unwrap();
    let pass = || {
        sb.tool("ccci-janitor")
            .arg("--")
            .arg(contrib("ccci-reap-abra"))
            .env("CCCI_REAP_POLL", "0")
            .run()
    };
    let out = pass();
    out.expect_code(1);
    assert!(sb.lockfile(app).exists(), "the claim was dropped\n{out}");
    assert!(listed(&sb).contains(app));

    std::fs::remove_file(swarm.join("fail-remove")).unwrap();
    let out = pass();
    out.expect_code(0);
    assert!(!sb.lockfile(app).exists(), "reaped, claim kept\n{out}");
    assert!(!listed(&sb).contains(app));
}

#[test]
fn case_30_reap_abra_is_bounded_and_refuses_bad_input() {
    let sb = Sandbox::new();
    sb.install_abra_stub();
    let app = "wp-3f2a04.ci.example.org";
    deploy(&sb, app);
    // A stack that never goes: the wait ends, loudly.
    let out = sb
        .command(contrib("ccci-reap-abra"))
        .arg(app)
        .env("ABRA_STUB_CONVERGE", "1000000")
        .env("CCCI_REAP_WAIT", "1")
        .env("CCCI_REAP_POLL", "1")
        .run();
    out.expect_code(1).expect_stderr("still deployed");
    assert!(listed(&sb).contains(app), "removed while deployed\n{out}");

    for bad in ["", "-rf", "a b", "../x", "x/y", "wp.ci\r"] {
        let out = reap(&sb, bad);
        out.expect_code(2).expect_stderr("not a valid domain");
    }
    sb.command(contrib("ccci-reap-abra"))
        .run()
        .expect_code(2)
        .expect_stderr("usage");
    sb.command(contrib("ccci-reap-abra"))
        .arg(app)
        .env("CCCI_ABRA", "no-such-abra")
        .run()
        .expect_code(125)
        .expect_stderr("'no-such-abra' not found");
}

#[test]
fn the_stub_abra_refuses_undocumented_flags() {
    let sb = Sandbox::new();
    sb.install_abra_stub();
    for args in [
        &["app", "ls", "--volumes"][..],
        &["app", "remove", "x.example.org", "--volumes"],
        &["app", "undeploy", "x.example.org", "--force"],
        &["app", "destroy", "x.example.org"],
    ] {
        sb.command("abra").args(args).run().expect_code(1);
    }
}
