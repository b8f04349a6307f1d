//! DOMAIN, run id and state NAME validation against an independent reading
//! of SPEC §1 "Names": accepted exactly when the rule says so.
#![no_main]

use ccci_common::names;
use libfuzzer_sys::fuzz_target;

fn rule(text: &str, max: usize, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    let b = text.as_bytes();
    !b.is_empty() && b.len() <= max && first(b[0]) && b[1..].iter().all(|&c| rest(c))
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn name_byte(b: u8) -> bool {
    lower(b) || matches!(b, b'_' | b'-')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checks: [(Result<String, String>, bool); 3] = [
        (names::domain(text), rule(text, 253, alnum, domain_byte)),
        (names::run_id(text), rule(text, 64, alnum, domain_byte)),
        (names::state_name(text), rule(text, 64, lower, name_byte)),
    ];
    for (got, want) in checks {
        match got {
            Ok(value) => {
                assert!(want, "accepted {text:?}");
                assert_eq!(value, text);
            }
            Err(why) => assert!(!want && !why.is_empty(), "refused {text:?}"),
        }
    }
});
