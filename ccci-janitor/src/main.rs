//! `ccci-janitor`: see `ccci_janitor::cli`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    ccci_common::cli::stamp_stderr();
    ccci_common::cli::main("ccci-janitor", ccci_janitor::cli::run)
}
