//! The assembled host (SPEC §7 cases 31 and 35): what `make install`
//! installed, run the way its three entry points start it. A runner's job
//! gets the pipeline's environment, the cron line cron's (`env -i` and the
//! cron file's own `PATH`, `HOME` and `SHELL`), the systemd unit exactly its
//! `Environment=` lines; none of them is given a `CCCI_*` variable. They
//! agree because each reads the one configuration file at its default path,
//! `/etc/ccci/ccci.conf`: each runs in a private mount namespace
//! (`unshare --mount`, as root) where the installed `/usr/local` is bind
//! mounted over the host's and the installed `/etc/ccci` is laid over `/etc`
//! (an overlay whose upper layer is a tmpfs), so the host's own `/etc` and
//! `/usr/local` are never touched.
//!
//! Precedence (flag > environment > file), an unknown key and an unsafe
//! file are shown with the tools themselves.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the installed host and the namespace helpers defined in it.

use std::path::{Path, PathBuf};

use ccci_tests::{Cmd, Output, Sandbox};

use crate::newcomer::{make, FIELD_PATTERN};

/// A per-run app of the field's shape, the live run's.
const LIVE: &str = "word-3f2a01.ci.example.org";

/// What `make install` put under `dest`, and how to run it.
struct Host {
    sb: Sandbox,
    dest: PathBuf,
    ns: PathBuf,
}

/// Builds (a no-op when up to date), installs into the sandbox for the CI
/// user "root" with `HOME` in the sandbox, and writes the namespace wrapper.
/// `None` when not root: only root can make a mount namespace here.
fn install() -> Option<Host> {
    if crate::attacks::euid() != 0 {
        eprintln!("not root: the installed cron line and unit are not run");
        return None;
    }
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    let built = sb.path("built.mk");
    make(&sb, &[], &built).expect_code(0);
    let destdir = format!("DESTDIR={}", dest.display());
    let home = format!("CI_HOME={}", sb.path("home").display());
    make(
        &sb,
        &[
            "install",
            &destdir,
            "PREFIX=/usr/local",
            "CARGO=false",
            "CI_USER=root",
            "CI_UID=0",
            "CI_GROUP=root",
            &home,
        ],
        &built,
    )
    .expect_code(0);
    let ns = sb.path("ns.sh");
    std::fs::write(
        &ns,
        "#!/bin/sh\n\
         # ns.sh DEST COMMAND...: COMMAND with DEST's /usr/local and /etc/ccci in place\n\
         set -eu\n\
         d=$1; shift\n\
         mkdir -p \"$d/.ns\"\n\
         mount -t tmpfs ccci-test \"$d/.ns\"\n\
         mkdir \"$d/.ns/upper\" \"$d/.ns/work\"\n\
         cp -a \"$d/etc/ccci\" \"$d/.ns/upper/ccci\"\n\
         mount -t overlay overlay -o \"lowerdir=/etc,upperdir=$d/.ns/upper,workdir=$d/.ns/work\" /etc\n\
         mount --bind \"$d/usr/local\" /usr/local\n\
         exec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&ns, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Some(Host { sb, dest, ns })
}

impl Host {
    /// The configuration file at its default path (inside the namespace).
    fn write_config(&self, text: &str) {
        let conf = self.dest.join("etc/ccci/ccci.conf");
        std::fs::write(&conf, text).unwrap();
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
    }

    /// `argv` in the installed host's namespace with exactly `env`.
    fn run_as_installed(&self, env: &[(String, String)], argv: &[String]) -> Cmd {
        let mut cmd = self
            .sb
            .command("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(&self.ns)
            .arg(&self.dest)
            .args(["env", "-i"]);
        for (k, v) in env {
            cmd = cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv)
    }

    /// A runner's job: the pipeline's environment (a PATH, a HOME), nothing
    /// of ccci's.
    fn runner_job(&self, argv: &[&str]) -> Cmd {
        let env = [
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), self.sb.path("home").display().to_string()),
        ];
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.run_as_installed(&env, &argv)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// The installed cron line as cron runs it: `SHELL -c COMMAND` with the
    /// file's variables, and LOGNAME, as cron sets it.
    fn cron_line(&self) -> Cmd {
        let cron = self.read("usr/local/share/ccci/cron.ccci-janitor");
        let (env, argv) = cron_entry(&cron);
        self.run_as_installed(&env, &argv)
    }

    /// The installed unit's ExecStart with exactly its Environment= lines.
    fn unit_command(&self) -> Cmd {
        let unit = self.read("usr/local/lib/systemd/system/ccci-janitor.service");
        let (env, argv) = unit_service(&unit);
        self.run_as_installed(&env, &argv)
    }
}

/// The variables and the command of a cron file's one entry.
fn cron_entry(cron: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut entry = None;
    for line in cron
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        if line.starts_with(|c: char| c.is_ascii_digit() || c == '*') {
            assert!(entry.is_none(), "two entries in\n{cron}");
            let fields: Vec<&str> = line.splitn(7, ' ').collect();
            assert_eq!(fields.len(), 7, "{line}");
            entry = Some((fields[5].to_string(), fields[6].to_string()));
        } else {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{line}"));
            env.push((k.to_string(), v.to_string()));
        }
    }
    let (user, command) = entry.unwrap_or_else(|| panic!("no entry in\n{cron}"));
    for want in ["PATH", "HOME", "SHELL"] {
        assert!(env.iter().any(|(k, _)| k == want), "no {want} in\n{cron}");
    }
    let shell = env.iter().find(|(k, _)| k == "SHELL").unwrap().1.clone();
    env.push(("LOGNAME".into(), user));
    (env, vec![shell, "-c".into(), command])
}

