//! A newcomer's path: the README's two commands work from a checkout with no
//! tools on `PATH`, wherever cargo builds (`CARGO_TARGET_DIR`); `make` then
//! `make install` yields the tools, their man pages, completions and the
//! janitor's scripts and units, and `make install` never builds. `make`
//! links the tools statically (what docs/benchmarks.md measures), and
//! `make STATIC=` dynamically.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ccci_tests::{Cmd, Output, Sandbox, TOOLS};

fn workspace() -> PathBuf {
    ccci_tests::workspace_root()
}

/// A command as a newcomer's shell runs it: no ccci tool on `PATH`, `HOME`
/// in the sandbox, but cargo's and rustup's own homes kept, since a
/// newcomer has a Rust toolchain.
fn newcomer(sb: &Sandbox, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let keep = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    sb.command_without_tools(program)
        .env("CARGO_HOME", keep("CARGO_HOME", home.join(".cargo")))
        .env("RUSTUP_HOME", keep("RUSTUP_HOME", home.join(".rustup")))
        .env("TMPDIR", sb.root())
}

fn check_demo(out: &Output) {
    out.expect_code(0)
        .expect_stdout("run 102 says: ccci-lock: waiting for word-3f2a01.ci.example.org")
        .expect_stdout("[102] holds word-3f2a01.ci.example.org; deploys=1")
        .expect_stdout("[103] holds next-c0ffee.ci.example.org and mari-c0ffee.ci.example.org")
        .expect_stdout("[104] teardown after the deadline")
        .expect_stdout("ended with status 142")
        .expect_stdout("the lock is free again");
    for app in ["next-c0ffee.ci.example.org", "mari-c0ffee.ci.example.org"] {
        let reaped = format!("ccci-reap-abra: {app}: undeployed and removed");
        assert_eq!(
            out.stdout.matches(&reaped).count(),
            1,
            "{app} not reaped exactly once\n{out}"
        );
    }
    let last = out
        .stdout
        .lines()
        .rfind(|l| l.contains("deployed now:"))
        .unwrap_or_else(|| panic!("no deployed list\n{out}"));
    assert_eq!(
        last.trim(),
        "deployed now: traefik.ci.example.org (deployed), warm-wordpress.ci.example.org (deployed)",
        "{out}"
    );
}

#[test]
fn the_demo_runs_as_the_readme_says_from_a_checkout_with_no_tools_on_path() {
    let sb = Sandbox::new();
    let out = newcomer(&sb, "./examples/demo.sh")
        .current_dir(workspace())
        .run_within_deadlines(10);
    check_demo(&out);
}

#[test]
fn the_demo_runs_with_cargo_target_dir_pointing_elsewhere() {
    let sb = Sandbox::new();
    // Elsewhere: a path outside the checkout that is not ./target. It names
    // the suite's own build (through a symlink), so nothing is rebuilt.
    let elsewhere = sb.path("elsewhere-target");
    std::os::unix::fs::symlink(ccci_tests::target_dir(), &elsewhere).unwrap();
    let out = newcomer(&sb, workspace().join("examples/demo.sh"))
        .env("CARGO_TARGET_DIR", &elsewhere)
        .run_within_deadlines(10);
    check_demo(&out);
    out.expect_stdout(&format!("the tools are in {}", elsewhere.display()));
}

/// Runs make in the checkout. Builds write the generated man pages into one
/// directory of the shared target dir, so make tests take turns.
fn make(sb: &Sandbox, args: &[&str], built: &Path) -> Output {
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    newcomer(sb, "make")
        .arg("-C")
        .arg(workspace())
        .args(["--no-print-directory", "PROFILE=dev"])
        .arg(format!("BUILT={}", built.display()))
        .args(args)
        .run_within_deadlines(10)
}

/// Whether the ELF executable `path` asks for a program interpreter (the
/// dynamic loader): `readelf -lW` lists a PT_INTERP program header.
fn dynamically_linked(sb: &Sandbox, path: &Path) -> bool {
    let out = sb.command("readelf").arg("-lW").arg(path).run();
    out.expect_code(0).expect_stdout("Program Headers:");
    let interp = out
        .stdout
        .lines()
        .any(|l| l.split_whitespace().next() == Some("INTERP"));
    assert_eq!(
        interp,
        out.stdout.contains("Requesting program interpreter"),
        "{out}"
    );
    interp
}

