//! ccci-state (SPEC §6) and SPEC §7 case 20.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the run and writer helpers defined in it (the kill tests
//! among them).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccci_tests::{alive, blocked_in_flock, wait_until, Output, Proc, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";

/// `ccci-state ARGS…` in the sandbox, run to its end.
fn state(sb: &Sandbox, args: &[&str]) -> Output {
    sb.tool("ccci-state").args(args).run()
}

/// The `export NAME='value'` lines of `env` as (NAME, value) pairs.
fn exports(out: &Output) -> Vec<(String, String)> {
    out.stdout
        .lines()
        .map(|line| {
            let rest = line
                .strip_prefix("export ")
                .unwrap_or_else(|| panic!("not an export line: {line:?}\n{out}"));
            let (var, value) = rest.split_once('=').unwrap();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("unquoted value: {line:?}"))
                .replace(r"'\''", "'");
            (var.to_string(), value)
        })
        .collect()
}

fn export(out: &Output, var: &str) -> String {
    exports(out)
        .into_iter()
        .find(|(v, _)| v == var)
        .unwrap_or_else(|| panic!("no {var}\n{out}"))
        .1
}

fn my_pid() -> String {
    std::process::id().to_string()
}

/// One CI run of domain `D`, as the harness does it: private state, count
/// the deploy BEFORE taking the app lock, then, holding the lock, wait for
/// the test's go, read the count, check the file, clean up.
fn deploy_run(sb: &Sandbox, env: &[(&str, &str)]) -> Proc {
    let script = format!(
        r#"set -e
eval "$(ccci-state env)"
echo "file=$CCCI_DEPLOYS_FILE"
ccci-state incr deploys >/dev/null
echo counted
ccci-lock {D} -- sh -c '
  echo holding
  read _
  n=$(ccci-state get deploys) || n=missing
  echo "reads $n"
  if [ -e "$CCCI_DEPLOYS_FILE" ]; then echo file-exists; else echo file-missing; fi
  ccci-state clean
  echo cleaned
'"#
    );
    let mut cmd = sb.sh(&script).piped_stdin();
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.spawn()
}

/// Plays SPEC §7 case 20: A counts and holds the domain; B counts, then
/// blocks on the lock; A reads and cleans up; B gets the lock and reads.
/// Returns what A and B reported, in order: [A reads, A file, B reads, B file].
fn play_case_20(sb: &Sandbox, env: &[(&str, &str)]) -> ([String; 4], String, String) {
    let mut a = deploy_run(sb, env);
    let a_file = a.expect_stdout("file=");
    a.expect_stdout("counted");
    a.expect_stdout("holding");

    let mut b = deploy_run(sb, env);
    let b_file = b.expect_stdout("file=");
    b.expect_stdout("counted"); // B's pre-lock count is done
    wait_until("B blocks on the app lock", || {
        sb.processes().into_iter().any(blocked_in_flock)
    });
    assert!(!b.stdout_so_far().contains("holding"), "{}", b.report());

    a.send("");
    let a_reads = a.expect_stdout("reads ");
    let a_has = a.expect_stdout("file-");
    a.expect_stdout("cleaned");
    a.wait().expect_code(0);

    b.expect_stdout("holding");
    b.send("");
    let b_reads = b.expect_stdout("reads ");
    let b_has = b.expect_stdout("file-");
    b.expect_stdout("cleaned");
    b.wait().expect_code(0);
    ([a_reads, a_has, b_reads, b_has], a_file, b_file)
}

/// `ccci-state --run-id r --pid PID ARGS...`, run to its end.
pub(crate) fn run_r(sb: &Sandbox, pid: &str, args: &[&str]) -> Output {
    sb.tool("ccci-state")
        .args(["--run-id", "r", "--pid", pid])
        .args(args)
        .run()
}

