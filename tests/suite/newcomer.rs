//! A newcomer's path: the README's two commands work from a checkout with no
//! tools on `PATH`, wherever cargo builds (`CARGO_TARGET_DIR`); `make` then
//! `make install` yields the tools, their man pages, completions and the
//! janitor's scripts and units, and `make install` never builds. `make`
//! links the tools statically (what docs/benchmarks.md measures), and
//! `make STATIC=` dynamically.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the checkout, build and install helpers defined in it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ccci_tests::{Cmd, Output, Sandbox, TOOLS};

/// The field's CI pattern (FIELD.md): 4 letters, `-`, 6 hex digits.
pub(crate) const FIELD_PATTERN: &str =
    "????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org";

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

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
pub(crate) fn make(sb: &Sandbox, args: &[&str], built: &Path) -> Output {
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
    assert_eq!(count("share/man/man8"), 2, "the pages of the two scripts");
    assert_eq!(count("lib/ccci"), 2, "ccci-janitor-pass and ccci-reap-abra");
    // The docs the man pages name, and the example configuration.
    for doc in [
        "adopting.md",
        "configuration.md",
        "exit-status.md",
        "README.md",
    ] {
        assert!(
            prefix.join("share/doc/ccci").join(doc).is_file(),
            "no {doc}"
        );
    }
    let example = prefix.join("share/ccci/ccci.conf.example");
    assert_eq!(
        std::fs::read_to_string(&example).unwrap(),
        std::fs::read_to_string(workspace().join("contrib/ccci.conf.in")).unwrap()
    );
    let conf = dest.join("etc/ccci/ccci.conf");
    assert_eq!(mode(&conf), 0o644);
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
            "EXAMPLES",
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
    make(&sb, &[&["uninstall"][..], &install].concat(), &built)
        .expect_code(0)
        .expect_stdout("kept");
    assert_eq!(
        count("bin") + count("share/man/man1") + count("share/man/man8") + count("lib/ccci"),
        0
    );
    assert!(!example.exists() && !prefix.join("share/doc/ccci").exists());
    assert!(conf.is_file(), "uninstall removed the site's configuration");

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
    assert!(
        !dest.exists(),
        "a refused install installed something\n{out}"
    );

    let only = format!("CCCI_ONLY={FIELD_PATTERN}");
    let user = [
        "CI_USER=ci",
        "CI_UID=1234",
        "CI_GROUP=cigroup",
        "CI_HOME=/home/ci",
        only.as_str(),
    ];
    make(&sb, &[&["install"][..], &base, &user].concat(), &built).expect_code(0);
    let read = |rel: &str| {
        std::fs::read_to_string(dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let path = "/home/ci/.local/bin:/usr/local/bin:/usr/bin:/bin:\
                /run/current-system/sw/bin:/etc/profiles/per-user/ci/bin";
    let service = read("usr/local/lib/systemd/system/ccci-janitor.service");
    for line in [
        "User=ci\n".to_string(),
        "Group=cigroup\n".into(),
        "Environment=\"HOME=/home/ci\"\n".into(),
        format!("Environment=\"PATH={path}\"\n"),
        "ExecStart=\"/usr/local/lib/ccci/ccci-janitor-pass\"\n".into(),
    ] {
        assert!(service.contains(&line), "no {line:?} in\n{service}");
    }
    // The settings are the configuration file's: the unit repeats none.
    let directives: Vec<&str> = service.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        !directives
            .iter()
            .any(|l| l.starts_with("EnvironmentFile") || l.contains("CCCI_")),
        "{service}"
    );
    read("usr/local/lib/systemd/system/ccci-janitor.timer");
    let tmpfiles = read("usr/local/lib/tmpfiles.d/ccci.conf");
    assert!(
        tmpfiles.contains("d     /run/lock/ccci-1234 0700 ci cigroup -"),
        "{tmpfiles}"
    );
    let cron = read("usr/local/share/ccci/cron.ccci-janitor");
    for line in [
        "HOME=/home/ci\n".to_string(),
        format!("PATH={path}\n"),
        "*/5 * * * * ci '/usr/local/lib/ccci/ccci-janitor-pass' --quiet\n".into(),
    ] {
        assert!(cron.contains(&line), "no {line:?} in\n{cron}");
    }
    assert!(
        !cron
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("CCCI_")),
        "{cron}"
    );
    let conf = read("etc/ccci/ccci.conf");
    assert!(
        conf.ends_with(&format!("\nCCCI_ONLY='{FIELD_PATTERN}'\n")),
        "{conf}"
    );
    for text in [&service, &tmpfiles, &cron, &conf] {
        assert!(!text.contains('@'), "a placeholder is left:\n{text}");
    }
    // The file is one the tools accept, and says what make was given.
    sb.tool("ccci-janitor")
        .arg("--config")
        .arg(dest.join("etc/ccci/ccci.conf"))
        .arg("--print-config")
        .run()
        .expect_code(0)
        .expect_stdout(&format!("export CCCI_ONLY='{FIELD_PATTERN}'"));
    // The site's own configuration is never overwritten.
    std::fs::write(dest.join("etc/ccci/ccci.conf"), "CCCI_ONLY='mine-*'\n").unwrap();
    make(&sb, &[&["install"][..], &base, &user].concat(), &built)
        .expect_code(0)
        .expect_stdout("kept");
    assert_eq!(read("etc/ccci/ccci.conf"), "CCCI_ONLY='mine-*'\n");
    make(&sb, &[&["uninstall"][..], &base, &user].concat(), &built).expect_code(0);
    assert_eq!(read("etc/ccci/ccci.conf"), "CCCI_ONLY='mine-*'\n");
    assert!(!dest
        .join("usr/local/lib/systemd/system/ccci-janitor.service")
        .exists());
}

