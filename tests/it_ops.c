/* it_ops.c - integration: the operator side of the supervisor. One supervisor per
 * state_dir; session directories removed or kept; the HELLO, connect and idle timeouts; the
 * zygote restarted while sessions go on; control connections and fd exhaustion never stall
 * or flood the node. Real processes on loopback. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_world.h"
#include "wire.h"

TestSuite(ops, .timeout = 90);

static void round_trip(struct cessna_ep *ep, const void *msg, size_t len)
{
    const void *got;
    long n;

    cr_assert_eq(cessna_ep_send(ep, msg, len), 0, "send: %s", cessna_ep_error(ep));
    n = cessna_ep_recv(ep, &got);
    cr_assert_eq(n, (long)len, "echo of %zu bytes came back as %ld (%s)", len, n,
                 cessna_ep_error(ep));
    cr_assert(memcmp(got, msg, len) == 0, "echo differs");
}

/* The next result of cessna_ep_recv within timeout_ms; -ETIME if nothing came. */
static long recv_within(struct cessna_ep *ep, const void **got, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms, n;

    cessna_ep_set_nonblocking(ep, 1);
    while ((n = cessna_ep_recv(ep, got)) == -EAGAIN) {
        struct pollfd pfd = { .fd = cessna_ep_fd(ep), .events = POLLIN };
        long left = deadline - t_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) < 0) {
            n = -ETIME;
            break;
        }
    }
    cessna_ep_set_nonblocking(ep, 0);
    return n;
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    size_t got = 0;
    ssize_t n;

    buf[0] = 0;
    if (fd < 0)
        return 0;
    while (got + 1 < cap && (n = read(fd, buf + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = 0;
    close(fd);
    return got;
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    long lines = 0;
    int c;

    if (!f)
        return -1;
    while ((c = getc(f)) != EOF)
        lines += c == '\n';
    fclose(f);
    return lines;
}

static int session_dir_exists(const struct t_edge *e, uint64_t id)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof(path), "%s/state/%llu", e->dir, (unsigned long long)id);
    return stat(path, &st) == 0;
}

static int count_session_dirs(const struct t_edge *e)
{
    char path[512];
    struct dirent *d;
    int n = 0;

    snprintf(path, sizeof(path), "%s/state", e->dir);
    DIR *dir = opendir(path);
    cr_assert(dir, "opendir %s", path);
    while ((d = readdir(dir)))
        n += d->d_name[0] >= '1' && d->d_name[0] <= '9';
    closedir(dir);
    return n;
}

/* Wait up to timeout_ms for the session directory to be (want=1) or not be (want=0). */
static int wait_dir(const struct t_edge *e, uint64_t id, int want, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;

    while (session_dir_exists(e, id) != want) {
        if (t_now_ms() > deadline)
            return 0;
        usleep(20000);
    }
    return 1;
}

static void write_config(const char *path, const char *server, const char *app,
                         const char *state_dir, const char *control)
{
    FILE *f = fopen(path, "w");

    cr_assert(f, "write %s: %s", path, strerror(errno));
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s\n"
               "control = %s\n", server, app, state_dir, control);
    fclose(f);
}

/* A supervisor expected to refuse to start: its exit status and its log. */
static int run_refused(const char *dir, const char *name, const char *cfg, char *log, size_t len)
{
    char path[512];
    int out_fd;
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", (char *)cfg, NULL };
    pid_t pid = t_start_raw(dir, name, argv, &out_fd);
    int status = t_wait(pid, 10000);

    if (status == -1) {
        kill(pid, SIGKILL);
        t_wait(pid, 2000);
    }
    close(out_fd);
    snprintf(path, sizeof(path), "%s/%s.log", dir, name);
    read_file(path, log, len);
    return status;
}

