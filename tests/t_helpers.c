/* t_helpers.c - see t_helpers.h. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "wire.h"

static char pathbuf[8][512];
static int pathidx;

static const char *path_of(const char *kind, const char *name, const char *suffix)
{
    char *p = pathbuf[pathidx++ % 8];
    snprintf(p, 512, "%s/%s/%s%s", CESSNA_BUILD_DIR, kind, name, suffix);
    return p;
}

const char *t_bin(const char *name) { return path_of("bin", name, ""); }
const char *t_app(const char *name) { return path_of("apps", name, ".so"); }
const char *t_tool(const char *name) { return path_of("tools", name, ""); }
const char *t_test_app(const char *name) { return path_of("tests/apps", name, ".so"); }

const char *t_tmpdir(void)
{
    static char dir[256];
    snprintf(dir, sizeof(dir), "/tmp/cessna-test.XXXXXX");
    if (!mkdtemp(dir))
        cr_assert_fail("mkdtemp: %s", strerror(errno));
    return dir;
}

long t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pid_t t_start_raw(const char *dir, const char *name, char *const argv[], int *out_fd)
{
    int pfd[2];
    char log[512];
    pid_t pid;

    snprintf(log, sizeof(log), "%s/%s.log", dir, name);
    if (pipe2(pfd, O_CLOEXEC) == -1)
        cr_assert_fail("pipe: %s", strerror(errno));
    pid = fork();
    if (pid == -1)
        cr_assert_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* a failed test leaves nothing running */
        dup2(pfd[1], 1);
        if (lfd >= 0)
            dup2(lfd, 2);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    *out_fd = pfd[0];
    return pid;
}

void t_start(struct t_proc *p, const char *dir, const char *name, char *const argv[])
{
    char buf[512];
    size_t len = 0;
    long deadline = t_now_ms() + 10000;

    memset(p, 0, sizeof(*p));
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, name);
    p->pid = t_start_raw(dir, name, argv, &p->out_fd);
    while (t_now_ms() < deadline) {
        struct pollfd pfd = { .fd = p->out_fd, .events = POLLIN };
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = read(p->out_fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        char *r = strstr(buf, "ready listen=");
        if (r && strchr(r, '\n')) {
            r += strlen("ready listen=");
            *strchr(r, '\n') = 0;
            snprintf(p->addr, sizeof(p->addr), "%s", r);
            return;
        }
    }
    kill(p->pid, SIGKILL);
    cr_assert_fail("%s did not become ready (log: %s)", name, p->log);
}

int t_wait(pid_t pid, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;
    int status;

    do {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        usleep(5000);
    } while (t_now_ms() < deadline);
    return -1;
}

int t_stop(struct t_proc *p)
{
    int status;

    if (p->pid <= 0)
        return 0;
    kill(p->pid, SIGTERM);
    status = t_wait(p->pid, 2000);
    if (status == -1) {
        kill(p->pid, SIGKILL);
        status = t_wait(p->pid, 2000);
    }
    close(p->out_fd);
    p->pid = 0;
    return status;
}

void t_edge_start(struct t_edge *e, const char *app, const char *server_addr, const char *extra)
{
    char cfg[600];
    FILE *f;

    snprintf(e->dir, sizeof(e->dir), "%s", t_tmpdir());
    snprintf(e->control, sizeof(e->control), "%s/control.sock", e->dir);
    snprintf(cfg, sizeof(cfg), "%s/edge.ini", e->dir);
    f = fopen(cfg, "w");
    if (!f)
        cr_assert_fail("write %s: %s", cfg, strerror(errno));
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s/state\n"
               "control = %s\n%s", server_addr, app, e->dir, e->control, extra ? extra : "");
    fclose(f);
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&e->sup, e->dir, "supervisor", argv);
}

void t_edge_stop(struct t_edge *e)
{
    t_stop(&e->sup);
}

