//! `ccci-guard`: see `ccci_guard::cli`.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    ccci_guard::cli::main()
}
