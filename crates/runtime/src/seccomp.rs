//! Docker's default seccomp profile, written as named syscall groups and turned into the OCI
//! runtime spec's `linux.seccomp` object for the capabilities a container actually gets.
//!
//! The profile is an allowlist, as Docker documents it (docs.docker.com/engine/security/seccomp):
//! every syscall fails with `EPERM` unless a rule allows it. Ordinary syscalls are always
//! allowed; syscalls that reach what namespaces do not isolate (mounts, kernel modules, the
//! clock, other processes' memory, …) are allowed only when the container holds the capability
//! the kernel would check, so the filter never refuses what the capability set grants and a
//! capability added later brings its syscalls with it. A few syscalls are allowed only with
//! some arguments: `clone` without namespace flags, `personality` with the usual personas, and
//! `clone3` answers `ENOSYS` (its flags sit in memory a filter cannot read), so libc falls back
//! to `clone`.
//!
//! Never allowed, whatever the capabilities: the kernel keyring (`add_key`, `keyctl`,
//! `request_key`: not namespaced), `kexec_load` and `kexec_file_load`, `userfaultfd` (a tool
//! for widening kernel races), `io_uring_*` (Docker's profile leaves them out since a run of exploits),
//! `swapon`/`swapoff`, `move_pages`/`migrate_pages`, `vm86`, and obsolete calls (`uselib`,
//! `ustat`, `sysfs`, `_sysctl`, `nfsservctl`, `create_module`, `query_module`, …).
//!
//! As in Docker's profile, `ptrace` is allowed without `CAP_SYS_PTRACE` (since Linux 4.8 a
//! filter cannot be bypassed through it; tracing stays confined to the container's processes),
//! and `adjtimex`/`clock_adjtime` are allowed for reading the clock's state (changing it needs
//! `CAP_SYS_TIME`, which the kernel checks). `pivot_root` comes with `CAP_SYS_ADMIN`, like
//! `mount`. `CAP_SYS_RESOURCE` has no group: what it governs (`setrlimit`, `prlimit64`,
//! `mq_open` past the limits, …) uses ordinary syscalls that the kernel checks itself.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// `errno` of a syscall the profile refuses: `EPERM`, "Operation not permitted", as Docker does.
const EPERM: u32 = 1;

/// `errno` of `clone3` without `CAP_SYS_ADMIN`: `ENOSYS` makes glibc and musl retry with `clone`,
/// whose flags the filter can check.
const ENOSYS: u32 = 38;

/// `clone` flag: new mount namespace.
const CLONE_NEWNS: u64 = 0x0002_0000;
/// `clone` flag: new cgroup namespace.
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
/// `clone` flag: new UTS namespace.
const CLONE_NEWUTS: u64 = 0x0400_0000;
/// `clone` flag: new IPC namespace.
const CLONE_NEWIPC: u64 = 0x0800_0000;
/// `clone` flag: new user namespace.
const CLONE_NEWUSER: u64 = 0x1000_0000;
/// `clone` flag: new PID namespace.
const CLONE_NEWPID: u64 = 0x2000_0000;
/// `clone` flag: new network namespace.
const CLONE_NEWNET: u64 = 0x4000_0000;

/// Every namespace flag `clone` takes (0x7E020000). Without `CAP_SYS_ADMIN`, `clone` is allowed
/// only when `flags & CLONE_NAMESPACE_FLAGS == 0`: threads and forks, never a new namespace
/// (user namespaces in particular, which need no capability and open much of the kernel to an
/// unprivileged process). `CLONE_NEWTIME` only exists for `clone3` and `unshare`.
const CLONE_NAMESPACE_FLAGS: u64 =
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;

/// The `personality` values allowed: `PER_LINUX` (0), `PER_LINUX32` (8), `UNAME26` (0x20000),
/// `PER_LINUX32 | UNAME26` and the query `0xffffffff`. Other personas change how the kernel
/// treats the process (`READ_IMPLIES_EXEC`, `ADDR_NO_RANDOMIZE`, …) and weaken exploit defences.
const PERSONALITY_VALUES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Files, directories and file descriptors: what every program does with its filesystem, which
/// the mount namespace, permissions and the read-only root already confine.
const FILES: &[&str] = &[
    "access",
    "cachestat",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "ioctl",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "setxattr",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
];

/// Waiting on many descriptors and asynchronous I/O: event loops (epoll, poll, select), file
/// change notification on the container's own files, and Linux AIO.
const EVENTS: &[&str] = &[
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "fanotify_mark",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "_newselect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
];

