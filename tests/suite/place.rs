//! SPEC §4 "The janitor looks where the runs claim" and §7 case 32: a
//! janitor that looks at another backend or etcd prefix than the runs of
//! its host refuses the whole pass (125) and reaps nothing, whatever the
//! order of events; one that looks in the right place proceeds.

use std::path::{Path, PathBuf};

use ccci_tests::etcd::Etcd;
use ccci_tests::{Cmd, Proc, Sandbox};

const D: &str = "wp-3f2a9c.ci.example.org";

/// A reap script that appends `reap-start DOMAIN` and `reap-end DOMAIN`
/// to `log` around a short pause, so an overlap with a run shows.
fn reap_script(sb: &Sandbox, log: &Path) -> PathBuf {
    let script = sb.path("reap.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"reap-start $1\" >> '{l}'\nsleep 0.05\necho \"reap-end $1\" >> '{l}'\n",
            l = log.display()
        ),
    )
    .unwrap();
    script
}

/// `ccci-janitor --deployed - --only '*' -- sh SCRIPT`, with `domains` on stdin.
fn janitor(sb: &Sandbox, script: &Path, domains: &[&str]) -> Cmd {
    janitor_with(sb, &[], script, domains)
}

fn janitor_with(sb: &Sandbox, flags: &[&str], script: &Path, domains: &[&str]) -> Cmd {
    sb.tool("ccci-janitor")
        .args(flags)
        .args(["--deployed", "-", "--only", "*", "--", "sh"])
        .arg(script)
        .stdin_bytes(domains.join("\n") + "\n")
}

fn on_etcd(cmd: Cmd, etcd: &Etcd, prefix: &str) -> Cmd {
    cmd.env("CCCI_ETCD_ENDPOINTS", etcd.endpoint())
        .env("CCCI_ETCD_PREFIX", prefix)
}

/// A run holding D until it reads a line.
fn run(sb: &Sandbox, etcd: Option<(&Etcd, &str)>) -> Proc {
    let cmd = sb
        .tool("ccci-lock")
        .args([D, "--", "sh", "-c", "echo running; read _"])
        .piped_stdin();
    let cmd = match etcd {
        Some((etcd, prefix)) => on_etcd(cmd, etcd, prefix),
        None => cmd,
    };
    let mut p = cmd.spawn();
    p.expect_stdout("running");
    p
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn case_32_runs_on_etcd_and_a_janitor_on_files_refuses_and_reaps_nothing() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let log = sb.path("log");
    let script = reap_script(&sb, &log);
    let mut live = run(&sb, Some((&etcd, "/ccci")));
    let out = janitor(&sb, &script, &[D]).run();
    out.expect_code(125)
        .expect_stderr("refusing the pass")
        .expect_stderr(&format!("on etcd at {} under /ccci", etcd.endpoint()))
        .expect_stderr("CCCI_ETCD_ENDPOINTS=");
    assert_eq!(log_of(&log), "", "a live app was reaped");
    // The same janitor pointed at the runs' place sees D live.
    let out = on_etcd(janitor_with(&sb, &["-v"], &script, &[D]), &etcd, "/ccci").run();
    out.expect_code(0).expect_stderr(&format!("{D}: live"));
    assert_eq!(log_of(&log), "");
    live.send("");
    live.wait().expect_code(0);
}

#[test]
fn case_32_runs_on_files_and_a_janitor_on_etcd_refuses_and_reaps_nothing() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let log = sb.path("log");
    let script = reap_script(&sb, &log);
    let mut live = run(&sb, None);
    let out = on_etcd(janitor(&sb, &script, &[D]), &etcd, "/ccci").run();
    out.expect_code(125)
        .expect_stderr("refusing the pass")
        .expect_stderr("runs of this host claim in lockfiles of this lock dir");
    assert_eq!(log_of(&log), "", "a live app was reaped");
    assert_eq!(etcd.dump("/ccci/claim"), Vec::<String>::new());
    live.send("");
    live.wait().expect_code(0);
}

#[test]
fn case_32_a_janitor_on_another_etcd_prefix_refuses_and_reaps_nothing() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let log = sb.path("log");
    let script = reap_script(&sb, &log);
    let mut live = run(&sb, Some((&etcd, "/runs")));
    let out = on_etcd(janitor(&sb, &script, &[D]), &etcd, "/other").run();
    out.expect_code(125)
        .expect_stderr("under /runs")
        .expect_stderr("CCCI_ETCD_PREFIX=/runs");
    assert_eq!(log_of(&log), "");
    live.send("");
    live.wait().expect_code(0);
}