Test(ops, second_supervisor_on_the_same_state_dir_is_refused)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char cfg[512], state[512], ctl2[512], log[4096], pid[32], out[4096];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    round_trip(ep, "before", 6);

    /* Same state_dir, another control socket: the lock refuses it, naming the first. */
    snprintf(cfg, sizeof(cfg), "%s/edge2.ini", e.dir);
    snprintf(state, sizeof(state), "%s/state", e.dir);
    snprintf(ctl2, sizeof(ctl2), "%s/control2.sock", e.dir);
    write_config(cfg, srv.addr, t_app("passthrough"), state, ctl2);
    int status = run_refused(e.dir, "supervisor2", cfg, log, sizeof(log));
    cr_assert(status != -1, "the second supervisor did not exit (log: %s)", log);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d, log: %s",
              status, log);
    snprintf(pid, sizeof(pid), "pid %d", (int)e.sup.pid);
    cr_assert(strstr(log, "in use by") && strstr(log, pid), "names the first one's %s: %s",
              pid, log);

    /* Another state_dir, but the same control socket: refused too, the socket stays. */
    char state3[512];
    snprintf(cfg, sizeof(cfg), "%s/edge3.ini", e.dir);
    snprintf(state3, sizeof(state3), "%s/state3", e.dir);
    write_config(cfg, srv.addr, t_app("passthrough"), state3, e.control);
    status = run_refused(e.dir, "supervisor3", cfg, log, sizeof(log));
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1,
              "exit status %d, log: %s", status, log);
    cr_assert(strstr(log, "in use by another supervisor"), "log: %s", log);

    /* The first one goes on: its session, a new session and its control socket. */
    round_trip(ep, "after", 5);
    struct cessna_ep *ep2 = t_ep_connect(&e);
    round_trip(ep2, "new", 3);
    t_ctl(&e, "sessions", out, sizeof(out));
    cr_assert(strstr(out, "state=live"), "control socket still answers: %s", out);
    cessna_ep_close(ep, 5000);
    cessna_ep_close(ep2, 5000);
    cessna_ep_free(ep);
    cessna_ep_free(ep2);

    /* Once it stopped, the state_dir is free again. */
    int st = t_stop(&e.sup);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "stopped on SIGTERM with status %d", st);
    snprintf(cfg, sizeof(cfg), "%s/edge2.ini", e.dir);
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    struct t_proc p;
    t_start(&p, e.dir, "supervisor4", argv);
    t_stop(&p);
}

/* A session through crashy.so that fails: CRASH twice at the same event. Its id. */
static uint64_t failed_session(const struct t_edge *e)
{
    const void *got;
    struct cessna_ep *ep = t_ep_connect(e);
    uint64_t id = cessna_ep_session_id(ep);

    round_trip(ep, "hi", 2);
    cr_assert_eq(cessna_ep_send(ep, "CRASH", 5), 0);
    cr_assert_eq(recv_within(ep, &got, 10000), -ECONNABORTED, "%s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    return id;
}

Test(ops, session_dirs_removed_on_clean_close_kept_on_failure_with_retention)
{
    struct t_echo_ep srv;
    struct t_edge e;
    uint64_t failed[4];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("crashy"), srv.addr,
                 "snapshot_interval_ms = 20\nfailed_sessions_keep = 2\n");

    /* A clean session with snapshots and an event log: all of it goes after CLOSE. */
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    char msg[512];
    for (int i = 0; i < 50; i++) {
        t_fill(msg, sizeof(msg), (uint64_t)i);
        round_trip(ep, msg, sizeof(msg));
        if (i % 10 == 0)
            usleep(30000);   /* let a few snapshots happen */
    }
    cr_assert(session_dir_exists(&e, id), "the live session has its directory");
    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    cr_assert(wait_dir(&e, id, 0, 5000), "directory of cleanly closed session %llu removed",
              (unsigned long long)id);

    /* Failed sessions keep theirs for offline replay, the newest failed_sessions_keep. */
    failed[0] = failed_session(&e);
    usleep(300000);
    cr_assert(session_dir_exists(&e, failed[0]), "a failed session's directory is kept");
    for (int i = 1; i < 4; i++)
        failed[i] = failed_session(&e);
    cr_assert(wait_dir(&e, failed[0], 0, 5000), "the oldest failed one is removed");
    cr_assert(wait_dir(&e, failed[1], 0, 5000), "the second oldest too");
    usleep(300000);
    cr_assert(session_dir_exists(&e, failed[2]) && session_dir_exists(&e, failed[3]),
              "the two newest failed sessions keep their directories");
    cr_assert_eq(count_session_dirs(&e), 2);
    t_edge_stop(&e);
}

