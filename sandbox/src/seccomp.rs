//! Seccomp allowlists, built in code, one group per kind of work.
//!
//! Every role gets BASE + RUNTIME + IPC; the others are granted per role by
//! the daemon table in `postern` (see SECURITY.md). Each syscall line carries
//! the reason it is there. Anything not listed fails with EPERM (or kills the
//! process, with `sandbox_seccomp_action = kill`).
use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::JailError;

/// A set of syscall groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyscallGroups(u32);

impl SyscallGroups {
    /// Memory, threads' futexes, signals for abort, time, exit, I/O on held fds.
    pub const BASE: Self = Self(1 << 0);
    /// What a tokio runtime needs: epoll, eventfd, worker threads.
    pub const RUNTIME: Self = Self(1 << 1);
    /// Frames and descriptors over the Unix sockets the master handed us.
    pub const IPC: Self = Self(1 << 2);
    /// Accepting connections on a listener that the master bound.
    pub const ACCEPT: Self = Self(1 << 3);
    /// Creating outbound TCP/UDP sockets (smtp client, resolver).
    pub const CONNECT: Self = Self(1 << 4);
    /// Opening files read-only (landlock decides which).
    pub const FS_READ: Self = Self(1 << 5);
    /// Creating, writing, syncing, linking and removing files.
    pub const FS_WRITE: Self = Self(1 << 6);
    /// Reading back, and cutting short, a file whose descriptor was handed
    /// over (cleanup rewriting a queue file after a Milter's changes); no
    /// opening of files.
    pub const HELD_FILE: Self = Self(1 << 7);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::BASE, "base"),
            (Self::RUNTIME, "runtime"),
            (Self::IPC, "ipc"),
            (Self::ACCEPT, "accept"),
            (Self::CONNECT, "connect"),
            (Self::FS_READ, "fs_read"),
            (Self::FS_WRITE, "fs_write"),
            (Self::HELD_FILE, "held_file"),
        ]
        .into_iter()
        .filter(|(g, _)| self.contains(*g))
        .map(|(_, n)| n)
        .collect()
    }
}

