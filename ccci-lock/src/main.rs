//! `ccci-lock`: see `ccci_lock::cli`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    ccci_common::cli::main("ccci-lock", ccci_lock::cli::run)
}
