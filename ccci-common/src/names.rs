//! Validation of the names that reach the file system (SPEC §1 "Names").
//!
//! Every name is checked before anything is opened or created, so a bad name
//! costs status 2 and leaves no trace. The functions have the shape clap's
//! `value_parser` wants, so flags, positionals and environment variables are
//! all checked by the same code; clap quotes the rejected value in its message.

/// Longest DOMAIN, in bytes (a DNS name's limit).
pub const DOMAIN_MAX: usize = 253;
/// Longest run id, in bytes.
pub const RUN_ID_MAX: usize = 64;
/// Longest state NAME, in bytes.
pub const NAME_MAX: usize = 64;

fn first_and_rest(value: &str, first: impl Fn(u8) -> bool, rest: impl Fn(u8) -> bool) -> bool {
    let bytes = value.as_bytes();
    match bytes.split_first() {
        Some((&head, tail)) => first(head) && tail.iter().all(|&b| rest(b)),
        None => false,
    }
}

fn domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// An app domain: 1–253 bytes of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn domain(value: &str) -> Result<String, String> {
    if value.len() <= DOMAIN_MAX
        && first_and_rest(value, |b| b.is_ascii_alphanumeric(), domain_byte)
    {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "not a valid domain: it must be 1-{DOMAIN_MAX} bytes of letters, digits, '.', '_' \
             or '-', starting with a letter or digit"
        ))
    }
}

/// A run id: 1–64 bytes of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn run_id(value: &str) -> Result<String, String> {
    if value.len() <= RUN_ID_MAX
        && first_and_rest(value, |b| b.is_ascii_alphanumeric(), domain_byte)
    {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "not a valid run id: it must be 1-{RUN_ID_MAX} bytes of letters, digits, '.', '_' \
             or '-', starting with a letter or digit"
        ))
    }
}

/// A state NAME: 1–64 bytes of `[a-z0-9_-]`, starting with a lower-case letter or digit.
pub fn state_name(value: &str) -> Result<String, String> {
    let lower_or_digit = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if value.len() <= NAME_MAX
        && first_and_rest(value, lower_or_digit, |b| {
            lower_or_digit(b) || matches!(b, b'_' | b'-')
        })
    {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "not a valid name: it must be 1-{NAME_MAX} bytes of lower-case letters, digits, '_' \
             or '-', starting with a letter or digit"
        ))
    }
}

/// `value` as a shell word in single quotes, for messages and `eval` output.
///
/// Single quotes protect everything but `'` itself, which becomes `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in [
            "a",
            "wp-3f2a.ci.example.org",
            "A1_b.c-d",
            "0",
            &"a".repeat(253),
        ] {
            assert!(domain(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "../x",
            "a b",
            "a\nb",
            "é.org",
            "a:b",
            "a*",
            &"a".repeat(254),
        ] {
            assert!(domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_ids() {
        assert!(run_id("manual").is_ok());
        assert!(run_id("build.279_x-1").is_ok());
        assert!(run_id(&"r".repeat(64)).is_ok());
        for bad in ["", &"r".repeat(65), "-r", ".r", "r/1", "r 1", "r'1"] {
            assert!(run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn state_names() {
        for ok in ["deploys", "opstate", "deps", "depskip", "a_b-c", "0x"] {
            assert!(state_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "Deploys",
            "_x",
            "-x",
            "a.b",
            "a/b",
            "..",
            &"n".repeat(65),
        ] {
            assert!(state_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
