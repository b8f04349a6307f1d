//! The `--json` lines of examined domains.

use super::*;

#[test]
fn json_lines_have_exactly_the_spec_keys() {
    let w = World::new();
    let _live = w.hold("a.example");
    let (seen, _, _) = w.pass(&exact(), true);
    let line = serde_json::to_string(&seen[0].json()).unwrap();
    let keys = [
        "domain",
        "outcome",
        "holder_pid",
        "run_id",
        "age_s",
        "detail",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value.as_object().unwrap().len(), keys.len(), "{line}");
    assert_eq!(value["outcome"], "live");
    assert_eq!(value["run_id"], "run-1");
    for (outcome, word) in [
        (Outcome::WouldReap, "would-reap"),
        (Outcome::StaleUnlinked, "stale-unlinked"),
    ] {
        assert_eq!(serde_json::to_value(outcome).unwrap(), word);
    }
}