Test(ops, retention_applies_to_directories_of_earlier_runs)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char path[600];

    t_echo_ep_start(&srv);
    /* a first run leaves three failed sessions */
    t_edge_start(&e, t_test_app("crashy"), srv.addr, "failed_sessions_keep = 10\n");
    uint64_t a = failed_session(&e), b = failed_session(&e), c = failed_session(&e);
    usleep(200000);
    t_edge_stop(&e);
    cr_assert(session_dir_exists(&e, a) && session_dir_exists(&e, b) && session_dir_exists(&e, c));
    /* "Newest" is by mtime, which a late log write into a failed session's directory moves:
     * give the three distinct ages, a the oldest. */
    uint64_t ids[3] = { a, b, c };
    for (int i = 0; i < 3; i++) {
        struct timespec ts[2];
        clock_gettime(CLOCK_REALTIME, &ts[0]);
        ts[0].tv_sec -= 30 - 10 * i;
        ts[1] = ts[0];
        snprintf(path, sizeof(path), "%s/state/%llu", e.dir, (unsigned long long)ids[i]);
        cr_assert_eq(utimensat(AT_FDCWD, path, ts, 0), 0, "utimensat %s", path);
    }

    /* the next run keeps only the newest one */
    snprintf(path, sizeof(path), "%s/edge.ini", e.dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s/state\n"
               "control = %s\nfailed_sessions_keep = 1\n", srv.addr, t_test_app("crashy"),
            e.dir, e.control);
    fclose(f);
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", path, NULL };
    t_start(&e.sup, e.dir, "supervisor-2nd-run", argv);
    cr_assert(wait_dir(&e, a, 0, 5000) && wait_dir(&e, b, 0, 5000), "older ones removed");
    cr_assert(session_dir_exists(&e, c), "the newest is kept");
    t_edge_stop(&e);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;

    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
        rl.rlim_cur = 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

Test(ops, connections_without_hello_are_closed_after_hello_timeout)
{
    struct t_echo_ep srv;
    struct t_edge e;
    static int fds[1100];
    uint8_t hello[64], buf[256];
    const int n = 1100;

    raise_fd_limit();
    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr,
                 "max_sessions = 40\nhello_timeout_ms = 400\n");
    size_t hlen = wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL);
    for (int i = 0; i < n; i++) {
        fds[i] = t_connect(e.sup.addr);
        /* 6 bytes of a HELLO, and nothing more (a refused one may be closed already) */
        cr_assert(send(fds[i], hello, 6, MSG_NOSIGNAL) == 6 || errno == EPIPE ||
                  errno == ECONNRESET, "send: %s", strerror(errno));
    }
    cr_assert(hlen > 6);
    /* The first 40 hold every slot, but only for hello_timeout_ms: then a real client
     * gets in, although all 1,100 keep their connections open. */
    long start = t_now_ms();
    struct cessna_ep *ep = NULL;
    char err[256] = "";
    while (!ep && t_now_ms() - start < 5000) {
        ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        if (!ep)
            usleep(100000);
    }
    cr_assert(ep, "a real client gets a session after hello_timeout_ms: %s", err);
    round_trip(ep, "ping", 4);
    cr_assert(t_now_ms() - start < 3000, "took %ld ms", t_now_ms() - start);

    /* The slot holders heard why. */
    long got = t_read_frame(fds[0], buf, sizeof(buf), 2000);
    struct wire_frame f;
    cr_assert(got > 0 && wire_next(buf, (size_t)got, sizeof(buf), &f) == got &&
              f.type == WIRE_ERROR, "an ERROR frame for the slow client");
    cr_assert(strstr(f.u.error.text, "hello_timeout_ms"), "%.*s", (int)f.u.error.text_len,
              f.u.error.text);
    char out[2048];
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert(t_field(out, "hello_timeouts") >= 1, "%s", out);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(ops, idle_session_is_ended_with_an_error_naming_the_reason)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const void *got;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "idle_timeout_ms = 1000\n");
    struct cessna_ep *busy = t_ep_connect(&e), *idle = t_ep_connect(&e);
    round_trip(idle, "once", 4);
    /* busy: an event every 100 ms for 2.5 s is never idle */
    long start = t_now_ms();
    while (t_now_ms() - start < 2500) {
        round_trip(busy, "tick", 4);
        usleep(100000);
    }
    long n = recv_within(idle, &got, 3000);
    cr_assert_eq(n, -ECONNABORTED, "the idle session ends with an ERROR, got %ld", n);
    cr_assert(strstr(cessna_ep_error(idle), "idle"), "%s", cessna_ep_error(idle));
    round_trip(busy, "still here", 10);
    char out[2048];
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "idle_timeouts"), 1, "%s", out);
    cessna_ep_free(idle);
    cessna_ep_close(busy, 5000);
    cessna_ep_free(busy);
    t_edge_stop(&e);
}