#[test]
fn case_20_deploy_count_regression_each_run_keeps_its_own_count() {
    let sb = Sandbox::new();
    // Same run id for both (the default, `manual`): only the harness pid
    // tells the runs apart, and that is enough.
    let (seen, a_file, b_file) = play_case_20(&sb, &[]);
    assert_eq!(
        seen,
        ["reads 1", "file-exists", "reads 1", "file-exists"],
        "A: {a_file}, B: {b_file}"
    );
    assert_ne!(a_file, b_file);
    // Both runs cleaned up after themselves, and only after themselves.
    let left: Vec<_> = std::fs::read_dir(sb.state_dir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn case_20_negative_control_one_shared_key_shows_the_old_failure() {
    // The same interleaving with both runs forced onto one key, as when the
    // files were keyed by app domain: B's pre-lock count lands in A's
    // counter, and A's cleanup deletes B's file.
    let sb = Sandbox::new();
    let pid = my_pid();
    let shared = [("CCCI_RUN_ID", "build-279"), ("CCCI_HARNESS_PID", &pid)];
    let (seen, a_file, b_file) = play_case_20(&sb, &shared);
    assert_eq!(a_file, b_file);
    assert_eq!(
        seen,
        ["reads 2", "file-exists", "reads missing", "file-missing"]
    );
}

#[test]
fn path_is_one_per_run_and_differs_between_runs() {
    let sb = Sandbox::new();
    let path = |args: &[&str]| {
        let out = sb
            .tool("ccci-state")
            .args(args)
            .arg("path")
            .arg("deploys")
            .run();
        out.expect_code(0);
        PathBuf::from(out.stdout.trim_end())
    };
    let run = path(&["--run-id", "r1", "--pid", "100"]);
    assert_eq!(run, sb.state_dir().join("r1-100/deploys"));
    assert_eq!(run, path(&["--run-id", "r1", "--pid", "100"]));
    assert_ne!(run, path(&["--run-id", "r2", "--pid", "100"]));
    assert_ne!(run, path(&["--run-id", "r1", "--pid", "101"]));
    // The same identity from the environment, and from `env`'s exports.
    let via_env = sb
        .tool("ccci-state")
        .env("CCCI_RUN_ID", "r1")
        .env("CCCI_HARNESS_PID", "100")
        .args(["path", "deploys"])
        .run();
    assert_eq!(via_env.stdout.trim_end(), run.to_str().unwrap());
    let env = state(&sb, &["--run-id", "r1", "--pid", "100", "env"]);
    env.expect_code(0);
    assert_eq!(export(&env, "CCCI_DEPLOYS_FILE"), run.to_str().unwrap());
    assert_eq!(export(&env, "CCCI_RUN_ID"), "r1");
    assert_eq!(export(&env, "CCCI_HARNESS_PID"), "100");
    // `path` creates nothing.
    assert!(!run.exists());
}

#[test]
fn a_manual_run_is_keyed_by_the_harness_pid() {
    let sb = Sandbox::new();
    let out = sb
        .sh(r#"eval "$(ccci-state env)"; echo "$$"; ccci-state path deploys; echo "$CCCI_HARNESS_PID""#)
        .run();
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let harness = lines[0];
    assert_eq!(
        lines[1],
        sb.state_dir()
            .join(format!("manual-{harness}/deploys"))
            .to_str()
            .unwrap()
    );
    assert_eq!(lines[2], harness);
}

#[test]
fn an_exact_path_from_the_environment_wins() {
    let sb = Sandbox::new();
    let elsewhere = sb.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = elsewhere.join("count");
    // A child of run r-100: the run and its exact paths are inherited.
    let with_var = |args: &[&str]| {
        sb.tool("ccci-state")
            .env("CCCI_DEPLOYS_FILE", &file)
            .env("CCCI_MY_THING_FILE", elsewhere.join("thing"))
            .env("CCCI_RUN_ID", "r")
            .env("CCCI_HARNESS_PID", "100")
            .args(args)
            .run()
    };
    with_var(&["path", "deploys"]).expect_stdout(file.to_str().unwrap());
    with_var(&["incr", "deploys"]).expect_code(0);
    with_var(&["incr", "deploys", "2"]).expect_stdout("3");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "3\n");
    with_var(&["set", "my-thing", "x"]).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("thing")).unwrap(),
        "x\n"
    );
    // The run key's own file was never touched.
    assert!(!sb.state_dir().join("r-100").exists(), "{}", sb.listing());
    // Without the variable, the run key decides.
    state(&sb, &["--run-id", "r", "--pid", "100", "get", "deploys"]).expect_code(1);
    // `clean` removes <state dir>/<run key>/ only, never a file a variable
    // names outside it.
    with_var(&["clean"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "3\n");
    // An exact path whose directory is missing is not created behind the run's back.
    let out = sb
        .tool("ccci-state")
        .env("CCCI_DEPLOYS_FILE", sb.path("gone/deploys"))
        .args(["incr", "deploys"])
        .run();
    out.expect_code(125)
        .expect_stderr("CCCI_DEPLOYS_FILE names");
    assert!(!sb.path("gone").exists());
}

#[test]
fn an_explicit_run_on_the_command_line_wins_over_inherited_exact_paths() {
    let sb = Sandbox::new();
    let outer = sb.path("outer");
    std::fs::create_dir(&outer).unwrap();
    std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(outer.join("deploys"), "7\n").unwrap();
    // A nested run inside a run that exported its exact paths.
    let nested = |flags: &[&str], args: &[&str]| {
        sb.tool("ccci-state")
            .env("CCCI_DEPLOYS_FILE", outer.join("deploys"))
            .env("CCCI_RUN_ID", "outer")
            .env("CCCI_HARNESS_PID", "100")
            .args(flags)
            .args(args)
            .run()
    };
    for flags in [&["--run-id", "inner"][..], &["--pid", "200"]] {
        nested(flags, &["incr", "deploys"]).expect_stdout("1\n");
        nested(flags, &["get", "deploys"]).expect_stdout("1\n");
        let path = nested(flags, &["path", "deploys"]);
        assert!(
            path.stdout.starts_with(sb.state_dir().to_str().unwrap()),
            "{path}"
        );
        nested(flags, &["clean"]).expect_code(0);
    }
    assert_eq!(
        std::fs::read_to_string(outer.join("deploys")).unwrap(),
        "7\n",
        "the nested run touched the outer run's file"
    );
    // Flags after the subcommand count as given on the command line too.
    nested(&[], &["incr", "deploys", "--run-id", "inner"]).expect_stdout("1\n");
    assert_eq!(
        std::fs::read_to_string(outer.join("deploys")).unwrap(),
        "7\n"
    );
    // The inherited run itself still uses the exact path.
    nested(&[], &["incr", "deploys"]).expect_stdout("8\n");
}

#[test]
fn clean_never_removes_a_file_a_variable_names_outside_the_run_dir() {
    let sb = Sandbox::new();
    let precious = sb.path("precious");
    std::fs::write(&precious, "keep\n").unwrap();
    sb.tool("ccci-state")
        .env("CCCI_DEPLOYS_FILE", &precious)
        .env("CCCI_OPSTATE_FILE", "/etc/hostname")
        .args(["--run-id", "r", "--pid", "100", "env"])
        .run()
        .expect_code(0);
    sb.tool("ccci-state")
        .env("CCCI_DEPLOYS_FILE", &precious)
        .env("CCCI_RUN_ID", "r")
        .env("CCCI_HARNESS_PID", "100")
        .arg("clean")
        .run()
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep\n");
    assert!(!sb.state_dir().join("r-100").exists(), "{}", sb.listing());
}

#[test]
fn env_prints_only_quoted_exports_and_is_idempotent_within_a_run() {
    let sb = Sandbox::new();
    let dir = sb.path("it's state");
    let env = |json: bool| {
        let mut cmd = sb
            .tool("ccci-state")
            .args(["--run-id", "r.1", "--pid", &my_pid(), "--state-dir"])
            .arg(&dir)
            .arg("env");
        if json {
            cmd = cmd.arg("--json");
        }
        cmd.run()
    };
    let out = env(false);
    out.expect_code(0);
    let vars: Vec<String> = exports(&out).into_iter().map(|(v, _)| v).collect();
    assert_eq!(
        vars,
        [
            "CCCI_RUN_ID",
            "CCCI_HARNESS_PID",
            "CCCI_DEPLOYS_FILE",
            "CCCI_OPSTATE_FILE",
            "CCCI_DEPS_FILE",
            "CCCI_DEPSKIP_FILE"
        ]
    );
    let run_dir = dir.join(format!("r.1-{}", my_pid()));
    assert_eq!(
        export(&out, "CCCI_DEPSKIP_FILE"),
        run_dir.join("depskip").to_str().unwrap()
    );
    let mode = std::fs::metadata(&run_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // The quoting survives a real eval.
    let evaluated = sb
        .sh(&format!(
            "{}\nprintf '%s' \"$CCCI_DEPLOYS_FILE\"",
            out.stdout
        ))
        .run();
    assert_eq!(evaluated.stdout, run_dir.join("deploys").to_str().unwrap());

    let json = env(true);
    json.expect_code(0);
    let object: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    for (var, value) in exports(&out) {
        assert_eq!(object[&var], serde_json::Value::String(value), "{var}");
    }

    // A second env in the same run keeps the run's files.
    let with_dir = |args: &[&str]| {
        sb.tool("ccci-state")
            .args(["--run-id", "r.1", "--pid", &my_pid(), "--state-dir"])
            .arg(&dir)
            .args(args)
            .run()
    };
    with_dir(&["incr", "deploys"]).expect_stdout("1");
    env(false).expect_code(0);
    with_dir(&["get", "deploys"]).expect_stdout("1");
}

#[test]
fn get_set_append_and_missing_values() {
    let sb = Sandbox::new();
    let st = |args: &[&str]| run_r(&sb, "100", args);
    let out = st(&["get", "opstate"]);
    out.expect_code(1);
    assert_eq!(out.stdout, "");
    assert!(
        !sb.state_dir().exists(),
        "get must not create the state dir"
    );
    st(&["get", "opstate", "--default", "none"]).expect_stdout("none");
    st(&["set", "opstate", "--deploying"]).expect_code(0);
    assert_eq!(st(&["get", "opstate"]).stdout, "--deploying\n");
    st(&["append", "deps", "a b"]).expect_code(0);
    st(&["append", "deps", "-c"]).expect_code(0);
    assert_eq!(st(&["get", "deps"]).stdout, "a b\n-c\n");
    st(&["incr", "deploys", "-5"]).expect_stdout("-5");
    st(&["incr", "deploys"]).expect_stdout("-4");
}

#[test]
fn a_counter_holding_no_number_is_125_naming_the_file() {
    let sb = Sandbox::new();
    let st = |args: &[&str]| run_r(&sb, "100", args);
    st(&["set", "deploys", "twelve"]).expect_code(0);
    let path = sb.state_dir().join("r-100/deploys");
    st(&["incr", "deploys"])
        .expect_code(125)
        .expect_stderr(&format!("{} holds no number ('twelve')", path.display()));
    std::fs::write(&path, "").unwrap();
    st(&["incr", "deploys"])
        .expect_code(125)
        .expect_stderr("holds no number");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "left as it was"
    );
}

#[test]
fn clean_twice_is_fine() {
    let sb = Sandbox::new();
    let out = sb
        .sh(r#"set -e
eval "$(ccci-state env)"
ccci-state incr deploys >/dev/null
ccci-state set opstate done
test -d "${CCCI_DEPLOYS_FILE%/*}"
ccci-state clean
test ! -e "${CCCI_DEPLOYS_FILE%/*}"
ccci-state clean
echo ok"#)
        .run();
    out.expect_code(0).expect_stdout("ok");
    assert_eq!(std::fs::read_dir(sb.state_dir()).unwrap().count(), 0);
    // No state dir at all: still fine, and still nothing created.
    let fresh = Sandbox::new();
    state(&fresh, &["clean"]).expect_code(0);
    assert!(!fresh.state_dir().exists());
}

/// Rewrites the harness start time recorded in `run_dir`, as if the pid had
/// since been reused by another process.
fn fake_pid_reuse(run_dir: &Path) {
    let path = run_dir.join(".harness");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let started = record["start_time"]
        .as_u64()
        .expect("a live harness's start time");
    record["start_time"] = (started + 1).into();
    std::fs::write(&path, record.to_string()).unwrap();
}

/// A harness process that lives until the test sends it a line.
fn live_harness(sb: &Sandbox) -> Proc {
    let mut p = sb.sh("echo ready; read _").piped_stdin().spawn();
    p.expect_stdout("ready");
    p
}

#[test]
fn gc_keeps_live_runs_and_removes_dead_and_reused_ones() {
    let sb = Sandbox::new();
    let live = live_harness(&sb);
    let reused = live_harness(&sb);
    let key = |id: &str, pid: u32| format!("{id}-{pid}");
    let live_key = key("live", live.pid());
    let reused_key = key("reused", reused.pid());
    state(
        &sb,
        &["--run-id", "live", "--pid", &live.pid().to_string(), "env"],
    )
    .expect_code(0);
    state(
        &sb,
        &[
            "--run-id",
            "reused",
            "--pid",
            &reused.pid().to_string(),
            "env",
        ],
    )
    .expect_code(0);
    fake_pid_reuse(&sb.state_dir().join(&reused_key));
    // A run whose harness (the shell) has exited.
    let dead = sb
        .sh(r#"eval "$(ccci-state --run-id dead env)"; ccci-state incr deploys >/dev/null; echo "$$""#)
        .run();
    dead.expect_code(0);
    let dead_key = key("dead", dead.stdout.trim().parse().unwrap());
    let exists = |k: &str| sb.state_dir().join(k).exists();
    assert!(exists(&dead_key));

    let dry = state(&sb, &["gc", "--dry-run"]);
    dry.expect_code(0)
        .expect_stderr(&format!(
            "would remove {}",
            sb.state_dir().join(&dead_key).display()
        ))
        .expect_stderr("has exited")
        .expect_stderr(&format!(
            "would remove {}",
            sb.state_dir().join(&reused_key).display()
        ))
        .expect_stderr("now names another process");
    assert!(!dry.stderr.contains(&live_key), "{dry}");
    assert!(
        exists(&dead_key) && exists(&reused_key),
        "dry run removed something"
    );

    let gc = state(&sb, &["gc"]);
    gc.expect_code(0)
        .expect_stderr(&format!(
            "removed {}",
            sb.state_dir().join(&dead_key).display()
        ))
        .expect_stderr(&format!(
            "removed {}",
            sb.state_dir().join(&reused_key).display()
        ));
    assert!(
        !exists(&dead_key) && !exists(&reused_key),
        "{}",
        sb.listing()
    );
    assert!(exists(&live_key), "gc removed a live run");
    // The live run still works, and its harness's end makes it collectable.
    state(
        &sb,
        &[
            "--run-id",
            "live",
            "--pid",
            &live.pid().to_string(),
            "incr",
            "deploys",
        ],
    )
    .expect_stdout("1");
    state(&sb, &["gc"]).expect_code(0);
    assert!(exists(&live_key));
    let mut live = live;
    live.send("");
    live.wait().expect_code(0);
    state(&sb, &["gc"])
        .expect_code(0)
        .expect_stderr("has exited");
    assert!(!exists(&live_key));
    drop(reused);
}

#[test]
fn env_replaces_a_stale_dir_whose_pid_was_reused() {
    let sb = Sandbox::new();
    let harness = live_harness(&sb);
    let pid = harness.pid().to_string();
    let st = |args: &[&str]| run_r(&sb, &pid, args);
    st(&["env"]).expect_code(0);
    st(&["incr", "deploys"]).expect_stdout("1");
    fake_pid_reuse(&sb.state_dir().join(format!("r-{pid}")));
    // A reader does not take the old run's count for this run's.
    st(&["get", "deploys"]).expect_code(1);
    st(&["env"])
        .expect_code(0)
        .expect_stderr("replaced stale run dir");
    st(&["get", "deploys"]).expect_code(1);
    st(&["incr", "deploys"]).expect_stdout("1");
}

/// Holds the flock of `dir` with flock(1) until sent a line, then removes
/// `dir` while still holding it (as `clean` and `gc` do).
fn hold_then_remove(sb: &Sandbox, dir: &Path) -> Proc {
    let mut holder = sb
        .command("flock")
        .arg(dir)
        .args([
            "sh",
            "-c",
            r#"echo ready; read _; rm -r "$0"; echo removed"#,
        ])
        .arg(dir)
        .piped_stdin()
        .spawn();
    holder.expect_stdout("ready");
    holder
}

#[test]
fn a_writer_waiting_on_a_run_dir_that_is_removed_never_writes_into_it() {
    let sb = Sandbox::new();
    let pid = my_pid();
    let env = state(&sb, &["--run-id", "r", "--pid", &pid, "env"]);
    env.expect_code(0);
    let run_dir = sb.state_dir().join(format!("r-{pid}"));
    state(&sb, &["--run-id", "r", "--pid", &pid, "incr", "deploys"]).expect_stdout("1");

    // By run key: the writer wakes up, sees the path no longer names the
    // directory it locked, and starts over with a fresh run dir.
    let mut holder = hold_then_remove(&sb, &run_dir);
    let writer = sb
        .tool("ccci-state")
        .args(["--run-id", "r", "--pid", &pid, "incr", "deploys"])
        .spawn();
    wait_until("the writer waits for the run dir's lock", || {
        blocked_in_flock(writer.pid())
    });
    holder.send("");
    holder.expect_stdout("removed");
    holder.wait().expect_code(0);
    let out = writer.wait();
    out.expect_code(0);
    assert_eq!(out.stdout, "1\n", "counted into the removed dir");
    assert!(run_dir.join(".harness").is_file(), "{}", sb.listing());

    // By exact path: the directory is gone for good, and is not resurrected.
    let mut holder = hold_then_remove(&sb, &run_dir);
    let writer = sb
        .tool("ccci-state")
        .env("CCCI_DEPLOYS_FILE", export(&env, "CCCI_DEPLOYS_FILE"))
        .args(["incr", "deploys"])
        .spawn();
    wait_until("the writer waits for the run dir's lock", || {
        blocked_in_flock(writer.pid())
    });
    holder.send("");
    holder.wait().expect_code(0);
    writer
        .wait()
        .expect_code(125)
        .expect_stderr("does not exist; run `eval");
    assert!(!run_dir.exists());
}

#[test]
fn incr_from_four_processes_loses_no_update() {
    let sb = Sandbox::new();
    let pid = my_pid();
    let env = state(&sb, &["--run-id", "race", "--pid", &pid, "env"]);
    env.expect_code(0);
    let file = export(&env, "CCCI_DEPLOYS_FILE");
    let script =
        "i=0; while [ $i -lt 250 ]; do ccci-state incr deploys || exit 1; i=$((i+1)); done";
    // Two by run key, two by exact path: both ways take the same lock.
    let workers: Vec<Proc> = (0..4)
        .map(|i| {
            let cmd = sb.sh(script);
            if i % 2 == 0 {
                cmd.env("CCCI_RUN_ID", "race").env("CCCI_HARNESS_PID", &pid)
            } else {
                cmd.env("CCCI_DEPLOYS_FILE", &file)
            }
            .spawn()
        })
        .collect();
    let mut seen: Vec<u32> = Vec::new();
    for w in workers {
        let out = w.wait();
        out.expect_code(0);
        seen.extend(out.stdout.lines().map(|l| l.parse::<u32>().unwrap()));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "1000\n");
    // Every increment saw a different old value.
    seen.sort();
    assert_eq!(seen, (1..=1000).collect::<Vec<_>>());
}

#[test]
fn appends_from_two_processes_are_whole_lines_none_lost() {
    let sb = Sandbox::new();
    let script = |tag: &str| {
        format!("i=0; while [ $i -lt 100 ]; do ccci-state append deps \"{tag}-$i-$(printf %0200d 0)\" || exit 1; i=$((i+1)); done")
    };
    let pid = my_pid();
    let workers: Vec<Proc> = ["a", "b"]
        .iter()
        .map(|tag| {
            sb.sh(&script(tag))
                .env("CCCI_RUN_ID", "r")
                .env("CCCI_HARNESS_PID", &pid)
                .spawn()
        })
        .collect();
    for w in workers {
        w.wait().expect_code(0);
    }
    let content = std::fs::read_to_string(sb.state_dir().join(format!("r-{pid}/deps"))).unwrap();
    let mut lines: Vec<&str> = content.lines().collect();
    assert_eq!(lines.len(), 200);
    lines.sort();
    let mut want: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|t| (0..100).map(move |i| format!("{t}-{i}-{:0200}", 0)))
        .collect();
    want.sort();
    assert_eq!(lines, want);
}

/// The pids of `parent`'s children that run `ccci-state` (after exec).
fn state_children(parent: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "ccci-state")
        })
        .collect()
}

