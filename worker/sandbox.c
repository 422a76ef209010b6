/* sandbox.c - see sandbox.h and docs/sandbox.md.
 *
 * Order in a worker (sandbox_enter): own process group; the descriptors it keeps moved to
 * fixed numbers; setgroups/setgid/setuid to worker_user (when root); PR_SET_NO_NEW_PRIVS;
 * Landlock (its session directory read-write, cache_dir read-only, no TCP, no signals or
 * abstract sockets out of its domain); the SIGSYS handler; the seccomp filter.
 *
 * The filter is compiled once in the zygote (libseccomp, exported as BPF) and loaded with
 * one prctl per worker: no allocation in a worker (its heap may be the snapshotted arena),
 * and the descriptors it names sit at fixed numbers for that reason.
 *
 * Decisions worth a comment:
 * - fork. The runtime forks its snapshot child with the legacy clone(CLONE_PARENT |
 *   CLONE_PIDFD) (see common/proc.c) because seccomp sees clone's flags but not clone3's (a
 *   pointer). clone is allowed with exactly those flags; clone3 fails with ENOSYS, so glibc's pthread_create
 *   and posix_spawn fall back to clone, whose flags (CLONE_THREAD, CLONE_VFORK, SIGCHLD for
 *   fork()) are then refused by name. What seccomp cannot do is tell the runtime from the
 *   app: an app that issues the very same raw clone(CLONE_PARENT) gets a process confined
 *   exactly like the worker (same filter, user and Landlock domain), which the supervisor
 *   does not track (it tracks a snapshot child only after the worker's SNAP_STARTED).
 * - signals. kill/tgkill/tkill are trapped; the handler performs a signal to the caller
 *   itself (abort(), raise()) as kill(0, sig) to the worker's own process group, which is
 *   allowed, and refuses any other target. The filter cannot hold the pid: a hot standby
 *   that takes over is the same filter in another process. Every confined process leads
 *   its own group (the worker here, a snapshot child in sandbox_snapshot_child).
 * - blocked signals. glibc's pthread_create, posix_spawn (and system, popen through it)
 *   block every signal around their clone: a trap there cannot run the handler, the kernel
 *   kills the worker with SIGSYS, and the session would end as "signal 31" without a name.
 *   So the worker binary defines those functions (the app module binds to them before
 *   libc's) and refuses them by name; the filter stays the backstop for raw syscalls.
 * - files. open/openat by path are refused; openat is allowed relative to the session
 *   directory descriptor and, read-only, to cache_dir. A relative "../" from those is what
 *   Landlock stops (and the permissions of state_dir, 0700 root, when the worker is nobody).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <pwd.h>
#include <sched.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <ucontext.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "log.h"
#include "sandbox.h"

#define SB_MAX_NR     512          /* syscall numbers we keep names for */
#define SB_MAX_INSNS  4096         /* BPF instructions of the compiled filter */

/* Landlock beyond the headers of older distributions (values from the kernel's uapi). */
#define SB_LL_FS_REFER       (1ull << 13)   /* ABI 2 */
#define SB_LL_FS_TRUNCATE    (1ull << 14)   /* ABI 3 */
#define SB_LL_FS_IOCTL_DEV   (1ull << 15)   /* ABI 5 */
#define SB_LL_NET_BIND_TCP   (1ull << 0)    /* ABI 4 */
#define SB_LL_NET_CONNECT_TCP (1ull << 1)
#define SB_LL_SCOPE_ABSTRACT_UNIX (1ull << 0) /* ABI 6 */
#define SB_LL_SCOPE_SIGNAL   (1ull << 1)

struct sb_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

#define SANDBOX_FD_TOP 64   /* NR_OPEN_DEFAULT: the descriptors a files_struct holds itself */

static struct {
    int enabled;
    int drop;                       /* setuid to uid/gid */
    uid_t uid;
    gid_t gid;
    int fd_base;                    /* report, session_dir, cache_dir: fd_base + 0, 1, 2 */
    int landlock_abi;               /* 0: none */
    struct sock_filter insns[SB_MAX_INSNS];
    unsigned short ninsns;
    char names[SB_MAX_NR][24];      /* syscall names, for the error text */
    /* per process */
    int in_child;
    void (*fail)(const char *text);
    void (*child_fail)(const char *text);
} SB;