/// The `BUILT_BIN` directory a `make` recorded in `built`.
fn built_bin(built: &Path) -> PathBuf {
    let record = std::fs::read_to_string(built).unwrap();
    record
        .lines()
        .find_map(|l| l.strip_prefix("BUILT_BIN := "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no BUILT_BIN in\n{record}"))
}

/// A uid that `/etc/passwd` does not list.
fn unlisted_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let listed: Vec<&str> = passwd.lines().filter_map(|l| l.split(':').nth(2)).collect();
    (4242..)
        .find(|uid| !listed.contains(&uid.to_string().as_str()))
        .unwrap()
}

/// The error that names a directory's owner works in the installed (static)
/// tools for a uid `/etc/passwd` does not list: a static glibc's
/// `getpwuid_r` would load the other NSS modules of `/etc/nsswitch.conf`
/// (`passwd: files systemd` on Debian), and crash in `libnss_systemd`.
fn names_an_unlisted_owner(sb: &Sandbox, lock: &Path) {
    if crate::attacks::euid() != 0 {
        eprintln!("not root: a directory owned by an unlisted uid is not tested");
        return;
    }
    let uid = unlisted_uid();
    let theirs = sb.path("unlisted-owner");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(uid), None).unwrap();
    sb.command(lock)
        .arg("--lock-dir")
        .arg(&theirs)
        .args(["unlisted.example.org", "--", "true"])
        .run()
        .expect_code(125)
        .expect_stderr(&format!("is owned by uid {uid}, not by uid 0 (root)"));
}

#[test]
fn make_then_make_install_yields_tools_man_pages_completions_and_scripts() {
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    let built = sb.path("built.mk");
    let destdir = format!("DESTDIR={}", dest.display());
    let install = [destdir.as_str(), "PREFIX=/opt/ccci", "CARGO=false"];

    // Nothing built yet: install refuses, and builds nothing (CARGO=false).
    let out = make(&sb, &[&["install"][..], &install].concat(), &built);
    assert_ne!(out.code(), 0, "{out}");
    out.expect_stderr("run 'make' first");
    assert!(!dest.exists(), "install created files\n{out}");

    make(&sb, &[], &built)
        .expect_code(0)
        .expect_stdout("linked statically");
    // Man pages and completions are generated into cargo's target dir.
    let record = std::fs::read_to_string(&built).unwrap();
    let gen = format!("BUILT_GEN := {}/", ccci_tests::target_dir().display());
    assert!(record.contains(&gen), "no {gen:?} in\n{record}");
    // Installing never runs cargo (CARGO=false would fail it).
    make(&sb, &[&["install"][..], &install].concat(), &built)
        .expect_code(0)
        .expect_stdout("no CI_USER given");
    let prefix = dest.join("opt/ccci");
    let count = |dir: &str| std::fs::read_dir(prefix.join(dir)).map_or(0, |d| d.count());
    assert_eq!(count("bin"), 5);
    assert_eq!(count("share/man/man1"), 5);
    assert_eq!(count("lib/ccci"), 2, "ccci-janitor-pass and ccci-reap-abra");
    let completions = count("share/bash-completion/completions")
        + count("share/zsh/site-functions")
        + count("share/fish/vendor_completions.d");
    assert_eq!(completions, 15);
    for tool in TOOLS {
        let page = prefix.join(format!("share/man/man1/{tool}.1"));
        let rendered = sb
            .command("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "200")
            .env("MAN_KEEP_FORMATTING", "")
            .run();
        rendered.expect_code(0);
        for section in [
            "SYNOPSIS",
            "ENVIRONMENT",
            "EXIT STATUS",
            "142 = SIGALRM deadline",
        ] {
            assert!(
                rendered.stdout.contains(section),
                "{tool}: no {section}\n{rendered}"
            );
        }
        let bin = prefix.join("bin").join(tool);
        sb.command(&bin)
            .arg("--version")
            .run()
            .expect_code(0)
            .expect_stdout(tool);
        // What the benchmarks measure: statically linked, no loader.
        assert!(!dynamically_linked(&sb, &bin), "{tool} is not static");
        let built = built_bin(&built).join(tool);
        assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&built).unwrap());
    }
    names_an_unlisted_owner(&sb, &prefix.join("bin/ccci-lock"));
    make(&sb, &[&["uninstall"][..], &install].concat(), &built).expect_code(0);
    assert_eq!(
        count("bin") + count("share/man/man1") + count("lib/ccci"),
        0
    );

    // `make STATIC=`: dynamically linked tools, in cargo's usual directory,
    // and `make install` installs those.
    let dynamic = sb.path("built-dynamic.mk");
    make(&sb, &["STATIC="], &dynamic)
        .expect_code(0)
        .expect_stdout("linked dynamically");
    assert_ne!(built_bin(&dynamic), built_bin(&built));
    make(&sb, &[&["install"][..], &install].concat(), &dynamic).expect_code(0);
    for tool in TOOLS {
        let bin = prefix.join("bin").join(tool);
        assert!(dynamically_linked(&sb, &bin), "{tool} is not dynamic");
        sb.command(&bin)
            .arg("--version")
            .run()
            .expect_code(0)
            .expect_stdout(tool);
    }
}

