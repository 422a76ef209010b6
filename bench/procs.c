/* procs.c - the bench's children: one fork wrapper, ready lines, stopping, temp files.
 *
 * Every child leads its own process group (so the supervisor's workers go with it), dies
 * with the bench (PR_SET_PDEATHSIG), and is stopped with SIGTERM, then SIGKILL to the whole
 * group after a grace period, then reaped. SIGINT, SIGTERM or SIGHUP to the bench kills
 * every group and removes the temp dir.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* Live children, for the signal thread. */
static pid_t live_pids[32];
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static char sig_tmpdir[PATH_MAX]; /* removed on a fatal signal, unless empty */
static atomic_int interrupted;
static struct rlimit machine_nofile; /* as the bench found it; rlim_max 0: not read */

/* A fatal signal came: the children are being killed, failures are expected. */
int proc_interrupted(void)
{
    return atomic_load(&interrupted);
}

static void live_add(pid_t pid)
{
    pthread_mutex_lock(&live_mu);
    for (size_t i = 0; i < sizeof(live_pids) / sizeof(live_pids[0]); i++)
        if (live_pids[i] == 0) {
            live_pids[i] = pid;
            break;
        }
    pthread_mutex_unlock(&live_mu);
}

static void live_del(pid_t pid)
{
    pthread_mutex_lock(&live_mu);
    for (size_t i = 0; i < sizeof(live_pids) / sizeof(live_pids[0]); i++)
        if (live_pids[i] == pid)
            live_pids[i] = 0;
    pthread_mutex_unlock(&live_mu);
}

/* SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken here, so the bench can
 * clean up with ordinary calls: kill every child group, remove the temp dir. */
static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;

    while (sigwait(set, &sig) != 0)
        ;
    atomic_store(&interrupted, 1);
    pthread_mutex_lock(&live_mu);
    for (size_t i = 0; i < sizeof(live_pids) / sizeof(live_pids[0]); i++)
        if (live_pids[i] > 0) {
            kill(-live_pids[i], SIGKILL);
            kill(live_pids[i], SIGKILL);
        }
    /* Quickly, before the main thread reports the broken paths: the killed children are
     * reaped by init once the bench is gone. */
    proc_tmpdir_remove(sig_tmpdir);
    fprintf(stderr, "cessna-bench: %s, stopped every child\n", strsignal(sig));
    _exit(128 + sig);
}