/// Processes and threads: starting, running and reaping them, thread bookkeeping, futexes,
/// scheduling hints and limits on oneself. The PID namespace keeps these inside the container;
/// where one needs privilege (raising a hard limit, a real-time policy) the kernel checks it.
const PROCESSES: &[&str] = &[
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "ioprio_get",
    "ioprio_set",
    "membarrier",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "ptrace",
    "restart_syscall",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setpgid",
    "setpriority",
    "setrlimit",
    "setsid",
    "sysinfo",
    "times",
    "ugetrlimit",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
];

/// User and group IDs and capabilities of the calling process: dropping privileges is what
/// well-behaved servers do, and the kernel checks `CAP_SETUID`/`CAP_SETGID`/`CAP_SETPCAP`.
const CREDENTIALS: &[&str] = &[
    "capget",
    "capset",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getuid",
    "getuid32",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setuid",
    "setuid32",
];

/// A process confining itself further (its own seccomp filter, Landlock rules): only ever
/// takes rights away, and sandboxed programs such as browsers and systemd units need it.
const SELF_SANDBOXING: &[&str] = &["landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "seccomp"];

/// Memory of the calling process: mapping, protecting, locking (bounded by `RLIMIT_MEMLOCK`),
/// memory protection keys and anonymous memory files.
const MEMORY: &[&str] = &[
    "brk",
    "madvise",
    "map_shadow_stack",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
];

/// Signals: handlers, masks, sending to processes the PID namespace lets the container see.
const SIGNALS: &[&str] = &[
    "alarm",
    "kill",
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "tgkill",
    "tkill",
];

/// Reading clocks, sleeping and timers. Setting the clock is in [`SYS_TIME`]: time is not
/// namespaced, so a container that sets it sets the host's.
const TIME: &[&str] = &[
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
];

/// Sockets, in the container's network namespace (raw sockets still need `CAP_NET_RAW`, which
/// the kernel checks).
const NETWORK: &[&str] = &[
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "socketcall",
    "socketpair",
];

/// System V and POSIX IPC (shared memory, semaphores, message queues), which the container's
/// IPC namespace isolates; databases and many servers rely on them.
const IPC: &[&str] = &[
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
];

/// The groups allowed whatever the capabilities.
const ALWAYS: &[&[&str]] =
    &[FILES, EVENTS, PROCESSES, CREDENTIALS, SELF_SANDBOXING, MEMORY, SIGNALS, TIME, NETWORK, IPC];

/// x86 only: thread-local storage set-up (`arch_prctl`) and per-process segment tables
/// (`modify_ldt`, used by Wine and some JITs); libc calls `arch_prctl` at every start.
const ARCH_X86: &[&str] = &["arch_prctl", "modify_ldt"];

/// Arm only: thread-local storage, cache flushes for JITs, debugger breakpoints and the Arm
/// spellings of `fadvise64_64` and `sync_file_range`.
const ARCH_ARM: &[&str] =
    &["arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls", "sync_file_range2"];

/// `CAP_SYS_ADMIN`: mounts and new mount APIs, namespaces (`unshare`, `setns`, `clone` with any
/// flags, `clone3`), `pivot_root`, quotas, the host name, and what it also covers for older
/// kernels (`bpf`, `perf_event_open`, `syslog`, `fanotify_init`, `lookup_dcookie`). A container
/// without it must not build namespaces or mounts of its own, user namespaces included.
const SYS_ADMIN: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// `CAP_SYS_PTRACE`: reading and writing other processes (tracing, their memory, their file
/// descriptors, comparing their kernel objects); with it a debugger works in the container.
const SYS_PTRACE: &[&str] = &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev"];

/// `CAP_SYS_MODULE`: loading and unloading kernel modules, which changes the host's kernel.
const SYS_MODULE: &[&str] = &["delete_module", "finit_module", "init_module"];

/// `CAP_SYS_BOOT`: `reboot`, which in a PID namespace only ends the container but on the host
/// restarts the machine. (`kexec_load` stays refused even with it.)
const SYS_BOOT: &[&str] = &["reboot"];

/// `CAP_SYS_TIME`: setting and tuning the system clock, which is the host's (time is not
/// namespaced).
const SYS_TIME: &[&str] = &["clock_settime", "clock_settime64", "settimeofday", "stime"];

/// `CAP_SYS_NICE`: NUMA memory placement policy, which reaches memory beyond the container's
/// share of the machine.
const SYS_NICE: &[&str] = &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"];

/// `CAP_SYS_RAWIO`: x86 I/O port access, straight to the hardware.
const SYS_RAWIO: &[&str] = &["ioperm", "iopl"];

/// `CAP_SYS_PACCT`: process accounting, host-wide, which a container could switch off.
const SYS_PACCT: &[&str] = &["acct"];

/// `CAP_SYSLOG`: the kernel's log buffer, which leaks kernel addresses and the host's messages.
const SYSLOG: &[&str] = &["syslog"];

/// `CAP_SYS_CHROOT`: `chroot`, which Docker's default capabilities include (package managers
/// and build tools use it).
const SYS_CHROOT: &[&str] = &["chroot"];

/// `CAP_SYS_TTY_CONFIG`: `vhangup`, hanging up the controlling terminal.
const SYS_TTY_CONFIG: &[&str] = &["vhangup"];

/// `CAP_DAC_READ_SEARCH`: opening files by handle, which bypasses the mount namespace (the
/// "shocker" container escape).
const DAC_READ_SEARCH: &[&str] = &["open_by_handle_at"];

/// `CAP_BPF`: loading BPF programs and maps, the kernel's most exploited interface.
const BPF: &[&str] = &["bpf"];

/// `CAP_PERFMON`: performance monitoring, which observes the whole machine.
const PERFMON: &[&str] = &["perf_event_open"];

/// Each capability-gated group with the capability that brings it.
const GATED: &[(&str, &[&str])] = &[
    ("CAP_SYS_ADMIN", SYS_ADMIN),
    ("CAP_SYS_PTRACE", SYS_PTRACE),
    ("CAP_SYS_MODULE", SYS_MODULE),
    ("CAP_SYS_BOOT", SYS_BOOT),
    ("CAP_SYS_TIME", SYS_TIME),
    ("CAP_SYS_NICE", SYS_NICE),
    ("CAP_SYS_RAWIO", SYS_RAWIO),
    ("CAP_SYS_PACCT", SYS_PACCT),
    ("CAP_SYSLOG", SYSLOG),
    ("CAP_SYS_CHROOT", SYS_CHROOT),
    ("CAP_SYS_TTY_CONFIG", SYS_TTY_CONFIG),
    ("CAP_DAC_READ_SEARCH", DAC_READ_SEARCH),
    ("CAP_BPF", BPF),
    ("CAP_PERFMON", PERFMON),
];

/// The seccomp architectures of this build's target: the native one and the 32-bit ABIs its
/// kernel also runs, so a 32-bit binary cannot slip past the filter. Unknown targets give an
/// empty list, which the runtime reads as the native architecture only.
fn architectures() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        &[]
    }
}