/* A "server endpoint" that accepts connections and never says a word. */
static void *silent_server(void *arg)
{
    int lfd = (int)(intptr_t)arg;

    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            break;   /* kept open, never answered */
    }
    return NULL;
}

Test(ops, server_endpoint_that_never_answers_hits_connect_timeout)
{
    struct t_edge e;
    char err[256], addr[64];
    pthread_t t;
    uint8_t buf[1024], hello[64];

    int lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(lfd >= 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(lfd));
    pthread_create(&t, NULL, silent_server, (void *)(intptr_t)lfd);
    pthread_detach(t);
    t_edge_start(&e, t_app("passthrough"), addr, "connect_timeout_ms = 500\n");

    int fd = t_connect(e.sup.addr);
    t_write_all(fd, hello, wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL));
    long start = t_now_ms();
    long n = t_read_frame(fd, buf, sizeof(buf), 4000);
    cr_assert(n > 0, "an answer within 4 s (got %s)", n == 0 ? "EOF" : "nothing");
    struct wire_frame f;
    cr_assert_eq(wire_next(buf, (size_t)n, sizeof(buf), &f), n);
    cr_assert_eq(f.type, WIRE_ERROR, "got %s", wire_type_name(f.type));
    cr_assert_eq(f.u.error.code, WIRE_ERR_UNAVAILABLE);
    cr_assert(strstr(f.u.error.text, "connect_timeout_ms"), "%.*s", (int)f.u.error.text_len,
              f.u.error.text);
    cr_assert(t_now_ms() - start < 2500, "after %ld ms", t_now_ms() - start);
    close(fd);

    /* The slot is free again: sessions = 0 soon. */
    char out[2048];
    cr_assert_eq(t_wait_sessions(&e, 0, 5000, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(t_field(out, "connect_timeouts"), 1, "%s", out);
    t_edge_stop(&e);
}

/* ---- the zygote ---- */

/* The one child process of pid (fails the test if there are others). */
static pid_t only_child(pid_t parent)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t found = 0;

    cr_assert(d);
    while ((de = readdir(d))) {
        char path[300], buf[512];
        int ppid;
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        if (!read_file(path, buf, sizeof(buf)))
            continue;
        char *p = strrchr(buf, ')');   /* after the command name: state, then ppid */
        if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == parent) {
            cr_assert_eq(found, 0, "more than one child of %d", (int)parent);
            found = (pid_t)atoi(de->d_name);
        }
    }
    closedir(d);
    cr_assert(found > 0, "no child of %d", (int)parent);
    return found;
}

struct echo_arg {
    const struct t_edge *e;
    struct cessna_ep *ep;
    int index, ok, done;
    volatile int *stop;
    char why[256];
};