/// Splits a systemd command line or assignment into words: double or
/// single quotes group, as systemd reads them.
fn systemd_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => words.extend(word.take()),
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quotes: {text}");
    words.extend(word);
    words
}

/// The Environment= assignments and the ExecStart words of a unit.
fn unit_service(unit: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut exec = None;
    for line in unit.lines() {
        assert!(
            !line.starts_with("EnvironmentFile="),
            "the unit sources a file: {line}"
        );
        if let Some(rest) = line.strip_prefix("Environment=") {
            for word in systemd_words(rest) {
                let (k, v) = word.split_once('=').unwrap();
                env.push((k.to_string(), v.to_string()));
            }
        } else if let Some(rest) = line.strip_prefix("ExecStart=") {
            exec = Some(systemd_words(rest));
        }
    }
    (
        env,
        exec.unwrap_or_else(|| panic!("no ExecStart in\n{unit}")),
    )
}

/// `abra app new` + `deploy` of `domain` on the stub (state under HOME).
fn deploy(sb: &Sandbox, domain: &str) {
    for args in [
        &[
            "app",
            "new",
            "wordpress",
            "--server",
            "ci.example.org",
            "--domain",
            domain,
        ][..],
        &["app", "deploy", domain],
    ] {
        sb.command("abra")
            .args(args)
            .arg("--no-input")
            .run()
            .expect_code(0);
    }
}

fn swarm_calls(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path("home/.abra-stub-swarm/calls")).unwrap_or_default()
}

/// The configuration the host's entry points share: every directory in
/// the sandbox, the field's strict CI pattern.
fn shared_config(sb: &Sandbox, extra: &str) -> String {
    format!(
        "# written by the test\n\
         CCCI_APP_LOCK_DIR={}\n\
         CCCI_STATE_DIR={}\n\
         CCCI_RUNS_DIR={}\n\
         CCCI_ONLY='{FIELD_PATTERN}'\n\
         CCCI_WARM='warm-*'\n\
         CCCI_REAP_POLL=0.05\n{extra}",
        sb.path("conf-locks").display(),
        sb.path("conf-state").display(),
        sb.path("conf-runs").display(),
    )
}