/// Like `wait_until`, without its growing pauses: for states that last
/// only microseconds (a writer inside its lock).
fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < ccci_tests::deadline(),
            "timed out waiting until {what}"
        );
        std::thread::yield_now();
    }
}

/// Whether `pid` holds a flock (a line without `->` in /proc/locks).
fn holds_flock(pid: u32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.get(1) == Some(&"FLOCK") && words.get(4) == Some(&pid.to_string().as_str())
    })
}

/// The flock of a directory, held by the test process itself.
struct DirLock(std::fs::File);

impl DirLock {
    fn open(dir: &Path) -> DirLock {
        DirLock(std::fs::File::open(dir).unwrap())
    }

    fn flock(&self, op: libc::c_int) {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this struct owns; no memory involved.
        let rc = unsafe { libc::flock(self.0.as_raw_fd(), op) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    }
}

/// Runs `script` (a loop of `ccci-state` writers of `file`) and SIGKILLs
/// its writers until 10 kills have landed while a writer held its lock,
/// i.e. in the middle of a read-modify-replace. Meanwhile a reader checks
/// every version of `file` it sees with `whole`.
///
/// To strike inside the lock even when it is held for microseconds (tmpfs),
/// three writers in four are first held up: the test takes the run dir's
/// flock, waits until the writer blocks on it, releases it, waits until the
/// writer holds it and strikes a random few microseconds later. The fourth
/// is struck at a random moment of its life. The spins choose when to
/// strike; they wait for nothing to happen.
fn kill_writers_at_random(
    sb: &Sandbox,
    script: &str,
    env: &[(&str, &str)],
    file: &Path,
    whole: impl Fn(&str) -> bool + Send + 'static,
) {
    let mut setup = sb.tool("ccci-state").arg("env");
    let mut writers = sb.sh(script);
    for (k, v) in env {
        setup = setup.env(k, v);
        writers = writers.env(k, v);
    }
    setup.run().expect_code(0);
    let run_dir = DirLock::open(file.parent().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, file) = (stop.clone(), reads.clone(), file.to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_to_string(&file) {
                    Ok(content) => {
                        assert!(
                            whole(&content),
                            "torn: {:?}",
                            &content[..content.len().min(80)]
                        );
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
                }
            }
        })
    };
    let writers = writers.spawn();
    let mut seed = u64::from(std::process::id()) | 1;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let spin = |d: Duration| {
        let spun = Instant::now();
        while spun.elapsed() < d {
            std::hint::spin_loop();
        }
    };
    let (mut kills, mut inside) = (0usize, 0usize);
    let start = Instant::now();
    while inside < 10 && !reader.is_finished() {
        assert!(
            start.elapsed() < ccci_tests::deadline(),
            "only {inside} of {kills} kills hit a writer holding its lock"
        );
        let victim = if kills % 4 == 0 {
            let Some(&victim) = state_children(writers.pid()).first() else {
                continue;
            };
            spin(Duration::from_micros(random(3000)));
            victim
        } else {
            run_dir.flock(libc::LOCK_EX);
            let mut victim = None;
            poll_until("a writer waits for the run dir's lock", || {
                victim = state_children(writers.pid())
                    .into_iter()
                    .find(|&pid| blocked_in_flock(pid));
                victim.is_some()
            });
            let victim = victim.unwrap();
            run_dir.flock(libc::LOCK_UN);
            poll_until("the writer takes the lock (or is done)", || {
                holds_flock(victim) || !alive(victim)
            });
            spin(Duration::from_micros(random(20)));
            victim
        };
        if holds_flock(victim) {
            inside += 1;
        }
        ccci_tests::kill(victim, libc::SIGKILL);
        kills += 1;
        poll_until("the killed writer is gone", || {
            !state_children(writers.pid()).contains(&victim)
        });
    }
    // Under load every write may have been killed so far: the writers go
    // on until one finishes and the reader has read a whole file.
    poll_until("the reader reads a file a writer finished", || {
        reads.load(Ordering::Relaxed) > 0 || reader.is_finished()
    });
    drop(writers);
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw a torn file");
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "the reader never saw the file"
    );
}

