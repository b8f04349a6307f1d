//! The one configuration file (SPEC §1 "One configuration").
//!
//! A runner's job, a cron line, a systemd unit and a Python harness on one
//! host start the tools with environments that share nothing. They agree
//! because every tool and every contrib script reads the same file:
//! `--config FILE`, else `$CCCI_CONFIG`, else [`DEFAULT_PATH`] (which may
//! be absent; a file that is named must exist).
//!
//! Guarantees:
//! - **One syntax, read alike by `sh` and systemd.** `KEY=VALUE` lines, `#`
//!   comment lines and blank lines; VALUE bare, or in single or double
//!   quotes. Only what both `. FILE` and `EnvironmentFile=` read the same
//!   way is accepted: a bare value has no blank and no character either
//!   reader treats specially (`$`, `` ` ``, `\`, quotes, `;`, `&`, `|`,
//!   `<`, `>`, `(`, `)`, `~`), a double-quoted one has no `$`, `` ` `` or
//!   `\`, nothing follows a closing quote but blanks, and no line has a
//!   carriage return. Anything else is status 2 naming `FILE:LINE`, so a
//!   value can never mean one thing to cron's shell and another to systemd.
//! - **Strict keys.** KEY is one of [`KEYS`], the one table of settings that
//!   the docs and every `--help` are checked against; any other key, a key
//!   set twice, or a variable that a tool sets for its COMMAND
//!   (`CCCI_LOCK_DOMAIN`, ...) is status 2 naming `FILE:LINE`.
//! - **Safe or refused.** The file is opened through
//!   [`crate::fs::open_trusted_file`]: no symlink anywhere on its path, a
//!   regular file that only root or the effective uid can have written.
//!   Otherwise status 125 naming it. A setting decides where locks live, so
//!   a file another user could edit would let them point the janitor away
//!   from live runs.
//! - **Precedence: flag > environment > file > built-in default.** The
//!   file's values are put into the process environment for every key the
//!   environment does not set (a variable set to the empty string counts as
//!   set: it stands for the built-in default), before the command line is
//!   parsed. So clap's `env =` and every variable reader see one answer, and
//!   a command a tool starts (a reap, a run's script, another ccci tool)
//!   inherits the same settings; an explicit `--config` is passed on as
//!   `CCCI_CONFIG`.
//! - **Blame where it came from.** A bad value from the file is reported as
//!   `FILE:LINE: CCCI_X='…' is …` ([`variable_source`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::cli::UsageError;
use crate::dirs::Role;
use crate::names::quote_path;

/// Where the configuration file is when neither `--config` nor
/// `CCCI_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/ccci/ccci.conf";

/// The variable that names the configuration file.
pub const ENV: &str = "CCCI_CONFIG";

/// The flag that names the configuration file.
pub const FLAG: &str = "--config";

/// The configuration file in messages.
pub const CONFIG_FILE: Role = Role {
    what: "configuration file",
    flag: FLAG,
    env: ENV,
};

/// The longest configuration file read; a longer one is refused (125).
pub const MAX_LEN: usize = 64 * 1024;

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

const fn key(name: &'static str, used_by: &'static str, what: &'static str) -> Key {
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
const SET_FOR_COMMANDS: &[&str] = &[
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

/// One `KEY=VALUE` line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: &'static str,
    /// The value, quotes removed.
    pub value: OsString,
    /// Its line number, from 1.
    pub line: usize,
}

/// The configuration file that was read, and what it set.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its absolute path.
    pub path: PathBuf,
    /// Whether `--config` or `CCCI_CONFIG` named it (else the default path).
    pub named: bool,
    /// Whether it exists (the default file may be absent).
    pub present: bool,
    /// Its settings, in file order.
    pub settings: Vec<Setting>,
    /// The keys whose value came from the file (the environment did not
    /// set them).
    pub applied: Vec<&'static str>,
}

impl Loaded {
    /// Where `key`'s value came from, when it came from this file:
    /// `(path, line)`.
    pub fn origin(&self, key: &str) -> Option<(&Path, usize)> {
        if !self.applied.contains(&key) {
            return None;
        }
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| (self.path.as_path(), s.line))
    }
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// A configuration file that could not be read, kept for a tool that
/// reports it instead of failing at once (`ccci-janitor --check`).
static DEFERRED: OnceLock<(String, bool)> = OnceLock::new();

