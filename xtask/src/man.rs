//! The man pages and shell completions (`gen DIR`), rendered from the
//! tools' clap definitions: each page's sections are listed in the crate
//! doc.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;
use roff::{bold, roman, Roff};

use crate::examples::examples;
use crate::help::split_after_help;
use crate::tools;

pub(crate) fn generate(out: &Path) -> anyhow::Result<()> {
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
    use clap::CommandFactory;

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
