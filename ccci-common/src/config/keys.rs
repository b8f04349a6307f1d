//! The one table of settings ([`KEYS`]): every key the configuration file
//! may set, the flag and tools that read it, and its documentation, from
//! which docs/configuration.md and every `--help` note are made.

use super::*;

/// A setting the configuration file may hold: a variable a tool or a
/// contrib script reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The variable, `CCCI_APP_LOCK_DIR`.
    pub name: &'static str,
    /// Who reads it.
    pub used_by: &'static str,
    /// What it sets, for `--help`, `--check` and docs.
    pub what: &'static str,
}

pub(super) const fn key(name: &'static str, used_by: &'static str, what: &'static str) -> Key {
    Key {
        name,
        used_by,
        what,
    }
}

/// Every key of the configuration file, in the order the docs list them.
pub const KEYS: &[Key] = &[
    key(
        "CCCI_APP_LOCK_DIR",
        "ccci-lock, ccci-janitor",
        "the lock dir (--lock-dir)",
    ),
    key(
        "CCCI_STATE_DIR",
        "ccci-state",
        "the state dir (--state-dir)",
    ),
    key("CCCI_RUNS_DIR", "ccci-abradir", "the runs dir (--runs-dir)"),
    key(
        "CCCI_CANONICAL_ABRA_DIR",
        "ccci-abradir",
        "the canonical abra dir (--canonical)",
    ),
    key(
        "CCCI_RUN_ID",
        "ccci-lock, ccci-state, ccci-abradir",
        "the run id (--run-id)",
    ),
    key(
        "CCCI_HARNESS_PID",
        "ccci-state, ccci-abradir",
        "the harness pid (--pid)",
    ),
    key(
        "CCCI_ETCD_ENDPOINTS",
        "ccci-lock, ccci-janitor",
        "lock on etcd at these endpoints (--etcd)",
    ),
    key(
        "CCCI_ETCD_PREFIX",
        "ccci-lock, ccci-janitor",
        "the etcd key prefix (--etcd-prefix)",
    ),
    key(
        "CCCI_ETCD_TTL",
        "ccci-lock, ccci-janitor",
        "the etcd lease TTL (--ttl)",
    ),
    key(
        "CCCI_ETCD_CACERT",
        "ccci-lock, ccci-janitor",
        "the CA certificates that etcd's server certificate is checked against (--etcd-cacert)",
    ),
    key(
        "CCCI_ETCD_CERT",
        "ccci-lock, ccci-janitor",
        "the client certificate shown to etcd (--etcd-cert)",
    ),
    key(
        "CCCI_ETCD_KEY",
        "ccci-lock, ccci-janitor",
        "the client certificate's key (--etcd-key)",
    ),
    key(
        "CCCI_ETCD_USER",
        "ccci-lock, ccci-janitor",
        "the etcd user (--etcd-user)",
    ),
    key(
        "CCCI_ETCD_PASSWORD_FILE",
        "ccci-lock, ccci-janitor",
        "the file holding the etcd user's password (--etcd-password-file)",
    ),
    key(
        "CCCI_ONLY",
        "ccci-janitor, ccci-janitor-pass",
        "space-separated patterns of the domains CI runs deploy (--only)",
    ),
    key(
        "CCCI_WARM",
        "ccci-janitor, ccci-janitor-pass",
        "space-separated patterns of apps never reaped (--warm)",
    ),
    key(
        "CCCI_METRICS",
        "ccci-janitor-pass",
        "the metrics file the pass writes (ccci-janitor --metrics)",
    ),
    key(
        "CCCI_REAP",
        "ccci-janitor-pass",
        "the reap command [default: ccci-reap-abra beside the pass]",
    ),
    key(
        "CCCI_ABRA",
        "ccci-janitor-pass, ccci-reap-abra",
        "the abra program [default: abra, found on PATH]",
    ),
    key(
        "CCCI_REAP_WAIT",
        "ccci-reap-abra",
        "seconds to wait for an undeployed app's services to go [default: 300]",
    ),
    key(
        "CCCI_REAP_CALL_TIMEOUT",
        "ccci-reap-abra",
        "seconds one abra call may take [default: 600]",
    ),
    key(
        "CCCI_REAP_POLL",
        "ccci-reap-abra",
        "seconds between two status checks [default: 2]",
    ),
];

/// Variables a tool sets for the command it runs: never settings.
pub(super) const SET_FOR_COMMANDS: &[&str] = &[
    "CCCI_LOCK_DOMAIN",
    "CCCI_LOCK_FILE",
    "CCCI_LOCK_REVISION",
    "CCCI_DOMAIN",
];

/// The paragraph of every tool's `--help` about the configuration file.
pub fn help_note() -> String {
    format!(
        "Settings also come from the configuration file: {FLAG} FILE, else {ENV}, else \
         {DEFAULT_PATH} if it exists. KEY=VALUE lines read alike by sh and systemd; a flag \
         beats the environment, which beats the file, which beats the default. An unknown \
         key or a bad line is status 2 naming FILE:LINE; a file others could have written \
         is status 125. The keys are in the FILES section of the man page and in \
         docs/configuration.md."
    )
}

/// The key of [`KEYS`] named `name`.
pub fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_all_ccci_variables() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(k.name.starts_with("CCCI_"), "{}", k.name);
            assert!(KEYS[..i].iter().all(|o| o.name != k.name), "{}", k.name);
        }
    }
}
