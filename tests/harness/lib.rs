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
//!   workspace (or taken from `CCCI_TEST_BIN_DIR`, to test an install).
//!
//! Nothing here sleeps to synchronise: waits are for lines, files or
//! kernel state (see [`wait_until`], [`blocked_in_flock`]), bounded by
//! [`deadline`] and failing with the captured output.

mod proc;
mod sandbox;

pub use proc::{Output, Proc};
pub use sandbox::{Cmd, Sandbox};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The five tools.
pub const TOOLS: [&str; 5] = [
    "ccci-lock",
    "ccci-guard",
    "ccci-janitor",
    "ccci-abradir",
    "ccci-state",
];

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

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// The directory our test binary's profile builds into (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/suite-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps")
        .to_path_buf()
}

/// The directory holding the tools: `CCCI_TEST_BIN_DIR`, or this workspace's
/// build output.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CCCI_TEST_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => profile_dir(),
    }
}

/// The path of `tool`, built first if it comes from this workspace.
///
/// `cargo test` builds only the binaries of the package under test, so the
/// harness asks cargo for the tool once per test process; when it is up to
/// date that costs a fraction of a second.
pub fn bin(tool: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    assert!(TOOLS.contains(&tool), "unknown tool {tool}");
    if std::env::var_os("CCCI_TEST_BIN_DIR").is_some_and(|d| !d.is_empty()) {
        return bin_dir().join(tool);
    }
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(tool) {
        return path.clone();
    }
    let dir = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", tool, "--bin", tool]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    let out = cmd.output().expect("cannot run cargo to build the tools");
    assert!(
        out.status.success(),
        "building {tool} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(tool);
    assert!(path.is_file(), "{} was not built", path.display());
    built.insert(tool.to_string(), path.clone());
    path
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

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`; a missing process is fine.
pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