/* ---- zygote: resolve, check, compile ---- */

static int rule(scmp_filter_ctx ctx, const char *name, unsigned n, const struct scmp_arg_cmp *c)
{
    int nr = seccomp_syscall_resolve_name(name);

    if (nr == __NR_SCMP_ERROR || nr < 0)
        return 0;   /* not on this architecture */
    return seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, n, c);
}

#define FD_IS(a, fd)  SCMP_CMP(a, SCMP_CMP_MASKED_EQ, 0xffffffffull, (uint64_t)(fd))
#define INT_IS(a, v)  SCMP_CMP(a, SCMP_CMP_MASKED_EQ, 0xffffffffull, (uint64_t)(uint32_t)(v))
#define ALLOW(name)   do { if ((rc = rule(ctx, name, 0, NULL)) < 0) { step = name; goto fail; } } while (0)
#define ALLOW_IF(name, ...) do { \
        const struct scmp_arg_cmp c_[] = { __VA_ARGS__ }; \
        if ((rc = rule(ctx, name, sizeof(c_) / sizeof(c_[0]), c_)) < 0) { step = name; goto fail; } \
    } while (0)

static int compile_filter(char *err, size_t errlen)
{
    const int rep = SB.fd_base, dir = SB.fd_base + 1, cache = SB.fd_base + 2;
    static const char *const plain[] = {
        /* descriptors it holds: doorbells, report socket, snapshot files, stderr */
        "read", "readv", "pread64", "write", "writev", "pwrite64", "close", "lseek",
        "fsync", "fdatasync", "fstat",
        /* memory: the arena, malloc, the snapshot child's buffers */
        "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",
        /* the rest of the runtime and libc */
        "futex", "clock_gettime", "clock_getres", "gettimeofday", "time", "getpid", "gettid",
        "getppid", "getuid", "geteuid", "getgid", "getegid", "sched_yield",
        "rt_sigreturn", "rt_sigprocmask", "sigaltstack", "restart_syscall",
        "exit", "exit_group",
    };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
    const char *step = "seccomp_init";
    int rc = -ENOMEM, mfd = -1;
    ssize_t n;

    if (!ctx)
        goto fail;
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        ALLOW(plain[i]);
    /* fstat() is newfstatat(fd, "", AT_EMPTY_PATH); a stat by path is refused. */
    ALLOW_IF("newfstatat", SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
    ALLOW_IF("statx", SCMP_A2(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
    /* isatty() of stdio (an app's printf to a terminal) */
    ALLOW_IF("ioctl", INT_IS(1, TCGETS));
    /* files: only under the session directory, and read-only under cache_dir */
    ALLOW_IF("openat", FD_IS(0, dir));
    ALLOW_IF("openat", FD_IS(0, cache),
             SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND, O_RDONLY));
    ALLOW_IF("renameat", FD_IS(0, dir), FD_IS(2, dir));
    ALLOW_IF("renameat2", FD_IS(0, dir), FD_IS(2, dir));
    ALLOW_IF("unlinkat", FD_IS(0, dir));
    /* a reused snapshot file cut to its new length; never stdin, stdout or stderr (stderr
     * may be the node's log file); the log page it holds is sealed against it */
    ALLOW_IF("ftruncate", SCMP_A0(SCMP_CMP_GT, 2));
    /* the snapshot child's report */
    ALLOW_IF("sendto", FD_IS(0, rep));
    ALLOW_IF("sendmsg", FD_IS(0, rep));
    /* the snapshot child: exactly the runtime's fork (file comment), its pdeath signal,
     * its own process group; signals only to the caller's own group */
    ALLOW_IF("clone", SCMP_A0(SCMP_CMP_EQ, CLONE_PARENT | CLONE_PIDFD));
    ALLOW_IF("clone", SCMP_A0(SCMP_CMP_EQ, CLONE_PARENT));
    ALLOW("eventfd2");   /* a hot standby's wake-up */
    ALLOW_IF("prctl", INT_IS(0, PR_SET_PDEATHSIG));
    ALLOW_IF("prctl", INT_IS(0, PR_SET_NAME));   /* its title in ps: snapshot, standby */
    ALLOW_IF("setpgid", INT_IS(0, 0), INT_IS(1, 0));
    ALLOW_IF("kill", INT_IS(0, 0));
    /* handlers for every signal but SIGSYS: the sandbox's own stays */
    ALLOW_IF("rt_sigaction", SCMP_A0(SCMP_CMP_LT, SIGSYS));
#if SIGSYS == 31   /* 32..63 in one masked compare, then 64: a short filter loads faster */
    ALLOW_IF("rt_sigaction", SCMP_A0(SCMP_CMP_MASKED_EQ, ~31ull, 32));
    ALLOW_IF("rt_sigaction", SCMP_A0(SCMP_CMP_EQ, 64));
#else
    for (int s = SIGSYS + 1; s <= 64; s++)
        ALLOW_IF("rt_sigaction", SCMP_A0(SCMP_CMP_EQ, (uint64_t)s));
#endif
    step = "clone3";
    if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
        goto fail;
    /* A binary tree of syscall numbers rather than a list: the kernel walks the filter for
     * every syscall number when a worker installs it (its cache of calls allowed whatever
     * the arguments, seccomp_cache_prepare), and through a list of ~60 rules that took a
     * median 150 us per worker, against 80 us through the tree (the filter installed by
     * 400 workers, each timed). The calls allowed outright (read, write, futex: the
     * doorbells) then never run the filter at all, so no order among the rules matters;
     * a libseccomp without the attribute keeps the list. */
    if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) < 0)
        LOG(LOG_DEBUG, "msg=\"seccomp: no binary tree (libseccomp < 2.5): a list\"");

    /* libseccomp 2.5 exports to a descriptor only */
    step = "export";
    mfd = memfd_create("cessna-seccomp", MFD_CLOEXEC);
    if (mfd == -1) {
        rc = -errno;
        goto fail;
    }
    if ((rc = seccomp_export_bpf(ctx, mfd)) < 0)
        goto fail;
    n = pread(mfd, SB.insns, sizeof(SB.insns), 0);
    if (n <= 0 || n % (ssize_t)sizeof(struct sock_filter) || n == (ssize_t)sizeof(SB.insns)) {
        rc = n < 0 ? -errno : -E2BIG;
        goto fail;
    }
    SB.ninsns = (unsigned short)(n / (ssize_t)sizeof(struct sock_filter));
    close(mfd);
    seccomp_release(ctx);
    return 0;
fail:
    snprintf(err, errlen, "sandbox: seccomp filter (%s): %s", step, strerror(-rc));
    if (mfd >= 0)
        close(mfd);
    if (ctx)
        seccomp_release(ctx);
    return rc < 0 ? rc : -EINVAL;
}

