//! The docs say what the code does: a flag, a variable, a default path, an
//! exit status or a test that a doc names must exist.
//!
//! - Every `--flag` in a code span (inline or a line of a fenced block) of
//!   README.md, docs/*.md and the hand-written man pages in contrib/man is
//!   in the `--help` of a ccci tool or script named in that span, or, when
//!   the span names none, of any of them. Flags of foreign commands (abra,
//!   git, etcd, …) are an explicit list below.
//! - Every `CCCI_…` variable a doc names occurs in the sources (the tools,
//!   the contrib scripts, the harness and the suite), read at test time
//!   from the workspace.
//! - Every default path with `<uid>` a doc names is one a tool's `--help`
//!   names, or a directory above it.
//! - Every exit status a doc gives as "status N" or "exits N" is a row of
//!   the tools' exit-status table (their `--help`), or 128+N for a signal.
//!   (`ccci_common::exit` checks that docs/exit-status.md has every row.)
//! - Every test docs/concurrency.md cites (`module::name` for the suite,
//!   `unit::crate::name` for a unit test in that crate's sources) exists,
//!   and none is cut short with `…`.
//!
//! One file of some 650 lines, because the five checks share its readers
//! of the docs, their code spans and the tools' `--help`, and the suite
//! keeps one module per subject.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ccci_tests::{Sandbox, TOOLS};

/// The installed scripts, whose `--help` the man pages of contrib/man
/// describe.
const SCRIPTS: [&str; 2] = ["ccci-janitor-pass", "ccci-reap-abra"];

/// Flags of other programs that the docs name, by program. A flag in a span
/// that names none of our tools may be any of these; in a span that names
/// one, only those of a program the span names too.
const FOREIGN_FLAGS: &[(&str, &[&str])] = &[
    (
        "abra",
        &[
            "--chaos",
            "--domain",
            "--force",
            "--machine",
            "--no-input",
            "--server",
            "--status",
        ],
    ),
    (
        "bench/run",
        &[
            "--bin-dir",
            "--dynamic",
            "--no-build",
            "--no-write",
            "--only",
            "--quick",
        ],
    ),
    (
        "cargo",
        &[
            "--all",
            "--all-targets",
            "--check",
            "--lib",
            "--manifest-path",
            "--release",
            "--test",
            "--tests",
            "--workspace",
        ],
    ),
    ("contrib/cargo-build-tools", &["--profile", "--target"]),
    (
        "etcd",
        &[
            "--auth-token",
            "--auth-token-ttl",
            "--cert-file",
            "--client-cert-auth",
            "--key-file",
            "--trusted-ca-file",
        ],
    ),
    ("etcdctl", &["--endpoints", "--prefix"]),
    ("flock", &["--close", "--nonblock", "--timeout"]),
    ("git", &["--local", "--shared", "--reference"]),
    ("setpriv", &["--clear-groups", "--regid", "--reuid"]),
    ("systemctl", &["--now"]),
    ("systemd-tmpfiles", &["--create"]),
    ("useradd", &["--system"]),
];

/// Flags of ours that `--help` does not show: the keeper's re-exec.
const HIDDEN_FLAGS: &[(&str, &[&str])] = &[("ccci-lock", &["--keeper-fds"])];

