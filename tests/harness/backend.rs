//! One test body, both lock backends: a [`Backend`] is a [`Sandbox`] plus,
//! on etcd, a real etcd server of the test's own, and knows how to point
//! the tools at its backend (the sandbox's lock dir through its `CCCI_*`
//! variables, or `CCCI_ETCD_*` naming the server). [`both_backends!`]
//! turns one body into a `flock` and an `etcd` test.
//!
//! What differs between the backends is said here once: where a claim
//! lives (a lockfile, or `<prefix>/claim/<DOMAIN>`), how a waiter is seen
//! to wait (blocked in flock(2), or its `-v` "waiting for" line), and how
//! soon a SIGKILLed holder's lock is free (at once, or within the lease
//! TTL).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::etcd::Etcd;
use crate::{blocked_in_flock, wait_until, Cmd, Proc, Sandbox};

/// The key prefix of the etcd backend's tests.
pub const ETCD_PREFIX: &str = "/t";

/// The lease TTL of the etcd backend's tests: short, so that expiry is
/// quick to observe.
pub const ETCD_TTL: Duration = Duration::from_secs(2);

/// Runs the SPEC §7 cases that hold on both lock backends from one body:
/// `both_backends!(case_NN_name, |b: &Backend| { … })` expands to a module
/// `case_NN_name` with two tests, `flock` (a lock dir) and `etcd` (a real
/// etcd server started for the test), each giving the body a fresh
/// [`Backend`] (its own temp dir and command builder, as ripgrep's
/// `rgtest!` does). A filter on the case name selects both.
///
/// Both backends run the cases about lock semantics: 1 (a SIGKILLed
/// holder frees the lock and leaves its claim), 2 (`-n`), 3 (the holder's
/// child does not keep the lock; on files the body also looks for the lock
/// descriptor in `/proc/PID/fd`), 4 (a second acquirer waits), 5-10 (the
/// janitor reaps an orphan once, never a live or leaked holder, one pass
/// at a time, deployed domains without a claim), 22 (signal deaths keep
/// the claims) and 27 (crossed sets of domains).
///
/// The others do not run from one body:
/// - 12, 21, 25 and 28 are about files: a directory as lockfile, unlinked
///   and recreated lockfiles, a tmpfs lock dir, squatted parents, symlinks
///   and hard links, `/proc/locks`.
/// - 13-20 are about guards, ABRA_DIRs and state files, which have no lock
///   backend.
/// - 8 across hosts, 11 and 26 have a form of their own on each backend:
///   hosts need UTS namespaces, warm names are checked by watching opens
///   in the lock dir or by reading every etcd revision, and held
///   dependencies have their keeper's socket in the lock dir either way.
/// - 23, 24 and 29 (janitor selection, overlapping passes over deployed
///   domains, no leftovers under `--list` and passes in a loop) stay on
///   files, where their checks look at the lock dir.
/// - 30-35 set up their backends per test (real configurations, runs on
///   one backend and a janitor on the other, lease loss).
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, $body:expr) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn flock() {
                let body: &dyn Fn(&$crate::Backend) = &$body;
                body(&$crate::Backend::flock());
            }

            #[test]
            fn etcd() {
                let body: &dyn Fn(&$crate::Backend) = &$body;
                body(&$crate::Backend::etcd());
            }
        }
    };
}

/// A test's sandbox and its lock backend; see the module doc.
pub struct Backend {
    sb: Sandbox,
    etcd: Option<Etcd>,
}

impl Backend {
    /// The file backend: locks in the sandbox's lock dir.
    pub fn flock() -> Backend {
        Backend {
            sb: Sandbox::new(),
            etcd: None,
        }
    }

    /// The etcd backend: a single-member etcd of this test's own, prefix
    /// [`ETCD_PREFIX`], lease TTL [`ETCD_TTL`].
    pub fn etcd() -> Backend {
        Backend {
            sb: Sandbox::new(),
            etcd: Some(Etcd::start()),
        }
    }

    /// The sandbox.
    pub fn sb(&self) -> &Sandbox {
        &self.sb
    }