int sandbox_init(int enabled, const char *user, char *err, size_t errlen)
{
    long abi;
    int rc;

    memset(&SB, 0, sizeof(SB));
    SB.enabled = enabled;
    if (!enabled) {
        LOG(LOG_WARN, "msg=\"sandbox off: apps run unconfined, with this process's rights\"");
        return 0;
    }
    if (geteuid() == 0 && user && *user && strcmp(user, "root") != 0) {
        struct passwd *pw = getpwnam(user);
        if (!pw) {
            snprintf(err, errlen, "worker_user %s: no such user", user);
            return -ENOENT;
        }
        SB.drop = pw->pw_uid != 0;
        SB.uid = pw->pw_uid;
        SB.gid = pw->pw_gid;
    }
    /* The kept descriptors go just below 64, out of the way of the few an app opens: a
     * process's first 64 descriptors live in its files_struct, and one numbered higher
     * makes the kernel allocate a table for 1,024 (8 KiB a worker, 80 MiB at 10,000). */
    SB.fd_base = SANDBOX_FD_TOP - 4;
    abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    SB.landlock_abi = abi > 0 ? (int)abi : 0;
    if (!SB.landlock_abi)
        LOG(LOG_WARN, "msg=\"Landlock unavailable: a worker's files are confined by the seccomp "
            "filter and the permissions of state_dir only\" error=\"%s\"", strerror(errno));
    for (int nr = 0; nr < SB_MAX_NR; nr++) {
        char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
        snprintf(SB.names[nr], sizeof(SB.names[nr]), "%s", name ? name : "");
        free(name);
    }
    if ((rc = compile_filter(err, errlen)) < 0)
        return rc;
    LOG(LOG_INFO, "msg=\"sandbox on\" worker_user=%s uid=%d landlock_abi=%d filter_insns=%u",
        SB.drop ? user : "(unchanged)", SB.drop ? (int)SB.uid : (int)geteuid(),
        SB.landlock_abi, SB.ninsns);
    return 0;
}

