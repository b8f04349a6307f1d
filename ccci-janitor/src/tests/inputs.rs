//! Reading the `--deployed` list and pattern files.

use super::*;

#[test]
fn lists_drop_comments_blanks_and_invalid_domains() {
    let text = "# deployed apps\n\na.example\n  b.example  # trailing note\nbad/name\na.example\n";
    let (domains, warnings) = read_deployed(text, "--deployed (stdin)");
    let mut sorted: Vec<_> = domains.into_iter().collect();
    sorted.sort();
    assert_eq!(sorted, ["a.example", "b.example"]);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("line 5") && warnings[0].contains("'bad/name'"),
        "{warnings:?}"
    );

    let globs = read_patterns("warm-*\n# comment\n\nexact.example\n", "f").unwrap();
    assert_eq!(globs.len(), 2);
    assert!(globs[1].matches("exact.example"));
    let e = read_patterns("ok-*\nwarm-[0-9\n", "--warm-file 'w'")
        .unwrap_err()
        .0;
    assert!(e.contains("line 2") && e.contains("'warm-[0-9'"), "{e}");
}
