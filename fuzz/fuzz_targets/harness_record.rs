//! The record of a run's harness (SPEC §5, §6), the run key of a directory
//! name, temporary names, counters and appended lines: never a panic; a record and
//! a key read back from what they write are the same.
#![no_main]

use ccci_common::run::{temporary_maker, Record, RunKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<Record>(data) {
        let again: Record = serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(again, record);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(key) = RunKey::parse(text) {
            assert_eq!(key.key(), text);
            assert_eq!(RunKey::parse(&key.key()), Some(key));
        }
    }
    if let Some(n) = ccci_state::parse_counter(data) {
        let again = format!("{n}\n");
        assert_eq!(ccci_state::parse_counter(again.as_bytes()), Some(n));
    }
    let _ = ccci_state::check_line(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(pid) = temporary_maker(text) {
            assert!(text.starts_with('.') && text.ends_with(&format!(".{pid}.tmp")));
        }
    }
});
