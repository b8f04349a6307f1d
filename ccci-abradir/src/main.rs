//! `ccci-abradir`: see `ccci_abradir::cli`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    ccci_common::cli::main("ccci-abradir", ccci_abradir::cli::run)
}
