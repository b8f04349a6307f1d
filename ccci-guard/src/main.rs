//! `ccci-guard`: see `ccci_guard::cli`.

fn main() -> std::process::ExitCode {
    ccci_guard::cli::main()
}
