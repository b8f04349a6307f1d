//! What the unit tests of every tool's command line share.
//!
//! Each tool's `cli` tests check its clap definition the same way; the
//! check is written once here, with a macro that defines it as a test in
//! the module that calls it:
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     use super::*;
//!
//!     ccci_common::clap_definition_test!(Cli);
//!     …
//! }
//! ```
//!
//! Plain functions, not behind a feature: a test module of any crate can
//! call them without asking for more of this crate.

/// Panics, naming the fault, when the clap definition of `C` is
/// inconsistent (clap's `Command::debug_assert`: duplicate flags, a
/// `requires` naming no argument, a bad `default_value`, …).
pub fn assert_consistent<C: clap::CommandFactory>() {
    C::command().debug_assert();
}

/// Defines the unit test `clap_definition_is_consistent` for the clap
/// definition `$cli` (a type deriving `clap::Parser`), which calls
/// [`assert_consistent`].
#[macro_export]
macro_rules! clap_definition_test {
    ($cli:ty) => {
        #[test]
        fn clap_definition_is_consistent() {
            $crate::cli::testing::assert_consistent::<$cli>();
        }
    };
}
