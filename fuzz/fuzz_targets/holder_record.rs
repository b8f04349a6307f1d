//! The holder record in a lockfile (SPEC §2): whatever the first line
//! holds, reading it never panics, and a record read back from its own
//! JSON is the same record; describing it for a message never panics and
//! shows no invisible character.
#![no_main]

use ccci_lock::Holder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(holder) = serde_json::from_slice::<Holder>(line) else {
        return;
    };
    let again: Holder = serde_json::from_str(&serde_json::to_string(&holder).unwrap()).unwrap();
    assert_eq!(again, holder);
    let text = holder.describe();
    if let Some(run_id) = &holder.run_id {
        if !run_id.chars().any(ccci_common::names::invisible) {
            return;
        }
        assert!(text.contains("$'"), "{text:?}");
    }
});