int proc_install_signals(const char *tmpdir, char *err, size_t errlen)
{
    static sigset_t set;
    pthread_t th;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (tmpdir)
        snprintf(sig_tmpdir, sizeof(sig_tmpdir), "%s", tmpdir);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    rc = pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any other thread exists */
    if (rc == 0)
        rc = pthread_create(&th, NULL, signal_thread, &set);
    if (rc == 0)
        rc = pthread_detach(th);
    if (rc != 0) {
        snprintf(err, errlen, "signal thread: %s", strerror(rc));
        return -rc;
    }
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void write_all_fd(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void log_append(const struct bench_proc *p, const char *buf, size_t len)
{
    int fd = open(p->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

    if (fd == -1)
        return;
    write_all_fd(fd, buf, len);
    close(fd);
}

/* Copy whatever the child printed on stdout since the ready line into its log, so the pipe
 * never fills. */
static void proc_drain(struct bench_proc *p)
{
    char buf[4096];
    ssize_t n;

    if (p->out_fd < 0)
        return;
    while ((n = read(p->out_fd, buf, sizeof(buf))) > 0)
        log_append(p, buf, (size_t)n);
}

/* The last non-empty line of the child's log, for error messages. */
static void proc_log_tail(const struct bench_proc *p, char *out, size_t outlen)
{
    char buf[2048];
    ssize_t n = 0;
    int fd = open(p->log_path, O_RDONLY | O_CLOEXEC);

    out[0] = 0;
    if (fd == -1)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    if (size > 0 && lseek(fd, from, SEEK_SET) != -1)
        n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = 0;
    const char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    if (strlen(line) >= outlen) /* keep the end: that is where the reason is */
        line += strlen(line) - outlen + 1;
    memcpy(out, line, strlen(line) + 1);
}

void proc_log_last(const struct bench_proc *p, char *out, size_t outlen)
{
    proc_log_tail(p, out, outlen);
}

static void describe_exit(const siginfo_t *si, char *out, size_t outlen)
{
    if (si->si_code == CLD_EXITED)
        snprintf(out, outlen, "exited with status %d", si->si_status);
    else if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
        snprintf(out, outlen, "was killed by signal %d (%s)", si->si_status,
                 strsignal(si->si_status));
    else
        snprintf(out, outlen, "has exited");
}

/* Has the child ended? Looks without reaping, so its pid (and group) stay reserved. */
static int proc_exited(const struct bench_proc *p, siginfo_t *si)
{
    memset(si, 0, sizeof(*si));
    if (waitid(P_PID, (id_t)p->pid, si, WEXITED | WNOHANG | WNOWAIT) == -1)
        return errno == ECHILD;
    return si->si_pid != 0;
}

int proc_check(struct bench_proc *p, char *err, size_t errlen)
{
    char how[96], tail[512];
    siginfo_t si;

    if (p->pid <= 0) {
        snprintf(err, errlen, "%s is not running", p->name);
        return -ESRCH;
    }
    proc_drain(p);
    if (!proc_exited(p, &si))
        return 0;
    describe_exit(&si, how, sizeof(how));
    proc_log_tail(p, tail, sizeof(tail));
    snprintf(err, errlen, "%s %s%s%s (log %s)", p->name, how, tail[0] ? "; last log line: " : "",
             tail, p->log_path);
    return -ECHILD;
}

/* In the child: own group, die with the bench, default signals, stdio in place, and no
 * descriptor but the one it must keep. */
static void child_setup(const struct proc_spec *spec, pid_t parent, int out_w, int log_fd)
{
    sigset_t none;
    int devnull = open("/dev/null", O_RDWR);

    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (devnull != -1)
        dup2(devnull, STDIN_FILENO);
    dup2(out_w >= 0 ? out_w : log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);

    int keep = spec->keep_fd;
    if (keep > STDERR_FILENO) {
        close_range(STDERR_FILENO + 1, (unsigned)keep - 1, 0);
        close_range((unsigned)keep + 1, ~0U, 0);
    } else {
        close_range(STDERR_FILENO + 1, ~0U, 0);
    }
}

static void child_limits(const struct proc_spec *spec)
{
    if (spec->machine_nofile && machine_nofile.rlim_max)
        setrlimit(RLIMIT_NOFILE, &machine_nofile); /* lowering is always allowed */
}

/* A child that runs one of the bench's own mains execs the bench first ("--child NAME FD",
 * bench.c): a fork of a process with threads inherits every lock another thread held at
 * that moment, and under AddressSanitizer an echo server forked that way hung for good in
 * its allocator's lock (1 run in ~150 under load). Exec'd, it starts with one thread. */
static void child_run(const struct proc_spec *spec)
{
    const char *name = spec->fn ? echo_child_name(spec->fn) : NULL;

    if (name && spec->keep_fd >= 0) {
        char fd[16], self[PATH_MAX];
        char *const av[] = { "cessna-bench", "--child", (char *)name, fd, NULL };
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        snprintf(fd, sizeof(fd), "%d", spec->keep_fd);
        fcntl(spec->keep_fd, F_SETFD, 0);   /* it crosses the exec */
        self[n > 0 ? n : 0] = 0;
        execv(n > 0 ? self : "/proc/self/exe", av);   /* by its path: ps names it so */
        fprintf(stderr, "cessna-bench: exec %s: %s; running %s in the fork\n", self,
                strerror(errno), name);
    }
    if (spec->argv) {
        execv(spec->argv[0], spec->argv);
        fprintf(stderr, "cessna-bench: exec %s: %s\n", spec->argv[0], strerror(errno));
        _exit(127);
    }
    _exit(spec->fn(spec->arg) == 0 ? 0 : 1);
}

/* The one fork wrapper: a child running spec->fn or exec'ing spec->argv. */
int proc_start(struct bench_proc *p, const struct proc_spec *spec, const char *dir,
               char *err, size_t errlen)
{
    int pipefd[2] = { -1, -1 }, log_fd, rc;
    pid_t parent = getpid(), pid;

    memset(p, 0, sizeof(*p));
    p->out_fd = -1;
    snprintf(p->name, sizeof(p->name), "%s", spec->name);
    snprintf(p->log_path, sizeof(p->log_path), "%s/%s.log", dir, spec->name);

    log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd == -1) {
        rc = -errno;
        snprintf(err, errlen, "%s: open %s: %s", p->name, p->log_path, strerror(errno));
        return rc;
    }
    if (spec->want_stdout && pipe2(pipefd, O_CLOEXEC) == -1) {
        rc = -errno;
        snprintf(err, errlen, "%s: pipe: %s", p->name, strerror(errno));
        goto fail;
    }
    if (pipefd[0] >= 0) {
        /* Our end only: reads never block (a surviving grandchild may hold the write end). */
        fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
        fcntl(pipefd[0], F_SETPIPE_SZ, 1 << 20); /* best effort: more room between drains */
    }

    fflush(NULL);
    pid = fork();
    if (pid == -1) {
        rc = -errno;
        snprintf(err, errlen, "%s: fork: %s", p->name, strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        child_setup(spec, parent, pipefd[1], log_fd);
        child_limits(spec);
        child_run(spec);
    }
    setpgid(pid, pid); /* also here, so a kill of the group right away finds it */
    p->pid = pid;
    live_add(pid);
    close(log_fd);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    p->out_fd = pipefd[0];
    return 0;

fail:
    close(log_fd);
    if (pipefd[0] >= 0) {
        close(pipefd[0]);
        close(pipefd[1]);
    }
    return rc;
}

/* Is this line "ready listen=HOST:PORT"? Copies HOST:PORT into addr. */
static int parse_ready(const char *line, char *addr, size_t addrlen)
{
    const char *v;
    size_t n;

    if (strncmp(line, "ready ", 6) != 0 || !(v = strstr(line, "listen=")))
        return 0;
    v += 7;
    n = strcspn(v, " \t\r\n");
    if (n == 0 || n >= addrlen)
        return 0;
    memcpy(addr, v, n);
    addr[n] = 0;
    return 1;
}

/* Read the child's stdout until a "ready listen=HOST:PORT" line. Other lines go to its log. */
int proc_read_ready(struct bench_proc *p, int timeout_ms, char *addr, size_t addrlen,
                    char *err, size_t errlen)
{
    char buf[4096];
    size_t have = 0;
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        char *nl;

        while ((nl = memchr(buf, '\n', have))) {
            size_t linelen = (size_t)(nl - buf) + 1;

            *nl = 0;
            if (parse_ready(buf, addr, addrlen)) {
                log_append(p, nl + 1, have - linelen);
                return 0;
            }
            *nl = '\n';
            log_append(p, buf, linelen);
            memmove(buf, nl + 1, have - linelen);
            have -= linelen;
        }
        if (have == sizeof(buf) - 1) { /* an endless line: keep it in the log */
            log_append(p, buf, have);
            have = 0;
        }

        uint64_t now = now_ms();
        if (now >= deadline) {
            snprintf(err, errlen, "%s printed no 'ready listen=HOST:PORT' line within %d ms (log %s)",
                     p->name, timeout_ms, p->log_path);
            return -ETIMEDOUT;
        }
        struct pollfd pfd = { .fd = p->out_fd, .events = POLLIN };
        int n = poll(&pfd, 1, (int)(deadline - now));
        if (n == -1 && errno != EINTR) {
            int rc = -errno;
            snprintf(err, errlen, "%s: poll: %s", p->name, strerror(errno));
            return rc;
        }
        if (n <= 0)
            continue;
        ssize_t r = read(p->out_fd, buf + have, sizeof(buf) - 1 - have);
        if (r > 0) {
            have += (size_t)r;
            continue;
        }
        if (r == -1 && (errno == EINTR || errno == EAGAIN))
            continue;
        /* EOF: the child is gone, or closed stdout without the line. */
        if (have)
            log_append(p, buf, have);
        sleep_ms(50); /* let it finish exiting, for a better message */
        if (proc_check(p, err, errlen) == 0)
            snprintf(err, errlen, "%s closed stdout without a ready line (log %s)", p->name,
                     p->log_path);
        return -EPIPE;
    }
}

static int port_accepts(int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

    if (fd == -1)
        return 0;
    ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
    close(fd);
    return ok;
}

/* Wait until 127.0.0.1:port accepts connections while the child still runs. */
int proc_wait_port(struct bench_proc *p, int port, int timeout_ms, char *err, size_t errlen)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int rc;

    for (;;) {
        rc = proc_check(p, err, errlen);
        if (rc < 0)
            return rc;
        if (port_accepts(port))
            return 0;
        if (now_ms() >= deadline) {
            snprintf(err, errlen, "%s does not accept on 127.0.0.1:%d after %d ms (log %s)",
                     p->name, port, timeout_ms, p->log_path);
            return -ETIMEDOUT;
        }
        sleep_ms(20);
    }
}

/* SIGTERM; after grace_ms, SIGKILL to the whole group (stragglers too); then reap. */
void proc_stop(struct bench_proc *p, int grace_ms)
{
    siginfo_t si;
    int st;

    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    for (int waited = 0; waited < grace_ms && !proc_exited(p, &si); waited += 10)
        sleep_ms(10);
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, &st, 0) == -1 && errno == EINTR)
        ;
    live_del(p->pid);
    p->pid = 0;
    proc_drain(p);
    if (p->out_fd >= 0)
        close(p->out_fd);
    p->out_fd = -1;
}

