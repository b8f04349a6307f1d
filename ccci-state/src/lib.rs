//! Run-keyed state files (SPEC §6) and run identity (SPEC §1).

#![warn(missing_docs)]

pub mod identity;
