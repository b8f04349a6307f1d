//! Hostile and careless input (SPEC §1 "Names", "Durations"; issue 12):
//! for every tool and every argument or variable that names a domain, a run
//! id, a pid, a state NAME, a pattern, a signal, a number or a duration,
//! a matrix of bad values (empty, `.`, `..`, `../x`, `a/b`, leading `.` or
//! `-`, spaces, newline, CR, control and non-ASCII characters, non-UTF-8
//! bytes, 250–300-byte names, shell metacharacters, huge and negative
//! numbers, garbage durations).
//!
//! Each value must give status 2 and create nothing anywhere (a snapshot of
//! the whole sandbox before and after each command: the lock, state, runs
//! and canonical dirs, HOME and the working directory all live in it). A
//! second test per tool checks the message: it quotes the value so that
//! invisible characters show (`$'true\r'`, non-UTF-8 bytes as `\xNN`; the
//! expected forms are written out here, independently of the code) and
//! names where the value came from, the flag or the variable.
//!
//! Flag values are passed as `--flag=VALUE`, so a value starting with `-`
//! reaches the flag instead of being read as another flag.
//!
//! One file, as the suite has one module per tool or theme (see `main.rs`):
//! its tests share the value matrix and the sandbox snapshot defined in it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use ccci_tests::Sandbox;

use crate::attacks::{assert_unchanged, snapshot};

/// A bad value, and how a message must show it.
type Bad = (Vec<u8>, String);

fn bad(value: &[u8], shown: &str) -> Bad {
    (value.to_vec(), shown.to_string())
}

/// Values that are never a valid DOMAIN, run id, NAME or recipe name.
fn bad_names() -> Vec<Bad> {
    let long = |n: usize| bad("a".repeat(n).as_bytes(), &format!("'{}'", "a".repeat(n)));
    vec![
        bad(b"", "''"),
        bad(b".", "'.'"),
        bad(b"..", "'..'"),
        bad(b"../x", "'../x'"),
        bad(b"a/b", "'a/b'"),
        bad(b"/abs", "'/abs'"),
        bad(b".x", "'.x'"),
        bad(b"-x", "'-x'"),
        bad(b"_x", "'_x'"),
        bad(b"a b", "'a b'"),
        bad(b" a", "' a'"),
        bad(b"a\nb", r"$'a\nb'"),
        bad(b"true\r", r"$'true\r'"),
        bad(b"a\tb", r"$'a\tb'"),
        bad(b"a\x01b", r"$'a\x01b'"),
        bad(b"a\x1b[1m", r"$'a\e[1m'"),
        bad(b"a\x7f", r"$'a\x7f'"),
        bad("é".as_bytes(), "'é'"),
        bad("a\u{200b}b".as_bytes(), r"$'a\u200bb'"),
        bad("a\u{202e}b".as_bytes(), r"$'a\u202eb'"),
        bad(b"a\xffb", r"$'a\xffb'"),
        bad(b"\xc3", r"$'\xc3'"),
        long(300),
        bad(b"a;touch pwned", "'a;touch pwned'"),
        bad(b"$(touch pwned)", "'$(touch pwned)'"),
        bad(b"`touch pwned`", "'`touch pwned`'"),
        bad(b"a|b", "'a|b'"),
        bad(b"a&b", "'a&b'"),
        bad(b"*", "'*'"),
        bad(b"a'b", r"'a'\''b'"),
        bad(b"a\"b", "'a\"b'"),
    ]
}

/// Run ids and NAMEs: also longer than their 64 bytes.
fn bad_ids() -> Vec<Bad> {
    let mut v = bad_names();
    v.push(bad(
        "r".repeat(65).as_bytes(),
        &format!("'{}'", "r".repeat(65)),
    ));
    v.push(bad(
        "r".repeat(250).as_bytes(),
        &format!("'{}'", "r".repeat(250)),
    ));
    v
}

fn bad_domains() -> Vec<Bad> {
    let mut v = bad_names();
    v.push(bad(
        "d".repeat(254).as_bytes(),
        &format!("'{}'", "d".repeat(254)),
    ));
    v
}