#[test]
fn sigkill_during_incr_never_leaves_a_torn_counter() {
    let sb = Sandbox::new();
    let pid = my_pid();
    let env = [("CCCI_RUN_ID", "k"), ("CCCI_HARNESS_PID", pid.as_str())];
    let file = sb.state_dir().join(format!("k-{pid}/deploys"));
    let number = |s: &str| {
        s.strip_suffix('\n')
            .is_some_and(|n| n.parse::<u64>().is_ok())
    };
    kill_writers_at_random(
        &sb,
        "while :; do ccci-state incr deploys >/dev/null; done",
        &env,
        &file,
        number,
    );
    let before: u64 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let after = sb
        .tool("ccci-state")
        .env(env[0].0, env[0].1)
        .env(env[1].0, env[1].1)
        .args(["incr", "deploys"])
        .run();
    after.expect_code(0);
    assert_eq!(after.stdout, format!("{}\n", before + 1));
}

#[test]
fn sigkill_during_set_never_leaves_a_torn_file() {
    let sb = Sandbox::new();
    let pid = my_pid();
    // Large values make a half-written file likely if writes were in place.
    let (va, vb) = ("a".repeat(60_000), "b".repeat(60_000));
    let env = [
        ("CCCI_RUN_ID", "k"),
        ("CCCI_HARNESS_PID", pid.as_str()),
        ("VA", va.as_str()),
        ("VB", vb.as_str()),
    ];
    let file = sb.state_dir().join(format!("k-{pid}/opstate"));
    let (wa, wb) = (format!("{va}\n"), format!("{vb}\n"));
    kill_writers_at_random(
        &sb,
        r#"while :; do ccci-state set opstate "$VA"; ccci-state set opstate "$VB"; done"#,
        &env,
        &file,
        move |s| s == wa || s == wb,
    );
}

