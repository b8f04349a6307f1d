//! The janitor's inputs: the `--deployed` list, the patterns of `--only`
//! and `--warm` (their `-file` variants and `CCCI_ONLY`, `CCCI_WARM`), and
//! the files or stdin they are read from. Every input is read and checked
//! before the lock dir is touched; a malformed pattern is a usage error
//! (status 2), since ignoring it could get a warm app reaped or leave a CI
//! app behind. The deployed domains are parsed into [`Domain`]s here, where
//! they come in; an invalid one is left out with a warning.

use std::io::Read;
use std::path::{Path, PathBuf};

use ccci_common::cli::UsageError;
use ccci_common::names::{shell_quote, shell_quote_os};
use ccci_common::Domain;
use ccci_lock::lockfile_name;
use std::collections::HashSet;

use crate::cli::Cli;
use crate::{Glob, Patterns};

/// The lines of a list file that matter, with their numbers: blank lines
/// and `#` comments (whole lines, or from `#` to the end) are dropped.
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

/// Reads a `--deployed` list, parsing each name into a [`Domain`] here,
/// where it comes in. Names that are not valid domains, or too long for a
/// lockfile name, cannot have a claim; they are left out, each with a
/// warning in the second list.
pub fn read_deployed(text: &str, source: &str) -> (HashSet<Domain>, Vec<String>) {
    let mut domains = HashSet::new();
    let mut warnings = Vec::new();
    for (number, line) in meaningful_lines(text) {
        let parsed = Domain::parse(line)
            .map_err(|why| UsageError(format!("invalid domain {}: {why}", shell_quote(line))))
            .and_then(|domain| lockfile_name(&domain).map(|_| domain));
        match parsed {
            Ok(domain) => {
                domains.insert(domain);
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

pub(crate) fn is_stdin(path: &Option<PathBuf>) -> bool {
    path.as_deref() == Some(Path::new("-"))
}

pub(crate) fn read_input(path: &Path, flag: &str) -> Result<(String, String), UsageError> {
    let (source, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        let read = std::io::stdin().lock().read_to_end(&mut bytes);
        (format!("{flag} (stdin)"), read.map(|_| bytes))
    } else {
        let source = format!("{flag} {}", shell_quote_os(path.as_os_str()));
        (source, std::fs::read(path))
    };
    match bytes {
        Ok(bytes) => Ok((String::from_utf8_lossy(&bytes).into_owned(), source)),
        Err(e) => Err(UsageError(format!("cannot read {source}: {e}"))),
    }
}

/// The patterns of the variable `var` (`CCCI_ONLY`, `CCCI_WARM`):
/// space-separated; a bad one is a usage error naming the variable (and
/// the configuration file's line when the file set it).
fn patterns_of_variable(var: &str) -> Result<Vec<Glob>, UsageError> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(Vec::new());
    };
    let source = ccci_common::config::variable_source(var);
    let text = value.to_str().ok_or_else(|| {
        UsageError(format!(
            "{source}={} is not valid UTF-8",
            ccci_common::cli::quote(&value)
        ))
    })?;
    text.split_whitespace()
        .map(|p| {
            Glob::parse(p).map_err(|why| {
                UsageError(format!(
                    "{source}={} is not valid: pattern {}: {why}",
                    ccci_common::names::shell_quote(text),
                    ccci_common::names::shell_quote(p)
                ))
            })
        })
        .collect()
}

/// The patterns of `flag` and of its `-file` variant; when neither is
/// given, those of the variable `var` (SPEC §4: the flags replace it).
fn patterns(
    globs: &[Glob],
    file: Option<&Path>,
    file_flag: &str,
    var: &str,
) -> anyhow::Result<Option<Patterns>> {
    let mut all = globs.to_vec();
    if all.is_empty() && file.is_none() {
        all = patterns_of_variable(var)?;
    }
    if let Some(path) = file {
        let (text, source) = read_input(path, file_flag)?;
        let read = read_patterns(&text, &source)?;
        if read.is_empty() {
            return Err(UsageError(format!(
                "{source} names no pattern: it would match no domain"
            ))
            .into());
        }
        all.extend(read);
    }
    if all.is_empty() {
        return Ok(None);
    }
    Ok(Some(Patterns::new(all)?))
}

/// Where the janitor looks (etcd, else the lock dir) and which domains
/// are CI apps and which are warm: from the flags, else `CCCI_ONLY` and
/// `CCCI_WARM`.
pub(crate) fn where_and_which(
    cli: &Cli,
) -> anyhow::Result<(Option<ccci_lock::etcd::Config>, Option<Patterns>, Patterns)> {
    let etcd = cli.etcd.config()?;
    let only = patterns(
        &cli.only,
        cli.only_file.as_deref(),
        "--only-file",
        "CCCI_ONLY",
    )?;
    let warm = patterns(
        &cli.warm,
        cli.warm_file.as_deref(),
        "--warm-file",
        "CCCI_WARM",
    )?
    .unwrap_or_default();
    Ok((etcd, only, warm))
}