/// Many runs starting on etcd, each in a new lock dir (so each must write
/// the record first), against janitor passes on files started at the same
/// moment over a deployed list naming the run's domain: a pass either
/// refuses, or reaps before the run's COMMAND starts, never while it runs.
#[test]
fn case_32_runs_starting_while_passes_start_never_overlap_a_reap() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    let log = sb.path("log");
    let script = reap_script(&sb, &log);
    let (mut refused, mut reaped) = (0, 0);
    for i in 0..40 {
        let lock_dir = sb.path(&format!("locks-{i}"));
        let domain = format!("wp-{i:06x}.ci.example.org");
        // It exists (a missing one on disk would fail the pass for that
        // alone), and holds no record yet.
        std::fs::create_dir(&lock_dir).unwrap();
        std::fs::set_permissions(
            &lock_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let run = on_etcd(sb.tool("ccci-lock"), &etcd, &format!("/loop{i}"))
            .env("CCCI_APP_LOCK_DIR", &lock_dir)
            .args([domain.as_str(), "--", "sh", "-c"])
            .arg(format!(
                "echo \"run-start $CCCI_LOCK_DOMAIN\" >> '{l}'; sleep 0.05; \
                 echo \"run-end $CCCI_LOCK_DOMAIN\" >> '{l}'",
                l = log.display()
            ))
            .spawn();
        let pass = janitor(&sb, &script, &[&domain])
            .env("CCCI_APP_LOCK_DIR", &lock_dir)
            .spawn();
        let pass = pass.wait();
        run.wait().expect_code(0);
        match pass.code() {
            125 => {
                pass.expect_stderr("refusing the pass");
                refused += 1
            }
            0 => reaped += 1,
            other => panic!("pass {i} ended with {other}: {pass}"),
        }
    }
    // Per domain, the run and the reap never interleave.
    let text = log_of(&log);
    for i in 0..40 {
        let domain = format!("wp-{i:06x}.ci.example.org");
        let events: Vec<&str> = text
            .lines()
            .filter(|l| l.ends_with(&domain))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let ok = matches!(
            events.as_slice(),
            ["run-start", "run-end"]
                | ["reap-start", "reap-end", "run-start", "run-end"]
                | ["run-start", "run-end", "reap-start", "reap-end"]
        );
        assert!(ok, "{domain}: {events:?}\n{text}");
    }
    eprintln!("place race: {refused} passes refused, {reaped} ran");
}

/// A run whose lock dir has no record yet waits for a running pass (within
/// `-n`/`-w`) before it writes one; once the record is there it never waits.
#[test]
fn a_run_that_must_record_its_place_waits_for_a_running_pass_within_its_wait() {
    let sb = Sandbox::new();
    let release = sb.path("release");
    ccci_tests::mkfifo(&release);
    let script = sb.path("slow-reap.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"reaping-$1\" >&2; read _ < '{}'\n",
            release.display()
        ),
    )
    .unwrap();
    std::fs::create_dir(sb.lock_dir()).unwrap();
    std::fs::set_permissions(
        sb.lock_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let other = "wp-000001.ci.example.org";
    let mut pass = janitor(&sb, &script, &[other]).spawn();
    pass.expect_stderr(&format!("reaping-{other}"));
    // No record in the lock dir, and a pass runs: -n gives up at once.
    sb.tool("ccci-lock")
        .args(["-n", D, "--", "true"])
        .run()
        .expect_code(75)
        .expect_stderr("a janitor pass is running");
    // A waiting run goes on once the pass is over.
    let mut waiting = sb
        .tool("ccci-lock")
        .args(["-w", "60s", D, "--", "sh", "-c", "echo in"])
        .spawn();
    ccci_tests::wait_until("the run waits for the pass lock", || {
        ccci_tests::blocked_in_flock(waiting.pid())
    });
    std::fs::write(&release, "\n").unwrap();
    pass.wait().expect_code(0);
    waiting.expect_stdout("in");
    waiting.wait().expect_code(0);
    // Recorded now: a run never waits for a pass again.
    let mut pass = janitor(&sb, &script, &[other]).spawn();
    pass.expect_stderr(&format!("reaping-{other}"));
    sb.tool("ccci-lock")
        .args(["-n", D, "--", "true"])
        .run()
        .expect_code(0);
    std::fs::write(&release, "\n").unwrap();
    pass.wait().expect_code(0);
}
