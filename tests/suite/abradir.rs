//! ccci-abradir (SPEC §5) and SPEC §7 cases 17, 18, 18b and 19.
//!
//! Every test builds a canonical abra dir with a real git recipe repo
//! (tags v1, v2, v3; `main` at v3) and runs the tool the way a harness does.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the canonical dir and git helpers defined in it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use ccci_tests::{wait_until, Output, Sandbox};

const SERVER: &str = "srv.example.org";
const RECIPE: &str = "wp";

/// `git ARGS` in `dir`, in the sandbox (its own HOME: no user config).
fn git(sb: &Sandbox, dir: &Path, args: &[&str]) -> Output {
    let out = sb
        .command("git")
        .args([
            "-c",
            "user.name=ci",
            "-c",
            "user.email=ci@example.org",
            "-C",
        ])
        .arg(dir)
        .args(args)
        .run();
    out.expect_code(0);
    out
}

/// The canonical abra dir: `servers/<SERVER>/`, `catalogue/`, and
/// `recipes/wp`, a clone whose `VERSION` file is 1, 2, 3 at tags v1..v3.
fn canonical(sb: &Sandbox) -> PathBuf {
    let root = sb.canonical_dir();
    std::fs::create_dir_all(root.join("servers").join(SERVER)).unwrap();
    std::fs::create_dir_all(root.join("catalogue")).unwrap();
    std::fs::write(root.join("catalogue/recipes.json"), "{}\n").unwrap();
    let repo = recipe_dir(sb);
    std::fs::create_dir_all(&repo).unwrap();
    git(sb, &repo, &["init", "-q", "-b", "main"]);
    for v in 1..=3 {
        std::fs::write(repo.join("VERSION"), format!("{v}\n")).unwrap();
        std::fs::write(repo.join(format!("compose.v{v}.yml")), "services: {}\n").unwrap();
        git(sb, &repo, &["add", "-A"]);
        git(sb, &repo, &["commit", "-q", "-m", &format!("release {v}")]);
        git(sb, &repo, &["tag", &format!("v{v}")]);
    }
    root
}

fn recipe_dir(sb: &Sandbox) -> PathBuf {
    sb.canonical_dir().join("recipes").join(RECIPE)
}

/// The ABRA_DIR of run `<run_id>-<pid>`.
fn abra_dir(sb: &Sandbox, run_id: &str, pid: u32) -> PathBuf {
    sb.runs_dir().join(format!("{run_id}-{pid}")).join("abra")
}

/// The line the tool prints for `dir`.
fn export_line(dir: &Path) -> String {
    format!("export ABRA_DIR='{}'\n", dir.display())
}

/// The entries of the runs dir, sorted (empty when it does not exist).
fn runs_entries(sb: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sb.runs_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Everything about a tree that a write could change: per path, its kind,
/// mode, mtime and content (or link target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let stamp = format!("{:o} {}.{}", meta.mode(), meta.mtime(), meta.mtime_nsec());
            let what = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {stamp}")
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!("file {stamp} {bytes:?}")
            };
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[track_caller]
fn assert_unchanged(before: &BTreeMap<PathBuf, String>, root: &Path) {
    let after = snapshot(root);
    for (path, was) in before {
        assert_eq!(
            after.get(path),
            Some(was),
            "{} changed in the canonical tree",
            path.display()
        );
    }
    for path in after.keys() {
        assert!(
            before.contains_key(path),
            "{} appeared in the canonical tree",
            path.display()
        );
    }
}