fn bad_state_names() -> Vec<Bad> {
    let mut v = bad_ids();
    v.push(bad(b"Upper", "'Upper'"));
    v.push(bad(b"a.b", "'a.b'"));
    v
}

/// Never a valid duration.
fn bad_durations() -> Vec<Bad> {
    vec![
        bad(b"", "''"),
        bad(b"-1", "'-1'"),
        bad(b"-1s", "'-1s'"),
        bad(b"abc", "'abc'"),
        bad(b"1x", "'1x'"),
        bad(b"2M", "'2M'"),
        bad(b"99999999999999999999h", "'99999999999999999999h'"),
        bad(b"1s ", "'1s '"),
        bad(b" 1s", "' 1s'"),
        bad(b"1 s", "'1 s'"),
        bad(b"1\r", r"$'1\r'"),
        bad(b"1s\n", r"$'1s\n'"),
        bad(b"nan", "'nan'"),
        bad(b"inf", "'inf'"),
        bad(b"1e3", "'1e3'"),
        bad(b"1..5s", "'1..5s'"),
        bad(b".", "'.'"),
        bad(b"s", "'s'"),
        bad(b"1\xffs", r"$'1\xffs'"),
        bad("½".as_bytes(), "'½'"),
        bad(b"$(touch pwned)", "'$(touch pwned)'"),
    ]
}

/// Durations that bound a wait or a kill: zero too (SPEC §1).
fn bad_bounds() -> Vec<Bad> {
    let mut v = bad_durations();
    v.push(bad(b"0", "'0'"));
    v.push(bad(b"0s", "'0s'"));
    v.push(bad(b"0ms", "'0ms'"));
    v
}

fn bad_pids() -> Vec<Bad> {
    vec![
        bad(b"", "''"),
        bad(b"0", "'0'"),
        bad(b"-1", "'-1'"),
        bad(b"abc", "'abc'"),
        bad(b"99999999999999999999", "'99999999999999999999'"),
        bad(b"4294967296", "'4294967296'"),
        bad(b"1.5", "'1.5'"),
        bad(b" 1", "' 1'"),
        bad(b"1\r", r"$'1\r'"),
        bad(b"0x10", "'0x10'"),
        bad(b"1\xff", r"$'1\xff'"),
        bad(b"$(touch pwned)", "'$(touch pwned)'"),
    ]
}

fn bad_numbers() -> Vec<Bad> {
    vec![
        bad(b"99999999999999999999999", "'99999999999999999999999'"),
        bad(b"-99999999999999999999999", "'-99999999999999999999999'"),
        bad(b"abc", "'abc'"),
        bad(b"1.5", "'1.5'"),
        bad(b"1\r", r"$'1\r'"),
        bad(b"0x10", "'0x10'"),
        bad(b"\xff", r"$'\xff'"),
        bad(b"", "''"),
    ]
}

fn bad_signals() -> Vec<Bad> {
    vec![
        bad(b"", "''"),
        bad(b"NOPE", "'NOPE'"),
        bad(b"-1", "'-1'"),
        bad(b"65", "'65'"),
        bad(b"SIGKILLX", "'SIGKILLX'"),
        bad(b"9x", "'9x'"),
        bad(b"TERM\r", r"$'TERM\r'"),
        bad(b"\xff", r"$'\xff'"),
    ]
}

fn bad_patterns() -> Vec<Bad> {
    vec![
        bad(b"[", "'['"),
        bad(b"a[b", "'a[b'"),
        bad(b"[[:nope:]]", "'[[:nope:]]'"),
        bad(b"\xff[", r"$'\xff['"),
    ]
}

/// Where a value goes in a command line.
#[derive(Clone, Copy)]
enum Place {
    /// `--flag=VALUE`, then the rest.
    Flag(&'static str),
    /// A positional: the arguments before and after it.
    Arg,
    /// A variable.
    Env(&'static str),
}

/// One argument or variable of one tool.
struct Slot {
    tool: &'static str,
    place: Place,
    /// The command line around the value (`{}` where the value goes for
    /// `Place::Arg`; the flag is put first for `Place::Flag`).
    args: &'static [&'static str],
    /// Words one of which a message must contain to name the source.
    source: &'static [&'static str],
    values: fn() -> Vec<Bad>,
}

