//! What the man pages and the configuration tables read from a tool's
//! `--help`: its after-help text, split into notes and `Environment:`
//! entries.

use clap::Command;

/// The paragraphs of `--help`'s after-help text, split into the notes (for
/// DESCRIPTION) and the `Environment:` entries; the `Exit status:` block is
/// dropped, since EXIT STATUS is rendered from the table itself.
pub(crate) fn split_after_help(cmd: &Command) -> (Vec<String>, Vec<(String, String)>) {
    let text = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut notes = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines();
        match lines.next().map(str::trim) {
            Some("Exit status:") => {}
            Some("Environment:") => {
                for line in lines {
                    let indent = line.len() - line.trim_start().len();
                    let line = line.trim();
                    let entry = line
                        .split_once("  ")
                        .filter(|(name, _)| is_variable(name) && indent <= 2);
                    match (entry, env.last_mut()) {
                        (Some((name, what)), _) => env.push((name.into(), what.trim().into())),
                        (None, Some(last)) if indent > 2 => {
                            last.1.push(' ');
                            last.1.push_str(line);
                        }
                        (None, _) if line.starts_with("Empty variables") => {}
                        (None, _) => notes.push(line.to_string()),
                    }
                }
            }
            Some(_) if block.contains("docs/exit-status.md") => {}
            Some(_) => notes.push(block.split_whitespace().collect::<Vec<_>>().join(" ")),
            None => {}
        }
    }
    (notes, env)
}

/// `CCCI_RUN_ID`, `CCCI_<NAME>_FILE`: how a variable's name looks in help.
fn is_variable(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_<>".contains(&b))
}
