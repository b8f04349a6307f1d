//! Adoption on a real server (SPEC §9): the abra reaper, the janitor pass
//! from cron and systemd, and the units `make install` fills in, against the
//! stub `abra` of the harness (abra's documented command line, state in
//! files, undocumented flags refused).
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the stub abra and the installed-units helpers defined in
//! it.

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
        .env("CCCI_REAP_POLL", "0.05")
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
    // Only the app's own server is asked for deployment status.
    assert!(
        log.lines()
            .filter(|l| l.contains("--status"))
            .all(|l| l.ends_with("--server ci.example.org")),
        "{log}"
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
            .env("CCCI_REAP_POLL", "0.05")
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

    for bad in ["", "a b", "../x", "x/y", "wp.ci\r"] {
        let out = reap(&sb, bad);
        out.expect_code(2).expect_stderr("not a valid domain");
    }
    // A flag it does not know is a usage error, not a domain.
    reap(&sb, "-rf")
        .expect_code(2)
        .expect_stderr("unknown option '-rf'")
        .expect_stderr("usage");
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

/// One fenced code block of a markdown file.
struct Snippet {
    line: usize,
    info: String,
    text: String,
}

fn snippets(markdown: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut open: Option<Snippet> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Snippet {
                    line: n + 1,
                    info: info.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(s), _) => {
                s.text.push_str(line);
                s.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

/// `text` with the absolute paths `/usr/local/…` and `/etc/…` moved under
/// `dest` (where the tests' `make install` puts them).
fn redirect(text: &str, dest: &Path) -> String {
    let dest = dest.to_str().unwrap();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['/']) {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        let starts_path = out
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || "\"'=(".contains(c));
        if starts_path && (at.starts_with("/usr/local/") || at.starts_with("/etc/")) {
            out.push_str(dest);
        }
        out.push('/');
        rest = &at[1..];
    }
    out.push_str(rest);
    out
}

/// The stand-in server of docs/adopting.md: a stub abra with a proxy, a
/// backups app and a warm app deployed, the CI user's ~/.abra with two
/// recipes, stub `runuser`, `systemctl`, `systemd-tmpfiles` and `journalctl`, and the checkout as `work/ccci`.
fn stand_in_server(sb: &Sandbox) -> (PathBuf, PathBuf) {
    sb.install_abra_stub();
    let stub = |name: &str, body: &str| {
        let path = sb.stub_dir().join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    // runuser -u USER -- CMD: this test already is the CI user.
    stub(
        "runuser",
        "#!/bin/sh\nset -eu\n[ \"$1\" = -u ] && [ \"$3\" = -- ] || { echo \"runuser stub: $*?\" >&2; exit 1; }\n\
         shift 3; exec \"$@\"\n",
    );
    // systemd-tmpfiles --create FILE: knows only what make install put under DESTDIR.
    stub(
        "systemd-tmpfiles",
        "#!/bin/sh\nset -eu\n[ \"$1\" = --create ] && grep -q '^d  *.run.lock.ccci-' \"$2\"\n\
         echo \"systemd-tmpfiles $*\" >> \"$CCCI_DOC_DEST/systemctl.log\"\n",
    );
    stub(
        "journalctl",
        "#!/bin/sh\nset -eu\n[ \"$*\" = '-u ccci-janitor' ] && echo '-- No entries --'\n",
    );
    // systemctl: knows only the units make install put under DESTDIR.
    stub(
        "systemctl",
        "#!/bin/sh\nset -eu\necho \"systemctl $*\" >> \"$CCCI_DOC_DEST/systemctl.log\"\n\
         case $1 in daemon-reload) ;; enable) shift; [ \"$1\" != --now ] || shift\n\
         test -f \"$CCCI_DOC_DEST/usr/local/lib/systemd/system/$1\" ;;\n\
         list-timers) test -f \"$CCCI_DOC_DEST/usr/local/lib/systemd/system/$2\"; echo \"NEXT LEFT $2\" ;;\n\
         *) echo \"systemctl stub: $1?\" >&2; exit 1 ;; esac\n",
    );
    let abra = sb.path("home/.abra");
    std::fs::create_dir_all(abra.join("servers/ci.example.org")).unwrap();
    for recipe in ["wordpress", "mariadb"] {
        let repo = abra.join("recipes").join(recipe);
        std::fs::create_dir_all(&repo).unwrap();
        sb.sh(
            "git init -q && echo 'version: 1.0.0' > compose.yml && git add . && \
               git -c user.name=ci -c user.email=ci@example.org commit -qm 1.0.0 && git tag 1.0.0",
        )
        .current_dir(&repo)
        .run()
        .expect_code(0);
    }
    for app in [
        "traefik.ci.example.org",
        "backups.ci.example.org",
        "warm-wordpress.ci.example.org",
    ] {
        deploy(sb, app);
    }
    // The server has cron installed.
    std::fs::create_dir_all(sb.path("dest/etc/cron.d")).unwrap();
    let work = sb.path("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink(ccci_tests::workspace_root(), work.join("ccci")).unwrap();
    (work, sb.path("dest"))
}

#[test]
fn every_snippet_of_the_adoption_guide_runs() {
    let doc = ccci_tests::workspace_root().join("docs/adopting.md");
    let markdown = std::fs::read_to_string(&doc).unwrap();
    let snippets = snippets(&markdown);
    assert!(snippets.len() >= 10, "only {} snippets", snippets.len());
    let sb = Sandbox::new();
    let (work, dest) = stand_in_server(&sb);
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let keep = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    for s in &snippets {
        let mut words = s.info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        assert!(
            rest.contains(&"test"),
            "docs/adopting.md:{}: a code block not marked `test`: every snippet must run",
            s.line
        );
        let text = redirect(&s.text, &dest);
        if let Some(name) = rest.iter().find_map(|w| w.strip_prefix("file=")) {
            let path = work.join(name);
            std::fs::write(&path, &text).unwrap();
            // Saved as an editor saves it: the guide makes it executable.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            continue;
        }
        let cmd = match lang {
            "sh" => sb.command("sh").args(["-e", "-c", &text]),
            "bash" => sb.command("bash").args(["-e", "-c", &text]),
            "python" => sb.command("python3").args(["-c", &text]),
            other => panic!("docs/adopting.md:{}: cannot run a {other:?} block", s.line),
        };
        // The installed configuration file, at its redirected default path.
        let conf = dest.join("etc/ccci/ccci.conf");
        let cmd = if conf.exists() {
            cmd.env("CCCI_CONFIG", &conf)
        } else {
            cmd
        };
        let out = cmd
            .current_dir(&work)
            .env_remove("CCCI_CANONICAL_ABRA_DIR") // $HOME/.abra, as on the server
            .env("DESTDIR", &dest)
            .env("CCCI_DOC_DEST", &dest)
            .env("BUILT", sb.path("built.mk"))
            .env("PROFILE", "dev")
            .env("CI_UID", "1234")
            .env("CI_GROUP", "ci")
            .env("CI_HOME", sb.path("home"))
            .env("CARGO_HOME", keep("CARGO_HOME", home.join(".cargo")))
            .env("RUSTUP_HOME", keep("RUSTUP_HOME", home.join(".rustup")))
            .env("CCCI_REAP_POLL", "0.05")
            .env("TMPDIR", sb.root())
            .run_within_deadlines(10); // a build, or several CI runs
        assert_eq!(
            out.code(),
            0,
            "docs/adopting.md:{}: the snippet failed\n{}\n{out}",
            s.line,
            s.text
        );
    }
}

fn pass(sb: &Sandbox) -> ccci_tests::Cmd {
    sb.command(contrib("ccci-janitor-pass"))
        .env("CCCI_REAP_POLL", "0.05")
        .env("TMPDIR", sb.root())
}

/// Puts a `ccci-janitor` first on `PATH` that only records that it ran,
/// with its arguments and the patterns it got in its environment (the
/// real one answers `--print-config`, which the pass asks first).
fn janitor_recorder(sb: &Sandbox) -> PathBuf {
    let ran = sb.path("janitor-ran");
    let stub = sb.stub_dir().join("ccci-janitor");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\n[ \"$1\" != --print-config ] || exec '{}' \"$@\"\n\
             echo \"$* only=$CCCI_ONLY warm=${{CCCI_WARM-}}\" > '{}'\n",
            ccci_tests::bin("ccci-janitor").display(),
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ran
}

#[test]
fn janitor_pass_requires_the_ci_pattern_and_its_programs() {
    let sb = Sandbox::new();
    let swarm = sb.install_abra_stub();
    let ran = janitor_recorder(&sb);
    for only in [None, Some(""), Some("  ")] {
        let mut cmd = pass(&sb);
        if let Some(only) = only {
            cmd = cmd.env("CCCI_ONLY", only);
        }
        cmd.run()
            .expect_code(2)
            .expect_stderr("CCCI_ONLY is not set");
    }
    pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org")
        .env("CCCI_ABRA", "no-such-abra")
        .run()
        .expect_code(125)
        .expect_stderr("not found: no-such-abra")
        .expect_stderr("jq");
    assert!(!ran.exists(), "the janitor ran");
    assert!(!swarm.join("calls").exists(), "abra was asked");
}

#[test]
fn janitor_pass_does_nothing_when_abra_fails() {
    let sb = Sandbox::new();
    let swarm = sb.install_abra_stub();
    let ran = janitor_recorder(&sb);
    deploy(&sb, "wp-3f2a20.ci.example.org");
    std::fs::write(swarm.join("fail-ls"), "").unwrap();
    pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org")
        .run()
        .expect_code(125)
        .expect_stderr("'abra app ls --machine' failed")
        .expect_stderr("cannot reach the server");
    assert!(!ran.exists(), "the janitor ran on an empty list");

    // abra works again: the janitor gets the list, the patterns and the reaper.
    std::fs::remove_file(swarm.join("fail-ls")).unwrap();
    pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org *.test.example.org")
        .env("CCCI_WARM", "warm-* w[[:digit:]].x")
        .args(["-v"])
        .run();
    let args = std::fs::read_to_string(&ran).expect("the janitor ran");
    for want in [
        " -v -- ",
        "/ccci-reap-abra only=*-??????.ci.example.org *.test.example.org",
        "warm=warm-* w[[:digit:]].x",
    ] {
        assert!(args.contains(want), "no {want:?} in {args:?}");
    }
    let list = args.split_whitespace().nth(1).unwrap();
    assert!(args.starts_with("--deployed "), "{args}");
    assert!(!Path::new(list).exists(), "the list file was left behind");
}

#[test]
fn janitor_pass_reaps_only_abandoned_ci_apps_and_collects_dead_runs() {
    let sb = Sandbox::new();
    let swarm = sb.install_abra_stub();
    for app in [
        "traefik.ci.example.org",
        "warm-wordpress.ci.example.org",
        "word-000001.ci.example.org", // its run was killed: a claim is left
        "word-000002.ci.example.org", // deployed, no claim (a reboot)
        "word-000003.ci.example.org", // its run is alive
    ] {
        deploy(&sb, app);
    }
    sb.tool("ccci-lock")
        .args([
            "word-000001.ci.example.org",
            "--",
            "sh",
            "-c",
            "kill -KILL $$",
        ])
        .run()
        .expect_code(137);
    let mut live = sb
        .tool("ccci-lock")
        .args([
            "word-000003.ci.example.org",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 600",
        ])
        .spawn();
    live.expect_stdout("ready");
    // A dead run's state and ABRA_DIR (its harness, the sh, has exited).
    sb.sh("ccci-state --run-id dead env >/dev/null && ccci-abradir --run-id dead >/dev/null")
        .env("CCCI_CANONICAL_ABRA_DIR", sb.path("home/.abra"))
        .run()
        .expect_code(0);
    let dirs = |dir: PathBuf| std::fs::read_dir(dir).map_or(0, |d| d.count());
    assert_eq!((dirs(sb.state_dir()), dirs(sb.runs_dir())), (1, 1));

    let out = pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org")
        .run_within_deadlines(4);
    out.expect_code(0);
    let apps = listed(&sb);
    for gone in ["word-000001", "word-000002"] {
        assert!(!apps.contains(gone), "{gone} not reaped\n{apps}\n{out}");
    }
    for kept in ["traefik", "warm-wordpress", "word-000003"] {
        assert!(apps.contains(kept), "{kept} reaped\n{apps}\n{out}");
    }
    assert!(swarm.join("word-000003.ci.example.org.stack").exists());
    assert!(!live.has_exited(), "the live run was disturbed\n{out}");
    assert_eq!(
        (dirs(sb.state_dir()), dirs(sb.runs_dir())),
        (0, 0),
        "the dead run was not collected\n{out}"
    );
    // Each app reaped once: a second pass finds nothing to do.
    let log = calls(&swarm);
    let out = pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org")
        .run_within_deadlines(4);
    out.expect_code(0);
    let again = &calls(&swarm)[log.len()..];
    assert!(
        !again.contains("undeploy") && !again.contains("remove"),
        "{again}\n{out}"
    );
}

/// `--quiet` (the installed cron line's): a pass that only sums up prints
/// nothing, so cron's MAILTO stays silent; one that reaps, or fails, shows
/// everything it said.
#[test]
fn a_quiet_pass_prints_only_what_is_worth_a_mail() {
    let sb = Sandbox::new();
    sb.install_abra_stub();
    std::fs::create_dir(sb.lock_dir()).unwrap();
    std::fs::set_permissions(
        sb.lock_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    deploy(&sb, "traefik.ci.example.org");
    let quiet = |sb: &Sandbox| {
        pass(sb)
            .env(
                "CCCI_ONLY",
                "????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org",
            )
            .arg("--quiet")
            .run()
    };
    let out = quiet(&sb);
    out.expect_code(0);
    assert_eq!(out.stderr, "", "a pass with nothing to do mailed: {out}");
    // Without --quiet the same pass says its summary.
    pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org")
        .run()
        .expect_code(0)
        .expect_stderr("pass done: ");
    // Something to reap: everything is shown, the summary too.
    deploy(&sb, "word-000001.ci.example.org");
    quiet(&sb)
        .expect_code(0)
        .expect_stderr("word-000001.ci.example.org: reaped")
        .expect_stderr("pass done: 1 reaped");
    // A failure is shown.
    pass(&sb)
        .env("CCCI_ONLY", "*-??????.ci.example.org")
        .env("CCCI_ABRA", "no-such-abra")
        .arg("--quiet")
        .run()
        .expect_code(125)
        .expect_stderr("not found: no-such-abra");
}
