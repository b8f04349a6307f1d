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
//!
//! What lives where: the tools and the command here; the man pages and
//! completions in `man`; the generated blocks of the guides in `docs`; the
//! reading of `--help`'s after-help text, which both use, in `help`; the
//! EXAMPLES in [`examples`].

use std::path::Path;

use clap::{Command, CommandFactory};

mod docs;
mod examples;
mod help;
mod man;

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
        [cmd, dir] if cmd == "gen" => man::generate(Path::new(dir)),
        [cmd] if cmd == "docs" => docs::update_docs(),
        [cmd, tool] if cmd == "examples" => {
            for (_, example) in examples::examples(tool) {
                println!("{example}");
            }
            Ok(())
        }
        _ => anyhow::bail!("usage: cargo run -p xtask -- gen DIR | docs | examples TOOL"),
    }
}
