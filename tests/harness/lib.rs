//! The integration-test harness: real binaries, real processes, deadlines.
//!
//! - [`Sandbox`]: a private temp dir per test, with the `CCCI_*` directories
//!   inside it, and a command builder whose environment points there. Every
//!   process a sandbox starts carries a token in its environment; when the
//!   sandbox is dropped (also on a failed test) every process still carrying
//!   the token is SIGKILLed, whatever process group it moved to.
//! - [`Proc`]: a running child whose stdout and stderr lines arrive on
//!   channels, so a test waits for "ready" with a deadline instead of
//!   sleeping. Dropping it kills its process group and reaps it.
//! - [`bin`]: the path of a tool, built once per test process from this
//!   workspace wherever cargo puts it (or taken from `CCCI_TEST_BIN_DIR`, to
//!   test an install).
//! - [`Backend`] and [`both_backends!`]: one test body run on the file
//!   backend and on a real etcd (the SPEC §7 cases that hold on both).
//!
//! Nothing here sleeps to synchronise: waits are for lines, files or
//! kernel state (see [`wait_until`], [`blocked_in_flock`]), bounded by
//! [`deadline`] and failing with the captured output.

pub mod backend;
pub mod etcd;
pub mod fake_http;
mod proc;
mod sandbox;

pub use backend::{hold_until_told, orphaning, Backend};
pub use proc::{Output, Proc};
pub use sandbox::{Cmd, Sandbox};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The five tools.
pub const TOOLS: [&str; 5] = [
    "ccci-lock",
    "ccci-guard",
    "ccci-janitor",
    "ccci-abradir",
    "ccci-state",
];

/// The stub `abra` (see [`Sandbox::install_abra_stub`]).
pub const ABRA_STUB: &str = include_str!("abra-stub.sh");

/// How long any single wait may take before the test fails
/// (`CCCI_TEST_DEADLINE` seconds, default 30).
pub fn deadline() -> Duration {
    static D: OnceLock<Duration> = OnceLock::new();
    *D.get_or_init(|| {
        let secs = std::env::var("CCCI_TEST_DEADLINE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        Duration::from_secs(secs)
    })
}

/// Polls `cond` until it holds; panics with `what` after [`deadline`].
/// For conditions the kernel or another process makes true (a file appears,
/// a process blocks), not for time passing.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(
            start.elapsed() < deadline(),
            "timed out after {:?} waiting until {what}",
            deadline()
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Whether `name`, an entry of a lock dir, is the host's record of where
/// its runs claim (`.claims-in.*`, see `ccci_lock::place`): written by the
/// first run and kept, so never a leftover of a run.
pub fn is_place_record(name: &str) -> bool {
    name.starts_with(".claims-in.")
}

/// Whether `name`, an entry of a lock dir, is one of the janitor's own
/// locks in it: the pass lock (`.janitor.lock`) or the records lock
/// (`.records.lock`, see `ccci_lock::place`). A pass removes both while
/// holding them; a killed pass leaves them, unlocked, for the next one.
pub fn is_janitor_lock(name: &str) -> bool {
    name == ".janitor.lock" || name == ".records.lock"
}

/// Whether `name` is the janitor's record of a lock dir, beside it
/// (`LOCK_DIR.janitor/`, `ccci_janitor::boot`): written by the first pass
/// that uses the lock dir, like a place record.
pub fn is_janitor_record(name: &str) -> bool {
    name.ends_with(".janitor")
}

/// The names in `dir` other than place records ([`is_place_record`]),
/// sorted; an absent dir has none.
pub fn lock_dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !is_place_record(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The workspace this harness belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// The cargo profile the tools are built with: the one this test binary was
/// built with, read from its path (`…/<profile>/deps/suite-<hash>`), which
/// cargo keeps under both the target dir and a separate build dir.
fn profile() -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let named = exe
        .parent()
        .filter(|deps| deps.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .map(String::from);
    match named {
        Some(p) if p == "debug" => "dev".into(),
        Some(p) => p,
        None if cfg!(debug_assertions) => "dev".into(),
        None => "release".into(),
    }
}

/// The directory holding the tools: `CCCI_TEST_BIN_DIR`, or where cargo put
/// this workspace's build of them (see [`ensure_built`]).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CCCI_TEST_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => ensure_built().to_path_buf(),
    }
}