    /// The etcd server, on the etcd backend.
    pub fn etcd_server(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    /// Whether this is the etcd backend.
    pub fn is_etcd(&self) -> bool {
        self.etcd.is_some()
    }

    /// `cmd` pointed at this backend (the sandbox's variables are already
    /// set; on etcd, `CCCI_ETCD_*` too).
    pub fn setup(&self, cmd: Cmd) -> Cmd {
        match &self.etcd {
            None => cmd,
            Some(etcd) => cmd
                .env("CCCI_ETCD_ENDPOINTS", etcd.endpoint())
                .env("CCCI_ETCD_PREFIX", ETCD_PREFIX)
                .env("CCCI_ETCD_TTL", format!("{}s", ETCD_TTL.as_secs())),
        }
    }

    /// One of the five tools, on this backend.
    pub fn tool(&self, tool: &str) -> Cmd {
        self.setup(self.sb.tool(tool))
    }

    /// `sh -c script`, the tools it runs on this backend.
    pub fn sh(&self, script: &str) -> Cmd {
        self.setup(self.sb.sh(script))
    }

    /// `ccci-lock -n DOMAIN -- true`: 0 when the lock was free (and is free
    /// again), 75 while somebody holds it.
    pub fn try_lock(&self, domain: &str) -> i32 {
        self.tool("ccci-lock")
            .args(["-n", domain, "--", "true"])
            .run()
            .code()
    }

    /// A holder of `domain` whose COMMAND says "ready" and then waits for a
    /// line (or EOF) on stdin; release it with `p.send("")`. Also the lock's
    /// fencing token (`CCCI_LOCK_REVISION`), which only etcd gives.
    pub fn hold(&self, domain: &str, flags: &[&str]) -> (Proc, Option<i64>) {
        hold_until_told(self.tool("ccci-lock"), domain, flags)
    }

    /// Whether `domain` has a claim: its lockfile, or its claim key.
    pub fn has_claim(&self, domain: &str) -> bool {
        match &self.etcd {
            None => self.sb.lockfile(domain).is_file(),
            Some(etcd) => !etcd.dump(&claim_key(domain)).is_empty(),
        }
    }

    /// The holder record in `domain`'s claim.
    pub fn claim_record(&self, domain: &str) -> String {
        match &self.etcd {
            None => std::fs::read_to_string(self.sb.lockfile(domain)).unwrap(),
            Some(etcd) => etcd.ctl(&["get", "--print-value-only", &claim_key(domain)]),
        }
    }

    /// Makes `domain`'s claim `secs` old: the lockfile's mtime, or the
    /// `since` of the record in the claim key.
    pub fn backdate_claim(&self, domain: &str, secs: u64) {
        let when = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - secs;
        match &self.etcd {
            None => touch(&self.sb, &self.sb.lockfile(domain), when),
            Some(etcd) => {
                let mut record: serde_json::Value =
                    serde_json::from_str(self.claim_record(domain).trim()).unwrap();
                record["since"] = rfc3339(when).into();
                etcd.ctl(&["put", &claim_key(domain), &record.to_string()]);
            }
        }
    }

    /// What the runs and passes left behind: the lock dir's names other
    /// than place records, or every key under the prefix.
    pub fn leftovers(&self) -> Vec<String> {
        match &self.etcd {
            None => crate::lock_dir_entries(&self.sb.lock_dir()),
            Some(etcd) => etcd.dump(ETCD_PREFIX),
        }
    }

    /// Waits until `p`, a `ccci-lock -v` acquirer, waits for a held lock:
    /// blocked in flock(2), or saying "waiting for".
    pub fn wait_blocked(&self, p: &mut Proc) {
        match &self.etcd {
            None => wait_until("the acquirer blocks in flock", || blocked_in_flock(p.pid())),
            Some(_) => {
                p.expect_stderr("waiting for");
            }
        }
    }

    /// Asserts that `domain`, whose holder was SIGKILLed, is free: at once
    /// on files (the kernel drops a flock with its process), within the
    /// lease TTL (and a second of slack) on etcd.
    #[track_caller]
    pub fn assert_freed(&self, domain: &str, what: &str) {
        if !self.is_etcd() {
            assert_eq!(self.try_lock(domain), 0, "{what}");
            return;
        }
        let start = Instant::now();
        wait_until(what, || self.try_lock(domain) == 0);
        let took = start.elapsed();
        assert!(
            took <= ETCD_TTL + Duration::from_secs(1),
            "{what}: the lock was free only after {took:?} (TTL {ETCD_TTL:?})"
        );
    }
}

/// The claim key of `domain` on etcd.
pub fn claim_key(domain: &str) -> String {
    format!("{ETCD_PREFIX}/claim/{domain}")
}

/// Sets the mtime of `path` to `when`, seconds since the epoch.
fn touch(sb: &Sandbox, path: &Path, when: u64) {
    sb.command("touch")
        .args(["-d", &format!("@{when}")])
        .arg(path)
        .run()
        .expect_code(0);
}

/// `when`, seconds since the epoch, in RFC 3339 (UTC, to the second).
fn rfc3339(when: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-d"])
        .arg(format!("@{when}"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `lock` (a `ccci-lock` command pointed at a backend) run with `flags`
/// on `domain`, holding it until a line (or EOF) on its stdin: its COMMAND
/// prints "ready rev=N" once it holds the lock. Returns the holder and the
/// lock's fencing token (`CCCI_LOCK_REVISION`), which only etcd gives.
pub fn hold_until_told(lock: Cmd, domain: &str, flags: &[&str]) -> (Proc, Option<i64>) {
    let mut p = lock
        .args(flags)
        .arg(domain)
        .args([
            "--",
            "sh",
            "-c",
            "echo ready rev=$CCCI_LOCK_REVISION; read _",
        ])
        .piped_stdin()
        .spawn();
    let line = p.expect_stdout("ready");
    let rev = line.trim_start_matches("ready rev=").parse().ok();
    (p, rev)
}

/// The arguments, after `ccci-lock`, of a run `run_id` of `domain` that
/// leaves an orphan: its COMMAND is killed by SIGTERM, so ccci-lock exits
/// 143, keeps the claim and releases the lock.
pub fn orphaning<'a>(run_id: &'a str, domain: &'a str) -> [&'a str; 7] {
    [
        "--run-id",
        run_id,
        domain,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]
}