/* ---- the SIGSYS handler (async-signal-safe) ---- */

#if defined(__x86_64__)
#define SB_ARG(uc, i) ((uint64_t)(uc)->uc_mcontext.gregs[(int[]){ REG_RDI, REG_RSI, REG_RDX, \
                                                               REG_R10, REG_R8, REG_R9 }[i]])
#define SB_SET_RET(uc, v) ((uc)->uc_mcontext.gregs[REG_RAX] = (greg_t)(v))
#elif defined(__aarch64__)
#define SB_ARG(uc, i) ((uint64_t)(uc)->uc_mcontext.regs[i])
#define SB_SET_RET(uc, v) ((uc)->uc_mcontext.regs[0] = (uint64_t)(v))
#endif

struct sb_text {
    char buf[256];
    size_t len;
};

static void put(struct sb_text *t, const char *s)
{
    while (*s && t->len < sizeof(t->buf) - 1)
        t->buf[t->len++] = *s++;
    t->buf[t->len] = 0;
}

static void put_num(struct sb_text *t, long long v)
{
    char d[24];
    int i = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

    if (v < 0)
        put(t, "-");
    do {
        d[i++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (i > 0) {
        char c[2] = { d[--i], 0 };
        put(t, c);
    }
}

static void call_name(struct sb_text *t, int nr)
{
    if (nr >= 0 && nr < SB_MAX_NR && SB.names[nr][0]) {
        put(t, SB.names[nr]);
    } else {
        put(t, "syscall ");
        put_num(t, nr);
    }
}

/* A signal the caller sends to itself: 1 and *sig set. */
static int self_signal(int nr, ucontext_t *uc, int *sig)
{
#ifdef SB_ARG
    pid_t me = getpid();
    long tid = syscall(SYS_gettid);

    if (nr == SYS_kill && (pid_t)SB_ARG(uc, 0) == me) {
        *sig = (int)SB_ARG(uc, 1);
        return 1;
    }
    if (nr == SYS_tgkill && (pid_t)SB_ARG(uc, 0) == me && (pid_t)SB_ARG(uc, 1) == tid) {
        *sig = (int)SB_ARG(uc, 2);
        return 1;
    }
    if (nr == SYS_tkill && (pid_t)SB_ARG(uc, 0) == tid) {
        *sig = (int)SB_ARG(uc, 1);
        return 1;
    }
#endif
    (void)nr; (void)uc; (void)sig;
    return 0;
}

static void on_sigsys(int signo, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    int nr = si->si_syscall, sig, saved = errno;
    struct sb_text t = { .len = 0 };

    (void)signo;
    if (self_signal(nr, uc, &sig)) {
        /* This process leads its own group: kill(0) reaches itself (file comment). */
        long rc = syscall(SYS_kill, 0, sig);
#ifdef SB_SET_RET
        SB_SET_RET(uc, rc == -1 ? -errno : 0);
#endif
        errno = saved;
        return;
    }
    put(&t, "app called ");
#ifdef SB_ARG
    uint64_t flags = SB_ARG(uc, 0);
    if (nr == SYS_clone && (flags & CLONE_THREAD)) {
        put(&t, "pthread_create() (clone with CLONE_THREAD): a worker runs one thread");
    } else if (nr == SYS_clone && (flags & CLONE_VFORK)) {
        put(&t, "posix_spawn() or vfork() (clone with CLONE_VFORK): a worker may not start "
                "processes");
    } else if (nr == SYS_clone) {
        put(&t, "fork() (clone): a worker may not start processes");
    } else if (nr == SYS_kill || nr == SYS_tgkill || nr == SYS_tkill) {
        call_name(&t, nr);
        put(&t, "() on process ");
        put_num(&t, (long long)(pid_t)SB_ARG(uc, 0));
        put(&t, ": a worker may signal only itself");
    } else
#endif
    {
        call_name(&t, nr);
        put(&t, "(), which a worker may not use");
        if (nr == SYS_openat || nr == SYS_open)
            put(&t, " (no files outside its session)");
    }
    if (SB.in_child) {
        /* A snapshot child runs no app code: this is a runtime bug. Say so, and end it. */
        log_safe(LOG_ERROR, "snapshot child stopped by the sandbox: ", t.buf);
        if (SB.child_fail)
            SB.child_fail(t.buf);
        _exit(1);
    }
    if (SB.fail)
        SB.fail(t.buf);
    _exit(1);
}

/* ---- worker ---- */

static int move_fd(int *fd, int to, const char *what, char *err, size_t errlen)
{
    if (*fd < 0 || *fd == to)
        return 0;
    if (fcntl(to, F_GETFD) != -1) {   /* dup3 would close it silently */
        snprintf(err, errlen, "sandbox: descriptor %d, wanted for the %s, is in use", to, what);
        return -EBUSY;
    }
    if (dup3(*fd, to, O_CLOEXEC) == -1) {
        snprintf(err, errlen, "sandbox: dup of the %s descriptor to %d: %s", what, to,
                 strerror(errno));
        return -errno;
    }
    close(*fd);
    *fd = to;
    return 0;
}

static int add_path_rule(int ruleset, int fd, uint64_t access)
{
    struct landlock_path_beneath_attr pb = { .allowed_access = access, .parent_fd = fd };

    if (syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) == -1)
        return -errno;
    return 0;
}

static int landlock(const struct sandbox_fds *fds, char *err, size_t errlen)
{
    const int abi = SB.landlock_abi;
    struct sb_ruleset_attr ra = { 0 };
    uint64_t rw, ro = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
    size_t size = 8;
    int rs, rc;

    if (!abi)
        return 0;
    ra.handled_access_fs = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;   /* ABI 1: bits 0..12 */
    if (abi >= 2)
        ra.handled_access_fs |= SB_LL_FS_REFER;
    if (abi >= 3)
        ra.handled_access_fs |= SB_LL_FS_TRUNCATE;
    if (abi >= 5)
        ra.handled_access_fs |= SB_LL_FS_IOCTL_DEV;
    if (abi >= 4) {
        ra.handled_access_net = SB_LL_NET_BIND_TCP | SB_LL_NET_CONNECT_TCP;
        size = 16;
    }
    if (abi >= 6) {
        ra.scoped = SB_LL_SCOPE_ABSTRACT_UNIX | SB_LL_SCOPE_SIGNAL;
        size = 24;
    }
    rw = ro | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_FILE |
         LANDLOCK_ACCESS_FS_MAKE_REG | (abi >= 3 ? SB_LL_FS_TRUNCATE : 0);
    rs = (int)syscall(SYS_landlock_create_ruleset, &ra, size, 0);
    if (rs == -1) {
        snprintf(err, errlen, "sandbox: landlock_create_ruleset: %s", strerror(errno));
        return -errno;
    }
    if ((rc = add_path_rule(rs, fds->session_dir, rw)) < 0 ||
        (fds->cache_dir >= 0 && (rc = add_path_rule(rs, fds->cache_dir, ro)) < 0)) {
        snprintf(err, errlen, "sandbox: landlock_add_rule: %s", strerror(-rc));
        close(rs);
        return rc;
    }
    if (syscall(SYS_landlock_restrict_self, rs, 0) == -1) {
        rc = -errno;
        snprintf(err, errlen, "sandbox: landlock_restrict_self: %s", strerror(errno));
        close(rs);
        return rc;
    }
    close(rs);
    return 0;
}

int sandbox_enter(struct sandbox_fds *fds, void (*fail)(const char *text),
                  char *err, size_t errlen)
{
    struct sigaction sa;
    struct sock_fprog prog = { .len = SB.ninsns, .filter = SB.insns };
    int rc;

    if (!SB.enabled)
        return 0;
    if (setpgid(0, 0) == -1) {
        snprintf(err, errlen, "sandbox: setpgid: %s", strerror(errno));
        return -errno;
    }
    if ((rc = move_fd(&fds->report, SB.fd_base, "report", err, errlen)) < 0 ||
        (rc = move_fd(&fds->session_dir, SB.fd_base + 1, "session directory", err, errlen)) < 0 ||
        (rc = move_fd(&fds->cache_dir, SB.fd_base + 2, "cache_dir", err, errlen)) < 0)
        return rc;
    if (SB.drop) {
        if (setgroups(1, &SB.gid) == -1 || setgid(SB.gid) == -1 || setuid(SB.uid) == -1) {
            snprintf(err, errlen, "sandbox: cannot become uid %d: %s", (int)SB.uid,
                     strerror(errno));
            return -EPERM;
        }
        /* A change of credentials clears the parent-death signal: set it again. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
        snprintf(err, errlen, "sandbox: no_new_privs: %s", strerror(errno));
        return -errno;
    }
    if ((rc = landlock(fds, err, errlen)) < 0)
        return rc;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) == -1) {
        snprintf(err, errlen, "sandbox: sigaction: %s", strerror(errno));
        return -errno;
    }
    SB.fail = fail;
    SB.in_child = 0;
    /* SPEC_ALLOW: no speculative-store-bypass mitigation forced on the worker (older
     * kernels did that to every seccomp'd process); the app could only reach its own
     * memory that way, which it can read anyway. */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, &prog) == -1 &&
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == -1) {
        snprintf(err, errlen, "sandbox: seccomp: %s", strerror(errno));
        return -errno;
    }
    return 0;
}

