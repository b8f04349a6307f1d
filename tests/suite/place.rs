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

/// A run whose lock dir has no record yet waits for a pass that reaps
/// (within `-n`/`-w`) before it writes one; once the record is there it
/// never waits.
#[test]
fn a_run_that_must_record_its_place_waits_for_a_reaping_pass_within_its_wait() {
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
    // No record in the lock dir, and a pass reaps: -n gives up at once.
    sb.tool("ccci-lock")
        .args(["-n", D, "--", "true"])
        .run()
        .expect_code(75)
        .expect_stderr("a janitor pass is reaping");
    // A waiting run goes on once the pass is over.
    assert!(sb.lock_dir().join(".records.lock").exists());
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
    pass.wait().expect_stderr("status 0");
}

/// `count` lockfiles made by hand (no record, no holder), young, named
/// before `wp-`, so a pass over them writes a line of `--json` for each
/// before it gets to D.
fn young_lockfiles(sb: &Sandbox, count: usize) {
    std::fs::create_dir(sb.lock_dir()).unwrap();
    std::fs::set_permissions(
        sb.lock_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    for i in 0..count {
        let name = format!("app-{i:05}.ci.example.org.lock");
        std::fs::write(sb.lock_dir().join(name), "").unwrap();
    }
}

/// A janitor pass writing `--json` into a pipe whose reader takes one line,
/// says `started`, and reads no more until `release` gets a line: the pass
/// stays in the middle of its look (holding its pass lock) until then. Its
/// status is the last line of stderr: `status N`.
fn pass_stuck_in_its_look(sb: &Sandbox, janitor: &str, release: &Path) -> Proc {
    let mut pass = sb
        .sh(&format!(
            "{{ {janitor}; echo \"status $?\" >&2; }} | \
             {{ read -r _; echo started; read _ < '{}'; cat >/dev/null; }}",
            release.display()
        ))
        .spawn();
    pass.expect_stdout("started");
    assert!(
        sb.lock_dir().join(".janitor.lock").exists(),
        "the pass is over already"
    );
    pass
}

/// SPEC §2 "Looking never blocks anyone", for the first run of a lock dir:
/// a pass that only looks (young claims, `--json`) holds its pass lock but
/// not the records lock, so the run that must write the record first goes
/// on at once with `-n`. (When runs took the pass lock to write the record,
/// this `-n` failed with 75: SPEC §7 case 29 saw it now and then.)
#[test]
fn a_first_run_is_not_kept_waiting_by_a_pass_that_only_looks() {
    let sb = Sandbox::new();
    young_lockfiles(&sb, 2000);
    let release = sb.path("release");
    ccci_tests::mkfifo(&release);
    let pass = pass_stuck_in_its_look(
        &sb,
        "ccci-janitor --min-age 1h --json -- sh -c 'exit 9'",
        &release,
    );
    sb.tool("ccci-lock")
        .args(["-n", D, "--", "true"])
        .run()
        .expect_code(0);
    assert!(sb.lock_dir().join(".claims-in.files").exists());
    std::fs::write(&release, "\n").unwrap();
    pass.wait().expect_stderr("status 0");
}

/// A run on etcd that records its place while a pass on files is in the
/// middle of its look, after that pass read the records: the pass reads
/// them again, under the records lock, before its first reap, and ends
/// there (125) without reaping the run's live app.
#[test]
fn a_record_written_during_a_pass_stops_it_before_its_first_reap() {
    let etcd = Etcd::start();
    let sb = Sandbox::new();
    young_lockfiles(&sb, 2000);
    let log = sb.path("log");
    let script = reap_script(&sb, &log);
    let release = sb.path("release");
    ccci_tests::mkfifo(&release);
    let deployed = sb.path("deployed");
    std::fs::write(&deployed, format!("{D}\n")).unwrap();
    let pass = pass_stuck_in_its_look(
        &sb,
        &format!(
            "ccci-janitor --min-age 1h --json --only '*' --deployed '{}' -- sh '{}'",
            deployed.display(),
            script.display()
        ),
        &release,
    );
    let mut live = run(&sb, Some((&etcd, "/ccci")));
    std::fs::write(&release, "\n").unwrap();
    let ended = pass.wait();
    assert_eq!(log_of(&log), "", "a live app was reaped: {ended}");
    ended
        .expect_stderr("status 125")
        .expect_stderr(&format!("{D}: not reaped: refusing the pass"))
        .expect_stderr(&format!("on etcd at {} under /ccci", etcd.endpoint()));
    assert!(!sb.lockfile(D).exists(), "the lockfile the pass made stays");
    assert!(!sb.lock_dir().join(".records.lock").exists());
    live.send("");
    live.wait().expect_code(0);
}
