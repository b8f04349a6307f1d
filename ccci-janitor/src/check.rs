//! `ccci-janitor --check [--json] [-- REAP_COMMAND…]`: a preflight for
//! operators (SPEC §4). It changes nothing: no lock dir is created, no
//! lock taken, no claim read for a decision. It prints the effective
//! configuration, each value with its origin (`flag`, `env`, `FILE:LINE`,
//! `default`), and the result of each check; the status is 0 when every
//! check holds, else 125, with one line per failed check saying what to
//! change.

use crate::boot::{Seen, Verdict};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ccci_common::config;
use ccci_common::exit;
use ccci_common::fs::SafeDir;
use ccci_common::names::quote_path;
use ccci_common::Domain;
use ccci_lock::place::{self, Place};
use ccci_lock::Backend;

use crate::{missing_lock_dir, MissingLockDir, Patterns};

/// One setting as the janitor sees it.
#[derive(Debug, serde::Serialize)]
pub struct Setting {
    /// The configuration key.
    pub key: &'static str,
    /// The value, or `None` when unset.
    pub value: Option<String>,
    /// Where it came from.
    pub origin: String,
}

/// One check.
#[derive(Debug, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub check: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was found, or what to change.
    pub detail: String,
}

/// What [`run`] needs from the command line, already checked.
pub struct Inputs<'a> {
    /// The lock dir (flag, variable, file or default).
    pub lock_dir: PathBuf,
    /// The etcd settings, when the janitor looks there.
    pub etcd: Option<ccci_lock::etcd::Config>,
    /// `--deployed` was given.
    pub deployed: Option<Vec<Domain>>,
    /// The CI patterns (flags or `CCCI_ONLY`).
    pub only: Option<Patterns>,
    /// The warm patterns (flags or `CCCI_WARM`).
    pub warm: Patterns,
    /// REAP_COMMAND, if given.
    pub reap_command: &'a [OsString],
    /// Which flags were given on the command line: (key, flag id).
    pub flags: &'a [(&'static str, &'static str)],
}

/// The configuration keys the janitor has a flag for: (key, clap id).
pub const FLAGS: &[(&str, &str)] = &[
    ("CCCI_APP_LOCK_DIR", "lock_dir"),
    ("CCCI_ETCD_ENDPOINTS", "endpoints"),
    ("CCCI_ETCD_PREFIX", "etcd_prefix"),
    ("CCCI_ETCD_TTL", "ttl"),
    ("CCCI_ONLY", "only"),
    ("CCCI_WARM", "warm"),
];

fn settings(inputs: &Inputs<'_>) -> Vec<Setting> {
    config::KEYS
        .iter()
        .map(|key| {
            let flagged = inputs
                .flags
                .iter()
                .any(|(k, id)| *k == key.name && ccci_common::cli::given_on_command_line(id));
            let origin = if flagged {
                "flag".to_string()
            } else {
                config::origin(key.name).to_string()
            };
            let value = match key.name {
                "CCCI_APP_LOCK_DIR" => Some(inputs.lock_dir.display().to_string()),
                _ if flagged => Some("(given on the command line)".to_string()),
                name => std::env::var_os(name)
                    .filter(|v| !v.is_empty())
                    .map(|v| ccci_common::cli::quote(&v)),
            };
            Setting {
                key: key.name,
                value,
                origin,
            }
        })
        .collect()
}