/// A run of `domain` killed by a signal under the runner's environment: its
/// claim stays in the configuration's lock dir.
fn dead_run(host: &Host, domain: &str) {
    deploy(&host.sb, domain);
    host.runner_job(&["ccci-lock", domain, "--", "sh", "-c", "kill -KILL $$"])
        .run()
        .expect_code(137);
    assert!(
        host.sb
            .path("conf-locks")
            .join(format!("{domain}.lock"))
            .exists(),
        "the claim is not where the configuration file says"
    );
}

fn undeployed(calls: &str, domain: &str) -> bool {
    calls.contains(&format!("app undeploy {domain}"))
}

#[test]
fn case_31_a_runners_job_the_cron_line_and_the_unit_share_one_configuration_file() {
    let Some(host) = install() else { return };
    let sb = &host.sb;
    host.write_config(&shared_config(sb, ""));
    std::fs::create_dir(sb.path("conf-locks")).unwrap();
    // abra where its installer puts it: the CI user's ~/.local/bin, which
    // only the cron line's and the unit's PATH name.
    sb.install_abra_stub();
    let local_bin = sb.path("home/.local/bin");
    std::fs::create_dir_all(&local_bin).unwrap();
    std::fs::rename(sb.stub_dir().join("abra"), local_bin.join("abra")).unwrap();
    let abra = |args: &[&str]| {
        sb.command(local_bin.join("abra"))
            .args(args)
            .run()
            .expect_code(0);
    };
    for app in [
        "traefik.ci.example.org",
        "warm-wordpress.ci.example.org",
        LIVE,
    ] {
        abra(&[
            "app",
            "new",
            "wordpress",
            "-s",
            "ci.example.org",
            "-D",
            app,
            "-n",
        ]);
        abra(&["app", "deploy", app, "-n"]);
    }
    // A runner's job holds LIVE; it got no CCCI_* variable, so its lock dir
    // is the configuration file's.
    let mut live = host
        .runner_job(&[
            "ccci-lock",
            LIVE,
            "--",
            "sh",
            "-c",
            "echo \"ready $CCCI_LOCK_FILE\"; exec sleep 600",
        ])
        .spawn();
    let ready = live.expect_stdout("ready");
    let lockfile = sb.path("conf-locks").join(format!("{LIVE}.lock"));
    assert!(ready.contains(&lockfile.display().to_string()), "{ready}");
    let dead = |domain: &str| {
        abra(&[
            "app",
            "new",
            "wordpress",
            "-s",
            "ci.example.org",
            "-D",
            domain,
            "-n",
        ]);
        abra(&["app", "deploy", domain, "-n"]);
        host.runner_job(&["ccci-lock", domain, "--", "sh", "-c", "kill -KILL $$"])
            .run()
            .expect_code(137);
        assert!(sb
            .path("conf-locks")
            .join(format!("{domain}.lock"))
            .exists());
    };

    // The cron line, as cron runs it.
    dead("word-000002.ci.example.org");
    let out = host.cron_line().run_within_deadlines(4);
    out.expect_code(0);
    let calls = swarm_calls(sb);
    assert!(
        undeployed(&calls, "word-000002.ci.example.org"),
        "the cron line reaped nothing\n{calls}\n{out}"
    );
    assert!(
        !undeployed(&calls, LIVE),
        "the cron line reaped the live run\n{out}"
    );
    assert!(calls.contains("app ls --machine"), "{calls}");

    // The unit's command, with exactly the unit's environment.
    dead("word-000003.ci.example.org");
    let out = host.unit_command().run_within_deadlines(4);
    out.expect_code(0);
    let calls = swarm_calls(sb);
    assert!(
        undeployed(&calls, "word-000003.ci.example.org"),
        "the unit reaped nothing\n{calls}\n{out}"
    );
    assert!(
        !undeployed(&calls, LIVE),
        "the unit reaped the live run\n{out}"
    );
    for kept in ["traefik.ci.example.org", "warm-wordpress.ci.example.org"] {
        assert!(!undeployed(&calls, kept), "{kept} reaped\n{out}");
    }
    assert!(!live.has_exited(), "the live run was disturbed");
    assert!(lockfile.exists());
}