/// A `PATH` with `dir` first, then the tools, then the test's own `PATH`.
fn path_with(dir: &Path) -> OsString {
    let mut paths = vec![dir.to_path_buf(), ccci_tests::bin_dir()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

fn write_script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A recording stub `abra` in `<sandbox>/stub`: each call appends one line
/// to `<sandbox>/abra.log` with its arguments, its `ABRA_DIR` and whether
/// the run's full layout existed at that moment. Returns the stub dir.
fn stub_abra(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("stub");
    let log = sb.path("abra.log");
    write_script(
        &dir.join("abra"),
        &format!(
            r#"#!/bin/sh
d=$ABRA_DIR
state=complete
{{ [ -L "$d/servers" ] && [ -d "$d/servers/{SERVER}" ]; }} || state="no servers link"
{{ [ -L "$d/catalogue" ] && [ -f "$d/catalogue/recipes.json" ]; }} || state="no catalogue link"
{{ [ -d "$d/recipes" ] && [ ! -L "$d/recipes" ]; }} || state="no private recipes dir"
{{ [ -d "$d/recipes/{RECIPE}/.git" ] && [ ! -L "$d/recipes/{RECIPE}" ] &&
   [ -f "$d/recipes/{RECIPE}/VERSION" ]; }} || state="no clone of {RECIPE}"
[ -n "$d" ] || state="ABRA_DIR unset"
echo "abra $* | ABRA_DIR=$d | layout=$state" >> '{}'
"#,
            log.display()
        ),
    );
    dir
}

/// A `git` in `<sandbox>/gate` that appends a line to `<sandbox>/git-started`
/// and then waits for a line on the FIFO `<sandbox>/gate.fifo` before it
/// runs the real git. The returned file is the FIFO opened read-write, so
/// lines written to it wait there for the gated gits whenever they open it.
fn gated_git(sb: &Sandbox) -> (PathBuf, File) {
    let real = sb.sh("command -v git").run();
    real.expect_code(0);
    let dir = sb.path("gate");
    let fifo = sb.path("gate.fifo");
    sb.command("mkfifo").arg(&fifo).run().expect_code(0);
    write_script(
        &dir.join("git"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nread _ < '{}'\nexec '{}' \"$@\"\n",
            sb.path("git-started").display(),
            fifo.display(),
            real.stdout.trim()
        ),
    );
    let gate = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    (dir, gate)
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// The pid a harness script printed as `pid=N`.
fn printed_pid(out: &Output) -> u32 {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or_else(|| panic!("no pid= line\n{out}"))
        .parse()
        .unwrap()
}

#[test]
fn case_17_the_full_layout_exists_before_the_first_abra_call() {
    let sb = Sandbox::new();
    let canonical = canonical(&sb);
    let stub = stub_abra(&sb);
    let out = sb
        .sh(r#"set -e
            out=$(ccci-abradir --recipe wp); eval "$out"
            abra app new wp --domain wp.ci.example.org
            abra app deploy wp.ci.example.org
            echo "pid=$$""#)
        .env("PATH", path_with(&stub))
        .env("CCCI_RUN_ID", "ci-17")
        .run();
    out.expect_code(0);
    let pid = printed_pid(&out);
    let dir = abra_dir(&sb, "ci-17", pid);
    let log = std::fs::read_to_string(sb.path("abra.log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    assert_eq!(calls.len(), 2, "{log}");
    for call in &calls {
        assert!(
            call.ends_with(&format!("| ABRA_DIR={} | layout=complete", dir.display())),
            "{log}"
        );
    }
    assert_eq!(
        std::fs::read_link(dir.join("servers")).unwrap(),
        canonical.join("servers")
    );
    assert_eq!(
        std::fs::read_link(dir.join("catalogue")).unwrap(),
        canonical.join("catalogue")
    );
}

#[test]
fn nothing_is_printed_or_visible_until_the_layout_is_complete() {
    let sb = Sandbox::new();
    canonical(&sb);
    let (gate_dir, mut gate) = gated_git(&sb);
    // stdout goes to a file: whatever the tool printed is there the moment
    // its write(2) returns, with no reader thread in between.
    let mut run = sb
        .sh("exec ccci-abradir --run-id ci-p --pid 4242 --recipe wp > printed")
        .env("PATH", path_with(&gate_dir))
        .spawn();
    wait_until("git clone has started", || {
        lines_in(&sb.path("git-started")) == 1
    });
    // The clone is running and the layout is incomplete.
    assert_eq!(std::fs::read_to_string(sb.path("printed")).unwrap(), "");
    let entries = runs_entries(&sb);
    assert!(
        entries.iter().all(|e| e.starts_with('.')),
        "an incomplete tree is visible under its real name: {entries:?}"
    );
    assert!(!abra_dir(&sb, "ci-p", 4242).exists());
    assert!(!run.has_exited(), "{}", run.report());

    writeln!(gate, "go").unwrap();
    run.wait().expect_code(0);
    let dir = abra_dir(&sb, "ci-p", 4242);
    assert_eq!(
        std::fs::read_to_string(sb.path("printed")).unwrap(),
        export_line(&dir)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("recipes/wp/VERSION")).unwrap(),
        "3\n"
    );
    assert_eq!(runs_entries(&sb), ["ci-p-4242"]);
}

#[test]
fn case_18_concurrent_runs_check_out_different_versions_canonical_untouched() {
    let sb = Sandbox::new();
    canonical(&sb);
    let repo = recipe_dir(&sb);
    let head = git(&sb, &repo, &["rev-parse", "HEAD"]).stdout;
    let before = snapshot(&sb.canonical_dir());

    let run = |run_id: &str, tag: &str| {
        let mut p = sb
            .sh(r#"set -e
                out=$(ccci-abradir --recipe wp); eval "$out"
                echo "ready $ABRA_DIR"
                read _
                git -C "$ABRA_DIR/recipes/wp" -c advice.detachedHead=false checkout -q "$TAG"
                echo "checked-out $(cat "$ABRA_DIR/recipes/wp/VERSION")"
                read _"#)
            .env("CCCI_RUN_ID", run_id)
            .env("TAG", tag)
            .piped_stdin()
            .spawn();
        let dir = PathBuf::from(p.expect_stdout("ready ").trim_start_matches("ready "));
        (p, dir)
    };
    let (mut a, dir_a) = run("ci-a", "v1");
    let (mut b, dir_b) = run("ci-b", "v2");
    assert_ne!(dir_a, dir_b);
    // Both trees exist at once; both runs check out now.
    a.send("");
    b.send("");
    a.expect_stdout("checked-out 1");
    b.expect_stdout("checked-out 2");

    // While both runs are still alive, each tree holds its own version…
    for (dir, tag, version) in [(&dir_a, "v1", "1\n"), (&dir_b, "v2", "2\n")] {
        let clone = dir.join("recipes/wp");
        assert_eq!(
            std::fs::read_to_string(clone.join("VERSION")).unwrap(),
            version
        );
        assert!(!clone.join("compose.v3.yml").exists());
        let at = git(&sb, &clone, &["rev-parse", "HEAD"]).stdout;
        let tagged = git(&sb, &repo, &["rev-parse", &format!("{tag}^{{commit}}")]).stdout;
        assert_eq!(at, tagged);
        // …in a clone of its own: a real .git directory (not a worktree's
        // .git file), no alternates, objects hardlinked to the canonical ones.
        assert!(std::fs::symlink_metadata(clone.join(".git"))
            .unwrap()
            .is_dir());
        assert!(!clone.join(".git/objects/info/alternates").exists());
        assert!(
            shares_an_object_inode(&repo, &clone),
            "objects are not hardlinked"
        );
    }
    // …and the canonical clone is byte-for-byte what it was: HEAD, index,
    // refs, working tree, every file under .git.
    assert_unchanged(&before, &sb.canonical_dir());
    assert_eq!(git(&sb, &repo, &["rev-parse", "HEAD"]).stdout, head);

    a.send("");
    b.send("");
    a.wait().expect_code(0);
    b.wait().expect_code(0);
}

/// Whether some loose object file of `clone` is the same inode as in `repo`.
fn shares_an_object_inode(repo: &Path, clone: &Path) -> bool {
    let objects = repo.join(".git/objects");
    std::fs::read_dir(&objects).unwrap().flatten().any(|fan| {
        std::fs::read_dir(fan.path()).unwrap().flatten().any(|obj| {
            let rel = obj.path().strip_prefix(&objects).unwrap().to_path_buf();
            let theirs = clone.join(".git/objects").join(rel);
            let (a, b) = (obj.metadata().unwrap(), std::fs::metadata(&theirs));
            b.is_ok_and(|b| a.ino() == b.ino() && a.dev() == b.dev())
        })
    })
}

#[test]
fn case_18b_an_env_written_through_servers_lands_in_the_canonical_path() {
    let sb = Sandbox::new();
    let canonical = canonical(&sb);
    let env = format!("servers/{SERVER}/wp.ci.example.org.env");
    let out = sb
        .sh(&format!(
            r#"set -e
            out=$(ccci-abradir); eval "$out"
            printf 'TYPE=wordpress:2.0.0\nDOMAIN=wp.ci.example.org\n' > "$ABRA_DIR/{env}""#
        ))
        .env("CCCI_RUN_ID", "ci-w")
        .run();
    out.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(canonical.join(&env)).unwrap(),
        "TYPE=wordpress:2.0.0\nDOMAIN=wp.ci.example.org\n"
    );
    // Another run reads (env_get) what the first wrote (env_set), and its
    // update is seen in the canonical tree too.
    let out = sb
        .sh(&format!(
            r#"set -e
            out=$(ccci-abradir); eval "$out"
            grep '^TYPE=' "$ABRA_DIR/{env}"
            echo 'LETS_ENCRYPT_ENV=staging' >> "$ABRA_DIR/{env}""#
        ))
        .env("CCCI_RUN_ID", "ci-r")
        .run();
    out.expect_code(0).expect_stdout("TYPE=wordpress:2.0.0");
    assert!(std::fs::read_to_string(canonical.join(&env))
        .unwrap()
        .ends_with("LETS_ENCRYPT_ENV=staging\n"));
}

#[test]
fn case_19_a_manual_run_gets_a_pid_suffixed_directory() {
    let sb = Sandbox::new();
    canonical(&sb);
    // From a harness shell: the shell's pid.
    let script = r#"set -e
        out=$(ccci-abradir); echo "$out"
        echo "pid=$$""#;
    let first = &sb.sh(script).run();
    let second = &sb.sh(script).run();
    let mut dirs = Vec::new();
    for out in [&first, &second] {
        out.expect_code(0);
        let dir = abra_dir(&sb, "manual", printed_pid(out));
        out.expect_stdout(&export_line(&dir));
        assert!(dir.join("recipes").is_dir(), "{out}");
        dirs.push(dir);
    }
    assert_ne!(dirs[0], dirs[1], "two manual runs share a directory");
    // Run directly: the parent pid, here the test process.
    let out = sb.tool("ccci-abradir").run();
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        export_line(&abra_dir(&sb, "manual", std::process::id()))
    );
}

#[test]
fn clean_removes_the_run_and_keeps_every_canonical_file() {
    let sb = Sandbox::new();
    let canonical = canonical(&sb);
    let run = |args: &[&str]| {
        sb.tool("ccci-abradir")
            .args(["--run-id", "ci-c", "--pid", "77"])
            .args(args)
            .run()
    };
    run(&["--recipe", "wp"]).expect_code(0);
    let dir = abra_dir(&sb, "ci-c", 77);
    std::fs::write(dir.join("servers").join(SERVER).join("a.env"), "X=1\n").unwrap();
    // A temporary a crashed call of this run left, and another run's tree.
    std::fs::create_dir_all(sb.runs_dir().join(".ci-c-77.999.tmp/abra")).unwrap();
    symlink(
        canonical.join("servers"),
        sb.runs_dir().join(".ci-c-77.999.tmp/abra/servers"),
    )
    .unwrap();
    sb.tool("ccci-abradir")
        .args(["--run-id", "ci-o", "--pid", "78"])
        .run()
        .expect_code(0);
    let before = snapshot(&canonical);

    let out = sb
        .tool("ccci-abradir")
        .args(["clean", "--run-id", "ci-c", "--pid", "77"])
        .run();
    out.expect_code(0);
    assert_eq!(out.stdout, "");
    assert_eq!(runs_entries(&sb), ["ci-o-78"]);
    assert_unchanged(&before, &canonical);
    assert_eq!(
        std::fs::read_to_string(canonical.join("servers").join(SERVER).join("a.env")).unwrap(),
        "X=1\n"
    );
    // Missing is fine: the run again, and a runs dir that does not exist
    // (which clean does not create).
    run(&["clean"]).expect_code(0);
    std::fs::remove_dir_all(sb.runs_dir()).unwrap();
    run(&["clean"]).expect_code(0);
    assert!(!sb.runs_dir().exists());
}

#[test]
fn a_second_call_of_a_run_verifies_and_adds_missing_recipes() {
    let sb = Sandbox::new();
    canonical(&sb);
    let run = |args: &[&str]| {
        sb.tool("ccci-abradir")
            .args(["--run-id", "ci-i", "--pid", "5"])
            .args(args)
            .run()
    };
    let dir = abra_dir(&sb, "ci-i", 5);
    run(&[]).expect_code(0).expect_stdout(&export_line(&dir));
    assert!(!dir.join("recipes/wp").exists());
    run(&["--recipe", "wp"])
        .expect_code(0)
        .expect_stdout(&export_line(&dir));
    git(
        &sb,
        &dir.join("recipes/wp"),
        &["-c", "advice.detachedHead=false", "checkout", "-q", "v1"],
    );
    // The existing clone is kept as the run left it, not cloned again.
    let out = run(&["--recipe", "wp", "--recipe", "wp"]);
    out.expect_code(0);
    assert_eq!(out.stdout, export_line(&dir));
    assert_eq!(
        std::fs::read_to_string(dir.join("recipes/wp/VERSION")).unwrap(),
        "1\n"
    );
    assert_eq!(runs_entries(&sb), ["ci-i-5"]);
    let recipes: Vec<_> = std::fs::read_dir(dir.join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(recipes, ["wp"], "a temporary clone was left behind");
}

#[test]
fn two_calls_of_one_run_at_once_end_with_one_tree() {
    let sb = Sandbox::new();
    canonical(&sb);
    let (gate_dir, mut gate) = gated_git(&sb);
    let call = || {
        sb.tool("ccci-abradir")
            .args(["--run-id", "ci-s", "--pid", "9", "--recipe", "wp"])
            .env("PATH", path_with(&gate_dir))
            .spawn()
    };
    let (first, second) = (call(), call());
    // Both are cloning into their own temporaries; then both finish.
    wait_until("both clones have started", || {
        lines_in(&sb.path("git-started")) == 2
    });
    writeln!(gate, "go\ngo").unwrap();
    let dir = abra_dir(&sb, "ci-s", 9);
    for out in [first.wait(), second.wait()] {
        out.expect_code(0);
        assert_eq!(out.stdout, export_line(&dir), "{out}");
    }
    assert_eq!(runs_entries(&sb), ["ci-s-9"]);
    assert!(dir.join("recipes/wp/VERSION").is_file());
}

#[test]
fn a_tampered_run_dir_is_refused() {
    let sb = Sandbox::new();
    let canonical = canonical(&sb);
    let run = || {
        sb.tool("ccci-abradir")
            .args(["--run-id", "ci-t", "--pid", "3", "--recipe", "wp"])
            .run()
    };
    run().expect_code(0);
    let dir = abra_dir(&sb, "ci-t", 3);
    let refused = |why: &str| {
        let out = run();
        out.expect_code(125)
            .expect_stderr("ccci-abradir: ")
            .expect_stderr(why)
            .expect_stderr("ccci-abradir clean");
        assert_eq!(out.stdout, "", "printed an ABRA_DIR it refused\n{out}");
    };

    // servers pointing elsewhere, or a real directory: writes would miss
    // the canonical tree.
    let elsewhere = sb.path("elsewhere/servers");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::remove_file(dir.join("servers")).unwrap();
    symlink(&elsewhere, dir.join("servers")).unwrap();
    refused("servers is not the expected symlink");
    std::fs::remove_file(dir.join("servers")).unwrap();
    std::fs::create_dir(dir.join("servers")).unwrap();
    refused("it is a directory");
    std::fs::remove_dir(dir.join("servers")).unwrap();
    symlink(canonical.join("servers"), dir.join("servers")).unwrap();
    run().expect_code(0);

    // A recipe that is a symlink into the canonical tree: a checkout would
    // change the canonical clone.
    std::fs::remove_dir_all(dir.join("recipes/wp")).unwrap();
    symlink(recipe_dir(&sb), dir.join("recipes/wp")).unwrap();
    refused("recipes/wp is not a directory (it is a symlink");
}

#[test]
fn bad_input_is_status_2_and_creates_nothing() {
    let sb = Sandbox::new();
    canonical(&sb);
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (&["--run-id", "../evil"], None, "'../evil'"),
        (&[], Some("run id with spaces"), "'run id with spaces'"),
        (&["--recipe", "../wp"], None, "'../wp'"),
        (&["--recipe", ".hidden"], None, "'.hidden'"),
        (&["--pid", "0"], None, "'0'"),
        (&["clean", "--run-id", "a/b"], None, "'a/b'"),
        (&["clean", "--recipe", "wp"], None, "--recipe"),
    ];
    for (args, env_run_id, quoted) in cases {
        let mut cmd = sb.tool("ccci-abradir").args(args);
        if let Some(id) = env_run_id {
            cmd = cmd.env("CCCI_RUN_ID", id);
        }
        let out = cmd.run();
        out.expect_code(2).expect_stderr(quoted);
        assert_eq!(out.stdout, "");
        assert!(!sb.runs_dir().exists(), "created something\n{out}");
    }
    // ABRA_DIR is printed as text for eval: a runs dir that is not UTF-8
    // could not be printed as it is.
    let runs: PathBuf = OsString::from_vec(b"runs-\xff".to_vec()).into();
    let out = sb.tool("ccci-abradir").arg("--runs-dir").arg(&runs).run();
    out.expect_code(2).expect_stderr("is not valid UTF-8");
    assert!(!sb.root().join(&runs).exists());
}

#[test]
fn missing_recipe_missing_git_or_failed_clone_is_125_and_leaves_nothing() {
    let sb = Sandbox::new();
    let canonical = canonical(&sb);
    let run = |recipe: &str| {
        sb.tool("ccci-abradir")
            .args(["--run-id", "ci-m", "--pid", "1", "--recipe", recipe])
    };

    let out = run("nextcloud").run();
    out.expect_code(125)
        .expect_stderr("canonical recipe 'nextcloud' not found");
    assert_eq!(out.stdout, "");
    assert!(!sb.runs_dir().exists());

    // No git on PATH (the tool itself is started by its full path).
    let empty = sb.path("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let out = run("wp").env("PATH", &empty).run();
    out.expect_code(125).expect_stderr("git is not installed");
    assert_eq!(out.stdout, "");
    assert_eq!(runs_entries(&sb), Vec::<String>::new());

    // A canonical recipe that is not a git repository: git fails.
    std::fs::create_dir_all(canonical.join("recipes/broken")).unwrap();
    let out = run("broken").run();
    out.expect_code(125)
        .expect_stderr("git clone")
        .expect_stderr("failed");
    assert_eq!(runs_entries(&sb), Vec::<String>::new());

    // A git that dies mid-clone, leaving a partial clone behind it.
    let dying = sb.path("dying-git");
    write_script(
        &dying.join("git"),
        "#!/bin/sh\nfor dest; do :; done\nmkdir -p \"$dest/.git\"\necho 'fatal: killed' >&2\nexit 128\n",
    );
    let out = run("wp").env("PATH", path_with(&dying)).run();
    out.expect_code(125).expect_stderr("fatal: killed");
    assert_eq!(runs_entries(&sb), Vec::<String>::new());

    // The same failures when adding to an existing run leave its tree as
    // it was: the same entries, no temporary clone.
    run("wp").run().expect_code(0);
    let paths = || snapshot(&sb.runs_dir()).into_keys().collect::<Vec<_>>();
    let before = paths();
    run("broken").run().expect_code(125);
    assert_eq!(paths(), before);
    std::fs::create_dir_all(canonical.join("recipes/wp2")).unwrap();
    let out = sb
        .tool("ccci-abradir")
        .args(["--run-id", "ci-m", "--pid", "1", "--recipe", "wp2"])
        .env("PATH", path_with(&dying))
        .run();
    out.expect_code(125).expect_stderr("fatal: killed");
    assert_eq!(paths(), before);
}

/// A writable directory on another file system than `near`, if the machine
/// has one (tmpfs at /dev/shm, usually).
fn dir_on_another_file_system(near: &Path) -> Option<tempfile::TempDir> {
    let dev = std::fs::metadata(near).unwrap().dev();
    ["/dev/shm", "/run/user", "/var/tmp", "/run"]
        .iter()
        .filter(|c| std::fs::metadata(c).is_ok_and(|m| m.dev() != dev))
        .find_map(|c| {
            tempfile::Builder::new()
                .prefix("ccci-test-")
                .tempdir_in(c)
                .ok()
        })
}

#[test]
fn a_runs_dir_on_another_file_system_gets_a_copied_clone() {
    // The usual CI host: the runs dir on tmpfs, ~/.abra on disk. Objects
    // cannot be hardlinked across file systems; the clone must still work.
    let sb = Sandbox::new();
    canonical(&sb);
    let Some(other) = dir_on_another_file_system(sb.root()) else {
        eprintln!("no second file system on this machine; nothing to show");
        return;
    };
    std::fs::set_permissions(
        other.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let runs = other.path().join("runs");
    let out = sb
        .tool("ccci-abradir")
        .args(["--run-id", "ci-x", "--pid", "8", "--recipe", "wp"])
        .env("CCCI_RUNS_DIR", &runs)
        .run();
    out.expect_code(0);
    let clone = runs.join("ci-x-8/abra/recipes/wp");
    assert_eq!(
        std::fs::read_to_string(clone.join("VERSION")).unwrap(),
        "3\n"
    );
    git(&sb, &clone, &["fsck", "--no-progress"]);
    assert!(!clone.join(".git/objects/info/alternates").exists());
}

#[test]
fn a_canonical_dir_without_servers_is_refused() {
    let sb = Sandbox::new();
    let out = sb.tool("ccci-abradir").run();
    out.expect_code(125).expect_stderr("does not exist");
    std::fs::create_dir_all(sb.canonical_dir()).unwrap();
    let out = sb.tool("ccci-abradir").run();
    out.expect_code(125)
        .expect_stderr("has no servers/ directory");
    assert!(!sb.runs_dir().exists());
}

/// A stand-in harness: a live process whose pid names a run.
fn harness(sb: &Sandbox) -> ccci_tests::Proc {
    let mut p = sb.sh("echo ready; exec sleep 1000").spawn();
    p.expect_stdout("ready");
    p
}

/// Builds the tree of run `<run_id>-<pid>` (with the wp recipe).
fn build_run(sb: &Sandbox, run_id: &str, pid: u32) -> PathBuf {
    sb.tool("ccci-abradir")
        .args([
            "--run-id",
            run_id,
            "--pid",
            &pid.to_string(),
            "--recipe",
            RECIPE,
        ])
        .run()
        .expect_code(0);
    let dir = sb.runs_dir().join(format!("{run_id}-{pid}"));
    assert!(
        dir.join(".harness").is_file(),
        "no harness record\n{}",
        sb.listing()
    );
    dir
}

#[test]
fn gc_removes_the_trees_of_gone_harnesses_and_killed_calls_and_keeps_live_ones() {
    let sb = Sandbox::new();
    let canonical = canonical(&sb);
    std::fs::write(
        canonical.join("servers").join(SERVER).join("a.env"),
        "X=1\n",
    )
    .unwrap();

    // A live run, with a recipe clone that one of its killed calls left.
    let live = harness(&sb);
    let live_dir = build_run(&sb, "ci-live", live.pid());
    let dead_maker = {
        let p = sb.sh("exit 0").spawn();
        let pid = p.pid();
        p.wait();
        pid
    };
    let stray_clone = live_dir.join(format!("abra/recipes/.wp.{dead_maker}.tmp"));
    std::fs::create_dir_all(stray_clone.join("objects")).unwrap();

    // A run whose harness has exited.
    let gone = harness(&sb);
    let gone_pid = gone.pid();
    let gone_dir = build_run(&sb, "ci-gone", gone_pid);
    drop(gone); // killed and reaped
    wait_until("the harness is gone", || !ccci_tests::alive(gone_pid));

    // A run whose recorded start time does not match what its pid is now
    // (a reused pid): recorded for a live process, then the record altered.
    let reused = harness(&sb);
    let reused_dir = build_run(&sb, "ci-reused", reused.pid());
    let record = std::fs::read_to_string(reused_dir.join(".harness")).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let started = record["start_time"].as_u64().unwrap();
    record["start_time"] = (started + 1).into();
    std::fs::write(reused_dir.join(".harness"), record.to_string()).unwrap();

    // A temporary of a killed first call, whose servers link must not be
    // followed, and one of a call still at work (this process).
    let dead_tmp = sb.runs_dir().join(format!(".ci-x-5.{dead_maker}.tmp"));
    std::fs::create_dir_all(dead_tmp.join("abra")).unwrap();
    symlink(canonical.join("servers"), dead_tmp.join("abra/servers")).unwrap();
    let busy_tmp = sb
        .runs_dir()
        .join(format!(".ci-y-6.{}.tmp", std::process::id()));
    std::fs::create_dir_all(&busy_tmp).unwrap();
    // Not ours: left alone.
    std::fs::write(sb.runs_dir().join("notes.txt"), "x").unwrap();

    let before = snapshot(&canonical);
    let all = runs_entries(&sb);
    let dry = sb.tool("ccci-abradir").args(["gc", "--dry-run"]).run();
    dry.expect_code(0)
        .expect_stderr(&format!("would remove {}", gone_dir.display()))
        .expect_stderr(&format!("would remove {}", reused_dir.display()))
        .expect_stderr(&format!("would remove {}", dead_tmp.display()));
    assert_eq!(runs_entries(&sb), all, "--dry-run removed something");
    assert!(stray_clone.exists());

    let out = sb.tool("ccci-abradir").arg("gc").run();
    out.expect_code(0)
        .expect_stderr(&format!(
            "removed {}: harness pid {gone_pid} has exited",
            gone_dir.display()
        ))
        .expect_stderr(&format!(
            "removed {}: harness pid {} now names another process",
            reused_dir.display(),
            reused.pid()
        ));
    let mut expect = vec![
        busy_tmp.file_name().unwrap().to_string_lossy().into_owned(),
        format!("ci-live-{}", live.pid()),
        "notes.txt".to_string(),
    ];
    expect.sort();
    assert_eq!(runs_entries(&sb), expect, "{out}");
    assert!(
        !stray_clone.exists(),
        "the killed call's clone is still there"
    );
    assert!(live_dir.join("abra/recipes/wp/VERSION").is_file());
    assert_unchanged(&before, &canonical);
    drop(live);
    drop(reused);
}

#[test]
fn gc_skips_and_clean_refuses_a_run_dir_owned_by_another_uid() {
    if nix_uid() != 0 {
        eprintln!("skipped: needs root to make a directory of another uid");
        return;
    }
    let sb = Sandbox::new();
    canonical(&sb);
    let dir = build_run(&sb, "ci-f", 4_000_000);
    let other = 65534;
    std::os::unix::fs::lchown(&dir, Some(other), Some(other)).unwrap();
    let before = snapshot(&dir);
    sb.tool("ccci-abradir")
        .args(["clean", "--run-id", "ci-f", "--pid", "4000000"])
        .run()
        .expect_code(125)
        .expect_stderr(&format!("refusing to remove {}", dir.display()))
        .expect_stderr("is owned by uid 65534");
    sb.tool("ccci-abradir")
        .arg("gc")
        .run()
        .expect_code(0)
        .expect_stderr(&format!("skipped {}", dir.display()));
    assert_eq!(snapshot(&dir), before, "the foreign run dir was touched");
    std::os::unix::fs::lchown(&dir, Some(0), Some(0)).unwrap();
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn a_run_dir_whose_pid_was_reused_is_rebuilt_fresh() {
    let sb = Sandbox::new();
    canonical(&sb);
    let h = harness(&sb);
    let dir = build_run(&sb, "ci-r", h.pid());
    std::fs::write(dir.join("abra/recipes/leftover"), "old run").unwrap();
    let record = std::fs::read_to_string(dir.join(".harness")).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&record).unwrap();
    record["start_time"] = (record["start_time"].as_u64().unwrap() + 1).into();
    std::fs::write(dir.join(".harness"), record.to_string()).unwrap();
    let out = sb
        .tool("ccci-abradir")
        .args(["--run-id", "ci-r", "--pid", &h.pid().to_string()])
        .run();
    out.expect_code(0).expect_stderr("replaced stale run dir");
    assert!(
        !dir.join("abra/recipes/leftover").exists(),
        "{}",
        sb.listing()
    );
    assert!(dir.join("abra/servers").is_symlink());
}

#[test]
fn abradir_names_the_source_of_a_bad_value_and_refuses_coinciding_dirs() {
    let sb = Sandbox::new();
    canonical(&sb);
    sb.tool("ccci-abradir")
        .env("CCCI_RUN_ID", "build 42")
        .run()
        .expect_code(2)
        .expect_stderr("CCCI_RUN_ID='build 42' is not a valid run id");
    sb.tool("ccci-abradir")
        .args(["clean", "--pid", "x1"])
        .run()
        .expect_code(2)
        .expect_stderr("invalid value 'x1' for --pid: not a valid pid");
    assert!(!sb.runs_dir().exists());
    // The runs dir is the state dir: refused before anything is built, and
    // no `clean` is advised (it would delete the run's state).
    for args in [&[][..], &["clean"], &["gc"]] {
        let out = sb
            .tool("ccci-abradir")
            .env("CCCI_RUNS_DIR", sb.state_dir())
            .args(args)
            .run();
        out.expect_code(125)
            .expect_stderr("runs dir")
            .expect_stderr("must be three different directories");
        assert!(!out.stderr.contains("clean"), "{out}");
        assert!(!sb.state_dir().exists(), "{}", sb.listing());
    }
}

#[test]
fn the_export_line_cut_short_by_a_closed_stdout_is_125() {
    let sb = Sandbox::new();
    canonical(&sb);
    let out = sb
        .tool("ccci-abradir")
        .args(["--run-id", "ci-p", "--pid", "9"])
        .run_into_closed_pipe();
    out.expect_code(125)
        .expect_stderr("stdout was closed before all output was written");
}

#[test]
fn a_refusal_says_what_clean_removes() {
    let sb = Sandbox::new();
    canonical(&sb);
    let dir = build_run(&sb, "ci-t", 1);
    std::fs::remove_file(dir.join("abra/servers")).unwrap();
    sb.tool("ccci-abradir")
        .args(["--run-id", "ci-t", "--pid", "1"])
        .run()
        .expect_code(125)
        .expect_stderr(&format!("refusing to use run dir {}", dir.display()))
        .expect_stderr("removes that directory and everything in it")
        .expect_stderr("and nothing else");
}