#[test]
fn bad_names_run_ids_and_values_are_2_and_create_nothing() {
    let sb = Sandbox::new();
    /// Arguments, environment, and the quoted value the message must show.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["get", "Deploys"], &[], "'Deploys'"),
        (&["set", "../x", "1"], &[], "'../x'"),
        (&["incr", "a.b"], &[], "'a.b'"),
        (&["incr", "deploys", "x"], &[], "'x'"),
        (&["--run-id", "a/b", "env"], &[], "'a/b'"),
        (&["--pid", "0", "env"], &[], "'0'"),
        (&["env"], &[("CCCI_RUN_ID", "../up")], "'../up'"),
        (&["env"], &[("CCCI_HARNESS_PID", "12x")], "'12x'"),
        (&["append", "deps", "two\nlines"], &[], r"$'two\nlines'"),
        (
            &["incr", "deploys"],
            &[("CCCI_DEPLOYS_FILE", "/tmp/")],
            "'/tmp/'",
        ),
        (&["frobnicate"], &[], "'frobnicate'"),
    ];
    for (args, env, quoted) in cases {
        let mut cmd = sb.tool("ccci-state").args(*args);
        for (k, v) in *env {
            cmd = cmd.env(k, v);
        }
        cmd.run().expect_code(2).expect_stderr(quoted);
        assert!(!sb.state_dir().exists(), "{args:?} created the state dir");
    }
}

