//! Janitor patterns against the C library: for every pattern that
//! `Glob::parse` accepts, `Glob::matches` answers exactly what libc's
//! fnmatch(3) with no flags answers, and so does the parser's own reading of
//! the pattern (`Glob::tokens`), so a pattern is accepted only when it is
//! understood as fnmatch(3) understands it. Input: the pattern, then one
//! name per line.
#![no_main]

use std::ffi::CString;

use ccci_janitor::Glob;
use libfuzzer_sys::fuzz_target;

fn fnmatch(pattern: &str, name: &str) -> bool {
    let (p, n) = (CString::new(pattern).unwrap(), CString::new(name).unwrap());
    // SAFETY: two NUL-terminated strings that outlive the call.
    unsafe { libc::fnmatch(p.as_ptr(), n.as_ptr(), 0) == 0 }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, names) = text.split_once('\n').unwrap_or((text, "a.example.org"));
    let Ok(glob) = Glob::parse(pattern) else {
        return;
    };
    assert!(!pattern.is_empty() && !pattern.contains('\0'));
    let stripped: String = pattern.chars().filter(|c| !"*?[]\\!^".contains(*c)).collect();
    for name in names.lines().chain([pattern, stripped.as_str(), ""]) {
        if name.contains('\0') {
            assert!(!glob.matches(name), "a name with a NUL byte matched");
            continue;
        }
        let libc = fnmatch(pattern, name);
        assert_eq!(glob.matches(name), libc, "{pattern:?} vs {name:?}");
        assert_eq!(
            glob.reading_matches(name.as_bytes()),
            libc,
            "{pattern:?} read as {:?}, vs {name:?}",
            glob.tokens()
        );
    }
});