#[test]
fn make_refuses_values_that_would_break_out_of_quotes_before_installing_anything() {
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    let built = sb.path("built.mk");
    make(&sb, &[], &built).expect_code(0);
    let pwned = sb.path("pwned");
    let destdir = format!("DESTDIR={}", dest.display());
    let base = [
        destdir.as_str(),
        "CARGO=false",
        "CI_USER=ci",
        "CI_UID=1234",
        "CI_GROUP=ci",
        "CI_HOME=/home/ci",
    ];
    let inject = format!("x'; touch '{}'; echo '", pwned.display());
    let cases = [
        ("CCCI_ONLY", inject.clone()),
        ("CCCI_ONLY", "a\\b".into()),
        ("CCCI_ONLY", "a$$b".into()),
        ("CCCI_ONLY", "a\nb".into()),
        ("PREFIX", format!("/opt/x'; touch '{}'; '", pwned.display())),
        ("PREFIX", "/opt/a|b".into()),
        ("SYSCONFDIR", "/etc&x".into()),
        ("DESTDIR", format!("{}\\x", dest.display())),
        (
            "CI_HOME",
            format!("/home/ci'; touch '{}'; '", pwned.display()),
        ),
        ("CI_USER", format!("ci'; touch '{}'; '", pwned.display())),
    ];
    for (var, value) in cases {
        let given = format!("{var}={value}");
        let out = make(
            &sb,
            &[&["install"][..], &base, &[given.as_str()]].concat(),
            &built,
        );
        assert_ne!(out.code(), 0, "{given:?} was accepted\n{out}");
        out.expect_stderr(&format!("{var} holds"))
            .expect_stderr("nothing was installed");
        assert!(!pwned.exists(), "{given:?} ran the injected command\n{out}");
        assert!(!dest.exists(), "{given:?} installed something\n{out}");
    }
}

