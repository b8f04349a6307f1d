//! Janitor patterns (`--only`, `--warm` and their files): parsing and
//! matching never panic, `*` matches every name, and a pattern without
//! special characters matches exactly itself. A name with a NUL byte is
//! never a domain (nor a C string for fnmatch(3)) and matches nothing.
#![no_main]

use ccci_janitor::Glob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, names) = text.split_once('\n').unwrap_or((text, "a.example.org"));
    let Ok(glob) = Glob::parse(pattern) else {
        return;
    };
    let literal = !pattern.bytes().any(|b| b"*?[]\\".contains(&b));
    for name in names.lines().chain([pattern]) {
        let hit = glob.matches(name);
        if name.contains('\0') {
            assert!(!hit, "{pattern:?} matched {name:?}, which holds a NUL byte");
            continue;
        }
        if pattern == "*" {
            assert!(hit, "* missed {name:?}");
        }
        if literal {
            assert_eq!(hit, name == pattern, "{pattern:?} vs {name:?}");
        }
    }
});