/* ---- refused by name before they reach the filter (file comment) ---- */

__attribute__((noreturn))
static void refuse(const char *call, const char *why)
{
    struct sb_text t = { .len = 0 };

    put(&t, "app called ");
    put(&t, call);
    put(&t, "(), which a worker may not use: ");
    put(&t, why);
    SB.fail(t.buf);
    _exit(1);
}

#define PASS_THROUGH(name, type) ((type)dlsym(RTLD_NEXT, name))

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    typedef int (*real_t)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (SB.fail)
        refuse("pthread_create", "a worker runs one thread");
    return PASS_THROUGH("pthread_create", real_t)(t, a, fn, arg);
}

/* <spawn.h> is hidden by common/spawn.h: the pointer arguments are passed through opaque. */
int posix_spawn(pid_t *pid, const char *path, const void *fa, const void *at,
                char *const argv[], char *const envp[]);
int posix_spawnp(pid_t *pid, const char *file, const void *fa, const void *at,
                 char *const argv[], char *const envp[]);

int posix_spawn(pid_t *pid, const char *path, const void *fa, const void *at,
                char *const argv[], char *const envp[])
{
    typedef int (*real_t)(pid_t *, const char *, const void *, const void *, char *const[],
                          char *const[]);
    if (SB.fail)
        refuse("posix_spawn", "a worker may not start processes");
    return PASS_THROUGH("posix_spawn", real_t)(pid, path, fa, at, argv, envp);
}

