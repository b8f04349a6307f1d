//! `ccci-guard`: see `ccci_guard::cli`.
#![deny(unsafe_code)]

/// A bump arena in front of the system allocator (see `ccci_common::sys::Arena`).
#[global_allocator]
static ALLOC: ccci_common::sys::Arena = ccci_common::sys::Arena::new();

fn main() -> std::process::ExitCode {
    ccci_guard::cli::main()
}