/* Round trips of varied sizes, byte for byte, until *stop. */
static void *echo_loop(void *p)
{
    struct echo_arg *a = p;
    static __thread uint8_t msg[20000];
    int i = 0;

    while (!*a->stop || i < 20) {
        const void *got;
        size_t len = 1 + ((size_t)i * 7919 + (size_t)a->index * 104729) % sizeof(msg);
        t_fill(msg, len, (uint64_t)a->index << 32 | (uint64_t)i);
        if (cessna_ep_send(a->ep, msg, len) < 0) {
            snprintf(a->why, sizeof(a->why), "send %d: %s", i, cessna_ep_error(a->ep));
            return NULL;
        }
        long n = cessna_ep_recv(a->ep, &got);
        if (n != (long)len || memcmp(got, msg, len) != 0) {
            snprintf(a->why, sizeof(a->why), "echo %d: %ld bytes for %zu (%s)", i, n, len,
                     cessna_ep_error(a->ep));
            return NULL;
        }
        i++;
    }
    a->done = i;
    a->ok = 1;
    return NULL;
}

Test(ops, zygote_killed_sessions_go_on_and_new_sessions_start_after_restart)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct echo_arg args[3];
    pthread_t th[3];
    volatile int stop = 0;
    char out[4096];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "snapshot_interval_ms = 0\n");
    pid_t zygote = only_child(e.sup.pid);   /* before any session: the zygote alone */
    for (int i = 0; i < 3; i++) {
        args[i] = (struct echo_arg){ .e = &e, .ep = t_ep_connect(&e), .index = i, .stop = &stop };
        pthread_create(&th[i], NULL, echo_loop, &args[i]);
    }
    usleep(200000);
    cr_assert_eq(kill(zygote, SIGKILL), 0);
    /* A new session right now: in, or refused with an ERROR that names the zygote (which
     * may come after WELCOME: workers are asked of the zygote without waiting for it). */
    char err0[256] = "";
    struct cessna_ep *early = cessna_ep_connect(e.sup.addr, err0, sizeof(err0));
    if (early) {
        const void *got;
        long n = cessna_ep_send(early, "early", 5) == 0 ? cessna_ep_recv(early, &got) : -1;
        if (n != 5)
            cr_assert(strstr(cessna_ep_error(early), "zygote"), "early session: %ld, %s", n,
                      cessna_ep_error(early));
        cessna_ep_close(early, 5000);
        cessna_ep_free(early);
    } else {
        cr_assert(strstr(err0, "zygote"), "refused with a clear ERROR: %s", err0);
        cr_log_info("during the restart: %s", err0);
    }
    usleep(800000);   /* the sessions keep echoing meanwhile */

    /* A new session gets in once the zygote is back. */
    struct cessna_ep *ep = NULL;
    char err[256] = "";
    long start = t_now_ms();
    while (!ep && t_now_ms() - start < 10000) {
        ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        if (!ep)
            usleep(100000);
    }
    cr_assert(ep, "a new session after the zygote restart: %s", err);
    round_trip(ep, "new", 3);
    stop = 1;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert(args[i].ok, "session %d: %s", i, args[i].why);
        cessna_ep_close(args[i].ep, 5000);
        cessna_ep_free(args[i].ep);
    }
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "zygote_restarts"), 1, "%s", out);
    pid_t zygote2 = (pid_t)t_field(out, "zygote_pid");
    cr_assert(zygote2 > 0 && zygote2 != zygote, "%s", out);

    /* The new zygote serves a cold recovery of the new session too. */
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)cessna_ep_session_id(ep));
    t_ctl(&e, cmd, out, sizeof(out));
    cr_assert(strstr(out, "ok"), "%s", out);
    round_trip(ep, "after recovery", 14);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    int st = t_stop(&e.sup);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
}

/* ---- the control socket ---- */

static int ctl_connect(const struct t_edge *e)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e->control);
    cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
              "control socket: %s", strerror(errno));
    return fd;
}

struct lat_arg {
    struct cessna_ep *ep;
    volatile int *stop;
    long worst_us, trips;
    int ok;
};