#[test]
fn case_35_under_crons_environment_the_pass_uses_ccci_abra_from_the_configuration_file() {
    let Some(host) = install() else { return };
    let sb = &host.sb;
    std::fs::create_dir(sb.path("conf-locks")).unwrap();
    sb.install_abra_stub();
    // abra neither on cron's PATH nor in ~/.local/bin: the pass says so.
    let elsewhere = sb.path("opt/abra/bin");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::rename(sb.stub_dir().join("abra"), elsewhere.join("abra")).unwrap();
    host.write_config(&shared_config(sb, ""));
    host.cron_line()
        .run()
        .expect_code(125)
        .expect_stderr("not found: abra");
    assert_eq!(swarm_calls(sb), "");

    // CCCI_ABRA in the configuration file names it.
    let abra = elsewhere.join("abra");
    host.write_config(&shared_config(
        sb,
        &format!("CCCI_ABRA={}\n", abra.display()),
    ));
    std::fs::create_dir_all(sb.stub_dir()).unwrap();
    std::os::unix::fs::symlink(&abra, sb.stub_dir().join("abra")).unwrap();
    dead_run(&host, "word-000004.ci.example.org");
    let out = host.cron_line().run_within_deadlines(4);
    out.expect_code(0);
    let calls = swarm_calls(sb);
    assert!(
        undeployed(&calls, "word-000004.ci.example.org"),
        "{calls}\n{out}"
    );
    // The reaper the janitor ran got the same setting.
    assert!(
        calls.contains("app remove word-000004.ci.example.org"),
        "{calls}"
    );
}

#[test]
fn case_35_help_and_bad_flags_of_the_installed_scripts_change_nothing() {
    let Some(host) = install() else { return };
    let sb = &host.sb;
    std::fs::create_dir(sb.path("conf-locks")).unwrap();
    host.write_config(&shared_config(sb, ""));
    sb.install_abra_stub();
    dead_run(&host, "word-000005.ci.example.org");
    // A dead run's state and ABRA_DIR: what a gc would remove.
    host.runner_job(&[
        "sh",
        "-c",
        "ccci-state --run-id dead env >/dev/null && ccci-abradir --run-id dead >/dev/null",
    ])
    .env("CCCI_CANONICAL_ABRA_DIR", sb.path("home/.abra"))
    .run()
    .expect_code(0);
    let dirs = |d: &str| std::fs::read_dir(sb.path(d)).map_or(0, |d| d.count());
    assert_eq!((dirs("conf-state"), dirs("conf-runs")), (1, 1));
    let before = swarm_calls(sb);
    let cron = host.read("usr/local/share/ccci/cron.ccci-janitor");
    let (env, _) = cron_entry(&cron);
    let lib = "/usr/local/lib/ccci";
    for (script, arg, code) in [
        ("ccci-janitor-pass", "--help", 0),
        ("ccci-janitor-pass", "-h", 0),
        ("ccci-janitor-pass", "--bogus", 2),
        ("ccci-reap-abra", "--help", 0),
        ("ccci-reap-abra", "--bogus", 2),
    ] {
        let argv = [format!("{lib}/{script}"), arg.to_string()];
        let out = host.run_as_installed(&env, &argv).run();
        out.expect_code(code);
        let usage = if code == 0 { &out.stdout } else { &out.stderr };
        assert!(usage.contains("usage:"), "{script} {arg}: no usage\n{out}");
        check_unchanged(sb, &before, &format!("{script} {arg}"), &out);
    }
    // ccci-reap-abra with a bad flag before a domain: still nothing.
    let argv = [
        format!("{lib}/ccci-reap-abra"),
        "--bogus".into(),
        "word-000005.ci.example.org".into(),
    ];
    let out = host.run_as_installed(&env, &argv).run();
    out.expect_code(2);
    check_unchanged(sb, &before, "ccci-reap-abra --bogus DOMAIN", &out);
    assert_eq!((dirs("conf-state"), dirs("conf-runs")), (1, 1), "a gc ran");
}