#[test]
fn make_install_into_a_prefix_with_a_blank_works_end_to_end() {
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    let built = sb.path("built.mk");
    make(&sb, &[], &built).expect_code(0);
    let destdir = format!("DESTDIR={}", dest.display());
    let only = format!("CCCI_ONLY={FIELD_PATTERN}");
    let args = [
        "install",
        destdir.as_str(),
        "PREFIX=/opt/my ccci",
        "CARGO=false",
        "CI_USER=ci",
        "CI_UID=1234",
        "CI_GROUP=ci",
        "CI_HOME=/home/my ci",
        only.as_str(),
    ];
    make(&sb, &args, &built).expect_code(0);
    let prefix = dest.join("opt/my ccci");
    let service =
        std::fs::read_to_string(prefix.join("lib/systemd/system/ccci-janitor.service")).unwrap();
    for line in [
        "Environment=\"HOME=/home/my ci\"\n",
        "Environment=\"PATH=/home/my ci/.local/bin:/opt/my ccci/bin:/usr/local/bin:",
        "ExecStart=\"/opt/my ccci/lib/ccci/ccci-janitor-pass\"\n",
    ] {
        assert!(service.contains(line), "no {line:?} in\n{service}");
    }
    let cron = std::fs::read_to_string(prefix.join("share/ccci/cron.ccci-janitor")).unwrap();
    assert!(
        cron.contains("* ci '/opt/my ccci/lib/ccci/ccci-janitor-pass' --quiet\n"),
        "{cron}"
    );
    // The installed tools and scripts run from there.
    for tool in TOOLS {
        sb.command(prefix.join("bin").join(tool))
            .arg("--version")
            .run()
            .expect_code(0)
            .expect_stdout(tool);
    }
    let swarm = sb.install_abra_stub();
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        sb.stub_dir().display(),
        prefix.join("bin").display()
    );
    let conf = dest.join("etc/ccci/ccci.conf");
    std::fs::create_dir(sb.lock_dir()).unwrap();
    sb.command(prefix.join("lib/ccci/ccci-janitor-pass"))
        .args(["--config".as_ref(), conf.as_os_str(), "--dry-run".as_ref()])
        .env("PATH", &path)
        .env("TMPDIR", sb.root())
        .run()
        .expect_code(0);
    assert!(std::fs::read_to_string(swarm.join("calls"))
        .unwrap()
        .contains("app ls"));
    sb.command(prefix.join("lib/ccci/ccci-reap-abra"))
        .arg("nothing-000000.ci.example.org")
        .env("PATH", &path)
        .env("CCCI_REAP_POLL", "0.05")
        .run()
        .expect_code(0)
        .expect_stderr("nothing to reap");
    make(
        &sb,
        &["uninstall", destdir.as_str(), "PREFIX=/opt/my ccci"],
        &built,
    )
    .expect_code(0);
    assert!(!prefix.join("bin/ccci-lock").exists());
    assert!(conf.exists());
}

/// A directory holding links to `programs` (found on this host's `PATH`)
/// and a stub `id` that says uid 1000: a host without root and without
/// every other program.
fn bare_path(sb: &Sandbox, programs: &[&str]) -> PathBuf {
    let dir = sb.path("bare-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in programs {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no {program} on PATH"));
        std::os::unix::fs::symlink(found, dir.join(program)).unwrap();
    }
    let id = dir.join("id");
    std::fs::write(&id, "#!/bin/sh\necho 1000\n").unwrap();
    std::fs::set_permissions(&id, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn make_check_without_root_names_the_missing_packages_and_stops() {
    let sb = Sandbox::new();
    let dir = bare_path(&sb, &["bash", "make", "sed", "sort", "git", "cargo"]);
    let out = sb
        .command("make")
        .args(["-C".as_ref(), workspace().as_os_str(), "check".as_ref()])
        .env("PATH", &dir)
        .run();
    assert_ne!(out.code(), 0, "{out}");
    out.expect_stderr("test-deps: missing packages: ");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("missing packages: "))
        .unwrap();
    let named: Vec<&str> = line.split(": ").nth(2).unwrap().split(' ').collect();
    for pkg in ["jq", "etcd-server", "strace", "nix-bin", "util-linux"] {
        assert!(named.contains(&pkg), "{pkg} not named\n{out}");
    }
    // git and make are there: not named.
    assert!(!named.contains(&"git") && !named.contains(&"make"), "{out}");
    assert!(!out.stdout.contains("Running"), "the suite ran\n{out}");
}

#[test]
fn the_demo_names_the_programs_it_is_missing() {
    let sb = Sandbox::new();
    let dir = bare_path(&sb, &["bash", "dirname", "cargo", "git", "sed"]);
    let out = sb
        .command(workspace().join("examples/demo.sh"))
        .env("PATH", &dir)
        .run();
    out.expect_code(1)
        .expect_stderr("demo.sh: missing programs: ");
    for missing in ["jq (jq)", "setsid (util-linux)", "timeout (coreutils)"] {
        out.expect_stderr(missing);
    }
    assert!(!out.stderr.contains("git (git)"), "{out}");
    assert_eq!(out.stdout, "", "the demo started\n{out}");
}

