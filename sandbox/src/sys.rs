//! Raw system calls that no safe wrapper offers. Each is one small function
//! with a `// SAFETY:` comment; nothing else in Postern calls `libc` directly.
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Closes every descriptor in `first..=last` (close_range(2), Linux 5.9+).
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range takes plain integers and touches no memory of ours.
    // Descriptors it closes must not be owned by live Rust objects; the jail
    // only closes descriptors outside the role's explicit allowlist, and the
    // daemon keeps no other descriptors at that point (see jail::enter).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    cvt(ret).map(|_| ())
}

/// The landlock ABI version the running kernel supports, or the errno that
/// says why there is none (ENOSYS: not built in; EOPNOTSUPP: disabled at boot).
pub fn landlock_abi_version() -> Result<i32, io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1 << 0;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the
    // kernel reads no memory and only returns the ABI number.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    cvt(ret).map(|v| v as i32)
}

/// Takes ownership of a descriptor number that the master handed to this
/// process at exec (`--ipc-fd N`). Checks that it is open and marks it CLOEXEC.
///
/// Call it once per number, at startup, before anything else could own `fd`.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "inherited descriptor must be 3 or above",
        ));
    }
    // SAFETY: fcntl(F_GETFD) on an integer only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFD only changes the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and, per this function's
    // contract, owned by nothing else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wraps descriptors that arrived in an SCM_RIGHTS control message.
pub(crate) fn own_received_fds(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        .map(|&fd| {
            // SAFETY: the kernel installed these descriptors in our table for
            // this recvmsg call alone; nothing else knows their numbers yet.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect()
}

/// Registers an owned descriptor with the tokio reactor for read and write
/// readiness. Must be called inside a runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use tokio::io::Interest;
    // SAFETY: tokio requires that the descriptor stay open and not be
    // replaced while registered. `OwnedFd` is moved into the AsyncFd, which
    // is then its only owner: nothing else can close or dup2 over it until
    // the AsyncFd (and with it the registration) is dropped.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            fd,
            Interest::READABLE | Interest::WRITABLE,
        )
    }
    .map_err(|e| e.into_parts().1)
}

/// Bytes sent on a socket that its peer has not read yet (SIOCOUTQ).
pub fn unread_by_peer(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, which points
    // at `n`, alive for the whole call; the descriptor is borrowed and open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    cvt(ret.into()).map(|_| n.max(0) as usize)
}

/// Switches the calling thread to SCHED_BATCH (threads and processes it
/// starts inherit it): a daemon woken by a sibling no longer preempts the
/// sibling at once, so each runs until it blocks and handles a batch of
/// work per wake-up instead of one message. Unprivileged; priority 0.
pub fn batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised
    // sched_param that outlives the call, and the kernel only reads it.
    let ret = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    cvt(ret.into()).map(|_| ())
}

/// The calling thread's scheduling policy (`libc::SCHED_*`).
pub fn scheduling_policy() -> io::Result<i32> {
    // SAFETY: takes a plain pid (0: the calling thread), touches no memory.
    let ret = unsafe { libc::sched_getscheduler(0) };
    cvt(ret.into()).map(|p| p as i32)
}

/// Makes a spawned child start a new session (setsid), so `postern start`
/// can leave a daemonised master behind when the terminal closes.
pub fn start_new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_bytes_count_until_the_peer_reads() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(unread_by_peer(a.as_fd()).unwrap(), 0);
        a.write_all(&[7u8; 1000]).unwrap();
        assert!(unread_by_peer(a.as_fd()).unwrap() >= 1000);
        let mut buf = [0u8; 1000];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(unread_by_peer(a.as_fd()).unwrap(), 0);
    }

    #[test]
    fn batch_scheduling_sticks_to_the_thread() {
        std::thread::spawn(|| {
            batch_scheduling().unwrap();
            assert_eq!(scheduling_policy().unwrap(), libc::SCHED_BATCH);
            std::thread::spawn(|| assert_eq!(scheduling_policy().unwrap(), libc::SCHED_BATCH))
                .join()
                .unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn landlock_version_is_known_or_explained() {
        match landlock_abi_version() {
            Ok(v) => assert!(v >= 1),
            Err(e) => assert!(matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
            )),
        }
    }

    #[test]
    fn take_inherited_rejects_stdio_and_closed() {
        assert!(take_inherited_fd(1).is_err());
        assert!(take_inherited_fd(999_999).is_err());
    }
}

/// What a table cache needs to know about an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    pub ino: u64,
    pub size: u64,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// fstat(2) by its own system call. glibc 2.33 and later implement fstat()
/// (and Rust's `File::metadata` falls back to it) with newfstatat, which the
/// BASE seccomp group does not allow: only fstat of an open descriptor.
pub fn fstat(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<FileVersion> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes at most one `struct stat` into the buffer we own;
    // the descriptor is borrowed, so it stays open for the call.
    let ret = unsafe { libc::syscall(libc::SYS_fstat, fd.as_raw_fd(), st.as_mut_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the structure (ret == 0).
    let st = unsafe { st.assume_init() };
    Ok(FileVersion {
        ino: st.st_ino,
        size: st.st_size as u64,
        nlink: st.st_nlink,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
    })
}