fn check_unchanged(sb: &Sandbox, before: &str, what: &str, out: &Output) {
    assert_eq!(swarm_calls(sb), before, "{what} called abra\n{out}");
    assert!(
        sb.path("conf-locks/word-000005.ci.example.org.lock")
            .exists(),
        "{what} touched the claim\n{out}"
    );
}

/// `ccci-lock D -- sh -c 'echo $CCCI_LOCK_FILE'`: where the lock was taken.
fn lock_dir_used(cmd: Cmd) -> PathBuf {
    let out = cmd
        .args([
            "prec.example.org",
            "--",
            "sh",
            "-c",
            "echo \"$CCCI_LOCK_FILE\"",
        ])
        .run();
    out.expect_code(0);
    Path::new(out.stdout.trim())
        .parent()
        .unwrap_or_else(|| panic!("{out}"))
        .to_path_buf()
}

#[test]
fn case_31_a_flag_beats_the_environment_which_beats_the_file() {
    let sb = Sandbox::new();
    let conf = sb.path("ccci.conf");
    let (a, b, c) = (
        sb.path("from-file"),
        sb.path("from-env"),
        sb.path("from-flag"),
    );
    std::fs::write(&conf, format!("CCCI_APP_LOCK_DIR={}\n", a.display())).unwrap();
    let lock = || {
        sb.tool("ccci-lock")
            .env_remove("CCCI_APP_LOCK_DIR")
            .env("CCCI_CONFIG", &conf)
    };
    assert_eq!(lock_dir_used(lock()), a, "the file");
    assert_eq!(
        lock_dir_used(lock().env("CCCI_APP_LOCK_DIR", &b)),
        b,
        "the environment over the file"
    );
    assert_eq!(
        lock_dir_used(
            lock()
                .env("CCCI_APP_LOCK_DIR", &b)
                .arg("--lock-dir")
                .arg(&c)
        ),
        c,
        "the flag over the environment"
    );
    // --config names the file as CCCI_CONFIG does, and wins over it.
    let other = sb.path("other.conf");
    std::fs::write(&other, format!("CCCI_APP_LOCK_DIR={}\n", c.display())).unwrap();
    assert_eq!(
        lock_dir_used(lock().arg("--config").arg(&other)),
        c,
        "--config over CCCI_CONFIG"
    );
}

#[test]
fn case_31_an_unknown_key_is_2_naming_file_and_line_and_a_group_writable_file_125() {
    let sb = Sandbox::new();
    let conf = sb.path("ccci.conf");
    std::fs::write(
        &conf,
        format!("# ok so far\nCCCI_ONLY='{FIELD_PATTERN}'\n\nCCCI_LOCKDIR=/tmp/typo\n"),
    )
    .unwrap();
    let place = format!("{}:4", conf.display());
    for tool in ccci_tests::TOOLS {
        let out = sb
            .tool(tool)
            .env("CCCI_CONFIG", &conf)
            .arg("--version")
            .run();
        out.expect_code(2).expect_stderr(&place);
        assert!(out.stderr.contains("CCCI_LOCKDIR"), "{tool}\n{out}");
    }
    // The scripts read it through the tools: the same answer.
    sb.command(ccci_tests::workspace_root().join("contrib/ccci-janitor-pass"))
        .env("CCCI_CONFIG", &conf)
        .run()
        .expect_code(2)
        .expect_stderr(&place);

    std::fs::write(&conf, format!("CCCI_ONLY='{FIELD_PATTERN}'\n")).unwrap();
    sb.tool("ccci-janitor")
        .env("CCCI_CONFIG", &conf)
        .arg("--print-config")
        .run()
        .expect_code(0);
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
    for tool in ccci_tests::TOOLS {
        let out = sb
            .tool(tool)
            .env("CCCI_CONFIG", &conf)
            .arg("--version")
            .run();
        out.expect_code(125)
            .expect_stderr(&conf.display().to_string());
    }
}
