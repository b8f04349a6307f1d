//! The janitor's list files: the `--deployed` list and the pattern files
//! of `--only-file` and `--warm-file`. A malformed pattern is a usage error
//! (status 2), since ignoring it could get a warm app reaped or leave a CI
//! app behind.

use std::collections::HashSet;

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;
use ccci_lock::lockfile_name;

use crate::Glob;

/// The lines of a list file that matter, with their numbers: blank lines
/// and `#` comments (whole lines, or from `#` to the end) are dropped.
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

/// Reads a `--deployed` list. Names that are not valid domains cannot have
/// a claim; they are left out, each with a warning in the second list.
pub fn read_deployed(text: &str, source: &str) -> (HashSet<String>, Vec<String>) {
    let mut domains = HashSet::new();
    let mut warnings = Vec::new();
    for (number, line) in meaningful_lines(text) {
        match lockfile_name(line) {
            Ok(_) => {
                domains.insert(line.to_string());
            }
            Err(e) => warnings.push(format!("{source} line {number}: ignored: {e}")),
        }
    }
    (domains, warnings)
}

/// Reads a `--warm-file` or `--only-file`: one pattern per line. A
/// malformed pattern is an error (status 2): ignoring it could get a warm
/// app reaped, or leave a CI app behind.
pub fn read_patterns(text: &str, source: &str) -> Result<Vec<Glob>, UsageError> {
    meaningful_lines(text)
        .map(|(number, line)| {
            Glob::parse(line).map_err(|why| {
                UsageError(format!(
                    "{source} line {number}: invalid pattern {}: {why}",
                    shell_quote(line)
                ))
            })
        })
        .collect()
}
