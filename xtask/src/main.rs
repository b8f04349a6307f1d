//! `cargo run -p xtask -- gen DIR`: writes `DIR/man/ccci-*.1` and
//! `DIR/completions/{bash,zsh,fish}/…` from the tools' clap definitions, so
//! the man pages and completions can never disagree with `--help`.
//!
//! Each man page has NAME, SYNOPSIS, DESCRIPTION (with the behaviour notes of
//! `--help`), OPTIONS, SUBCOMMANDS where there are any, ENVIRONMENT (every
//! variable a flag reads, and every variable a tool sets for the command it
//! runs, from the `Environment:` block of its help), EXIT STATUS (the one
//! table in `ccci_common::exit`), EXAMPLES (from [`examples`]; the suite
//! runs every one as written) and SEE ALSO.

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

/// The EXAMPLES of each tool's man page: what it shows, and the command.
/// Each runs as written in a shell whose `CCCI_*` directories are a test's
/// (the suite's `man_page_examples_run_as_written` runs them, with the lock
/// dir and the canonical abra dir's `servers/` present).
pub fn examples(tool: &str) -> &'static [(&'static str, &'static str)] {
    match tool {
        "ccci-lock" => &[
            (
                "Run a deploy while holding the app's domain; a second run waits:",
                "ccci-lock word-3f2a01.ci.example.org -- echo deploying",
            ),
            (
                "Give up at once when another run holds it (status 75):",
                "ccci-lock -n word-3f2a01.ci.example.org -- true || echo \"busy: $?\"",
            ),
            (
                "Hold a dependency's domain for this shell's lifetime, then release it:",
                "ccci-lock --hold --parent $$ mari-3f2a01.ci.example.org && ccci-lock --release --parent $$ mari-3f2a01.ci.example.org",
            ),
            ("List the lockfiles and who holds them:", "ccci-lock --list"),
        ],
        "ccci-guard" => &[
            (
                "Run a command that is told to stop (TERM) when its parent dies:",
                "ccci-guard --deadline 60m -- echo guarded",
            ),
            (
                "A deadline: the command gets ALRM, tears down, and the guard ends by ALRM (142):",
                "ccci-guard --supervise --deadline 1s --kill-after 10s -- sh -c 'trap \"echo teardown; exit 0\" ALRM; while :; do sleep 1; done' || echo \"status $?\"",
            ),
        ],
        "ccci-janitor" => &[
            (
                "The settings the janitor and the scripts read (environment and configuration file):",
                "ccci-janitor --print-config",
            ),
            (
                "What a pass over abra's app list would reap, without reaping:",
                "echo word-3f2a01.ci.example.org > deployed.list && ccci-janitor --dry-run --deployed deployed.list --only '????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org' -- true",
            ),
        ],
        "ccci-abradir" => &[
            (
                "This run's private ABRA_DIR, then its removal:",
                "eval \"$(ccci-abradir)\" && ls \"$ABRA_DIR\" && ccci-abradir clean",
            ),
            (
                "What gc would remove of dead runs' trees:",
                "ccci-abradir gc --dry-run",
            ),
        ],
        "ccci-state" => &[
            (
                "This run's state files, a counter in them, and their removal:",
                "eval \"$(ccci-state env)\" && ccci-state incr deploys && ccci-state get deploys && ccci-state clean",
            ),
            (
                "What gc would remove of dead runs' files:",
                "ccci-state gc --dry-run",
            ),
        ],
        _ => &[],
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "gen" => generate(Path::new(dir)),
        [cmd] if cmd == "docs" => update_docs(),
        [cmd, tool] if cmd == "examples" => {
            for (_, example) in examples(tool) {
                println!("{example}");
            }
            Ok(())
        }
        _ => anyhow::bail!("usage: cargo run -p xtask -- gen DIR | docs | examples TOOL"),
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

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/concurrency.md");
const TABLE_START: &str = "<!-- configuration: generated by `cargo run -p xtask -- docs` -->\n";
const TABLE_END: &str = "<!-- end of configuration -->\n";

/// Markdown tables of every flag and variable of every tool, from the clap
/// definitions: the configuration section of docs/concurrency.md.
fn configuration_tables() -> String {
    let cell = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
    };
    let mut flags = String::from("| tool | flag | variable | meaning |\n|---|---|---|---|\n");
    let mut set = String::from("| tool | variable | meaning |\n|---|---|---|\n");
    for mut cmd in tools() {
        cmd.build();
        let name = cmd.get_name().to_string();
        let mut scopes = vec![(name.clone(), cmd.clone())];
        scopes.extend(
            cmd.get_subcommands()
                .filter(|sub| sub.get_name() != "help")
                .map(|sub| (format!("{name} {}", sub.get_name()), sub.clone())),
        );
        let mut seen = Vec::new();
        for (scope, c) in &scopes {
            for arg in c.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") || arg.is_hide_set() || seen.contains(&long) {
                    continue;
                }
                if arg.is_global_set() {
                    seen.push(long);
                }
                let short = arg
                    .get_short()
                    .map(|s| format!("`-{s}`, "))
                    .unwrap_or_default();
                let value = match arg.get_value_names() {
                    Some(v) if arg.get_action().takes_values() => format!(" {}", v.join(" ")),
                    _ => String::new(),
                };
                let var = arg
                    .get_env()
                    .map(|v| format!("`{}`", v.to_string_lossy()))
                    .unwrap_or_default();
                let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let defaults: Vec<_> = arg
                    .get_default_values()
                    .iter()
                    .map(|d| d.to_string_lossy())
                    .collect();
                if !defaults.is_empty() && arg.get_action().takes_values() {
                    help.push_str(&format!(" [default: {}]", defaults.join(", ")));
                }
                flags.push_str(&format!(
                    "| {scope} | {short}`--{}` | {var} | {} |\n",
                    cell(&format!("{long}{value}")),
                    cell(&help)
                ));
            }
        }
        let read: Vec<String> = cmd
            .get_arguments()
            .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
            .filter_map(|a| a.get_env().map(|v| v.to_string_lossy().to_string()))
            .collect();
        for (var, what) in split_after_help(&cmd).1 {
            if !read.contains(&var) {
                set.push_str(&format!("| {name} | `{var}` | {} |\n", cell(&what)));
            }
        }
    }
    format!(
        "Flags, and the variables that set them (a flag wins over its variable; an empty\n\
         variable counts as unset):\n\n{flags}\nVariables the tools read or set besides:\n\n{set}"
    )
}