impl std::ops::BitOr for SyscallGroups {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// What happens on a syscall outside the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// Fail the call with EPERM: the daemon logs the failed operation and
    /// carries on (the default: one odd code path does not take mail down).
    Errno,
    /// Kill the whole process; the master restarts it.
    Kill,
    /// Allow but log to the audit log (for building an allowlist).
    Log,
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn allow(rules: &mut Rules, nr: libc::c_long) {
    rules.insert(nr, Vec::new());
}

fn cond(arg: u8, op: Op, value: u64) -> SeccompCondition {
    // Dword comparisons: every argument we filter on fits in 32 bits.
    SeccompCondition::new(arg, Len::Dword, op, value).expect("argument index below 6")
}

/// Allows `nr` only when argument `arg` equals one of `values`.
fn allow_arg_in(rules: &mut Rules, nr: libc::c_long, arg: u8, values: &[u64]) {
    let chain = rules.entry(nr).or_default();
    for &v in values {
        chain.push(SeccompRule::new(vec![cond(arg, Op::Eq, v)]).expect("non-empty rule"));
    }
}

/// Allows `nr` only when `(argument & mask) == value`.
fn allow_masked(rules: &mut Rules, nr: libc::c_long, arg: u8, mask: u64, value: u64) {
    rules
        .entry(nr)
        .or_default()
        .push(SeccompRule::new(vec![cond(arg, Op::MaskedEq(mask), value)]).expect("non-empty"));
}

/// The syscall table for a set of groups. Public so tests can inspect it.
pub fn allowlist(groups: SyscallGroups, own_pid: u32) -> Rules {
    use libc::*;
    let mut r = Rules::new();
    if groups.contains(SyscallGroups::BASE) {
        // Reading and writing descriptors we already hold (stderr, sockets,
        // queue files handed over by the broker): positional reads and fstat
        // of an open descriptor only, never a path.
        for nr in [
            SYS_read,
            SYS_write,
            SYS_readv,
            SYS_writev,
            SYS_close,
            SYS_pread64,
            SYS_fstat,
        ] {
            allow(&mut r, nr);
        }
        // Heap and stacks. Never executable: W^X is enforced here.
        allow_masked(&mut r, SYS_mmap, 2, PROT_EXEC as u64, 0);
        allow_masked(&mut r, SYS_mprotect, 2, PROT_EXEC as u64, 0);
        for nr in [SYS_munmap, SYS_mremap, SYS_brk, SYS_madvise] {
            allow(&mut r, nr);
        }
        // Locks and thread bookkeeping done by the C library.
        for nr in [SYS_futex, SYS_set_robust_list, SYS_rseq, SYS_sched_yield] {
            allow(&mut r, nr);
        }
        // Time when the vDSO is unavailable; sleeping.
        for nr in [
            SYS_clock_gettime,
            SYS_clock_getres,
            SYS_gettimeofday,
            SYS_nanosleep,
            SYS_clock_nanosleep,
        ] {
            allow(&mut r, nr);
        }
        // Signal masks and handlers (the runtime and abort()), the alternate
        // stack Rust installs for stack-overflow reports.
        for nr in [
            SYS_rt_sigaction,
            SYS_rt_sigprocmask,
            SYS_rt_sigreturn,
            SYS_sigaltstack,
        ] {
            allow(&mut r, nr);
        }
        // abort() on panic raises SIGABRT at ourselves, and only ourselves.
        allow_arg_in(&mut r, SYS_tgkill, 0, &[own_pid as u64]);
        // Identity for log lines and reports; randomness for TLS, hashing
        // and queue ids.
        for nr in [
            SYS_getpid,
            SYS_gettid,
            SYS_getppid,
            SYS_getuid,
            SYS_geteuid,
            SYS_getgid,
            SYS_getegid,
            SYS_getresuid,
            SYS_getresgid,
            SYS_getrandom,
        ] {
            allow(&mut r, nr);
        }
        // Waiting on one descriptor (std's blocking helpers).
        for nr in [SYS_poll, SYS_ppoll] {
            allow(&mut r, nr);
        }
        // Leaving.
        for nr in [SYS_exit, SYS_exit_group, SYS_restart_syscall] {
            allow(&mut r, nr);
        }
    }
    if groups.contains(SyscallGroups::RUNTIME) {
        // The event loop: epoll plus an eventfd waker.
        for nr in [
            SYS_epoll_create1,
            SYS_epoll_ctl,
            SYS_epoll_wait,
            SYS_epoll_pwait,
            SYS_epoll_pwait2,
            SYS_eventfd2,
        ] {
            allow(&mut r, nr);
        }
        // Worker threads only: clone must carry CLONE_THREAD, so no new
        // processes. clone3 is allowed here and turned into ENOSYS by a
        // second, stacked filter (BPF cannot see clone3's flags), which makes
        // the C library fall back to clone.
        allow_masked(
            &mut r,
            SYS_clone,
            0,
            CLONE_THREAD as u64,
            CLONE_THREAD as u64,
        );
        allow(&mut r, SYS_clone3);
        // Sizing the worker pool.
        allow(&mut r, SYS_sched_getaffinity);
        // Naming threads.
        allow_arg_in(&mut r, SYS_prctl, 0, &[PR_SET_NAME as u64]);
        // Descriptor flags: nonblocking mode, close-on-exec, dup for the reactor.
        allow_arg_in(
            &mut r,
            SYS_fcntl,
            1,
            &[
                F_GETFD as u64,
                F_SETFD as u64,
                F_GETFL as u64,
                F_SETFL as u64,
                F_DUPFD_CLOEXEC as u64,
            ],
        );
        // SIOCOUTQ (TIOCOUTQ): how much a peer has yet to read.
        allow_arg_in(&mut r, SYS_ioctl, 1, &[FIONBIO, FIOCLEX, TIOCOUTQ]);
    }
    if groups.contains(SyscallGroups::IPC) {
        // Frames with SCM_RIGHTS beside them.
        for nr in [SYS_sendmsg, SYS_recvmsg, SYS_shutdown] {
            allow(&mut r, nr);
        }
        // Byte I/O on connected sockets (send/recv are sendto/recvfrom).
        for nr in [SYS_sendto, SYS_recvfrom] {
            allow(&mut r, nr);
        }
        // Unix socket pairs only (the runtime's self-pipe; handing a peer a
        // fresh channel). No other socket family can be created here.
        allow_arg_in(&mut r, SYS_socketpair, 0, &[AF_UNIX as u64]);
    }
    if groups.contains(SyscallGroups::ACCEPT) {
        // Accepting on listeners bound by the master, and client addresses.
        for nr in [
            SYS_accept4,
            SYS_getsockname,
            SYS_getpeername,
            SYS_setsockopt,
            SYS_getsockopt,
        ] {
            allow(&mut r, nr);
        }
    }
    if groups.contains(SyscallGroups::CONNECT) {
        // Outbound IPv4/IPv6 sockets only; landlock narrows TCP ports.
        allow_arg_in(&mut r, SYS_socket, 0, &[AF_INET as u64, AF_INET6 as u64]);
        for nr in [
            SYS_connect,
            SYS_bind, // UDP source port for DNS; landlock denies TCP bind
            SYS_getsockname,
            SYS_getpeername,
            SYS_setsockopt,
            SYS_getsockopt,
            SYS_sendmmsg,
            SYS_recvmmsg,
        ] {
            allow(&mut r, nr);
        }
    }
    if groups.contains(SyscallGroups::HELD_FILE) {
        for nr in [SYS_pread64, SYS_lseek, SYS_ftruncate] {
            allow(&mut r, nr);
        }
    }
    let read = groups.contains(SyscallGroups::FS_READ);
    let write = groups.contains(SyscallGroups::FS_WRITE);
    if read || write {
        // Inspecting and reading files that landlock lets us see.
        for nr in [
            SYS_newfstatat,
            SYS_fstat,
            SYS_statx,
            SYS_lseek,
            SYS_pread64,
            SYS_getdents64,
            SYS_fstatfs,
        ] {
            allow(&mut r, nr);
        }
    }
    if write {
        // Queue files and mailboxes: create, write, sync, link into place.
        for nr in [
            SYS_openat,
            SYS_pwrite64,
            SYS_ftruncate,
            SYS_fallocate,
            SYS_fsync,
            SYS_fdatasync,
            SYS_syncfs,
            SYS_rename,
            SYS_renameat,
            SYS_renameat2,
            SYS_link,
            SYS_linkat,
            SYS_unlink,
            SYS_unlinkat,
            SYS_mkdir,
            SYS_mkdirat,
            SYS_rmdir,
            SYS_fchmod,
            SYS_statfs,
        ] {
            allow(&mut r, nr);
        }
    } else if read {
        // Read-only opens: no write access mode, no O_CREAT, no O_TRUNC.
        let mask = (O_ACCMODE | O_CREAT | O_TRUNC) as u64;
        allow_masked(&mut r, SYS_openat, 2, mask, O_RDONLY as u64);
    }
    r
}

fn arch() -> TargetArch {
    // seccompiler checks the architecture in the filter and kills on mismatch.
    std::env::consts::ARCH
        .try_into()
        .expect("seccompiler supports this architecture")
}

/// Compiles the role's filters: the clone3 filter, then the allowlist.
///
/// Order of loading: the allowlist must come last, because once it is
/// loaded the prctl that loads a filter is itself forbidden. The clone3
/// answer still wins: the kernel runs every filter and keeps the lowest
/// action, and the allowlist's ALLOW for clone3 is higher than ERRNO.
pub fn compile(groups: SyscallGroups, mode: SeccompMode) -> Result<Vec<BpfProgram>, JailError> {
    let mismatch = match mode {
        SeccompMode::Errno => SeccompAction::Errno(libc::EPERM as u32),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let main = SeccompFilter::new(
        allowlist(groups, std::process::id()),
        mismatch,
        SeccompAction::Allow,
        arch(),
    )
    .map_err(JailError::SeccompBuild)?;
    let mut clone3 = Rules::new();
    allow(&mut clone3, libc::SYS_clone3);
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .map_err(JailError::SeccompBuild)?;
    Ok(vec![
        clone3.try_into().map_err(JailError::SeccompBuild)?,
        main.try_into().map_err(JailError::SeccompBuild)?,
    ])
}

pub(crate) fn load(programs: &[BpfProgram]) -> Result<(), JailError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(JailError::SeccompLoad)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_can_exec_or_trace() {
        let all = SyscallGroups::BASE
            | SyscallGroups::RUNTIME
            | SyscallGroups::IPC
            | SyscallGroups::ACCEPT
            | SyscallGroups::CONNECT
            | SyscallGroups::FS_READ
            | SyscallGroups::FS_WRITE;
        let rules = allowlist(all, 1);
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_kill,
            libc::SYS_setuid,
            libc::SYS_mount,
            libc::SYS_chroot,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_process_vm_writev,
        ] {
            assert!(
                !rules.contains_key(&nr),
                "syscall {nr} must never be allowed"
            );
        }
    }

    #[test]
    fn network_only_where_granted() {
        let base = SyscallGroups::BASE | SyscallGroups::RUNTIME | SyscallGroups::IPC;
        let rules = allowlist(base, 1);
        assert!(!rules.contains_key(&libc::SYS_socket));
        assert!(!rules.contains_key(&libc::SYS_connect));
        assert!(!rules.contains_key(&libc::SYS_accept4));
        assert!(!rules.contains_key(&libc::SYS_openat));
        let net = allowlist(base | SyscallGroups::CONNECT, 1);
        assert_eq!(net[&libc::SYS_socket].len(), 2, "AF_INET and AF_INET6 only");
    }

    #[test]
    fn filters_compile_in_every_mode() {
        for mode in [SeccompMode::Errno, SeccompMode::Kill, SeccompMode::Log] {
            let progs = compile(SyscallGroups::BASE | SyscallGroups::RUNTIME, mode).unwrap();
            assert_eq!(progs.len(), 2);
        }
    }
}
