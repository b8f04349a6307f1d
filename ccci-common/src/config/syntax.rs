//! The lines of a configuration file: only the `KEY=VALUE` subset that
//! `sh` and systemd's `EnvironmentFile=` read the same way (see the
//! guarantees in [`super`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::cli::UsageError;
use crate::names::quote_path;

use super::*;

/// The bytes of the file at `path`, or `None` when it does not exist; a
/// file that is not safe or too long is refused.
pub(super) fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
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
pub(super) fn is_state_file_variable(name: &str) -> bool {
    name.ends_with("_FILE") && !name.ends_with("_PASSWORD_FILE") && name.len() > "CCCI__FILE".len()
}

pub(super) fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(super) fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_blank(*first) {
            break;
        }
        s = rest;
    }
    s
}

pub(super) fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_blank(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Bytes a bare value may hold: none that `sh` or systemd reads specially.
pub(super) fn bare_ok(b: u8) -> bool {
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
pub(super) fn unquote(value: &[u8]) -> Result<Vec<u8>, String> {
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
}