const CONFIG_DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
const KEYS_START: &str = "<!-- keys: generated by `cargo run -p xtask -- docs` -->\n";
const KEYS_END: &str = "<!-- end of keys -->\n";

/// The keys of the configuration file (`ccci_common::config::KEYS`) as a
/// Markdown table: the key section of docs/configuration.md.
fn keys_table() -> String {
    let mut out = String::from("| key | read by | sets |\n|---|---|---|\n");
    for key in ccci_common::config::KEYS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            key.name,
            key.used_by,
            key.what.replace('|', "\\|")
        ));
    }
    out
}

/// `text` with the part between `start` and `end` replaced by `body`.
fn replace_between(text: &str, start: &str, end: &str, body: &str) -> anyhow::Result<String> {
    let from = text.find(start).context("no start marker")? + start.len();
    let to = text.find(end).context("no end marker")?;
    Ok(format!("{}{body}{}", &text[..from], &text[to..]))
}

/// Rewrites the generated block of docs/concurrency.md.
fn update_docs() -> anyhow::Result<()> {
    let text = fs::read_to_string(CONFIG_DOCS)?;
    fs::write(
        CONFIG_DOCS,
        replace_between(&text, KEYS_START, KEYS_END, &keys_table())?,
    )?;
    let text = fs::read_to_string(DOCS)?;
    let start = text
        .find(TABLE_START)
        .context("no configuration start marker")?
        + TABLE_START.len();
    let end = text
        .find(TABLE_END)
        .context("no configuration end marker")?;
    let updated = format!(
        "{}{}{}",
        &text[..start],
        configuration_tables(),
        &text[end..]
    );
    fs::write(DOCS, updated)?;
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
    roff.control("SH", ["FILES"]);
    roff.control("TP", [])
        .text([bold(ccci_common::config::DEFAULT_PATH)])
        .text([roman(
            "The configuration file, unless --config FILE or CCCI_CONFIG names another: \
             KEY=VALUE lines, # comments and blank lines, each VALUE bare or in single or \
             double quotes, read alike by sh and by systemd's EnvironmentFile=. A flag beats \
             the environment, which beats the file, which beats the built-in default. An \
             unknown key or a bad line is status 2 naming FILE:LINE; a file that another user \
             could have written (a symlink, group- or world-writable, owned by another user) \
             is status 125. The keys:",
        )]);
    for key in ccci_common::config::KEYS {
        roff.control("TP", [])
            .text([bold(key.name)])
            .text([roman(format!("{} (read by {})", key.what, key.used_by))]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (status, meaning) in ccci_common::exit::TABLE {
        roff.control("TP", [])
            .text([bold(*status)])
            .text([roman(*meaning)]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (what, example) in examples(&name) {
        roff.control("PP", []).text([roman(*what)]);
        roff.control("nf", []).control("RS", ["4"]);
        roff.text([roman(*example)]);
        roff.control("RE", []).control("fi", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    let others: Vec<String> = tools()
        .iter()
        .map(|c| c.get_name().to_string())
        .filter(|n| *n != name)
        .map(|n| format!("{n}(1)"))
        .collect();
    let mut see_also = others;
    see_also.extend(
        [
            "ccci-janitor-pass(8)",
            "ccci-reap-abra(8)",
            "flock(1)",
            "timeout(1)",
            "flock(2)",
        ]
        .map(String::from),
    );
    roff.text([roman(see_also.join(", "))]);
    roff.control("PP", []).text([roman(
        "The guides: PREFIX/share/doc/ccci/ (adopting.md, configuration.md, concurrency.md, \
         exit-status.md, etcd.md), installed by make install.",
    )]);
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
                "FILES",
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
    fn docs_configuration_tables_are_up_to_date() {
        let text = fs::read_to_string(DOCS).unwrap();
        let start = text.find(TABLE_START).expect("start marker") + TABLE_START.len();
        let end = text.find(TABLE_END).expect("end marker");
        assert!(
            text[start..end] == configuration_tables(),
            "docs/concurrency.md's configuration tables are stale: run `cargo run -p xtask -- docs`"
        );
    }

    #[test]
    fn docs_configuration_keys_are_up_to_date() {
        let text = fs::read_to_string(CONFIG_DOCS).unwrap();
        let start = text.find(KEYS_START).expect("start marker") + KEYS_START.len();
        let end = text.find(KEYS_END).expect("end marker");
        assert!(
            text[start..end] == keys_table(),
            "docs/configuration.md's keys are stale: run `cargo run -p xtask -- docs`"
        );
    }

    /// Every variable a tool's flag reads is a key of the configuration
    /// file, and every key is read by a tool or by a contrib script.
    #[test]
    fn the_keys_are_exactly_the_settings_read() {
        let mut read: Vec<String> = Vec::new();
        for mut cmd in tools() {
            cmd.build();
            let subs: Vec<Command> = cmd.get_subcommands().cloned().collect();
            for c in std::iter::once(&cmd).chain(subs.iter()) {
                for arg in c.get_arguments() {
                    if let Some(var) = arg.get_env() {
                        read.push(var.to_string_lossy().into_owned());
                    }
                }
            }
        }
        for var in &read {
            if var != ccci_common::config::ENV {
                assert!(
                    ccci_common::config::find_key(var).is_some(),
                    "{var} is read by a flag but is no key of the configuration file"
                );
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let janitor = fs::read_to_string(root.join("ccci-janitor/src/cli.rs")).unwrap();
        let scripts: String = ["contrib/ccci-janitor-pass", "contrib/ccci-reap-abra"]
            .iter()
            .map(|s| fs::read_to_string(root.join(s)).unwrap())
            .collect();
        for key in ccci_common::config::KEYS {
            let quoted = format!("\"{}\"", key.name);
            assert!(
                read.contains(&key.name.to_string())
                    || janitor.contains(&quoted)
                    || scripts.contains(key.name),
                "{} is a key that nothing reads",
                key.name
            );
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