static void *latency_loop(void *p)
{
    struct lat_arg *a = p;
    struct timespec t0, t1;
    const void *got;

    while (!*a->stop) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (cessna_ep_send(a->ep, "ping", 4) < 0 || cessna_ep_recv(a->ep, &got) != 4)
            return NULL;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long us = (t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
        if (us > a->worst_us)
            a->worst_us = us;
        a->trips++;
        usleep(2000);
    }
    a->ok = 1;
    return NULL;
}

Test(ops, idle_control_connections_do_not_stall_sessions)
{
    struct t_echo_ep srv;
    struct t_edge e;
    volatile int stop = 0;
    int idle[25];
    char out[4096];
    pthread_t t;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    struct lat_arg a = { .ep = t_ep_connect(&e), .stop = &stop };
    pthread_create(&t, NULL, latency_loop, &a);
    usleep(200000);
    for (int i = 0; i < 25; i++)
        idle[i] = ctl_connect(&e);   /* connected, and never a word */
    /* A real command is answered meanwhile. */
    t_ctl(&e, "sessions", out, sizeof(out));
    cr_assert(strstr(out, "state=live"), "%s", out);
    usleep(1500000);
    stop = 1;
    pthread_join(t, NULL);
    cr_log_info("worst echo latency %ld us over %ld round trips", a.worst_us, a.trips);
    cr_assert(a.ok, "the session echoed throughout");
    cr_assert(a.trips > 20, "only %ld round trips", a.trips);
    /* Before, each idle connection froze the loop for 200 ms, one after the other (5 s for
     * 25, measured 6.5 s). A loaded 2-core machine alone gives stalls of a few hundred ms
     * (seen: 280 ms at load average 17), so the bound is set between the two. */
    cr_assert(a.worst_us < 1000000, "worst echo latency %ld us with 25 idle control connections",
              a.worst_us);
    /* A command half sent: the rest of the line comes later. */
    int half = ctl_connect(&e);
    t_write_all(half, "sta", 3);
    usleep(100000);
    t_write_all(half, "ts\n", 3);
    size_t got = t_read_n(half, out, 20, 2000);
    cr_assert(got > 0 && strncmp(out, "sessions=", 9) == 0, "a command in two pieces: %.*s",
              (int)got, out);
    close(half);
    /* The idle ones were closed by the supervisor after its timeout. */
    for (int i = 0; i < 25; i++) {
        char b;
        struct pollfd pfd = { .fd = idle[i], .events = POLLIN };
        cr_assert(poll(&pfd, 1, 3000) == 1 && read(idle[i], &b, 1) == 0,
                  "idle control connection %d closed by the supervisor", i);
        close(idle[i]);
    }
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert(t_field(out, "ctl_timeouts") >= 25, "%s", out);
    cessna_ep_close(a.ep, 5000);
    cessna_ep_free(a.ep);
    t_edge_stop(&e);
}

/* ---- out of file descriptors ---- */

/* 300 connections at an edge that has 64 descriptors. max_sessions is capped at what the
 * limit holds (1 here), so most are refused as "edge full" at accept; when the accepts
 * outrun the refusals' closes, accept finds no descriptor (EMFILE) and pauses. Either way
 * the log is not flooded, and the edge serves again once the flood is gone. */
