//! `ccci-state`: see `ccci_state::cli`.

fn main() -> std::process::ExitCode {
    ccci_common::cli::main("ccci-state", ccci_state::cli::run)
}