#[test]
fn make_install_with_ci_user_fills_in_the_units() {
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    let built = sb.path("built.mk");
    make(&sb, &[], &built).expect_code(0);
    let destdir = format!("DESTDIR={}", dest.display());
    let base = [destdir.as_str(), "PREFIX=/usr/local", "CARGO=false"];

    // A user that does not exist here, with nothing given: refused clearly.
    let out = make(
        &sb,
        &[&["install"][..], &base, &["CI_USER=no-such-ci-user"]].concat(),
        &built,
    );
    assert_ne!(out.code(), 0, "{out}");
    out.expect_stderr("unknown user 'no-such-ci-user'");

    let user = [
        "CI_USER=ci",
        "CI_UID=1234",
        "CI_GROUP=cigroup",
        "CI_HOME=/home/ci",
        "CCCI_ONLY=*-??????.ci.example.org",
    ];
    make(&sb, &[&["install"][..], &base, &user].concat(), &built).expect_code(0);
    let read = |rel: &str| {
        std::fs::read_to_string(dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let service = read("usr/local/lib/systemd/system/ccci-janitor.service");
    for line in [
        "User=ci\n",
        "Group=cigroup\n",
        "Environment=HOME=/home/ci\n",
        "Environment=PATH=/usr/local/bin:",
        "EnvironmentFile=/etc/ccci/janitor.env\n",
        "ExecStart=/usr/local/lib/ccci/ccci-janitor-pass\n",
    ] {
        assert!(service.contains(line), "no {line:?} in\n{service}");
    }
    read("usr/local/lib/systemd/system/ccci-janitor.timer");
    let tmpfiles = read("usr/local/lib/tmpfiles.d/ccci.conf");
    assert!(
        tmpfiles.contains("d     /run/lock/ccci-1234 0700 ci cigroup -"),
        "{tmpfiles}"
    );
    let cron = read("usr/local/share/ccci/cron.ccci-janitor");
    assert!(cron.contains("HOME=/home/ci\n") && cron.contains(" ci . /etc/ccci/janitor.env"));
    let env = read("etc/ccci/janitor.env");
    assert!(env.contains("CCCI_ONLY='*-??????.ci.example.org'"), "{env}");
    for text in [&service, &tmpfiles, &cron, &env] {
        assert!(!text.contains('@'), "a placeholder is left:\n{text}");
    }
    // The site's own janitor.env is never overwritten.
    std::fs::write(dest.join("etc/ccci/janitor.env"), "CCCI_ONLY='mine-*'\n").unwrap();
    make(&sb, &[&["install"][..], &base, &user].concat(), &built).expect_code(0);
    assert_eq!(read("etc/ccci/janitor.env"), "CCCI_ONLY='mine-*'\n");
}
