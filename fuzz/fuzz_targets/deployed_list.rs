//! The janitor's `--deployed` list (SPEC §4): one domain per line, `#`
//! comments and blank lines ignored. Never a panic, and every domain it
//! yields is a valid DOMAIN (nothing else ever reaches a lockfile name).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (domains, _skipped) = ccci_janitor::read_deployed(text, "fuzz");
    for domain in &domains {
        assert!(ccci_common::names::domain(domain).is_ok(), "{domain:?}");
        assert!(text.contains(domain.as_str()));
    }
});