void t_ctl(const struct t_edge *e, const char *cmd, char *out, size_t len)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t got = 0;
    ssize_t n;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e->control);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
        cr_assert_fail("control socket %s: %s", e->control, strerror(errno));
    char line[256];
    int n0 = snprintf(line, sizeof(line), "%s\n", cmd);
    t_write_all(fd, line, (size_t)n0);   /* one write: the supervisor reads one line */
    while (got + 1 < len && (n = read(fd, out + got, len - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = 0;
    close(fd);
}

int t_wait_sessions(const struct t_edge *e, uint64_t n, int timeout_ms, char *out, size_t len)
{
    long deadline = t_now_ms() + timeout_ms;

    for (;;) {
        t_ctl(e, "stats", out, len);
        if (t_field(out, "sessions") <= n)
            return 0;
        if (t_now_ms() >= deadline)
            return -1;
        usleep(10000);
    }
}

int t_ctl_try(const char *control, const char *cmd, char *out, size_t len)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char line[256];
    size_t got = 0;
    ssize_t n;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int lenl = snprintf(line, sizeof(line), "%s\n", cmd);

    out[0] = 0;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", control);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
        write(fd, line, (size_t)lenl) != lenl) {
        close(fd);
        return -1;
    }
    while (got + 1 < len && (n = read(fd, out + got, len - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = 0;
    close(fd);
    return got ? 0 : -1;
}

uint64_t t_field(const char *text, const char *key)
{
    char pat[64];
    const char *p = text;

    snprintf(pat, sizeof(pat), "%s=", key);
    while ((p = strstr(p, pat))) {
        if (p == text || p[-1] == ' ' || p[-1] == '\n')
            return strtoull(p + strlen(pat), NULL, 10);
        p++;
    }
    return 0;
}

/* ---- echo servers ---- */

struct echo_session {
    struct t_echo_ep *owner;
    struct cessna_ep *ep;
};

static void *echo_ep_session(void *arg)
{
    struct echo_session *es = arg;
    const void *msg;
    long n;

    while ((n = cessna_ep_recv(es->ep, &msg)) >= 0) {
        if (cessna_ep_send(es->ep, msg, (size_t)n) < 0)
            break;
    }
    if (n == CESSNA_EP_CLOSED)
        __atomic_add_fetch(&es->owner->closes, 1, __ATOMIC_SEQ_CST);
    else
        __atomic_add_fetch(&es->owner->errors, 1, __ATOMIC_SEQ_CST);
    cessna_ep_free(es->ep);
    free(es);
    return NULL;
}

static void *echo_ep_accept(void *arg)
{
    struct t_echo_ep *e = arg;
    char err[256];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_accept(e->listen_fd, err, sizeof(err));
        if (!ep)
            continue;
        struct echo_session *es = malloc(sizeof(*es));
        pthread_t t;
        es->owner = e;
        es->ep = ep;
        __atomic_add_fetch(&e->sessions, 1, __ATOMIC_SEQ_CST);
        pthread_create(&t, NULL, echo_ep_session, es);
        pthread_detach(t);
    }
    return NULL;
}

void t_echo_ep_listen(struct t_echo_ep *e)
{
    char err[256];

    memset(e, 0, sizeof(*e));
    e->listen_fd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    if (e->listen_fd < 0)
        cr_assert_fail("cessna_ep_listen: %s", err);
    snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%d", addr_local_port(e->listen_fd));
}

void t_echo_ep_serve(struct t_echo_ep *e)
{
    pthread_t t;

    pthread_create(&t, NULL, echo_ep_accept, e);
    pthread_detach(t);
}

void t_echo_ep_start(struct t_echo_ep *e)
{
    t_echo_ep_listen(e);
    t_echo_ep_serve(e);
}

static void *echo_tcp_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[65536];
    ssize_t n;

    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto out;
            off += w;
        }
    }
out:
    close(fd);
    return NULL;
}

static void *echo_tcp_accept(void *arg)
{
    struct t_echo_tcp *e = arg;

    for (;;) {
        int fd = accept(e->listen_fd, NULL, NULL);
        pthread_t t;
        if (fd < 0)
            continue;
        pthread_create(&t, NULL, echo_tcp_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
    return NULL;
}

void t_echo_tcp_start(struct t_echo_tcp *e)
{
    char err[256];
    pthread_t t;

    e->listen_fd = addr_listen("127.0.0.1:0", err, sizeof(err));
    if (e->listen_fd < 0)
        cr_assert_fail("listen: %s", err);
    snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%d", addr_local_port(e->listen_fd));
    pthread_create(&t, NULL, echo_tcp_accept, e);
    pthread_detach(t);
}

/* ---- plain sockets ---- */

int t_connect(const char *addr)
{
    char err[256];
    int fd = addr_connect(addr, err, sizeof(err));

    if (fd < 0)
        cr_assert_fail("connect: %s", err);
    return fd;
}

void t_write_all_at(int fd, const void *buf, size_t len, const char *file, int line)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            cr_assert_fail("write at %s:%d: %s", file, line, n == 0 ? "closed" : strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

long t_read_n(int fd, void *buf, size_t len, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;
    size_t got = 0;

    while (got < len) {
        long left = deadline - t_now_ms();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (left <= 0)
            return -ETIMEDOUT;
        int r = poll(&pfd, 1, (int)left);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1)
            return -errno;
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n == -1 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n == -1 && errno != ECONNRESET)
            return -errno;
        if (n <= 0)
            break;   /* EOF or reset: the peer closed */
        got += (size_t)n;
    }
    return (long)got;
}

long t_recv_wait(int fd, void *buf, size_t len, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) != 1)
        return -ETIMEDOUT;
    ssize_t n = recv(fd, buf, len, 0);
    return n >= 0 ? n : -errno;
}

