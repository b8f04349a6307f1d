//! Validation of the names that reach the file system (SPEC §1 "Names").
//!
//! Every name is checked before anything is opened or created, so a bad name
//! costs status 2 and leaves no trace. The functions have the shape clap's
//! `value_parser` wants, so flags, positionals and environment variables are
//! all checked by the same code. A rejected value is quoted by
//! [`shell_quote_os`], the one quoting of messages (`ccci_common::cli`
//! re-renders clap's errors with it, so invisible characters show).

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
    check_domain(value).map(|()| value.to_owned())
}

/// [`domain`] without the copy: whether `value` is a valid DOMAIN.
pub fn check_domain(value: &str) -> Result<(), String> {
    if value.len() <= DOMAIN_MAX
        && first_and_rest(value, |b| b.is_ascii_alphanumeric(), domain_byte)
    {
        Ok(())
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

/// `value` quoted for a message, so that every character shows
/// (SPEC §1 "Names"): what a user sees is what a shell would need to type.
///
/// - Only visible characters: a POSIX single-quoted word, `'` as `'\''`
///   (`'/tmp/a b'`, `'it'\''s'`).
/// - Anything invisible: an ANSI-C `$'…'` word, as bash prints it with
///   `printf %q`: `\n`, `\r`, `\t`, `\e`, `\\`, `\'`, other ASCII controls
///   and DEL as `\xNN`, and invisible Unicode (C1 controls, non-ASCII spaces,
///   zero-width and direction marks, the BOM, …; see [`invisible`]) as
///   `\uXXXX`. Visible non-ASCII letters (`é`, `ü`) are kept as they are.
///
/// For `export` lines that a shell `eval`s use [`export_quote`]: dash does
/// not understand `$'…'`.
pub fn shell_quote(value: &str) -> String {
    if value.chars().any(invisible) {
        let mut out = String::from("$'");
        for c in value.chars() {
            push_escaped(&mut out, c);
        }
        out.push('\'');
        out
    } else {
        export_quote(value)
    }
}

/// [`shell_quote`] for a value that may not be UTF-8 (an argument, a
/// variable, a path): each byte that is not part of valid UTF-8 shows as
/// `\xNN` inside `$'…'`.
pub fn shell_quote_os(value: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return shell_quote(text);
    }
    let mut out = String::from("$'");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('\'');
    out
}

/// `path` for a message: as it is when it holds only characters a shell
/// takes literally (`/tmp/ccci-0/locks`), else quoted by [`shell_quote_os`]
/// (`'/tmp/a b'`, `$'/tmp/x\r'`), so that a fix such as `chmod 700 PATH`
/// can be pasted into a shell and an invisible character shows.
pub fn quote_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(b);
    if !bytes.is_empty() && bytes.iter().all(plain) {
        path.display().to_string()
    } else {
        shell_quote_os(path.as_os_str())
    }
}

/// `value` as a POSIX single-quoted shell word, for `export` lines that a
/// shell `eval`s (SPEC §1 "Streams"): every byte but `'` stands for itself
/// between single quotes, even a newline or a CR, and `'` becomes `'\''`.
/// Safe in every POSIX shell, dash included.
pub fn export_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// [`export_quote`] for a value that may not be UTF-8 (a path): the same
/// POSIX single-quoted word, as bytes, every byte but `'` exactly as it is,
/// so that `eval` gives back the very bytes (a path that is not UTF-8 names
/// the directory it names, never a U+FFFD-mangled one).
pub fn export_quote_os(value: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'\'');
    for &b in value.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(br"'\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Whether `c` would not show, or would not show as itself, in a terminal:
/// ASCII and C1 controls, DEL, and the Unicode space, format and
/// invisible-letter characters (a fixed list; a character missing from it
/// is shown as it is, which is the reason to keep the list generous).
pub fn invisible(c: char) -> bool {
    c.is_control()
        || (c != ' ' && c.is_whitespace())
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        '\\' => out.push_str("\\\\"),
        '\'' => out.push_str("\\'"),
        c if c.is_ascii() && invisible(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if invisible(c) && (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
        c if invisible(c) => out.push_str(&format!("\\U{:08x}", c as u32)),
        c => out.push(c),
    }
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
        assert_eq!(shell_quote("é.org"), "'é.org'");
    }

    #[test]
    fn invisible_characters_show() {
        assert_eq!(shell_quote("true\r"), r"$'true\r'");
        assert_eq!(shell_quote("a\nb\tc"), r"$'a\nb\tc'");
        assert_eq!(shell_quote("it's\r"), r"$'it\'s\r'");
        assert_eq!(shell_quote("a\\b\x01"), r"$'a\\b\x01'");
        assert_eq!(shell_quote("\x1b[1m\x7f"), r"$'\e[1m\x7f'");
        assert_eq!(shell_quote("a\u{200b}b"), r"$'a\u200bb'");
        assert_eq!(shell_quote("\u{a0}\u{85}"), r"$'\u00a0\u0085'");
        assert_eq!(shell_quote("\u{e0041}"), r"$'\U000e0041'");
        // A hex escape is always two digits, so a following digit stays itself.
        assert_eq!(shell_quote("\x01f"), r"$'\x01f'");
    }

    #[test]
    fn non_utf8_bytes_show_as_hex() {
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"a\xffb\xc3");
        assert_eq!(shell_quote_os(raw), r"$'a\xffb\xc3'");
        let mixed = std::ffi::OsStr::from_bytes(b"\xfe\r\xc3\xa9");
        assert_eq!(shell_quote_os(mixed), r"$'\xfe\ré'");
        assert_eq!(shell_quote_os("plain".as_ref()), "'plain'");
    }

    #[test]
    fn paths_are_quoted_only_when_a_shell_needs_it() {
        use std::path::Path;
        assert_eq!(
            quote_path(Path::new("/tmp/ccci-0/locks")),
            "/tmp/ccci-0/locks"
        );
        assert_eq!(quote_path(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(quote_path(Path::new("/tmp/x\r")), r"$'/tmp/x\r'");
        assert_eq!(quote_path(Path::new("~x")), "'~x'");
        assert_eq!(quote_path(Path::new("")), "''");
    }

    /// What bash reads back from the quoted word is the original value;
    /// what dash reads back from an export word is the original value.
    #[test]
    fn shells_read_back_the_value() {
        let values: &[&[u8]] = &[
            b"plain",
            b"it's",
            b"a\r\nb",
            b"\x01\x1f\x7f\\'\"$`!*",
            b"\xff\xfe",
            "\u{200b}é\u{feff}".as_bytes(),
        ];
        for &value in values {
            use std::os::unix::ffi::OsStrExt;
            let word = shell_quote_os(std::ffi::OsStr::from_bytes(value));
            if std::process::Command::new("bash")
                .arg("--version")
                .output()
                .is_ok()
            {
                let out = std::process::Command::new("bash")
                    .arg("-c")
                    .arg(format!("printf %s {word}"))
                    .env("LC_ALL", "C.UTF-8")
                    .output()
                    .unwrap();
                assert_eq!(out.stdout, value, "{word}");
            }
            if let Ok(text) = std::str::from_utf8(value) {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("export V={}; printf %s \"$V\"", export_quote(text)))
                    .output()
                    .unwrap();
                assert_eq!(out.stdout, value, "{text:?}");
            }
        }
    }
}