const fn slot(
    tool: &'static str,
    place: Place,
    args: &'static [&'static str],
    source: &'static [&'static str],
    values: fn() -> Vec<Bad>,
) -> Slot {
    Slot {
        tool,
        place,
        args,
        source,
        values,
    }
}

fn slots(tool: &str) -> Vec<Slot> {
    use Place::*;
    let all = vec![
        // ccci-lock
        slot(
            "ccci-lock",
            Arg,
            &["{}", "--", "true"],
            &["DOMAIN"],
            bad_domains,
        ),
        slot(
            "ccci-lock",
            Arg,
            &["-n", "{}", "--", "true"],
            &["DOMAIN"],
            bad_domains,
        ),
        slot(
            "ccci-lock",
            Flag("--run-id"),
            &["d.example.org", "--", "true"],
            &["--run-id"],
            bad_ids,
        ),
        slot(
            "ccci-lock",
            Env("CCCI_RUN_ID"),
            &["d.example.org", "--", "true"],
            &["CCCI_RUN_ID"],
            bad_ids,
        ),
        slot(
            "ccci-lock",
            Flag("--wait"),
            &["d.example.org", "--", "true"],
            &["--wait", "-w"],
            bad_durations,
        ),
        // ccci-state
        slot(
            "ccci-state",
            Flag("--run-id"),
            &["env"],
            &["--run-id"],
            bad_ids,
        ),
        slot(
            "ccci-state",
            Env("CCCI_RUN_ID"),
            &["env"],
            &["CCCI_RUN_ID"],
            bad_ids,
        ),
        slot("ccci-state", Flag("--pid"), &["env"], &["--pid"], bad_pids),
        slot(
            "ccci-state",
            Env("CCCI_HARNESS_PID"),
            &["env"],
            &["CCCI_HARNESS_PID"],
            bad_pids,
        ),
        slot(
            "ccci-state",
            Flag("--run-id"),
            &["incr", "deploys"],
            &["--run-id"],
            bad_ids,
        ),
        slot(
            "ccci-state",
            Arg,
            &["get", "{}"],
            &["NAME"],
            bad_state_names,
        ),
        slot(
            "ccci-state",
            Arg,
            &["set", "{}", "1"],
            &["NAME"],
            bad_state_names,
        ),
        slot(
            "ccci-state",
            Arg,
            &["incr", "{}"],
            &["NAME"],
            bad_state_names,
        ),
        slot(
            "ccci-state",
            Arg,
            &["append", "{}", "line"],
            &["NAME"],
            bad_state_names,
        ),
        slot(
            "ccci-state",
            Arg,
            &["path", "{}"],
            &["NAME"],
            bad_state_names,
        ),
        slot(
            "ccci-state",
            Arg,
            &["incr", "deploys", "{}"],
            &["BY"],
            bad_numbers,
        ),
        // ccci-abradir
        slot(
            "ccci-abradir",
            Flag("--run-id"),
            &[],
            &["--run-id"],
            bad_ids,
        ),
        slot(
            "ccci-abradir",
            Env("CCCI_RUN_ID"),
            &[],
            &["CCCI_RUN_ID"],
            bad_ids,
        ),
        slot("ccci-abradir", Flag("--pid"), &[], &["--pid"], bad_pids),
        slot(
            "ccci-abradir",
            Env("CCCI_HARNESS_PID"),
            &[],
            &["CCCI_HARNESS_PID"],
            bad_pids,
        ),
        slot(
            "ccci-abradir",
            Flag("--recipe"),
            &[],
            &["--recipe"],
            bad_names,
        ),
        slot(
            "ccci-abradir",
            Flag("--run-id"),
            &["clean"],
            &["--run-id"],
            bad_ids,
        ),
        slot(
            "ccci-abradir",
            Env("CCCI_RUN_ID"),
            &["clean"],
            &["CCCI_RUN_ID"],
            bad_ids,
        ),
        // ccci-guard
        slot(
            "ccci-guard",
            Flag("--parent"),
            &["--", "true"],
            &["--parent"],
            bad_pids,
        ),
        slot(
            "ccci-guard",
            Flag("--deadline"),
            &["--", "true"],
            &["--deadline"],
            bad_bounds,
        ),
        slot(
            "ccci-guard",
            Flag("--kill-after"),
            &["--deadline=1h", "--", "true"],
            &["--kill-after"],
            bad_bounds,
        ),
        slot(
            "ccci-guard",
            Flag("--pdeathsig"),
            &["--", "true"],
            &["--pdeathsig"],
            bad_signals,
        ),
        // ccci-janitor
        slot(
            "ccci-janitor",
            Flag("--min-age"),
            &["--", "true"],
            &["--min-age"],
            bad_durations,
        ),
        slot(
            "ccci-janitor",
            Flag("--leak-after"),
            &["--", "true"],
            &["--leak-after"],
            bad_durations,
        ),
        slot(
            "ccci-janitor",
            Flag("--reap-timeout"),
            &["--", "true"],
            &["--reap-timeout"],
            bad_bounds,
        ),
        slot(
            "ccci-janitor",
            Flag("--warm"),
            &["--", "true"],
            &["--warm"],
            bad_patterns,
        ),
        slot(
            "ccci-janitor",
            Flag("--only"),
            &["--", "true"],
            &["--only"],
            bad_patterns,
        ),
    ];
    all.into_iter().filter(|s| s.tool == tool).collect()
}