int proc_tmpdir_create(char *dir, size_t len, char *err, size_t errlen)
{
    const char *base = getenv("TMPDIR");
    int rc;

    /* Short: the control socket's path must fit in sun_path. */
    if (!base || !*base || strlen(base) > 40)
        base = "/tmp";
    snprintf(dir, len, "%s/cessna-bench.XXXXXX", base);
    if (!mkdtemp(dir)) {
        rc = -errno;
        snprintf(err, errlen, "mkdtemp %s: %s", dir, strerror(errno));
        return rc;
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

void proc_tmpdir_remove(const char *dir)
{
    if (dir[0])
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static long read_nr_open(void)
{
    FILE *f = fopen("/proc/sys/fs/nr_open", "re");
    long v = -1;

    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

void proc_raise_nofile(FILE *f, long want)
{
    struct rlimit rl;
    char hard_note[160] = "";

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        fprintf(f, "RLIMIT_NOFILE: getrlimit: %s.\n\n", strerror(errno));
        return;
    }
    machine_nofile = rl;
    if ((long)rl.rlim_max < want && geteuid() == 0) {
        long nr_open = read_nr_open();
        struct rlimit up = { .rlim_cur = (rlim_t)want, .rlim_max = (rlim_t)want };

        if (nr_open > 0 && want > nr_open)
            up.rlim_cur = up.rlim_max = (rlim_t)nr_open;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            snprintf(hard_note, sizeof(hard_note), "; hard limit raised from %lu",
                     (unsigned long)rl.rlim_max);
        else
            snprintf(hard_note, sizeof(hard_note), "; raising the hard limit to %lu as root "
                     "failed: %s (no CAP_SYS_RESOURCE?)", (unsigned long)up.rlim_max,
                     strerror(errno));
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < rl.rlim_max && (long)rl.rlim_cur < want) {
        rl.rlim_cur = (long)rl.rlim_max < want ? rl.rlim_max : (rlim_t)want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
            fprintf(stderr, "cessna-bench: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    fprintf(f, "RLIMIT_NOFILE: the machine's %lu soft / %lu hard (the edge runs under these); "
               "the bench, its load generator, echo servers and HAProxy: %lu / %lu (%ld wanted)"
               "%s.\n\n",
            (unsigned long)machine_nofile.rlim_cur, (unsigned long)machine_nofile.rlim_max,
            (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max, want, hard_note);
    fflush(f);
}

long proc_nofile_soft(void)
{
    struct rlimit rl;

    return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : -1;
}

long proc_nofile_hard(void)
{
    struct rlimit rl;

    return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_max : -1;
}

long proc_machine_nofile(void)
{
    return machine_nofile.rlim_max ? (long)machine_nofile.rlim_cur : proc_nofile_soft();
}

/* Run argv to its end (a tool: gnuplot), its output in DIR/name.log: 0 when it exited with
 * status 0, else -errno with err set. Killed after timeout_ms. */
int proc_run(const char *name, char *const argv[], const char *dir, int timeout_ms, char *err,
             size_t errlen)
{
    struct proc_spec spec = { .name = name, .keep_fd = -1, .argv = argv };
    struct bench_proc p;
    siginfo_t si;
    int rc = proc_start(&p, &spec, dir, err, errlen);

    if (rc < 0)
        return rc;
    for (int waited = 0; !proc_exited(&p, &si); waited += 10) {
        if (waited >= timeout_ms) {
            proc_stop(&p, 0);
            snprintf(err, errlen, "%s did not finish within %d ms (log %s)", argv[0],
                     timeout_ms, p.log_path);
            return -ETIMEDOUT;
        }
        sleep_ms(10);
    }
    if (si.si_code != CLD_EXITED || si.si_status != 0) {
        char how[96], tail[512];

        describe_exit(&si, how, sizeof(how));
        proc_log_tail(&p, tail, sizeof(tail));
        snprintf(err, errlen, "%s %s%s%s (log %s)", argv[0], how,
                 tail[0] ? ": " : "", tail, p.log_path);
        rc = -EIO;
    }
    proc_stop(&p, 0); /* reaps */
    return rc;
}