/// The architecture-specific syscalls of this build's target.
fn arch_syscalls() -> &'static [&'static str] {
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        ARCH_X86
    } else if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        ARCH_ARM
    } else {
        &[]
    }
}

/// Docker's default profile for a container holding `capabilities` (`CAP_…` names, as in the
/// runtime spec's capability sets), as the OCI runtime spec's `linux.seccomp` object.
///
/// The unconditional allowlist is one rule with sorted, distinct names; rules with argument
/// conditions follow it.
pub(crate) fn default_profile(capabilities: &[&str]) -> Value {
    let has = |capability: &str| capabilities.contains(&capability);
    let mut allowed: BTreeSet<&'static str> = ALWAYS.iter().flat_map(|group| group.iter().copied()).collect();
    allowed.extend(arch_syscalls().iter().copied());
    for &(capability, group) in GATED {
        if has(capability) {
            allowed.extend(group.iter().copied());
        }
    }
    let mut syscalls = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    for value in PERSONALITY_VALUES {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
        }));
    }
    // With CAP_SYS_ADMIN, `clone` and `clone3` are in the allowlist with any flags.
    if !has("CAP_SYS_ADMIN") {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::DEFAULT_CAPABILITIES;

    /// What the filter does with a call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(u64),
    }

    /// Evaluates `profile` for the syscall `name` with first argument `arg0` (the only one any
    /// rule looks at), as libseccomp would: the first rule naming it whose conditions all hold,
    /// else the default action.
    fn verdict(profile: &Value, name: &str, arg0: u64) -> Verdict {
        let rules = profile["syscalls"].as_array().expect("syscalls");
        for rule in rules {
            let names = rule["names"].as_array().expect("names");
            if !names.iter().any(|n| n.as_str() == Some(name)) {
                continue;
            }
            let holds = rule["args"].as_array().into_iter().flatten().all(|cond| {
                assert_eq!(cond["index"], 0, "only the first argument is compared: {rule}");
                let value = cond["value"].as_u64().expect("value");
                match cond["op"].as_str().expect("op") {
                    "SCMP_CMP_EQ" => arg0 == value,
                    "SCMP_CMP_MASKED_EQ" => (arg0 & value) == cond["valueTwo"].as_u64().expect("valueTwo"),
                    other => panic!("operator {other} not modelled"),
                }
            });
            if !holds {
                continue;
            }
            return match rule["action"].as_str().expect("action") {
                "SCMP_ACT_ALLOW" => Verdict::Allow,
                "SCMP_ACT_ERRNO" => Verdict::Errno(rule["errnoRet"].as_u64().expect("errnoRet")),
                other => panic!("action {other} not modelled"),
            };
        }
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        Verdict::Errno(profile["defaultErrnoRet"].as_u64().expect("defaultErrnoRet"))
    }

    const DENIED: Verdict = Verdict::Errno(1);
    const NOSYS: Verdict = Verdict::Errno(38);
    /// Flags glibc's `fork` passes: `CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD`.
    const FORK_FLAGS: u64 = 0x0120_0011;
    /// Flags of `pthread_create`.
    const THREAD_FLAGS: u64 = 0x003d_0f00;

    /// Docker's default capabilities and `extra`.
    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        DEFAULT_CAPABILITIES.iter().chain(extra).copied().collect()
    }

    #[test]
    fn default_capabilities_get_dockers_rules() {
        let profile = default_profile(DEFAULT_CAPABILITIES);
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let cases: &[(&str, u64, Verdict)] = &[
            // Ordinary programs.
            ("read", 0, Verdict::Allow),
            ("write", 0, Verdict::Allow),
            ("openat", 0, Verdict::Allow),
            ("execve", 0, Verdict::Allow),
            ("exit_group", 0, Verdict::Allow),
            ("futex", 0, Verdict::Allow),
            ("epoll_wait", 0, Verdict::Allow),
            ("socket", 0, Verdict::Allow),
            ("setuid", 0, Verdict::Allow),
            ("chroot", 0, Verdict::Allow),
            // fork and threads, but no namespaces through clone.
            ("clone", FORK_FLAGS, Verdict::Allow),
            ("clone", THREAD_FLAGS, Verdict::Allow),
            ("clone", FORK_FLAGS | CLONE_NEWUSER, DENIED),
            ("clone", CLONE_NEWNS, DENIED),
            ("clone", CLONE_NEWNET | CLONE_NEWPID, DENIED),
            ("clone3", 0, NOSYS),
            // personality: only the documented values.
            ("personality", 0, Verdict::Allow),
            ("personality", 0x8, Verdict::Allow),
            ("personality", 0x2_0000, Verdict::Allow),
            ("personality", 0x2_0008, Verdict::Allow),
            ("personality", 0xffff_ffff, Verdict::Allow),
            ("personality", 0x0040_0000, DENIED),
            ("personality", 0x0004_0000, DENIED),
            // Capability-gated, and these capabilities are not in Docker's default set.
            ("unshare", 0, DENIED),
            ("mount", 0, DENIED),
            ("umount2", 0, DENIED),
            ("setns", 0, DENIED),
            ("pivot_root", 0, DENIED),
            ("ptrace", 0, Verdict::Allow),
            ("process_vm_readv", 0, DENIED),
            ("init_module", 0, DENIED),
            ("finit_module", 0, DENIED),
            ("reboot", 0, DENIED),
            ("settimeofday", 0, DENIED),
            ("clock_settime", 0, DENIED),
            ("adjtimex", 0, Verdict::Allow),
            ("iopl", 0, DENIED),
            ("acct", 0, DENIED),
            ("syslog", 0, DENIED),
            ("bpf", 0, DENIED),
            ("perf_event_open", 0, DENIED),
            ("open_by_handle_at", 0, DENIED),
            ("mbind", 0, DENIED),
            // Never allowed.
            ("kexec_load", 0, DENIED),
            ("keyctl", 0, DENIED),
            ("add_key", 0, DENIED),
            ("request_key", 0, DENIED),
            ("userfaultfd", 0, DENIED),
            ("io_uring_setup", 0, DENIED),
            ("swapon", 0, DENIED),
        ];
        for &(name, arg0, expected) in cases {
            assert_eq!(verdict(&profile, name, arg0), expected, "{name}({arg0:#x})");
        }
    }

    #[test]
    fn capabilities_bring_their_groups() {
        // (capability added, call, first argument, verdict)
        let cases: &[(&str, &str, u64, Verdict)] = &[
            ("CAP_SYS_ADMIN", "mount", 0, Verdict::Allow),
            ("CAP_SYS_ADMIN", "unshare", CLONE_NEWUSER, Verdict::Allow),
            ("CAP_SYS_ADMIN", "setns", 0, Verdict::Allow),
            ("CAP_SYS_ADMIN", "clone", FORK_FLAGS | CLONE_NEWUSER, Verdict::Allow),
            ("CAP_SYS_ADMIN", "clone3", 0, Verdict::Allow),
            ("CAP_SYS_ADMIN", "bpf", 0, Verdict::Allow),
            ("CAP_SYS_ADMIN", "process_vm_readv", 0, DENIED),
            ("CAP_SYS_ADMIN", "keyctl", 0, DENIED),
            ("CAP_SYS_PTRACE", "process_vm_readv", 0, Verdict::Allow),
            ("CAP_SYS_PTRACE", "kcmp", 0, Verdict::Allow),
            ("CAP_SYS_PTRACE", "mount", 0, DENIED),
            ("CAP_SYS_MODULE", "init_module", 0, Verdict::Allow),
            ("CAP_SYS_BOOT", "reboot", 0, Verdict::Allow),
            ("CAP_SYS_BOOT", "kexec_load", 0, DENIED),
            ("CAP_SYS_TIME", "clock_settime", 0, Verdict::Allow),
            ("CAP_SYS_NICE", "set_mempolicy", 0, Verdict::Allow),
            ("CAP_SYS_RAWIO", "ioperm", 0, Verdict::Allow),
            ("CAP_SYS_PACCT", "acct", 0, Verdict::Allow),
            ("CAP_SYSLOG", "syslog", 0, Verdict::Allow),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at", 0, Verdict::Allow),
            ("CAP_BPF", "bpf", 0, Verdict::Allow),
            ("CAP_PERFMON", "perf_event_open", 0, Verdict::Allow),
        ];
        for &(capability, name, arg0, expected) in cases {
            let profile = default_profile(&with(&[capability]));
            assert_eq!(verdict(&profile, name, arg0), expected, "{capability}: {name}({arg0:#x})");
        }
    }

    #[test]
    fn fewer_capabilities_take_syscalls_away() {
        assert_eq!(verdict(&default_profile(&[]), "chroot", 0), DENIED);
        assert_eq!(verdict(&default_profile(&[]), "read", 0), Verdict::Allow);
    }

    #[test]
    fn no_name_is_allowed_twice() {
        let admin = with(&["CAP_SYS_ADMIN"]);
        let every_capability: Vec<&str> = GATED.iter().map(|&(capability, _)| capability).collect();
        let sets: [&[&str]; 4] = [&[], DEFAULT_CAPABILITIES, &admin, &every_capability];
        for capabilities in sets {
            let profile = default_profile(capabilities);
            let rules = profile["syscalls"].as_array().expect("syscalls");
            let unconditional: Vec<&str> = rules
                .iter()
                .filter(|rule| rule.get("args").is_none())
                .flat_map(|rule| rule["names"].as_array().expect("names").iter().filter_map(Value::as_str))
                .collect();
            let distinct: BTreeSet<&str> = unconditional.iter().copied().collect();
            assert_eq!(distinct.len(), unconditional.len(), "a name is listed twice for {capabilities:?}");
            // A name with argument conditions is never also allowed outright, or the
            // conditions would mean nothing.
            for rule in rules.iter().filter(|rule| rule.get("args").is_some()) {
                for name in rule["names"].as_array().expect("names").iter().filter_map(Value::as_str) {
                    assert!(!distinct.contains(name), "{name} is both conditional and allowed for {capabilities:?}");
                }
            }
        }
    }

    #[test]
    fn groups_do_not_overlap() {
        let mut seen = BTreeSet::new();
        for group in ALWAYS.iter().copied().chain([ARCH_X86, ARCH_ARM]) {
            for name in group {
                assert!(seen.insert(*name), "{name} is in two always-allowed groups");
            }
        }
        for &(capability, group) in GATED {
            for name in group {
                assert!(!seen.contains(name), "{name} is always allowed and also gated by {capability}");
            }
        }
        for never in ["keyctl", "add_key", "request_key", "kexec_load", "userfaultfd", "personality", "clone3"] {
            assert!(!seen.contains(never), "{never} must not be allowed outright");
        }
        assert!(seen.len() > 300, "Docker's allowlist has over 300 syscalls, this one {}", seen.len());
    }

    #[test]
    fn namespace_mask_is_dockers() {
        assert_eq!(CLONE_NAMESPACE_FLAGS, 0x7E02_0000);
    }

    #[test]
    fn architectures_cover_compat_abis() {
        let profile = default_profile(DEFAULT_CAPABILITIES);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(profile["architectures"], json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
            assert_eq!(verdict(&profile, "arch_prctl", 0), Verdict::Allow);
        } else if cfg!(target_arch = "aarch64") {
            assert_eq!(profile["architectures"], json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]));
        }
    }
}