/// One case of the matrix: a tool, its arguments and environment.
struct Case {
    tool: &'static str,
    args: Vec<OsString>,
    env: Option<(&'static str, OsString)>,
    shown: String,
    source: &'static [&'static str],
    desc: String,
}

fn cases(tool: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for slot in slots(tool) {
        for (value, shown) in (slot.values)() {
            let value = OsString::from_vec(value);
            let mut args: Vec<OsString> = Vec::new();
            let mut env = None;
            match slot.place {
                Place::Flag(flag) => {
                    let mut arg = OsString::from(format!("{flag}="));
                    arg.push(&value);
                    // Global flags of ccci-state/abradir go before the subcommand.
                    args.push(arg);
                    args.extend(slot.args.iter().map(OsString::from));
                }
                Place::Arg => {
                    for a in slot.args {
                        args.push(if *a == "{}" {
                            value.clone()
                        } else {
                            OsString::from(a)
                        });
                    }
                }
                Place::Env(var) => {
                    if value.is_empty() {
                        continue; // an empty variable counts as unset
                    }
                    env = Some((var, value.clone()));
                    args.extend(slot.args.iter().map(OsString::from));
                }
            }
            let where_ = match slot.place {
                Place::Env(var) => format!("{var}={shown}"),
                _ => format!("{:?}", args),
            };
            out.push(Case {
                tool: slot.tool,
                desc: format!("{} {where_}", slot.tool),
                args,
                env,
                shown,
                source: slot.source,
            });
        }
    }
    out
}

/// Runs every case of `tool`; returns the failures of `status_and_trace`
/// (status 2, nothing created) or of `message` (quoted visibly, source
/// named), and the number of cases.
fn run_matrix(tool: &str, check_message: bool) -> (Vec<String>, usize) {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.canonical_dir().join("servers")).unwrap();
    let before = snapshot(sb.root());
    let cases = cases(tool);
    let mut failures = Vec::new();
    for case in &cases {
        let mut cmd = sb.tool(case.tool).args(&case.args);
        if let Some((var, value)) = &case.env {
            cmd = cmd.env(var, value);
        }
        let out = cmd.run();
        if check_message {
            let shows = out.stderr.contains(&case.shown);
            let names = case.source.iter().any(|s| out.stderr.contains(s));
            if !(shows && names) {
                failures.push(format!(
                    "{}: message {} {} ({}; expected {} and one of {:?})",
                    case.desc,
                    if shows {
                        "quotes it"
                    } else {
                        "does not quote it"
                    },
                    if names {
                        "names the source"
                    } else {
                        "does not name the source"
                    },
                    out.stderr.lines().next().unwrap_or(""),
                    case.shown,
                    case.source
                ));
            }
        } else {
            if out.code() != 2 {
                failures.push(format!("{}: status {}\n{out}", case.desc, out.code()));
            }
            let after = snapshot(sb.root());
            if after != before {
                failures.push(format!("{}: created or changed files", case.desc));
                // Report the difference, then start again from here.
                let result = std::panic::catch_unwind(|| {
                    assert_unchanged(&before, sb.root(), &case.desc);
                });
                if let Err(e) = result {
                    if let Some(text) = e.downcast_ref::<String>() {
                        failures.push(text.clone());
                    }
                }
                panic!("{}", failures.join("\n"));
            }
        }
    }
    (failures, cases.len())
}

