//! Shell patterns, as the C library matches them (`fnmatch(3)`).

/// Whether `name` matches the shell pattern `pattern`: the C library's
/// fnmatch(3), no flags (the janitor's `--only` and `--warm`).
pub fn fnmatch(pattern: &std::ffi::CStr, name: &std::ffi::CStr) -> bool {
    // SAFETY: both are NUL-terminated C strings that outlive the call;
    // fnmatch only reads them.
    unsafe { libc::fnmatch(pattern.as_ptr(), name.as_ptr(), 0) == 0 }
}
