//! ccci-abradir: not implemented yet (see the project's open issues).

use std::process::ExitCode;

fn main() -> ExitCode {
    ccci_common::say!("not implemented yet");
    ExitCode::from(ccci_common::exit::TOOL_FAILED)
}
