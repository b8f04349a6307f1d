//! Unit tests of [`Glob::parse`] and matching: what fnmatch(3) means by
//! each pattern, and the malformed patterns that are refused.

use super::*;

fn m(pattern: &str, name: &str) -> bool {
    Glob::parse(pattern).unwrap().matches(name)
}

#[test]
fn literals_and_wildcards() {
    assert!(m("warm-a.example", "warm-a.example"));
    assert!(!m("warm-a.example", "warm-a.example.org"));
    assert!(!m("warm-a.example", "xwarm-a.example"), "the whole domain");
    assert!(m("warm-*", "warm-a.ci.example.org"), "* crosses dots");
    assert!(m("warm-*", "warm-"));
    assert!(!m("warm-*", "xwarm-a"));
    assert!(m("*.ci.example.org", "wp-1.ci.example.org"));
    assert!(!m("*.ci.example.org", "wp-1.ci.example.org.evil"));
    assert!(
        !m("*.ci.example.org", "wp-1xci.example.org"),
        ". is literal"
    );
    assert!(m("*", "anything"));
    assert!(m("a*b*c", "aXXbYYbZc"));
    assert!(!m("a*b*c", "aXXbYYbZ"));
    assert!(m("**x", "abx"));
    assert!(m("a**x", "a.b.x"));
    assert!(m("w?rm", "warm"));
    assert!(!m("w?rm", "wrm"));
    assert!(!m("Warm-*", "warm-a"), "case-sensitive, as fnmatch(3)");
    assert!(m("*a*a*a*a*a*b", &format!("{}b", "a".repeat(40))));
    assert!(!m("*a*a*a*a*a*b", &"a".repeat(40)));
    assert!(m("*-??????.ci.example.org", "wp-3f2a9c.ci.example.org"));
    assert!(!m("*-??????.ci.example.org", "wp-3f2a.ci.example.org"));
}

#[test]
fn bracket_expressions_classes_and_escapes() {
    assert!(m("warm-[0-9]", "warm-7"));
    assert!(!m("warm-[0-9]", "warm-x"));
    assert!(m("warm-[!0-9]", "warm-x"));
    assert!(m("warm-[^0-9]", "warm-x"));
    assert!(!m("warm-[!0-9]", "warm-3"));
    assert!(m("[ab-]x", "-x"));
    assert!(m("[]a]x", "]x"));
    assert!(m("[!]]x", "ax"));
    assert!(!m("[!]]x", "]x"));
    assert!(m(r"a\*", "a*"));
    assert!(!m(r"a\*", "ab"));
    // SPEC §7 case 23: a class protects w1.x.
    assert!(m("w[[:digit:]].x", "w1.x"));
    assert!(!m("w[[:digit:]].x", "wa.x"));
    assert!(m("w[![:digit:]].x", "wa.x"));
    assert!(!m("w[![:digit:]].x", "w1.x"));
    assert!(m("[[:alpha:]][[:alnum:]-]*", "wp-3f2a"));
    assert!(!m("[[:alpha:]]*", "3f2a"));
    assert!(m("[[:lower:][:digit:]]", "q"));
    assert!(m("[[:xdigit:]][[:upper:]]", "fQ"));
}

#[test]
fn malformed_patterns_are_refused() {
    for bad in [
        "",
        "warm-[0-9",
        "[",
        "[!",
        "a\\",
        "[z-a]",
        "w[[:digits:]].x",
        "[[:DIGIT:]]",
        "[[:foo:]]",
        "[[.ab.]]",
        "[[=ab=]]",
        "[a-[:alpha:]]",
        "[[:alpha:]-z]",
        "[[.a.]-z]",
        "a\0b",
        "[a\\",
    ] {
        assert!(Glob::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(Glob::parse("w*").unwrap().to_string(), "w*");
    let e = Glob::parse("w[[:digits:]].x").unwrap_err();
    assert!(e.contains("[:digits:]"), "{e}");
}

#[test]
fn braces_are_literal_as_in_fnmatch() {
    // globset read `{g}` as an alternation of one: `or{g}` matched `org`.
    assert!(!m("proxy.example.or{g}", "proxy.example.org"));
    assert!(m("proxy.example.or{g}", "proxy.example.or{g}"));
    assert!(!m("{a,b}.x", "a.x"));
    for text in ["x{", "a}", "{", "}{", "{}"] {
        assert!(m(text, text), "{text:?} is a literal");
    }
}

#[test]
fn fuzz_crash_inputs_stay_fixed() {
    // The `patterns` fuzz target panicked on this (globset read `{}`).
    let input = "{}\0\0\0\n{\n*\0";
    let (pattern, names) = input.split_once('\n').unwrap();
    assert!(Glob::parse(pattern).is_err(), "a NUL byte is refused");
    let glob = Glob::parse("{}").unwrap();
    for name in names.lines() {
        assert!(!glob.matches(name));
    }
    assert!(glob.matches("{}"));
    // A name with a NUL byte is no domain and matches nothing, not even
    // `*` (the target once expected `*` to match it).
    assert!(!Glob::parse("*").unwrap().matches("\0\0\0"));
}

/// Patterns whose fnmatch(3) reading is easy to get wrong, with names
/// that tell the readings apart.
const TRICKY: &[&str] = &[
    "[]a]",
    "[!]a]",
    "[]-a]",
    "[a-]",
    "[-a]",
    "[--x]",
    "[a-c-e]",
    r"[\]]",
    r"[A-\]]",
    r"[\a-z]",
    "[[-a]",
    "[[]",
    "[[=a=]]",
    "[[=a=]b]",
    "[[.a.]]",
    "[[.-.]]",
    "[[...]]",
    "[^a]",
    "[!^]",
    "[[:space:]]",
    "[[:cntrl:][:punct:]]",
    "*[[:print:]]?",
    "[[:graph:]x]",
    r"\*\?\[",
    "a*",
    "*a*b",
    "?",
    "[!a-y]",
    "[a-a]",
    "[ -~]",
];

#[test]
fn the_reading_agrees_with_fnmatch() {
    let names: Vec<Vec<u8>> = (1u8..=255)
        .map(|b| vec![b])
        .chain(["", "ab", "a]", "]a", "a-", "*?[", "\\", "xb", "aab"].map(|s| s.into()))
        .collect();
    for text in TRICKY {
        let glob = Glob::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        for name in &names {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            assert_eq!(
                glob.matches(name),
                glob.reading_matches(name.as_bytes()),
                "{text:?} against {name:?}"
            );
        }
    }
}

#[test]
fn a_set_reports_the_first_pattern_given_that_matches() {
    let set = Patterns::new(
        ["b*", "a*", "*"]
            .iter()
            .map(|p| Glob::parse(p).unwrap())
            .collect(),
    )
    .unwrap();
    assert_eq!(set.first_match("bx").unwrap().to_string(), "b*");
    assert_eq!(set.first_match("ax").unwrap().to_string(), "a*");
    assert_eq!(set.first_match("c").unwrap().to_string(), "*");
    assert!(Patterns::default().first_match("c").is_none());
    assert!(Patterns::default().is_empty());
}