/// Runs the checks; prints them (as text or one JSON object) on stdout;
/// returns the status.
pub fn run(inputs: &Inputs<'_>, json: bool) -> anyhow::Result<u8> {
    let mut checks = Vec::new();
    let mut check = |check: &'static str, ok: bool, detail: String| {
        checks.push(Check { check, ok, detail });
    };

    // The configuration file.
    match (config::deferred_error(), config::loaded()) {
        (Some((error, _)), _) => check("configuration file", false, error.clone()),
        (None, Some(loaded)) if loaded.present => check(
            "configuration file",
            true,
            format!(
                "{} is safe and read ({} settings)",
                quote_path(&loaded.path),
                loaded.settings.len()
            ),
        ),
        (None, Some(loaded)) => check(
            "configuration file",
            true,
            format!(
                "{} does not exist: built-in defaults hold",
                quote_path(&loaded.path)
            ),
        ),
        (None, None) => check("configuration file", true, "not read".into()),
    }

    // The lock dir, and where this host's runs claim.
    let lock_dir = &inputs.lock_dir;
    let mine = match &inputs.etcd {
        Some(config) => Place::etcd(&config.endpoints, &config.prefix),
        None => Place::Files,
    };
    let opened = SafeDir::open(&ccci_common::dirs::LOCK_DIR, lock_dir, false);
    match &opened {
        Ok(Some(_)) => check(
            "lock dir",
            true,
            format!("{} exists and is safe", quote_path(lock_dir)),
        ),
        Ok(None) => match (missing_lock_dir(lock_dir), &inputs.etcd) {
            (_, Some(_)) => check(
                "lock dir",
                true,
                format!(
                    "{} does not exist: no run of this host has claimed on etcd yet",
                    quote_path(lock_dir)
                ),
            ),
            (MissingLockDir::Rebooted, None) => check(
                "lock dir",
                true,
                format!(
                    "{} does not exist; its parent is on a tmpfs, so the next pass creates it",
                    quote_path(lock_dir)
                ),
            ),
            (MissingLockDir::Leave(why), None) => check(
                "lock dir",
                false,
                format!(
                    "{} does not exist, and {why}: every pass fails (125); create it, or set \
                     CCCI_APP_LOCK_DIR in the configuration file to the runs' lock dir",
                    quote_path(lock_dir)
                ),
            ),
        },
        Err(e) => check("lock dir", false, format!("{e:#}")),
    }
    if inputs.etcd.is_none() {
        // What the last pass saw of the lock dir (crate::boot).
        let now = match &opened {
            Ok(Some(dir)) => dir.identity().ok(),
            _ => None,
        };
        let what = "lock dir record";
        match (crate::boot::boot_id(), crate::boot::recall(lock_dir)) {
            (Ok(boot), Ok(record)) => match Seen::judge(record.seen.as_ref(), &boot, now) {
                Verdict::Unknown => {
                    check(what, true, "no pass has recorded the lock dir yet".into())
                }
                Verdict::Same => check(
                    what,
                    true,
                    format!(
                        "{} names the lock dir the last pass used, in this boot",
                        quote_path(&record.path)
                    ),
                ),
                Verdict::Rebooted => check(
                    what,
                    true,
                    format!(
                        "{} is from before a reboot: the next pass takes the lock dir as it is",
                        quote_path(&record.path)
                    ),
                ),
                Verdict::Removed(now) => {
                    check(what, false, crate::boot::refusal(lock_dir, &record, now))
                }
            },
            (Err(e), _) | (_, Err(e)) => check(what, false, format!("{e:#}")),
        }
    }
    if let Ok(Some(dir)) = &opened {
        match place::elsewhere(dir, &mine) {
            Ok(elsewhere) if elsewhere.is_empty() => check(
                "where the runs claim",
                true,
                match place::recorded(dir) {
                    Ok(all) if all.is_empty() => "no run has recorded a place yet".into(),
                    _ => format!("the runs of this host claim {mine}, where this janitor looks"),
                },
            ),
            Ok(elsewhere) => check(
                "where the runs claim",
                false,
                place::refusal(&mine, lock_dir, &elsewhere),
            ),
            Err(e) => check("where the runs claim", false, format!("{e:#}")),
        }
    }

    // The backend.
    if let Some(config) = &inputs.etcd {
        let etcd = ccci_lock::etcd::Etcd::new(config.clone());
        match etcd.domains() {
            Ok(claims) => check(
                "etcd",
                true,
                format!(
                    "{} answers; {} claims under {}",
                    config.endpoints.join(","),
                    claims.len(),
                    config.prefix
                ),
            ),
            Err(e) => check(
                "etcd",
                false,
                format!(
                    "{e:#}; check CCCI_ETCD_ENDPOINTS and that etcd runs and is reachable from here"
                ),
            ),
        }
    }

    // The patterns.
    match (&inputs.deployed, &inputs.only) {
        (Some(_), None) => check(
            "CI pattern",
            false,
            "--deployed needs --only or CCCI_ONLY: set CCCI_ONLY in the configuration file to \
             the domains CI runs deploy"
                .into(),
        ),
        (None, None) => check(
            "CI pattern",
            true,
            "no --only and no CCCI_ONLY: every lockfile is a candidate; ccci-janitor-pass \
             refuses to run without CCCI_ONLY"
                .into(),
        ),
        (_, Some(only)) => check("CI pattern", true, format!("CI apps match {only:?}")),
    }
    if let Some(deployed) = &inputs.deployed {
        let (mut ci, mut warm, mut other) = (Vec::new(), Vec::new(), Vec::new());
        for domain in deployed {
            if inputs.warm.first_match(domain).is_some() {
                warm.push(domain.as_str());
            } else if inputs
                .only
                .as_ref()
                .is_some_and(|o| o.first_match(domain).is_some())
            {
                ci.push(domain.as_str());
            } else {
                other.push(domain.as_str());
            }
        }
        let list = |v: &[&str]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        check(
            "deployed domains",
            true,
            format!(
                "CI apps (candidates): {}; warm (protected): {}; not CI apps (never touched): {}",
                list(&ci),
                list(&warm),
                list(&other)
            ),
        );
    }

    // REAP_COMMAND.
    match inputs.reap_command.first() {
        None => check(
            "REAP_COMMAND",
            true,
            "none given (after --): not checked".into(),
        ),
        Some(program) => match executable(Path::new(program)) {
            Ok(path) => check(
                "REAP_COMMAND",
                true,
                format!("{} is executable", quote_path(&path)),
            ),
            Err(why) => check(
                "REAP_COMMAND",
                false,
                format!(
                    "{}: {why}; give its full path, or fix PATH",
                    ccci_common::cli::quote(program)
                ),
            ),
        },
    }

    let ok = checks.iter().all(|c| c.ok);
    let settings = settings(inputs);
    let mut out = String::new();
    if json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            ok: bool,
            settings: &'a [Setting],
            checks: &'a [Check],
        }
        out = serde_json::to_string(&Report {
            ok,
            settings: &settings,
            checks: &checks,
        })?;
        out.push('\n');
    } else {
        out.push_str("Configuration:\n");
        for s in &settings {
            let value = s.value.as_deref().unwrap_or("-");
            out.push_str(&format!("  {}={value}  ({})\n", s.key, s.origin));
        }
        out.push_str("Checks:\n");
        for c in &checks {
            let mark = if c.ok { "ok" } else { "FAILED" };
            out.push_str(&format!("  {mark}: {}: {}\n", c.check, c.detail));
        }
    }
    ccci_common::cli::print_all(out.as_bytes())?;
    for c in checks.iter().filter(|c| !c.ok) {
        ccci_common::say!("check failed: {}: {}", c.check, c.detail);
    }
    Ok(if ok { exit::SUCCESS } else { exit::TOOL_FAILED })
}

/// Where `program` is found as `execvp` finds it, if it may be executed.
fn executable(program: &Path) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.as_os_str().as_bytes().contains(&b'/') {
        vec![program.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut denied = false;
    for candidate in candidates {
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return Ok(candidate);
        }
        denied |= candidate.exists();
    }
    Err(if denied {
        "found, but not executable".into()
    } else {
        "not found".into()
    })
}
