//! `cargo run -p xtask -- gen DIR`: writes `DIR/man/ccci-*.1` and
//! `DIR/completions/{bash,zsh,fish}/…` from the tools' clap definitions, so
//! the man pages and completions can never disagree with `--help`.
//!
//! Each man page has NAME, SYNOPSIS, DESCRIPTION (with the behaviour notes of
//! `--help`), OPTIONS, SUBCOMMANDS where there are any, ENVIRONMENT (every
//! variable a flag reads, and every variable a tool sets for the command it
//! runs, from the `Environment:` block of its help), EXIT STATUS (the one
//! table in `ccci_common::exit`) and SEE ALSO.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::Shell;
use roff::{bold, roman, Roff};

/// Every tool and its clap definition.
fn tools() -> Vec<Command> {
    vec![
        ccci_lock::cli::Cli::command(),
        ccci_guard::cli::Cli::command(),
        ccci_janitor::cli::Cli::command(),
        ccci_abradir::cli::Cli::command(),
        ccci_state::cli::Cli::command(),
    ]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "gen" => generate(Path::new(dir)),
        _ => anyhow::bail!("usage: cargo run -p xtask -- gen DIR"),
    }
}

fn generate(out: &Path) -> anyhow::Result<()> {
    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir)?;
    for cmd in tools() {
        let name = cmd.get_name().to_string();
        let mut page = Vec::new();
        render_man(cmd.clone(), &mut page)?;
        fs::write(man_dir.join(format!("{name}.1")), page)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            fs::create_dir_all(&dir)?;
            let mut cmd = cmd.clone();
            clap_complete::generate_to(shell, &mut cmd, &name, &dir)
                .with_context(|| format!("cannot write {shell} completions for {name}"))?;
        }
    }
    Ok(())
}

/// The paragraphs of `--help`'s after-help text, split into the notes (for
/// DESCRIPTION) and the `Environment:` entries; the `Exit status:` block is
/// dropped, since EXIT STATUS is rendered from the table itself.
fn split_after_help(cmd: &Command) -> (Vec<String>, Vec<(String, String)>) {
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

fn render_man(cmd: Command, w: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;

    let (notes, mut env) = split_after_help(&cmd);
    let mut roff = Roff::default();
    for note in notes {
        roff.control("PP", []).text([roman(note)]);
    }
    roff.to_writer(w)?;

    man.render_options_section(w)?;
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }

    // Variables read by flags come from the definitions themselves.
    let mut read: Vec<(String, String)> = Vec::new();
    let mut collect = |c: &Command| {
        for arg in c.get_arguments() {
            if let Some(var) = arg.get_env() {
                let var = var.to_string_lossy().to_string();
                let flag = arg
                    .get_long()
                    .map(|l| format!(" (like --{l})"))
                    .unwrap_or_default();
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if !read.iter().any(|(v, _)| *v == var) {
                    read.push((var, format!("{help}{flag}")));
                }
            }
        }
    };
    collect(&cmd);
    for sub in cmd.get_subcommands() {
        collect(sub);
    }
    env.retain(|(v, _)| !read.iter().any(|(r, _)| r == v));
    read.extend(env);

    let mut roff = Roff::default();
    roff.control("SH", ["ENVIRONMENT"]);
    if read.is_empty() {
        roff.text([roman("None.")]);
    }
    for (var, what) in &read {
        roff.control("TP", [])
            .text([bold(var.as_str())])
            .text([roman(what.as_str())]);
    }
    roff.control("PP", []).text([roman(
        "An empty variable counts as unset. Defaults never depend on session variables.",
    )]);
    roff.control("SH", ["EXIT STATUS"]);
    for (status, meaning) in ccci_common::exit::TABLE {
        roff.control("TP", [])
            .text([bold(*status)])
            .text([roman(*meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let others: Vec<String> = tools()
        .iter()
        .map(|c| c.get_name().to_string())
        .filter(|n| *n != name)
        .map(|n| format!("{n}(1)"))
        .collect();
    let mut see_also = others;
    see_also.extend(["flock(1)", "timeout(1)", "flock(2)"].map(String::from));
    roff.text([roman(see_also.join(", "))]);
    roff.to_writer(w)?;
    man.render_version_section(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_gets_a_man_page_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        for cmd in tools() {
            let name = cmd.get_name();
            let page = fs::read_to_string(dir.path().join(format!("man/{name}.1"))).unwrap();
            for section in [
                "NAME",
                "SYNOPSIS",
                "OPTIONS",
                "ENVIRONMENT",
                "\"EXIT STATUS\"",
            ] {
                assert!(
                    page.contains(&format!(".SH {section}")),
                    "{name}: no {section}"
                );
            }
            assert!(page.contains("142 = SIGALRM deadline"), "{name}");
            assert!(!page.contains("Exit status:"), "{name}: the table twice");
            for file in [
                format!("bash/{name}.bash"),
                format!("zsh/_{name}"),
                format!("fish/{name}.fish"),
            ] {
                assert!(
                    dir.path().join("completions").join(&file).is_file(),
                    "{file}"
                );
            }
        }
    }

    #[test]
    fn environment_lists_variables_read_and_set() {
        let mut page = Vec::new();
        render_man(ccci_lock::cli::Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        let env = &page[page.find(".SH ENVIRONMENT").unwrap()..page.find(".SH \"EXIT").unwrap()];
        for var in [
            "CCCI_APP_LOCK_DIR",
            "CCCI_RUN_ID",
            "CCCI_LOCK_DOMAIN",
            "CCCI_LOCK_FILE",
        ] {
            assert!(env.contains(var), "{var} missing:\n{env}");
        }
    }
}
