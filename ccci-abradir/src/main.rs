//! `ccci-abradir`: see `ccci_abradir::cli`.

fn main() -> std::process::ExitCode {
    ccci_common::cli::main("ccci-abradir", ccci_abradir::cli::run)
}
