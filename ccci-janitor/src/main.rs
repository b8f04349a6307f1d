//! `ccci-janitor`: see `ccci_janitor::cli`.
#![deny(unsafe_code)]

/// A bump arena in front of the system allocator (see `ccci_common::sys::Arena`).
#[global_allocator]
static ALLOC: ccci_common::sys::Arena = ccci_common::sys::Arena::new();

fn main() -> std::process::ExitCode {
    ccci_common::cli::stamp_stderr();
    ccci_common::cli::main("ccci-janitor", ccci_janitor::cli::run)
}
