//! The name of a uid, for messages, read from `/etc/passwd` itself.
//!
//! Only an error message uses it (`owned by uid 1001 (ci)`, see
//! [`crate::fs::describe_uid`]), so a uid with no name is shown as its
//! number and nothing else changes.
//!
//! Why not `getpwuid_r`: `make` links the tools statically
//! (docs/benchmarks.md), and a static glibc answers from the `files` (and,
//! for hosts, `dns`) sources itself but loads every other NSS module that
//! `/etc/nsswitch.conf` names with `dlopen`, together with a second,
//! dynamic copy of the C library. Debian's default `passwd: files systemd`
//! then makes a static binary crash with SIGSEGV inside `libnss_systemd`
//! for any uid that `/etc/passwd` does not list (glibc 2.36, measured with
//! strace). Reading the file gives the same answer as the `files` source
//! for every local account, in any build. An account that only a directory
//! service knows (LDAP, sssd, systemd's dynamic users) is shown by number,
//! which is all the message needs; it also means an error message never
//! waits for a directory server.

use std::path::Path;

/// Where the local accounts are.
pub const PASSWD: &str = "/etc/passwd";

/// The name `/etc/passwd` gives `uid`, or `None` (no such line, or the file
/// cannot be read).
pub fn user_name(uid: u32) -> Option<String> {
    user_name_in(Path::new(PASSWD), uid)
}

/// The name the passwd-format file `path` gives `uid`.
pub fn user_name_in(path: &Path, uid: u32) -> Option<String> {
    name_of(&std::fs::read(path).ok()?, uid)
}

/// The first line of `passwd` (`name:password:uid:gid:gecos:home:shell`)
/// with `uid`, as the `files` source reads it: comments, blank lines, NIS
/// compat entries (`+…`, `-…`) and malformed lines are skipped; a name that
/// is empty or holds a control character is no name.
pub fn name_of(passwd: &[u8], uid: u32) -> Option<String> {
    let wanted = uid.to_string();
    passwd.split(|&b| b == b'\n').find_map(|line| {
        let mut fields = line.split(|&b| b == b':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id = fields.next()?;
        if id != wanted.as_bytes() || matches!(name.first(), None | Some(b'#' | b'+' | b'-')) {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        (!name.chars().any(char::is_control)).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n\
        # a comment:x:5:5\n\
        \n\
        +nis:x:7:7::/:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        short:x\n\
        ci:x:1001:1001:CI runner,,,:/home/ci:/bin/bash\n\
        later:x:1001:1001::/home/later:/bin/sh\n\
        tab\there:x:1002:1002::/:/bin/sh\n\
        :x:1003:1003::/:/bin/sh\n\
        bad\xffutf8:x:1004:1004::/:/bin/sh\n\
        nonl:x:1005:1005::/:/bin/sh";

    #[test]
    fn names_the_first_line_with_the_uid() {
        assert_eq!(name_of(PASSWD_TEXT, 0).as_deref(), Some("root"));
        assert_eq!(name_of(PASSWD_TEXT, 1).as_deref(), Some("daemon"));
        assert_eq!(name_of(PASSWD_TEXT, 1001).as_deref(), Some("ci"));
        assert_eq!(name_of(PASSWD_TEXT, 1005).as_deref(), Some("nonl"));
    }

    #[test]
    fn no_name_for_unknown_comment_compat_or_unprintable_entries() {
        for uid in [5, 7, 1002, 1003, 1004, 4242, u32::MAX] {
            assert_eq!(name_of(PASSWD_TEXT, uid), None, "uid {uid}");
        }
        assert_eq!(name_of(b"", 0), None);
        // A uid field is matched whole, never by prefix.
        assert_eq!(name_of(b"a:x:10:10::/:/bin/sh\n", 1), None);
        assert_eq!(name_of(b"a:x:010:10::/:/bin/sh\n", 10), None);
    }

    #[test]
    fn reads_a_file_and_survives_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, PASSWD_TEXT).unwrap();
        assert_eq!(user_name_in(&path, 1001).as_deref(), Some("ci"));
        assert_eq!(user_name_in(&dir.path().join("none"), 0), None);
    }

    #[test]
    fn agrees_with_the_system_for_root() {
        // Every Linux system names uid 0 in /etc/passwd.
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
