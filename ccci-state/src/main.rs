//! `ccci-state`: see `ccci_state::cli`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    ccci_common::cli::main("ccci-state", ccci_state::cli::run)
}
