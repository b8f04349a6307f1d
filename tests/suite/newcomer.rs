//! A newcomer's path: the demo runs, and `make install` yields the tools,
//! their man pages and their completions.

use std::path::Path;

use ccci_tests::{Sandbox, TOOLS};

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_demo_plays_a_whole_ci_day() {
    let sb = Sandbox::new();
    let out = sb
        .command(workspace().join("examples/demo.sh"))
        .env("TMPDIR", sb.root())
        .run();
    out.expect_code(0)
        .expect_stdout("run 102 says: ccci-lock: waiting for wp.ci.example.org")
        .expect_stdout("[102] holds wp.ci.example.org; deploys=1")
        .expect_stdout("reaped nc.ci.example.org")
        .expect_stdout("deployed now: (none)")
        .expect_stdout("[104] teardown after the deadline")
        .expect_stdout("ended with status 142")
        .expect_stdout("the lock is free again");
    assert_eq!(
        out.stdout.matches("reap-app.sh: reaped").count()
            + out.stderr.matches("reap-app.sh: reaped").count(),
        1,
        "reaped exactly once\n{out}"
    );
}

#[test]
fn make_install_yields_tools_man_pages_and_completions_and_uninstall_removes_them() {
    let sb = Sandbox::new();
    let dest = sb.path("dest");
    let make = |target: &str| {
        sb.command("make")
            .arg("-C")
            .arg(workspace())
            .args([target, "PREFIX=/opt/ccci", "PROFILE=dev"])
            .arg(format!("DESTDIR={}", dest.display()))
            .run()
    };
    make("install").expect_code(0);
    let prefix = dest.join("opt/ccci");
    let count = |dir: &str| std::fs::read_dir(prefix.join(dir)).map_or(0, |d| d.count());
    assert_eq!(count("bin"), 5);
    assert_eq!(count("share/man/man1"), 5);
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
        sb.command(prefix.join("bin").join(tool))
            .arg("--version")
            .run()
            .expect_code(0)
            .expect_stdout(tool);
    }
    make("uninstall").expect_code(0);
    assert_eq!(count("bin") + count("share/man/man1"), 0);
}