int posix_spawnp(pid_t *pid, const char *file, const void *fa, const void *at,
                 char *const argv[], char *const envp[])
{
    typedef int (*real_t)(pid_t *, const char *, const void *, const void *, char *const[],
                          char *const[]);
    if (SB.fail)
        refuse("posix_spawnp", "a worker may not start processes");
    return PASS_THROUGH("posix_spawnp", real_t)(pid, file, fa, at, argv, envp);
}

int system(const char *cmd)
{
    typedef int (*real_t)(const char *);
    if (SB.fail)
        refuse("system", "a worker may not start processes");
    return PASS_THROUGH("system", real_t)(cmd);
}

FILE *popen(const char *cmd, const char *mode)
{
    typedef FILE *(*real_t)(const char *, const char *);
    if (SB.fail)
        refuse("popen", "a worker may not start processes");
    return PASS_THROUGH("popen", real_t)(cmd, mode);
}

void sandbox_snapshot_child(void (*fail)(const char *text))
{
    if (!SB.enabled)
        return;
    SB.in_child = 1;
    SB.child_fail = fail;
    if (setpgid(0, 0) == -1)
        _exit(1);   /* it would share the worker's group: a raise() here would reach it */
}

void sandbox_resume_worker(void)
{
    SB.in_child = 0;
}
