/* sandbox.c - what a running vnic may still do once set-up is over.
 *
 * vnic needs root only to open its TAP and sockets.  A guest that found a
 * memory-safety bug in the data plane must then find a process that owns
 * nothing: vnic_sandbox_drop() gives up root for an unprivileged user
 * (groups, gid, uid, every capability, the bounding set, no_new_privs),
 * and vnic_sandbox_seccomp() installs a seccomp filter (libseccomp) on
 * every thread that allows only the system calls a serving device makes:
 * socket and file-descriptor I/O, epoll, eventfd, futex, mmap/munmap for
 * DMA_MAP, clocks, signals, threads.  Anything else (execve, ptrace,
 * mount, bpf, module loading, ...) fails with EPERM: a call we did not
 * foresee is an error Python reports, never a silent success. */
#define _GNU_SOURCE               /* setresuid, getresuid */
#include <errno.h>
#include <grp.h>
#include <seccomp.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <linux/capability.h>
#include "internal.h"

#define CAP_PROBE_MAX 64          /* beyond any kernel's CAP_LAST_CAP */

/* What the device, its Python control plane and its threads call after
 * set-up.  Names this architecture lacks are skipped. */
static const char *const allowed[] = {
    /* I/O on fds it holds, and files Python may still read (imports) */
    "read", "write", "readv", "writev", "pread64", "pwrite64", "close", "close_range",
    "openat", "open", "newfstatat", "fstat", "stat", "lstat", "statx", "lseek",
    "getdents64", "readlink", "readlinkat", "access", "faccessat", "faccessat2",
    "getcwd", "fstatfs", "statfs", "fcntl", "ioctl", "dup", "dup2", "dup3",
    "pipe2", "unlink", "unlinkat", "umask", "fsync", "fdatasync",
    /* memory: DMA_MAP regions, allocators, threads' stacks */
    "mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "msync", "mincore",
    /* threads and their synchronisation */
    "clone", "clone3", "exit", "exit_group", "futex", "futex_waitv", "set_robust_list",
    "get_robust_list", "rseq", "set_tid_address", "arch_prctl", "membarrier",
    "sched_yield", "sched_getaffinity", "prctl", "restart_syscall",
    /* signals (SIGTERM to stop, the SIGBUS guard) */
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "rt_sigtimedwait",
    "tgkill", "tkill", "getpid", "gettid", "getppid",
    /* waiting */
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
    "epoll_pwait2", "poll", "ppoll", "select", "pselect6", "eventfd", "eventfd2",
    "timerfd_create", "timerfd_settime", "timerfd_gettime",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    /* sockets: vfio-user clients, the control socket, metrics, QMP, netlink */
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "shutdown",
    "getsockname", "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
    /* who and where we are */
    "getrandom", "uname", "sysinfo", "getrlimit", "prlimit64", "getrusage", "times",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "capget",
};

int vnic_sandbox_seccomp(void)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx)
        return -ENOMEM;
    /* every thread, and no_new_privs on each (the kernel sets it with TSYNC) */
    int err = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    for (size_t i = 0; !err && i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);
        if (nr != __NR_SCMP_ERROR)
            err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    if (!err)
        err = seccomp_load(ctx);
    seccomp_release(ctx);
    return err;
}

/* Drop capability c from the bounding set; true while c exists. */
static bool drop_bounding(int c)
{
    if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) < 0)
        return false;                 /* EINVAL: past the last capability */
    prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
    return true;
}

static bool no_capabilities(void)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    if (syscall(__NR_capget, &h, d) < 0)
        return false;
    return !(d[0].effective | d[0].permitted | d[0].inheritable |
             d[1].effective | d[1].permitted | d[1].inheritable);
}

int vnic_sandbox_drop_bounding(void)
{
    for (int c = 0; c < CAP_PROBE_MAX && drop_bounding(c); c++)
        ;
    return prctl(PR_CAPBSET_READ, 0, 0, 0, 0) == 0 ? 0 : -EPERM;
}

int vnic_sandbox_drop(unsigned uid, unsigned gid)
{
    if (uid == 0 || gid == 0)
        return -EINVAL;               /* dropping to root keeps everything */
    int deathsig = 0;                 /* a credential change clears it: keep it */
    prctl(PR_GET_PDEATHSIG, &deathsig, 0, 0, 0);
    vnic_sandbox_drop_bounding();     /* this thread's; others inherited it if they came later */
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
        return -errno;                /* glibc applies these to every thread */
    if (deathsig)
        prctl(PR_SET_PDEATHSIG, deathsig, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) < 0 || r != uid || e != uid || s != uid || !no_capabilities())
        return -EPERM;                /* something kept privilege: refuse to go on */
    if (setuid(0) == 0)
        return -EPERM;
    return 0;
}