#[test]
fn unsafe_dirs_and_symlinks_are_refused_never_followed() {
    let sb = Sandbox::new();
    let st = |args: &[&str]| run_r(&sb, "100", args);
    // A state dir writable by others.
    std::fs::create_dir(sb.state_dir()).unwrap();
    std::fs::set_permissions(sb.state_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    st(&["env"])
        .expect_code(125)
        .expect_stderr("writable by group or others")
        .expect_stderr("CCCI_STATE_DIR");
    std::fs::set_permissions(sb.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();

    // A run dir that is a symlink to somewhere else.
    let victim = sb.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&victim, sb.state_dir().join("r-100")).unwrap();
    st(&["incr", "deploys"])
        .expect_code(125)
        .expect_stderr("is a symlink");
    st(&["clean"]).expect_code(125);
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    std::fs::remove_file(sb.state_dir().join("r-100")).unwrap();

    // A state file that is a symlink: neither read through nor replaced.
    st(&["env"]).expect_code(0);
    let target = victim.join("precious");
    std::fs::write(&target, "7\n").unwrap();
    symlink(&target, sb.state_dir().join("r-100/deploys")).unwrap();
    for args in [
        &["incr", "deploys"][..],
        &["set", "deploys", "1"],
        &["get", "deploys"],
    ] {
        st(args).expect_code(125).expect_stderr("is a symlink");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "7\n");
    assert!(sb.state_dir().join("r-100/deploys").is_symlink());

    // An exact path in a directory writable by others.
    let open_dir = sb.path("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    sb.tool("ccci-state")
        .env("CCCI_OPSTATE_FILE", open_dir.join("opstate"))
        .args(["set", "opstate", "x"])
        .run()
        .expect_code(125)
        .expect_stderr("writable by group or others")
        .expect_stderr("CCCI_OPSTATE_FILE");
    assert!(!open_dir.join("opstate").exists());
}

#[test]
fn a_bad_value_is_blamed_on_the_variable_or_the_flag_it_came_from() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let from_env =
        |var: &str, value: &OsStr| sb.tool("ccci-state").env(var, value).arg("env").run();
    from_env("CCCI_RUN_ID", OsStr::new("build 42"))
        .expect_code(2)
        .expect_stderr("ccci-state: CCCI_RUN_ID='build 42' is not a valid run id");
    from_env("CCCI_HARNESS_PID", OsStr::new("12x"))
        .expect_code(2)
        .expect_stderr("CCCI_HARNESS_PID='12x' is not a valid pid");
    from_env("CCCI_RUN_ID", OsStr::from_bytes(b"b\xff"))
        .expect_code(2)
        .expect_stderr(r"CCCI_RUN_ID=$'b\xff' is not valid UTF-8");
    from_env("CCCI_RUN_ID", OsStr::new("true\r"))
        .expect_code(2)
        .expect_stderr(r"CCCI_RUN_ID=$'true\r' is not a valid run id");
    for args in [
        &["--run-id", "build 42", "env"][..],
        &["env", "--run-id", "build 42"],
    ] {
        let out = sb
            .tool("ccci-state")
            .env("CCCI_RUN_ID", "fine")
            .args(args)
            .run();
        out.expect_code(2)
            .expect_stderr("invalid value 'build 42' for --run-id: not a valid run id");
        assert!(!out.stderr.contains("CCCI_RUN_ID"), "{out}");
    }
    sb.tool("ccci-state")
        .arg("--pid")
        .arg(OsStr::from_bytes(b"1\xff"))
        .arg("env")
        .run()
        .expect_code(2)
        .expect_stderr(r"invalid value $'1\xff' for --pid: not valid UTF-8");
    sb.tool("ccci-state")
        .arg("get")
        .arg(OsStr::from_bytes(b"n\xff"))
        .run()
        .expect_code(2)
        .expect_stderr(r"invalid value $'n\xff' for NAME: not valid UTF-8");
    assert!(!sb.state_dir().exists(), "{}", sb.listing());
}

#[test]
fn state_dir_that_is_the_runs_dir_or_holds_it_is_refused_with_125() {
    let sb = Sandbox::new();
    let same = sb.path("shared");
    for (state_dir, runs_dir, lock_dir) in [
        (same.clone(), same.clone(), sb.lock_dir()),
        (same.clone(), same.join("runs"), sb.lock_dir()),
        (same.join("state"), same.clone(), sb.lock_dir()),
        (same.clone(), sb.runs_dir(), same.clone()),
        (same.join("."), same.join("x/.."), sb.lock_dir()),
    ] {
        for args in [&["env"][..], &["incr", "deploys"], &["clean"], &["gc"]] {
            let out = sb
                .tool("ccci-state")
                .env("CCCI_STATE_DIR", &state_dir)
                .env("CCCI_RUNS_DIR", &runs_dir)
                .env("CCCI_APP_LOCK_DIR", &lock_dir)
                .args(["--run-id", "r", "--pid", "100"])
                .args(args)
                .run();
            out.expect_code(125)
                .expect_stderr("must be three different directories");
            // The refusal never advises a clean that would delete more.
            assert!(!out.stderr.contains("clean"), "{out}");
            assert!(!same.exists(), "{args:?} created {}", same.display());
        }
    }
}

#[test]
fn env_or_a_value_cut_short_by_a_closed_stdout_is_125() {
    let sb = Sandbox::new();
    for args in [
        &["env"][..],
        &["env", "--json"],
        &["path", "deploys"],
        &["incr", "deploys"],
    ] {
        let out = sb
            .tool("ccci-state")
            .args(["--run-id", "r", "--pid", "100"])
            .args(args)
            .run_into_closed_pipe();
        out.expect_code(125)
            .expect_stderr("stdout was closed before all output was written");
    }
}

/// `ccci-state --run-id RUN_ID --pid PID ARGS...`, run to its end.
fn run_r_as(sb: &Sandbox, run_id: &str, pid: &str, args: &[&str]) -> Output {
    sb.tool("ccci-state")
        .args(["--run-id", run_id, "--pid", pid])
        .args(args)
        .run()
}

/// Rewrites field `key` of the harness record in `run_dir` with `f`.
fn edit_record(run_dir: &Path, key: &str, f: impl FnOnce(&serde_json::Value) -> serde_json::Value) {
    let path = run_dir.join(".harness");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    record[key] = f(&record[key]);
    std::fs::write(&path, record.to_string()).unwrap();
}

#[test]
fn gc_never_judges_a_record_of_another_pid_namespace_and_drops_earlier_boots() {
    let sb = Sandbox::new();
    // Two runs whose harness pids are dead here.
    let dead = {
        let p = sb.sh("exit 0").spawn();
        let pid = p.pid();
        p.wait();
        pid.to_string()
    };
    for run_id in ["container", "before-reboot"] {
        run_r_as(&sb, run_id, &dead, &["incr", "deploys"]).expect_code(0);
    }
    let container = sb.state_dir().join(format!("container-{dead}"));
    let before_reboot = sb.state_dir().join(format!("before-reboot-{dead}"));
    // One written in another pid namespace (a container sharing the state
    // dir), one before the last reboot.
    edit_record(&container, "pid_ns", |ns| (ns.as_u64().unwrap() + 1).into());
    edit_record(&before_reboot, "boot_id", |_| {
        "00000000-0000-0000-0000-000000000000".into()
    });
    let out = state(&sb, &["gc"]);
    out.expect_code(0)
        .expect_stderr(&format!(
            "kept {}: recorded in another pid namespace",
            container.display()
        ))
        .expect_stderr(&format!("removed {}", before_reboot.display()));
    assert!(container.join("deploys").is_file(), "{}", sb.listing());
    assert!(!before_reboot.exists(), "{}", sb.listing());
}

#[test]
fn gc_removes_temporaries_killed_writers_left_in_a_live_run_dir() {
    let sb = Sandbox::new();
    let harness = live_harness(&sb);
    let pid = harness.pid().to_string();
    run_r(&sb, &pid, &["set", "opstate", "up"]).expect_code(0);
    let run_dir = sb.state_dir().join(format!("r-{pid}"));
    let leftover = run_dir.join(".opstate.999999.tmp");
    std::fs::write(&leftover, "half").unwrap();
    state(&sb, &["gc", "--dry-run"])
        .expect_code(0)
        .expect_stderr(&format!("would remove {}", leftover.display()));
    assert!(leftover.exists());
    state(&sb, &["gc"])
        .expect_code(0)
        .expect_stderr(&format!("removed {}: a temporary", leftover.display()));
    assert!(!leftover.exists());
    assert_eq!(
        run_r(&sb, &pid, &["get", "opstate"]).stdout,
        "up\n",
        "the live run's files were touched"
    );
}

/// Paths stay bytes: with a state dir whose name is not UTF-8, `env`
/// exports the exact path of the run dir it created (a single-quoted word
/// with the raw bytes, which dash reads back as they are), so the harness's
/// files are the ones `incr` writes. Before, the export lines held a
/// U+FFFD-mangled path (status 0) naming no directory at all. `--json`,
/// which cannot carry such a path, refuses (2) and creates nothing.
#[test]
fn env_exports_a_state_dir_that_is_not_utf8_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let state_dir = sb.root().join(std::ffi::OsStr::from_bytes(b"state-\xff'x"));
    let script = r#"eval "$(ccci-state --state-dir "$1" --run-id r --pid 42 env)" || exit 9
        [ -d "${CCCI_DEPLOYS_FILE%/*}" ] || { echo "no dir: $CCCI_DEPLOYS_FILE"; exit 8; }
        ccci-state incr deploys >/dev/null && cat "$CCCI_DEPLOYS_FILE""#;
    let out = sb
        .sh(script)
        .arg("sh")
        .arg(&state_dir)
        .env_remove("CCCI_STATE_DIR")
        .run();
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "1", "{out}");
    let counter = state_dir.join("r-42").join("deploys");
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "1");
    let json_dir = sb.root().join(std::ffi::OsStr::from_bytes(b"json-\xff"));
    let out = sb
        .tool("ccci-state")
        .arg("--state-dir")
        .arg(&json_dir)
        .args(["--run-id", "r", "--pid", "42", "env", "--json"])
        .run();
    out.expect_code(2).expect_stderr(r"$'");
    assert!(out.stderr.contains(r"json-\xff'"), "{out}");
    assert!(!json_dir.exists());
}