Test(ops, accept_out_of_fds_pauses_without_flooding_the_log)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct rlimit old, low;
    static int fds[300];
    uint8_t hello[64];
    char out[4096];

    raise_fd_limit();
    t_echo_ep_start(&srv);
    /* The supervisor (and the zygote) start with 64 fds: the limit is inherited. */
    getrlimit(RLIMIT_NOFILE, &old);
    low = old;
    low.rlim_cur = 64;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "hello_timeout_ms = 0\nmax_fds = 64\nmax_sessions = 1000\n");
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

    size_t hlen = wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL);
    cr_assert(hlen > 6);
    for (int i = 0; i < 300; i++) {
        fds[i] = t_connect(e.sup.addr);   /* the kernel's backlog takes what we cannot */
        cr_assert_eq(send(fds[i], hello, 6, MSG_NOSIGNAL), 6, "send: %s", strerror(errno));
    }
    usleep(1500000);
    long lines = count_lines(e.sup.log);
    cr_assert(lines < 100, "%ld log lines in 1.5 s out of fds", lines);

    for (int i = 0; i < 300; i++)
        close(fds[i]);
    /* (the control socket too waits while no fd is free) */
    t_ctl(&e, "stats", out, sizeof(out));
    int refused = file_count(e.sup.log, "end=refused");
    int paused = t_field(out, "accept_fd_limit") > 0 && t_field(out, "accept_paused") > 0;
    cr_assert(paused || refused > 0, "neither out of fds nor refused: %s", out);
    cr_log_info("%ld log lines, %d refusal lines, paused=%d, %s", lines, refused, paused, out);
    /* Served again once they are gone. */
    struct cessna_ep *ep = NULL;
    char err[256] = "";
    long start = t_now_ms();
    while (!ep && t_now_ms() - start < 10000) {
        ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        if (!ep)
            usleep(100000);
    }
    cr_assert(ep, "a session after the flood: %s", err);
    round_trip(ep, "ping", 4);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    lines = count_lines(e.sup.log);
    cr_assert(lines < 500, "%ld log lines", lines);
    t_edge_stop(&e);
}

/* ---- ended sessions whose peer keeps the connection ---- */

Test(ops, ended_session_whose_peer_never_closes_gives_its_slot_back)
{
    struct t_echo_ep srv;
    struct t_edge e;
    uint8_t buf[512];
    char out[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "max_sessions = 1\nhello_timeout_ms = 0\n");
    /* garbage instead of HELLO: an ERROR, then the edge waits for our EOF, which never comes */
    int fd = t_connect(e.sup.addr);
    t_fill(buf, 64, 7);
    t_write_all(fd, buf, 64);
    long n = t_read_frame(fd, buf, sizeof(buf), 5000);
    cr_assert(n > 0 && buf[3] == WIRE_ERROR, "an ERROR first");

    long start = t_now_ms();
    struct cessna_ep *ep = NULL;
    char err[256] = "";
    while (!ep && t_now_ms() - start < 8000) {
        ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
        if (!ep)
            usleep(200000);
    }
    cr_assert(ep, "the only slot is given back: %s", err);
    round_trip(ep, "ping", 4);
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    cr_assert(poll(&pfd, 1, 2000) == 1 && read(fd, buf, 1) <= 0,
              "the silent peer's connection was shut down (EOF, not a timeout)");
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "forced_closes"), 1, "%s", out);
    close(fd);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* Find the first log line containing `what` (waits up to 2 s); 1 if found. */
static int log_line(const char *log, const char *what, char *line, size_t len)
{
    for (int i = 0; i < 100; i++) {
        FILE *f = fopen(log, "r");
        while (f && fgets(line, (int)len, f))
            if (strstr(line, what)) {
                fclose(f);
                return 1;
            }
        if (f)
            fclose(f);
        usleep(20000);
    }
    return 0;
}

/* The supervisor's "Max open files" from /proc (soft limit), 0 if unreadable. */
static unsigned long long proc_fd_limit(pid_t pid)
{
    char path[64], line[256];
    unsigned long long soft = 0;

    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "Max open files", 14) == 0)
            sscanf(line + 14, "%llu", &soft);
    if (f)
        fclose(f);
    return soft;
}

/* A max_sessions the descriptor limit cannot hold is lowered at start, with the numbers, and
 * enforced: the sessions past it are refused as "edge full", while the ones open go on (they
 * used to fail on EMFILE at their next snapshot). */