/// Keeps the error of [`load_and_apply`] for [`deferred_error`] (the
/// message, and whether it was a usage error).
pub fn defer_error(e: &anyhow::Error) {
    let usage = e.downcast_ref::<UsageError>().is_some();
    let _ = DEFERRED.set((format!("{e:#}"), usage));
}

/// The configuration file's error that [`defer_error`] kept.
pub fn deferred_error() -> Option<&'static (String, bool)> {
    DEFERRED.get()
}

/// The configuration this process read at start ([`load_and_apply`]), if
/// it read one.
pub fn loaded() -> Option<&'static Loaded> {
    LOADED.get()
}

/// Where the value of the variable `var` came from, as messages name it:
/// `FILE:LINE: VAR` when the configuration file set it, else `VAR`.
pub fn variable_source(var: &str) -> String {
    match loaded().and_then(|l| l.origin(var)) {
        Some((path, line)) => format!("{}:{line}: {var}", quote_path(path)),
        None => var.to_string(),
    }
}

/// Where a setting's value comes from, for `--check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The environment set it.
    Env,
    /// The configuration file, at this line.
    File(PathBuf, usize),
    /// Nobody: the built-in default holds.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env => f.write_str("env"),
            Origin::File(path, line) => write!(f, "{}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Where the variable `var` comes from in this process (after
/// [`load_and_apply`]): the file, the environment, or nowhere.
pub fn origin(var: &str) -> Origin {
    if let Some((path, line)) = loaded().and_then(|l| l.origin(var)) {
        return Origin::File(path.to_path_buf(), line);
    }
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => Origin::Env,
        _ => Origin::Default,
    }
}

/// The configuration file that `args` (a whole command line, program name
/// first) and the environment name: the value of `--config FILE` or
/// `--config=FILE` before any `--`, else `CCCI_CONFIG` when set and not
/// empty; `None` for the default.
pub fn named_file(args: &[OsString], env: Option<OsString>) -> Option<(OsString, &'static str)> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        }
        if bytes == FLAG.as_bytes() {
            // clap refuses a missing value; so does the loader.
            return Some((it.next().cloned().unwrap_or_default(), FLAG));
        }
        if let Some(value) = bytes.strip_prefix(b"--config=") {
            return Some((OsString::from_vec(value.to_vec()), FLAG));
        }
    }
    env.filter(|v| !v.is_empty()).map(|v| (v, ENV))
}

/// Reads the configuration file that the command line `args` and the
/// environment name, and puts every value the environment does not set into
/// this process's environment (see the module doc). Call it once, first,
/// while the process has one thread. A bad file is a [`UsageError`] (2) or
/// another error (125), naming it.
pub fn load_and_apply(args: &[OsString]) -> anyhow::Result<()> {
    let named = named_file(args, std::env::var_os(ENV));
    let (path, named) = match &named {
        Some((value, from)) if value.is_empty() => {
            return Err(UsageError(format!(
                "{from} names no configuration file: the value is empty"
            ))
            .into())
        }
        Some((value, _)) => (crate::dirs::absolute(Path::new(value)), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = read(&path)?;
    if text.is_none() && named {
        let from = named_file(args, std::env::var_os(ENV)).map_or(ENV, |(_, from)| from);
        return Err(UsageError(format!(
            "{from} names the configuration file {}, which does not exist",
            quote_path(&path)
        ))
        .into());
    }
    let present = text.is_some();
    let settings = match &text {
        Some(text) => parse(&path, text)?,
        None => Vec::new(),
    };
    let mut applied = Vec::new();
    for setting in &settings {
        if std::env::var_os(setting.key).is_none() {
            std::env::set_var(setting.key, &setting.value);
            applied.push(setting.key);
        }
    }
    if named {
        // A ccci tool this one starts reads the same file.
        std::env::set_var(ENV, &path);
    }
    let _ = LOADED.set(Loaded {
        path,
        named,
        present,
        settings,
        applied,
    });
    Ok(())
}

/// The bytes of the file at `path`, or `None` when it does not exist; a
/// file that is not safe or too long is refused.
fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    crate::fs::read_trusted_file_if_present(&CONFIG_FILE, path, MAX_LEN)
}

/// The settings of the configuration file `path` whose content is `text`
/// (see the module doc for the syntax); the first bad line is a
/// [`UsageError`] naming `FILE:LINE`.
pub fn parse(path: &Path, text: &[u8]) -> Result<Vec<Setting>, UsageError> {
    let mut settings: Vec<Setting> = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let bad = |why: String| UsageError(format!("{}:{line}: {why}", quote_path(path),));
        let shown = || crate::names::shell_quote_os(OsStr::from_bytes(raw));
        if raw.contains(&b'\r') {
            return Err(bad(format!(
                "{} has a carriage return (a file with DOS line ends?); the shell and \
                 systemd would read different values",
                shown()
            )));
        }
        if raw.contains(&0) {
            return Err(bad(format!("{} has a NUL byte", shown())));
        }
        let trimmed = trim_start(raw);
        if trimmed.is_empty() || trimmed[0] == b'#' {
            continue;
        }
        let Some(eq) = trimmed.iter().position(|&b| b == b'=') else {
            return Err(bad(format!("{} is not KEY=VALUE", shown())));
        };
        let (name, value) = (&trimmed[..eq], &trimmed[eq + 1..]);
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .ok_or_else(|| bad(format!("{} is not KEY=VALUE", shown())))?;
        let key = match find_key(name) {
            Some(key) => key.name,
            None if name == ENV => {
                return Err(bad(format!(
                    "{ENV} cannot be set in the configuration file: it names the file"
                )))
            }
            None if SET_FOR_COMMANDS.contains(&name) || is_state_file_variable(name) => {
                return Err(bad(format!(
                    "{name} is set by the tools for the commands they run; it is not a setting"
                )))
            }
            None => {
                return Err(bad(format!(
                    "unknown key {name} (the keys are listed in the FILES section of \
                     every ccci man page and in docs/configuration.md)"
                )))
            }
        };
        if let Some(first) = settings.iter().find(|s| s.key == key) {
            return Err(bad(format!(
                "{key} is set twice (first on line {}); set it once",
                first.line
            )));
        }
        let value = unquote(value).map_err(|why| bad(format!("{}: {why}", shown())))?;
        settings.push(Setting {
            key,
            value: OsString::from_vec(value),
            line,
        });
    }
    Ok(settings)
}