/// Builds the five tools of this workspace, once per test process, and
/// returns the directory cargo put them in.
///
/// `cargo test` builds only the binaries of the package under test, so the
/// harness asks cargo for all five tools, in one call, before the first
/// command of any test starts: shell scripts that find the tools on `PATH`
/// then never run a stale binary. When they are up to date this costs a
/// fraction of a second.
///
/// Where the tools land is cargo's answer, never a guess: the paths come from
/// the `executable` fields of `cargo build --message-format=json`, so a
/// `CARGO_TARGET_DIR`, a `CARGO_BUILD_BUILD_DIR` (test binaries and final
/// artifacts in different trees) or a `build.target-dir` in a config file all
/// work. With `CCCI_TEST_BIN_DIR` set, nothing is built.
pub fn ensure_built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CCCI_TEST_BIN_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--quiet")
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .args(["--profile", &profile()]);
        for tool in TOOLS {
            cmd.args(["-p", tool, "--bin", tool]);
        }
        let out = cmd.output().expect("cannot run cargo to build the tools");
        assert!(
            out.status.success(),
            "building the tools failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exes = executables(&String::from_utf8_lossy(&out.stdout));
        let mut dirs = TOOLS.iter().map(|tool| {
            let exe = exes
                .iter()
                .find(|e| e.file_name().is_some_and(|n| n == *tool))
                .unwrap_or_else(|| panic!("cargo reported no executable for {tool}"));
            exe.parent()
                .expect("an executable has a directory")
                .to_path_buf()
        });
        let dir = dirs.next().unwrap();
        assert!(
            dirs.all(|d| d == dir),
            "cargo put the tools in different directories"
        );
        dir
    })
}

/// The `executable` paths in the JSON messages of a `cargo build`.
fn executables(messages: &str) -> Vec<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .collect()
}

/// The path of `tool`, built first (see [`ensure_built`]).
pub fn bin(tool: &str) -> PathBuf {
    assert!(TOOLS.contains(&tool), "unknown tool {tool}");
    let path = bin_dir().join(tool);
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// The target directory cargo uses for this workspace (`cargo metadata`'s
/// `target_directory`: `CARGO_TARGET_DIR`, a config file, or `./target`).
pub fn target_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .output()
            .expect("cannot run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
        PathBuf::from(
            meta["target_directory"]
                .as_str()
                .expect("metadata names the target directory"),
        )
    })
    .clone()
}

/// Whether process `pid` is waiting for a flock (a `->` line in /proc/locks).
/// This is how a test knows a second acquirer really blocks.
pub fn blocked_in_flock(pid: u32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        let mut words = line.split_whitespace().skip(1);
        words.next() == Some("->")
            && words.next() == Some("FLOCK")
            && words.nth(2) == Some(pid.to_string().as_str())
    })
}

/// Field `n` of `/proc/<pid>/stat`, numbered as in proc(5) (3 is the state,
/// 4 the parent pid, 5 the process group), for `n >= 3`; `None` when there
/// is no such process.
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    assert!(n >= 3, "fields 1 and 2 are the pid and the command name");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ..." — comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3).map(String::from)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state != "Z" && state != "X")
}

/// Sends `sig` to `pid`; a missing process is fine.
pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The signals a command started by a tool gets with their default
/// disposition (SPEC §1), written out here independently of the tools.
pub const RESET_SIGNALS: [libc::c_int; 11] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGCHLD,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Panics unless `out` (a command that printed its `/proc/self/status`)
/// shows an empty signal mask and none of [`RESET_SIGNALS`] ignored.
#[track_caller]
pub fn assert_clean_signal_state(out: &Output) {
    let mask = |field: &str| {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} line\n{out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let reset: u64 = RESET_SIGNALS.iter().map(|s| 1u64 << (s - 1)).sum();
    assert_eq!(
        mask("SigBlk:"),
        0,
        "COMMAND inherited a blocked mask\n{out}"
    );
    assert_eq!(
        mask("SigIgn:") & reset,
        0,
        "COMMAND inherited ignored signals\n{out}"
    );
}

/// Creates a FIFO at `path`, mode 0600.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}