fn workspace() -> PathBuf {
    ccci_tests::workspace_root()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The docs: README.md, docs/*.md and contrib/man/*, as (name, text); the
/// man pages with roff's `\-` undone.
fn docs() -> Vec<(String, String)> {
    let root = workspace();
    let mut out = vec![("README.md".to_string(), read(&root.join("README.md")))];
    for dir in ["docs", "contrib/man"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let name = format!("{dir}/{}", file.file_name().unwrap().to_string_lossy());
            let text = read(&file);
            if dir == "docs" && name.ends_with(".md") {
                out.push((name, text));
            } else if dir == "contrib/man" {
                let mut text = text.replace("\\-", "-").replace("\\(aq", "'");
                for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
                    text = text.replace(font, " ");
                }
                out.push((name, text));
            }
        }
    }
    out
}

/// The code spans of a markdown text: each inline span, and each logical
/// line of a fenced block (a line ending in `\` goes on with the next). A
/// man page is one span per line.
fn spans(name: &str, text: &str) -> Vec<String> {
    if !name.ends_with(".md") {
        return text.lines().map(str::to_string).collect();
    }
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut fenced: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = match fenced {
                Some(last) => {
                    if !last.is_empty() {
                        out.push(last);
                    }
                    None
                }
                None => Some(String::new()),
            };
            continue;
        }
        match &mut fenced {
            Some(logical) => {
                logical.push_str(line.trim_end_matches('\\'));
                if !line.ends_with('\\') {
                    out.push(std::mem::take(logical));
                }
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    // Inline spans: a run of n backticks opens one, the next run of n closes it.
    let bytes = prose.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let start = i + n;
        let mut j = start;
        let mut end = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if m == n {
                    end = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match end {
            Some(end) => {
                out.push(prose[start..end].to_string());
                i = end + n;
            }
            None => i = start,
        }
    }
    out
}

/// The words of `text` that start with `prefix` and go on with the
/// characters `more` accepts.
fn words<'a>(text: &'a str, prefix: &str, more: impl Fn(char) -> bool) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix) {
        let start = from + at;
        let before = text[..start].chars().next_back();
        let rest = &text[start + prefix.len()..];
        let len = rest.find(|c: char| !more(c)).unwrap_or(rest.len());
        from = start + prefix.len() + len;
        // A word, not the inside of one.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            continue;
        }
        out.push(&text[start..from]);
    }
    out
}

/// The `--flags` of a span (`--` alone ends options and is no flag).
fn flags(span: &str) -> Vec<&str> {
    words(span, "--", |c| c.is_ascii_alphanumeric() || c == '-')
        .into_iter()
        .filter(|f| f.len() > 2 && f.as_bytes()[2].is_ascii_alphabetic())
        .map(|f| f.trim_end_matches('-'))
        .collect()
}

/// What `--help` prints: the tool's, and each subcommand's.
fn help_of(sb: &Sandbox, program: &str) -> String {
    let run = |args: &[&str]| {
        let cmd = if TOOLS.contains(&program) {
            sb.tool(program)
        } else {
            sb.command(workspace().join("contrib").join(program))
        };
        let out = cmd.args(args).run();
        out.expect_code(0);
        out.stdout.clone() + &out.stderr
    };
    let mut help = run(&["--help"]);
    let subcommands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| l.as_bytes().get(2).is_some_and(u8::is_ascii_lowercase))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    for sub in subcommands {
        help.push_str(&run(&[&sub, "--help"]));
    }
    help
}

/// The flags a program defines: those of the option lines of a tool's
/// help (and their aliases), and for a script those its usage names and
/// those its own argument parser (`case` arms such as `-v | --verbose)`)
/// takes, `--help` included.
fn defined_flags(program: &str, help: &str) -> BTreeSet<String> {
    let mut lines: Vec<String> = if TOOLS.contains(&program) {
        help.lines()
            .filter(|l| l.trim_start().starts_with('-') || l.contains("[aliases:"))
            .map(str::to_string)
            .collect()
    } else {
        help.lines().map(str::to_string).collect()
    };
    if !TOOLS.contains(&program) {
        let script = read(&workspace().join("contrib").join(program));
        lines.extend(
            script
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with('-') && l.contains(')'))
                .map(|l| l[..l.find(')').unwrap()].to_string()),
        );
    }
    let mut out: BTreeSet<String> = lines
        .iter()
        .flat_map(|l| flags(l))
        .map(str::to_string)
        .collect();
    for (_, hidden) in HIDDEN_FLAGS.iter().filter(|(p, _)| *p == program) {
        out.extend(hidden.iter().map(|f| f.to_string()));
    }
    out
}

/// The programs, ours and foreign, that a span names as words.
fn named<'a>(span: &str, programs: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    programs
        .into_iter()
        .filter(|p| {
            words(span, p, |c| {
                c.is_ascii_alphanumeric() || c == '-' || c == '_'
            })
            .iter()
            .any(|w| w == p)
        })
        .collect()
}

#[test]
fn every_flag_a_doc_names_is_one_of_the_tool_it_names() {
    let sb = Sandbox::new();
    let ours: Vec<&str> = TOOLS.iter().chain(SCRIPTS.iter()).copied().collect();
    let defined: Vec<(&str, BTreeSet<String>)> = ours
        .iter()
        .map(|&p| (p, defined_flags(p, &help_of(&sb, p))))
        .collect();
    let of = |program: &str| -> BTreeSet<String> {
        if let Some((_, set)) = defined.iter().find(|(p, _)| *p == program) {
            return set.clone();
        }
        let foreign = FOREIGN_FLAGS.iter().find(|(p, _)| *p == program);
        foreign.map_or_else(BTreeSet::new, |(_, f)| {
            f.iter().map(|s| s.to_string()).collect()
        })
    };
    let mut any: BTreeSet<String> = BTreeSet::new();
    for (program, _) in FOREIGN_FLAGS {
        any.extend(of(program));
    }
    for program in &ours {
        any.extend(of(program));
    }
    let mut wrong = Vec::new();
    for (doc, text) in docs() {
        // A man page of a script is about that script.
        let page_of = SCRIPTS
            .iter()
            .find(|s| doc.ends_with(&format!("/{s}.8")))
            .copied();
        for span in spans(&doc, &text) {
            let found = flags(&span);
            if found.is_empty() {
                continue;
            }
            let mut programs = named(&span, ours.iter().copied());
            // `ccci-janitor` is a word inside `ccci-janitor-pass`: the
            // longer name is the one meant.
            if programs.contains(&"ccci-janitor-pass") && !span.contains("ccci-janitor ") {
                programs.retain(|p| *p != "ccci-janitor");
            }
            programs.extend(page_of.filter(|p| !programs.contains(p)));
            let allowed: BTreeSet<String> = if programs.is_empty() {
                any.clone()
            } else {
                let foreign = named(&span, FOREIGN_FLAGS.iter().map(|(p, _)| *p));
                programs
                    .iter()
                    .chain(&foreign)
                    .flat_map(|p| of(p))
                    .collect()
            };
            for flag in found {
                // `--flag=VALUE`: any flag, not one.
                if flag != "--flag" && !allowed.contains(flag) {
                    wrong.push(format!("{doc}: {flag} in `{span}` (of {programs:?})"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "flags no --help defines:\n{}",
        wrong.join("\n")
    );
}

/// Every file of the sources the variables are read from: the tools, the
/// contrib scripts and units, the examples, the harness and the suite (but
/// not this file, which names variables as examples).
fn sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "docs.rs") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    out.push_str(&text);
                    out.push('\n');
                }
            }
        }
    }
    let root = workspace();
    let mut out = String::new();
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ccci-") {
            walk(&entry.path().join("src"), &mut out);
        }
    }
    for dir in [
        "contrib",
        "examples",
        "bench",
        "xtask/src",
        "tests/harness",
        "tests/suite",
    ] {
        walk(&root.join(dir), &mut out);
    }
    out.push_str(&read(&root.join("Makefile")));
    out
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
}

#[test]
fn every_ccci_variable_a_doc_names_is_one_the_code_reads() {
    let sources = sources();
    let known: BTreeSet<&str> = words(&sources, "CCCI_", is_var_char)
        .into_iter()
        .map(|w| w.trim_end_matches('_'))
        .collect();
    let mut wrong = BTreeSet::new();
    for (doc, text) in docs() {
        for var in words(&text, "CCCI_", is_var_char) {
            // `CCCI_<NAME>_FILE` and the like are patterns, not names.
            let var = var.trim_end_matches('_');
            if var == "CCCI" || text[text.find(var).unwrap() + var.len()..].starts_with('<') {
                continue;
            }
            if !known.contains(var) {
                wrong.insert(format!("{doc}: {var}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "variables no source reads:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The paths with `<uid>` in `text`.
fn uid_paths(text: &str) -> Vec<&str> {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "/._-<>".contains(c);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("<uid>") {
        let at = from + at;
        let start = text[..at]
            .rfind(|c: char| !path_char(c))
            .map_or(0, |i| i + 1);
        let len = text[at..]
            .find(|c: char| !path_char(c))
            .unwrap_or(text.len() - at);
        from = at + len;
        let path = text[start..from].trim_end_matches(['.', '/']);
        if path.starts_with('/') {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_default_path_a_doc_names_is_a_tools_default() {
    let sb = Sandbox::new();
    let help: String = TOOLS.iter().map(|t| help_of(&sb, t)).collect();
    let defaults: BTreeSet<&str> = uid_paths(&help).into_iter().collect();
    assert!(defaults.contains("/run/lock/ccci-<uid>"), "{defaults:?}");
    let mut wrong = BTreeSet::new();
    for (doc, text) in docs() {
        for path in uid_paths(&text) {
            let known = defaults
                .iter()
                .any(|d| *d == path || d.starts_with(&format!("{path}/")));
            if !known {
                wrong.insert(format!("{doc}: {path}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "default paths no --help names (it names {defaults:?}):\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The statuses after `status`, `exits`, `exit status` in `text`.
fn statuses(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for lead in ["status ", "exits ", "exits with ", "exit status "] {
        let mut from = 0;
        while let Some(at) = text[from..].find(lead) {
            let start = from + at + lead.len();
            from = start;
            let digits: String = text[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let after = text[start + digits.len()..].chars().next();
            // `status 128+N`, `exit status 3.2`: not a status.
            if digits.is_empty()
                || after.is_some_and(|c| {
                    c == '+'
                        || c == '.' && {
                            text[start + digits.len() + 1..]
                                .starts_with(|c: char| c.is_ascii_digit())
                        }
                })
            {
                continue;
            }
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            out.push((
                digits.parse().unwrap(),
                text[line_start..line_end].to_string(),
            ));
        }
    }
    out
}

#[test]
fn every_exit_status_a_doc_gives_is_in_the_table() {
    let sb = Sandbox::new();
    let help = help_of(&sb, "ccci-lock");
    let table: BTreeSet<u32> = help
        .lines()
        .skip_while(|l| !l.starts_with("Exit status:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(table.contains(&75) && table.contains(&125), "{help}");
    let signal = |s: u32| (129..=128 + libc::SIGRTMAX() as u32).contains(&s);
    let mut wrong = Vec::new();
    for (doc, text) in docs() {
        for (status, line) in statuses(&text) {
            if !table.contains(&status) && !signal(status) {
                wrong.push(format!("{doc}: status {status} in: {}", line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "statuses the table ({table:?}) does not have:\n{}",
        wrong.join("\n")
    );
}

/// The names of the functions under `#[test]` in `path`, a `.rs` file or a
/// directory of them.
fn test_fns(path: &Path, out: &mut BTreeSet<String>) {
    let paths: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => vec![path.to_path_buf()],
    };
    for path in paths {
        if path.is_dir() {
            test_fns(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = read(&path);
            let (mut after_test, mut after_macro) = (false, false);
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[test]") {
                    after_test = true;
                } else if line.starts_with("both_backends!(") {
                    // A case run on both backends: its name is the module
                    // holding the two tests (`janitor::case_05_…::etcd`).
                    after_macro = true;
                } else if after_macro && !line.starts_with("///") && !line.starts_with("#[") {
                    let name: String = line
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                    after_macro = false;
                } else if after_test {
                    if let Some(rest) = line.strip_prefix("fn ").or(line.strip_prefix("pub fn ")) {
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(name);
                        after_test = false;
                    } else if !line.starts_with("#[") && !line.starts_with("//") {
                        after_test = false;
                    }
                }
            }
        }
    }
}

#[test]
fn every_test_concurrency_md_cites_exists() {
    let root = workspace();
    let text = read(&root.join("docs/concurrency.md"));
    let modules: BTreeSet<String> = std::fs::read_dir(root.join("tests/suite"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    let is_ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut cited = 0;
    let mut wrong = Vec::new();
    for span in spans("concurrency.md", &text) {
        let parts: Vec<&str> = span.split("::").collect();
        let shortened = span.ends_with('…') || span.ends_with("...");
        if shortened && is_ident(parts[parts.len() - 1].trim_end_matches(['…', '.'])) {
            wrong.push(format!("`{span}`: cite the whole name"));
            continue;
        }
        if parts.len() < 2 || !parts.iter().all(|p| is_ident(p)) {
            continue;
        }
        let name = parts[parts.len() - 1];
        if parts.len() == 2 && modules.contains(parts[0]) {
            cited += 1;
            let mut fns = BTreeSet::new();
            test_fns(
                &root.join("tests/suite").join(format!("{}.rs", parts[0])),
                &mut fns,
            );
            if !fns.contains(name) {
                wrong.push(format!(
                    "`{span}`: no such test in tests/suite/{}.rs",
                    parts[0]
                ));
            }
        } else if parts.len() == 3 && parts[0] == "unit" {
            cited += 1;
            // `unit::ccci_lock::NAME`: a unit test somewhere in ccci-lock/src.
            let mut fns = BTreeSet::new();
            test_fns(&root.join(parts[1].replace('_', "-")).join("src"), &mut fns);
            if !fns.contains(name) {
                wrong.push(format!("`{span}`: no unit test {name} in {}/src", parts[1]));
            }
        }
    }
    assert!(cited >= 20, "concurrency.md cites only {cited} tests");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
