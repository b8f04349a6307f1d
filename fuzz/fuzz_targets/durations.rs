//! Durations (SPEC §1): never a panic; what is accepted has no sign, no
//! space and no character outside the documented forms.
#![no_main]

use ccci_common::duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match duration::parse(text) {
        Ok(d) => {
            assert!(!text.is_empty());
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b"mshd".contains(&b)));
            // The same text is always the same duration.
            assert_eq!(duration::parse(text), Ok(d));
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
