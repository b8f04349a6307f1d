//! Descriptors: `poll`, taking over an inherited descriptor, stdio onto
//! `/dev/null`, and the credentials of a unix socket's peer (for
//! `ccci-lock --hold`'s keeper).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// `poll(2)` on `fds` (each with the events wanted) for at most `timeout`
/// (`None`: forever). Returns each descriptor's `revents`, in order; all
/// zero when the timeout passed. An interrupted poll is retried with the
/// same timeout.
pub fn poll(
    fds: &[(BorrowedFd<'_>, libc::c_short)],
    timeout: Option<Duration>,
) -> io::Result<Vec<libc::c_short>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, events)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *events,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(t) => libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX),
    };
    loop {
        // SAFETY: `pollfds` is a live, correctly sized array of pollfd whose
        // descriptors are borrowed (open) for the duration of the call.
        let r = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(pollfds.iter().map(|p| p.revents).collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Takes ownership of descriptor `fd`, which this process inherited from its
/// parent and was told about on its command line; it is made close-on-exec.
/// `EBADF` when no such descriptor is open.
///
/// Call it once per descriptor, at start-up, before anything else could
/// have opened (and so own) a descriptor with that number.
pub fn adopt_inherited_fd(fd: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: fcntl on a number only reads or sets that descriptor's flags;
    // an unused number gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and, per this
    // function's contract, inherited and owned by nothing else in this process.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Points stdin, stdout and stderr at `/dev/null`, so that a long-lived
/// process holds no terminal and no pipe that a caller waits on.
pub fn stdio_to_dev_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: dup2 onto 0, 1 and 2 replaces those descriptors atomically;
        // `null` is open for the duration of the call.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The pid and uid of the process at the other end of the unix socket
/// `fd`, as the kernel recorded them when the connection was made (for the
/// connecting side: when the other end called `listen`) (`SO_PEERCRED`).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    // SAFETY: `cred` is a stack-local ucred of the size passed in `len`;
    // getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok((cred.pid as u32, cred.uid))
    }
}

/// Calls `each` with the name of every entry of the directory `dir` (a
/// descriptor opened for reading, positioned at its start), `.` and `..`
/// included, in the order the kernel gives them. The entries are read with
/// `getdents64` into a 32 KiB buffer: a lock dir of 100,000 files takes
/// about 90 calls, where libc's `readdir` (musl reads 2 KiB at a time)
/// takes 5,500.
pub fn each_dir_entry(
    dir: BorrowedFd<'_>,
    mut each: impl FnMut(&std::ffi::OsStr),
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // u64: the alignment of `struct linux_dirent64`.
    let mut buf = vec![0u64; (32 << 10) / 8];
    loop {
        // SAFETY: getdents64 writes at most the buffer's length in bytes
        // into the buffer, which is ours and alive for the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len() * 8,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel filled the first `n` bytes; u8 has no alignment.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        // Each record: d_ino (8 bytes), d_off (8), d_reclen (2), d_type
        // (1), then the name, NUL-terminated, padded to d_reclen.
        while at + 19 <= bytes.len() {
            let reclen = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
            if reclen < 20 || at + reclen > bytes.len() {
                return Err(io::Error::other("getdents64 gave a malformed record"));
            }
            let name = &bytes[at + 19..at + reclen];
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            each(std::ffi::OsStr::from_bytes(&name[..len]));
            at += reclen;
        }
    }
}
