//! Quoting for messages and `export` lines: every character of a message
//! word is visible, and a shell reads back exactly the original bytes.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use ccci_common::names;
use libfuzzer_sys::fuzz_target;

/// What bash makes of a `'…'` or `$'…'` word (the forms we print).
fn read_back(word: &str) -> Vec<u8> {
    if let Some(body) = word.strip_prefix("$'") {
        let body = body.strip_suffix('\'').expect("closing quote");
        let mut out = Vec::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                assert_ne!(c, '\'', "an unescaped quote inside $'…'");
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            let hex = |chars: &mut std::str::Chars, n: usize| {
                let digits: String = chars.by_ref().take(n).collect();
                assert_eq!(digits.len(), n, "short escape");
                u32::from_str_radix(&digits, 16).expect("hex digits")
            };
            match chars.next().expect("escape") {
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                't' => out.push(b'\t'),
                'e' => out.push(0x1b),
                '\\' => out.push(b'\\'),
                '\'' => out.push(b'\''),
                'x' => out.push(hex(&mut chars, 2) as u8),
                'u' => {
                    let c = char::from_u32(hex(&mut chars, 4)).expect("scalar");
                    out.extend_from_slice(c.to_string().as_bytes());
                }
                'U' => {
                    let c = char::from_u32(hex(&mut chars, 8)).expect("scalar");
                    out.extend_from_slice(c.to_string().as_bytes());
                }
                other => panic!("unknown escape \\{other}"),
            }
        }
        out
    } else {
        // '…' words joined by \' : 'it'\''s'
        let mut out = Vec::new();
        let mut rest = word;
        loop {
            let body = rest.strip_prefix('\'').expect("opening quote");
            let end = body.find('\'').expect("closing quote");
            out.extend_from_slice(body[..end].as_bytes());
            rest = &body[end + 1..];
            if rest.is_empty() {
                return out;
            }
            rest = rest
                .strip_prefix("\\'")
                .expect("an escaped quote between words");
            out.push(b'\'');
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let shown = names::shell_quote_os(OsStr::from_bytes(data));
    assert!(
        !shown.chars().any(names::invisible),
        "an invisible character in {shown:?}"
    );
    assert_eq!(read_back(&shown), data, "{shown}");
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(names::shell_quote(text), shown);
        let export = names::export_quote(text);
        assert!(export.starts_with('\'') && export.ends_with('\''));
        assert_eq!(read_back(&export), data, "{export}");
    }
    let path = names::quote_path(std::path::Path::new(OsStr::from_bytes(data)));
    assert!(!path.chars().any(names::invisible), "{path:?}");
});