long t_read_frame(int fd, void *buf, size_t cap, int timeout_ms)
{
    uint8_t *p = buf;
    long got = t_read_n(fd, p, WIRE_HDR_LEN, timeout_ms);
    uint32_t len;

    if (got <= 0)
        return got;   /* 0: EOF before the frame; < 0: timeout or error */
    if ((size_t)got < WIRE_HDR_LEN)
        return -EPROTO;
    len = wire_get32(p + 8);
    if (WIRE_HDR_LEN + len > cap)
        cr_assert_fail("frame of %u bytes is larger than the test's buffer", len);
    got = t_read_n(fd, p + WIRE_HDR_LEN, len, timeout_ms);
    if (got < 0)
        return got;
    if (got < (long)len)
        return -EPROTO;
    return (long)(WIRE_HDR_LEN + len);
}

void t_expect_eof_at(int fd, int timeout_ms, const char *what, const char *file, int line)
{
    uint8_t b;
    long n = t_read_n(fd, &b, 1, timeout_ms);

    if (n == 0)
        return;
    if (n == -ETIMEDOUT)
        cr_assert_fail("%s:%d: %s: still open after %d ms (want EOF)", file, line, what,
                       timeout_ms);
    if (n < 0)
        cr_assert_fail("%s:%d: %s: read: %s (want EOF)", file, line, what, strerror((int)-n));
    cr_assert_fail("%s:%d: %s: more data (0x%02x) instead of EOF", file, line, what, b);
}

void t_fill(void *buf, size_t len, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

int t_children(pid_t parent, const pid_t *skip, int nskip, pid_t *live, int max, int *nlive)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int zombies = 0;

    *nlive = 0;
    if (!d)
        cr_assert_fail("opendir /proc: %s", strerror(errno));
    while ((de = readdir(d))) {
        char path[300], buf[512], state;
        pid_t pid = atoi(de->d_name);
        int ppid, known = 0;
        if (pid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        if (!rp || sscanf(rp + 2, "%c %d", &state, &ppid) != 2 || ppid != parent)
            continue;
        if (state == 'Z') {
            zombies++;
            continue;
        }
        for (int i = 0; i < nskip; i++)
            known |= skip[i] == pid;
        if (!known && *nlive < max)
            live[(*nlive)++] = pid;
    }
    closedir(d);
    return zombies;
}

struct cessna_ep *t_ep_connect(const struct t_edge *e)
{
    char err[256];
    struct cessna_ep *ep = cessna_ep_connect(e->sup.addr, err, sizeof(err));

    if (!ep)
        cr_assert_fail("cessna_ep_connect %s: %s", e->sup.addr, err);
    return ep;
}

int t_edge_direct_sockets(const struct t_edge *e)
{
    static char buf[1 << 16];
    FILE *f = fopen(e->sup.log, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

    if (f)
        fclose(f);
    buf[n] = 0;
    return strstr(buf, "msg=\"session sockets are io_uring direct descriptors\"") != NULL;
}

uint64_t t_session_field(const struct t_edge *e, uint64_t id, const char *key)
{
    static char out[65536];

    t_ctl(e, "sessions", out, sizeof(out));
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (t_field(line, "id") == id)
            return t_field(line, key);
    return 0;
}

/* CPU time of a process so far, in clock ticks (utime + stime of /proc/PID/stat). */
long t_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f, "open %s", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    cr_assert(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                          &st) == 2, "parse %s", path);
    return (long)(ut + st);
}

void t_own_mounts(void)
{
    if (unshare(CLONE_NEWNS) == -1 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1)
        cr_skip_test("a mount namespace of its own: %s", strerror(errno));
}

void t_read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
}