/// `CCCI_<NAME>_FILE`: the path ccci-state gives a child for a state file.
fn is_state_file_variable(name: &str) -> bool {
    name.ends_with("_FILE") && !name.ends_with("_PASSWORD_FILE") && name.len() > "CCCI__FILE".len()
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_blank(*first) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_blank(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Bytes a bare value may hold: none that `sh` or systemd reads specially.
fn bare_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || b >= 0x80
        || matches!(
            b,
            b'_' | b'.'
                | b'/'
                | b':'
                | b','
                | b'@'
                | b'%'
                | b'+'
                | b'='
                | b'-'
                | b'*'
                | b'?'
                | b'['
                | b']'
                | b'!'
                | b'^'
                | b'{'
                | b'}'
        )
}

/// The value of `KEY=<value>`, quotes removed, or why the shell and systemd
/// would not read it alike.
fn unquote(value: &[u8]) -> Result<Vec<u8>, String> {
    let Some(&first) = value.first() else {
        return Ok(Vec::new());
    };
    if first == b'\'' || first == b'"' {
        let body = &value[1..];
        let Some(close) = body.iter().position(|&b| b == first) else {
            return Err("the quote is not closed on this line".into());
        };
        if !trim_end(&body[close + 1..]).is_empty() {
            return Err("nothing may follow the closing quote".into());
        }
        let inner = &body[..close];
        if first == b'"' {
            if let Some(&c) = inner.iter().find(|&&b| matches!(b, b'$' | b'`' | b'\\')) {
                return Err(format!(
                    "'{}' inside double quotes means something to the shell; use single quotes",
                    c as char
                ));
            }
        }
        return Ok(inner.to_vec());
    }
    if is_blank(first) {
        return Err(
            "a blank after '=' makes the shell run the rest as a command; quote the value".into(),
        );
    }
    let value = trim_end(value);
    if let Some(&c) = value.iter().find(|&&b| !bare_ok(b)) {
        return Err(if is_blank(c) {
            "a value with blanks must be quoted ('...')".to_string()
        } else {
            format!(
                "'{}' in a value without quotes means something to the shell or systemd; \
                 quote the value ('...')",
                c as char
            )
        });
    }
    Ok(value.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Vec<(&'static str, String)>, String> {
        parse(Path::new("/etc/ccci/ccci.conf"), text.as_bytes())
            .map(|s| {
                s.into_iter()
                    .map(|s| (s.key, s.value.to_string_lossy().into_owned()))
                    .collect()
            })
            .map_err(|e| e.0)
    }

    #[test]
    fn reads_what_sh_and_systemd_read_alike() {
        let text = "# a comment\n\n  # indented comment\nCCCI_APP_LOCK_DIR=/run/lock/ci\n\
                    CCCI_ONLY='????-[0-9a-f][0-9a-f].ci.example.org warm-*'\n\
                    CCCI_WARM=\"warm-*\"  \nCCCI_ETCD_PREFIX=\nCCCI_ABRA=/home/ci/.local/bin/abra\n";
        assert_eq!(
            parsed(text).unwrap(),
            [
                ("CCCI_APP_LOCK_DIR", "/run/lock/ci".to_string()),
                (
                    "CCCI_ONLY",
                    "????-[0-9a-f][0-9a-f].ci.example.org warm-*".to_string()
                ),
                ("CCCI_WARM", "warm-*".to_string()),
                ("CCCI_ETCD_PREFIX", String::new()),
                ("CCCI_ABRA", "/home/ci/.local/bin/abra".to_string()),
            ]
        );
        // Single quotes keep everything, also what double quotes refuse.
        assert_eq!(
            parsed("CCCI_REAP='/opt/my ccci/reap $x'").unwrap(),
            [("CCCI_REAP", "/opt/my ccci/reap $x".to_string())]
        );
    }

    #[test]
    fn every_bad_line_names_file_and_line() {
        for (text, want) in [
            ("CCCI_NOPE=1", "unknown key CCCI_NOPE"),
            ("PATH=/bin", "unknown key PATH"),
            ("CCCI_CONFIG=/x", "cannot be set"),
            ("CCCI_LOCK_DOMAIN=x", "not a setting"),
            ("CCCI_DEPLOYS_FILE=/x", "not a setting"),
            ("just words", "is not KEY=VALUE"),
            ("export CCCI_RUN_ID=1", "is not KEY=VALUE"),
            ("ccci_run_id=1", "is not KEY=VALUE"),
            ("=1", "is not KEY=VALUE"),
            ("CCCI_RUN_ID=a b", "must be quoted"),
            ("CCCI_RUN_ID= a", "a blank after '='"),
            ("CCCI_RUN_ID=$HOME", "'$' in a value without quotes"),
            ("CCCI_RUN_ID=a;b", "';'"),
            ("CCCI_RUN_ID=~/x", "'~'"),
            ("CCCI_RUN_ID=\"$HOME\"", "inside double quotes"),
            ("CCCI_RUN_ID=\"a\\b\"", "inside double quotes"),
            ("CCCI_RUN_ID='a", "not closed"),
            ("CCCI_RUN_ID='a'b", "nothing may follow"),
            ("CCCI_RUN_ID=a\r", "carriage return"),
        ] {
            let text = format!("# first\n{text}\n");
            let e = parsed(&text).unwrap_err();
            assert!(e.starts_with("/etc/ccci/ccci.conf:2: "), "{text:?}: {e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = parsed("CCCI_RUN_ID=a\nCCCI_RUN_ID=b\n").unwrap_err();
        assert!(
            e.contains(":2: CCCI_RUN_ID is set twice (first on line 1)"),
            "{e}"
        );
    }

    #[test]
    fn the_config_flag_is_found_before_the_double_dash_only() {
        let args = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        let env = Some(OsString::from("/env.conf"));
        assert_eq!(
            named_file(&args(&["t", "--config", "/a", "x"]), env.clone()),
            Some(("/a".into(), FLAG))
        );
        assert_eq!(
            named_file(&args(&["t", "--config=/b"]), None),
            Some(("/b".into(), FLAG))
        );
        assert_eq!(
            named_file(&args(&["t", "--", "cmd", "--config", "/c"]), env.clone()),
            Some(("/env.conf".into(), ENV))
        );
        assert_eq!(named_file(&args(&["t"]), Some(OsString::new())), None);
    }

    #[test]
    fn keys_are_unique_and_all_ccci_variables() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(k.name.starts_with("CCCI_"), "{}", k.name);
            assert!(KEYS[..i].iter().all(|o| o.name != k.name), "{}", k.name);
        }
    }

    #[test]
    fn a_trusted_file_is_refused_when_others_can_write_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.path().join("ccci.conf");
        std::fs::write(&file, "CCCI_RUN_ID=x\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = read(&file).unwrap_err().to_string();
        assert!(
            e.contains("is writable by group or others (mode 0620)"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&file).unwrap().is_some());
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = read(&link).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(read(&dir.path().join("missing")).unwrap().is_none());
    }
}