Test(ops, max_sessions_beyond_the_fd_limit_is_lowered_at_start, .timeout = 30)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct cessna_ep *eps[64];
    char line[4096] = "";
    uint8_t frame[256];
    const void *got;

    /* The same on any machine: max_fds pins the limit the supervisor runs with. */
    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr,
                 "max_sessions = 65536\nmax_fds = 4096\nsnapshot_interval_ms = 50\n");
    cr_assert(log_line(e.sup.log, "max_sessions lowered", line, sizeof(line)),
              "no warning in %s", e.sup.log);
    cr_expect(strstr(line, "max_sessions=65536") && strstr(line, "fd_limit=4096"), "%s", line);
    cr_assert_eq(proc_fd_limit(e.sup.pid), 4096);
    t_edge_stop(&e);

    /* A limit small enough to fill: every session up to the cap works, snapshots included. */
    t_edge_start(&e, t_app("passthrough"), srv.addr,
                 "max_sessions = 65536\nmax_fds = 120\nsnapshot_interval_ms = 50\n"
                 "snapshot_min_events = 1\n");   /* every session snapshots */
    cr_assert(log_line(e.sup.log, "max_sessions lowered", line, sizeof(line)), "%s", e.sup.log);
    unsigned long long cap = t_field(line, "lowered_to");
    cr_assert(cap >= 1 && cap < 64, "%s", line);
    for (unsigned i = 0; i < cap; i++) {
        eps[i] = t_ep_connect(&e);
        cr_assert_eq(cessna_ep_send(eps[i], "hi", 2), 0);
        cr_assert_eq(cessna_ep_recv(eps[i], &got), 2, "session %u: %s", i,
                     cessna_ep_error(eps[i]));
    }
    int r = t_connect(e.sup.addr);
    long fl = t_read_frame(r, frame, sizeof(frame), 5000);
    cr_assert(fl > 0 && frame[3] == WIRE_ERROR, "session %llu refused with an ERROR (%ld)",
              cap + 1, fl);
    close(r);
    usleep(300 * 1000);   /* a few snapshot rounds of every open session */
    for (unsigned i = 0; i < cap; i++) {
        cr_assert_eq(cessna_ep_send(eps[i], "again", 5), 0);
        cr_assert_eq(cessna_ep_recv(eps[i], &got), 5, "session %u: %s", i,
                     cessna_ep_error(eps[i]));
        cessna_ep_close(eps[i], 2000);
        cessna_ep_free(eps[i]);
    }
    char out[4096];
    t_ctl(&e, "stats", out, sizeof(out));
    cr_expect_eq(t_field(out, "snapshot_failures"), 0, "%s", out);
    cr_expect_gt(t_field(out, "snapshots"), 0, "%s", out);
    t_edge_stop(&e);
}

/* As HAProxy does for maxconn: the supervisor raises its descriptor limit to what
 * max_sessions needs (as root beyond the hard limit it was started with), and without
 * max_sessions derives it from the limit. */
Test(ops, fd_limit_follows_max_sessions_and_max_sessions_follows_the_limit, .timeout = 30)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char line[4096] = "";
    struct rlimit old, low = { 1024, 4096 };

    getrlimit(RLIMIT_NOFILE, &old);
    t_echo_ep_start(&srv);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "");
    setrlimit(RLIMIT_NOFILE, &old);
    cr_assert(log_line(e.sup.log, "max_sessions derived", line, sizeof(line)), "%s", e.sup.log);
    cr_expect(strstr(line, "fd_limit=4096"), "the soft limit rose to the hard one: %s", line);
    cr_assert_eq(proc_fd_limit(e.sup.pid), 4096);
    t_edge_stop(&e);

    /* Raising a hard limit needs CAP_SYS_RESOURCE (a container may not have it). */
    struct rlimit up = { old.rlim_max + 1, old.rlim_max + 1 };
    if (setrlimit(RLIMIT_NOFILE, &up) != 0)
        cr_skip_test("this process may not raise its hard descriptor limit");
    setrlimit(RLIMIT_NOFILE, &old);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "max_sessions = 10000\n");
    setrlimit(RLIMIT_NOFILE, &old);
    unsigned long long lim = proc_fd_limit(e.sup.pid);
    cr_assert(lim >= 10000ull * 5, "limit %llu for 10,000 sessions", lim);
    cr_assert_not(log_line(e.sup.log, "cannot be reached", line, sizeof(line)), "%s", line);
    t_edge_stop(&e);
}