/// The commands of a man page's EXAMPLES section: the lines between `.nf`
/// and `.fi`, with roff's escapes undone.
fn man_examples(page: &str) -> Vec<String> {
    let Some(start) = page.find(".SH EXAMPLES") else {
        return Vec::new();
    };
    let section = &page[start + 1..];
    let section = &section[..section.find("\n.SH").unwrap_or(section.len())];
    let mut out = Vec::new();
    let mut inside = false;
    for line in section.lines() {
        match line {
            ".nf" => inside = true,
            ".fi" => inside = false,
            l if inside && !l.starts_with('.') => out.push(
                l.replace("\\-", "-")
                    .replace("\\*(Aq", "'")
                    .replace("\\(aq", "'")
                    .replace("\\&", "")
                    .replace("\\e", "\\"),
            ),
            _ => {}
        }
    }
    out
}

#[test]
fn man_page_examples_run_as_written() {
    let sb = Sandbox::new();
    let gen = sb.path("gen");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["run", "--quiet", "-p", "xtask", "--manifest-path"])
        .arg(workspace().join("Cargo.toml"))
        .arg("--")
        .arg("gen")
        .arg(&gen)
        .status()
        .unwrap();
    assert!(status.success());
    let mut pages: Vec<(String, String)> = TOOLS
        .iter()
        .map(|t| {
            let page = std::fs::read_to_string(gen.join(format!("man/{t}.1"))).unwrap();
            (t.to_string(), page)
        })
        .collect();
    for script in ["ccci-janitor-pass", "ccci-reap-abra"] {
        let page = workspace().join(format!("contrib/man/{script}.8"));
        pages.push((script.into(), std::fs::read_to_string(page).unwrap()));
    }
    for (name, page) in &pages {
        let examples = man_examples(page);
        assert!(examples.len() >= 2, "{name}: too few EXAMPLES");
        for example in examples {
            assert!(example.starts_with(name.as_str()) || example.contains(name.as_str()));
            // A fresh host for each: the lock dir and the canonical abra
            // dir exist, the configuration file names the CI pattern, the
            // scripts and a stub abra are on PATH.
            let sb = Sandbox::new();
            std::fs::create_dir(sb.lock_dir()).unwrap();
            std::fs::create_dir_all(sb.canonical_dir().join("servers")).unwrap();
            sb.install_abra_stub();
            for script in ["ccci-janitor-pass", "ccci-reap-abra"] {
                std::os::unix::fs::symlink(
                    workspace().join("contrib").join(script),
                    sb.stub_dir().join(script),
                )
                .unwrap();
            }
            let conf = sb.path("ccci.conf");
            std::fs::write(&conf, format!("CCCI_ONLY='{FIELD_PATTERN}'\n")).unwrap();
            let out = sb
                .sh(&example)
                .env("CCCI_CONFIG", &conf)
                .env("CCCI_REAP_POLL", "0.05")
                .env("TMPDIR", sb.root())
                .run();
            assert_eq!(
                out.code(),
                0,
                "{name}: the example failed: {example}\n{out}"
            );
        }
    }
}

#[test]
fn every_nix_file_of_contrib_nix_parses() {
    let sb = Sandbox::new();
    if sb.sh("command -v nix-instantiate").run().code() != 0 {
        eprintln!("no nix-instantiate (Debian's nix-bin): contrib/nix is not parsed");
        return;
    }
    let dir = workspace().join("contrib/nix");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "nix"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        sb.command("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .run()
            .expect_code(0);
    }
    // The check can fail: a module with one brace missing does not parse.
    let broken = sb.path("broken.nix");
    let module = std::fs::read_to_string(dir.join("module.nix")).unwrap();
    std::fs::write(&broken, module.trim_end().trim_end_matches('}')).unwrap();
    let out = sb
        .command("nix-instantiate")
        .arg("--parse")
        .arg(&broken)
        .run();
    assert_ne!(out.code(), 0, "{out}");
}