#[track_caller]
fn assert_matrix(tool: &str, check_message: bool) {
    let (failures, tried) = run_matrix(tool, check_message);
    eprintln!(
        "{tool}: {tried} hostile inputs, {} failures ({})",
        failures.len(),
        if check_message {
            "messages"
        } else {
            "status and trace"
        }
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_ccci_lock_inputs_are_2_and_create_nothing() {
    assert_matrix("ccci-lock", false);
}

#[test]
fn hostile_ccci_state_inputs_are_2_and_create_nothing() {
    assert_matrix("ccci-state", false);
}

#[test]
fn hostile_ccci_abradir_inputs_are_2_and_create_nothing() {
    assert_matrix("ccci-abradir", false);
}

#[test]
fn hostile_ccci_guard_inputs_are_2_and_create_nothing() {
    assert_matrix("ccci-guard", false);
}

#[test]
fn hostile_ccci_janitor_inputs_are_2_and_create_nothing() {
    assert_matrix("ccci-janitor", false);
}

#[test]
fn hostile_ccci_lock_inputs_are_quoted_visibly_and_blamed_on_their_source() {
    assert_matrix("ccci-lock", true);
}

#[test]
fn hostile_ccci_state_inputs_are_quoted_visibly_and_blamed_on_their_source() {
    assert_matrix("ccci-state", true);
}

#[test]
fn hostile_ccci_abradir_inputs_are_quoted_visibly_and_blamed_on_their_source() {
    assert_matrix("ccci-abradir", true);
}

#[test]
fn hostile_ccci_guard_inputs_are_quoted_visibly_and_blamed_on_their_source() {
    assert_matrix("ccci-guard", true);
}

#[test]
fn hostile_ccci_janitor_inputs_are_quoted_visibly_and_blamed_on_their_source() {
    assert_matrix("ccci-janitor", true);
}

/// A path argument or variable that is empty, or not UTF-8: an empty
/// `--lock-dir=` is status 2 and creates nothing; a non-UTF-8 path works
/// like any other (it names a directory), and when it is refused the
/// message shows its bytes.
#[test]
fn odd_paths_are_refused_or_used_never_mangled() {
    let sb = Sandbox::new();
    let before = snapshot(sb.root());
    for (tool, flag, rest) in [
        (
            "ccci-lock",
            "--lock-dir",
            &["d.example.org", "--", "true"][..],
        ),
        ("ccci-janitor", "--lock-dir", &["--", "true"]),
        ("ccci-state", "--state-dir", &["env"]),
        ("ccci-abradir", "--runs-dir", &[]),
    ] {
        let out = sb.tool(tool).arg(format!("{flag}=")).args(rest).run();
        assert_eq!(out.code(), 2, "{tool} {flag}=\n{out}");
        assert_unchanged(&before, sb.root(), &format!("{tool} {flag}="));
    }
    // A non-UTF-8 lock dir that is a symlink: refused, its bytes shown.
    let name = OsStr::from_bytes(b"lock\xff\r");
    std::os::unix::fs::symlink(sb.path("elsewhere"), sb.root().join(name)).unwrap();
    let out = sb
        .tool("ccci-lock")
        .arg("--lock-dir")
        .arg(sb.root().join(name))
        .args(["d.example.org", "--", "true"])
        .run();
    out.expect_code(125)
        .expect_stderr(r"lock\xff\r'")
        .expect_stderr("is a symlink");
    assert!(!sb.path("elsewhere").exists());
}
