//! The EXAMPLES of the man pages, which `examples TOOL` prints for the
//! suite to run.

/// The EXAMPLES of each tool's man page: what it shows, and the command.
/// Each runs as written in a shell whose `CCCI_*` directories are a test's
/// (the suite's `man_page_examples_run_as_written` runs them, with the lock
/// dir and the canonical abra dir's `servers/` present).
pub fn examples(tool: &str) -> &'static [(&'static str, &'static str)] {
    match tool {
        "ccci-lock" => &[
            (
                "Run a deploy while holding the app's domain; a second run waits:",
                "ccci-lock word-3f2a01.ci.example.org -- echo deploying",
            ),
            (
                "Give up at once when another run holds it (status 75):",
                "ccci-lock -n word-3f2a01.ci.example.org -- true || echo \"busy: $?\"",
            ),
            (
                "Hold a dependency's domain for this shell's lifetime, then release it:",
                "ccci-lock --hold --parent $$ mari-3f2a01.ci.example.org && ccci-lock --release --parent $$ mari-3f2a01.ci.example.org",
            ),
            ("List the lockfiles and who holds them:", "ccci-lock --list"),
        ],
        "ccci-guard" => &[
            (
                "Run a command that is told to stop (TERM) when its parent dies:",
                "ccci-guard --deadline 60m -- echo guarded",
            ),
            (
                "A deadline: the command gets ALRM, tears down, and the guard ends by ALRM (142):",
                "ccci-guard --supervise --deadline 1s --kill-after 10s -- sh -c 'trap \"echo teardown; exit 0\" ALRM; while :; do sleep 1; done' || echo \"status $?\"",
            ),
        ],
        "ccci-janitor" => &[
            (
                "The settings the janitor and the scripts read (environment and configuration file):",
                "ccci-janitor --print-config",
            ),
            (
                "What a pass over abra's app list would reap, without reaping:",
                "echo word-3f2a01.ci.example.org > deployed.list && ccci-janitor --dry-run --deployed deployed.list --only '????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org' -- true",
            ),
        ],
        "ccci-abradir" => &[
            (
                "This run's private ABRA_DIR, then its removal:",
                "eval \"$(ccci-abradir)\" && ls \"$ABRA_DIR\" && ccci-abradir clean",
            ),
            (
                "What gc would remove of dead runs' trees:",
                "ccci-abradir gc --dry-run",
            ),
        ],
        "ccci-state" => &[
            (
                "This run's state files, a counter in them, and their removal:",
                "eval \"$(ccci-state env)\" && ccci-state incr deploys && ccci-state get deploys && ccci-state clean",
            ),
            (
                "What gc would remove of dead runs' files:",
                "ccci-state gc --dry-run",
            ),
        ],
        _ => &[],
    }
}
