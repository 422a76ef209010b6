/* it_sandbox.c - integration: one app cannot hurt the node or another session (docs/sandbox.md).
 *
 * Every row starts a supervisor running tests/apps/hostile.c with snapshots and hot standby,
 * a victim session that echoes byte-exact for the whole test, and a hostile session that is
 * asked to do one forbidden thing. The hostile session must end with an ERROR naming the
 * call; nothing may have happened (no file, no connection on the test's listener, no
 * process left behind); the supervisor must live on; the victim's echoes must be exact. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"

TestSuite(sandbox, .timeout = 60);

#define EDGE_CONF "snapshot_interval_ms = 50\nstandby = hot\n"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the victim: echoes of varied sizes, checked byte for byte, until told to stop ---- */

struct victim {
    const struct t_edge *e;
    pthread_t th;
    volatile int stop;
    volatile long count;
    volatile uint64_t id;
    int ok;
    char why[256];
};

static void *victim_main(void *p)
{
    struct victim *v = p;
    static uint8_t msg[4096];
    char err[256];
    struct cessna_ep *ep = cessna_ep_connect(v->e->sup.addr, err, sizeof(err));

    if (!ep) {
        snprintf(v->why, sizeof(v->why), "connect: %s", err);
        return NULL;
    }
    v->id = cessna_ep_session_id(ep);
    for (long i = 0; !v->stop; i++) {
        size_t len = 6 + (size_t)((i * 7919) % 3000);
        const void *got;
        t_fill(msg, len, (uint64_t)i);
        memcpy(msg, "ECHO ", 5);
        if (cessna_ep_send(ep, msg, len) < 0) {
            snprintf(v->why, sizeof(v->why), "send %ld: %s", i, cessna_ep_error(ep));
            goto out;
        }
        long n = cessna_ep_recv(ep, &got);
        if (n != (long)len || memcmp(got, msg, len) != 0) {
            snprintf(v->why, sizeof(v->why), "echo %ld: got %ld bytes, want %zu (%s)", i, n, len,
                     cessna_ep_error(ep));
            goto out;
        }
        v->count = i + 1;
    }
    v->ok = cessna_ep_close(ep, 5000) == 0;
    if (!v->ok)
        snprintf(v->why, sizeof(v->why), "close: %s", cessna_ep_error(ep));
out:
    cessna_ep_free(ep);
    return NULL;
}

/* ---- helpers ---- */

/* The ctl "sessions" line of session id, or "" (out must hold the whole listing). */
static const char *session_line(const struct t_edge *e, uint64_t id, char *out, size_t len)
{
    char pat[40];
    t_ctl(e, "sessions", out, len);
    snprintf(pat, sizeof(pat), "id=%llu ", (unsigned long long)id);
    char *l = strstr(out, pat);
    if (!l)
        return "";
    char *nl = strchr(l, '\n');
    if (nl)
        *nl = 0;
    return l;
}

static int proc_gone(pid_t pid, int timeout_ms)
{
    char path[64];
    long deadline = now_ms() + timeout_ms;

    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    while (now_ms() < deadline) {
        if (access(path, F_OK) == -1)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* Processes named "hostile-child" (what a forked child of hostile.c calls itself): killed,
 * and counted. */
static int kill_hostile_children(void)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int found = 0;

    if (!d)
        return 0;
    while ((de = readdir(d))) {
        char path[300], comm[64] = "";
        int pid = atoi(de->d_name);
        if (pid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/comm", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof(comm), f) && strcmp(comm, "hostile-child\n") == 0) {
            kill(pid, SIGKILL);
            found++;
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

/* The value of "Key:" in /proc/PID/status (its first number), or -1. */
static long proc_status(pid_t pid, const char *key)
{
    char path[64], line[256];
    long v = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':')
            v = strtol(line + strlen(key) + 1, NULL, 10);
    fclose(f);
    return v;
}

static int landlock_available(void)
{
#ifdef SYS_landlock_create_ruleset
    return syscall(SYS_landlock_create_ruleset, NULL, 0, 1u /* ..._VERSION */) >= 1;
#else
    return 0;
#endif
}

/* cessna_ep_recv with a deadline: -ETIMEDOUT when nothing came within timeout_ms. */
static long recv_within(struct cessna_ep *ep, const void **got, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms, n;

    cessna_ep_set_nonblocking(ep, 1);
    while ((n = cessna_ep_recv(ep, got)) == -EAGAIN) {
        struct pollfd pfd = { .fd = cessna_ep_fd(ep), .events = POLLIN };
        long left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        poll(&pfd, 1, (int)left);
    }
    return n;
}

/* ---- one row ---- */

enum expect { EXPECT_ERROR, EXPECT_REPLY, EXPECT_ECHO };

struct row {
    const char *cmd;        /* printf format: %s gets the row's argument */
    enum expect expect;
    const char *want;       /* substring of the ERROR text, or prefix of the reply */
    const char *extra;      /* appended to the [edge] config */
    int arg;                /* 0: none, 1: a marker path, 2: the listener's port,
                               3: the victim's event log, 4: the victim's log relative to
                               the hostile session's directory, and its absolute path */
    int wait_standby;       /* 1: act only once the hostile session has a hot standby;
                               2: and kill its worker first, so the standby takes over */
};

static void run_row(const struct row *r)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct victim v;
    char arg[1200] = "", cmd[1400], marker[300], out[16384], extra[256];
    const void *got;
    int lfd, status;
    long n;

    snprintf(extra, sizeof(extra), "%s%s", EDGE_CONF, r->extra ? r->extra : "");
    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("hostile"), srv.addr, extra);
    snprintf(marker, sizeof(marker), "%s/marker", e.dir);
    lfd = addr_listen("127.0.0.1:0", out, sizeof(out));
    cr_assert(lfd >= 0, "listen: %s", out);

    memset(&v, 0, sizeof(v));
    v.e = &e;
    pthread_create(&v.th, NULL, victim_main, &v);
    for (long t0 = now_ms(); v.count < 20 && !v.why[0] && now_ms() - t0 < 10000;)
        usleep(5000);
    cr_assert(v.count >= 20, "the victim does not run: %s", v.why);

    struct cessna_ep *ep = cessna_ep_connect(e.sup.addr, out, sizeof(out));
    cr_assert(ep, "connect: %s", out);
    uint64_t hid = cessna_ep_session_id(ep);

    /* A few echoes first, so the hostile session has snapshots (and a hot standby). */
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(cessna_ep_send(ep, "ECHO warmup", 11), 0);
        n = recv_within(ep, &got, 5000);
        cr_assert_eq(n, 11, "warmup echo: %ld (%s)", n, cessna_ep_error(ep));
    }
    const char *line = session_line(&e, hid, out, sizeof(out));
    pid_t hpid = (pid_t)t_field(line, "worker");
    cr_assert(hpid > 0, "no worker for the hostile session: %s", line);
    /* It is confined: a seccomp filter, no_new_privs, and not root when we are root. */
    cr_expect_eq(proc_status(hpid, "Seccomp"), 2, "worker %d has no seccomp filter", (int)hpid);
    cr_expect_eq(proc_status(hpid, "NoNewPrivs"), 1, "worker %d: no_new_privs", (int)hpid);
    if (geteuid() == 0 && !(r->extra && strstr(r->extra, "worker_user = root")))
        cr_expect_neq(proc_status(hpid, "Uid"), 0, "worker %d runs as root", (int)hpid);
    if (r->wait_standby) {
        long t0 = now_ms();
        while (t_field(session_line(&e, hid, out, sizeof(out)), "standby") == 0 &&
               now_ms() - t0 < 5000) {
            cessna_ep_send(ep, "ECHO x", 6);
            recv_within(ep, &got, 5000);
            usleep(20000);
        }
        cr_assert(t_field(session_line(&e, hid, out, sizeof(out)), "standby") > 0,
                  "no hot standby: %s", out);
    }
    if (r->wait_standby == 2) {
        kill(hpid, SIGKILL);
        cr_assert_eq(cessna_ep_send(ep, "ECHO after", 10), 0);
        n = recv_within(ep, &got, 5000);
        cr_assert_eq(n, 10, "echo after the kill: %ld (%s)", n, cessna_ep_error(ep));
        line = session_line(&e, hid, out, sizeof(out));
        cr_assert(strstr(line, "recovery=hot"), "the standby did not take over: %s", line);
        hpid = (pid_t)t_field(line, "worker");
        cr_assert(hpid > 0, "no worker after the takeover: %s", line);
    }

    switch (r->arg) {
    case 1: snprintf(arg, sizeof(arg), "%s", marker); break;
    case 2: snprintf(arg, sizeof(arg), "%d", addr_local_port(lfd)); break;
    case 3:
    case 4: {
        char pat[600];
        glob_t g;
        int found = 0;
        char logcmd[64], logout[1024];
        snprintf(pat, sizeof(pat), "%s/state/%llu/events-*.log", e.dir,
                 (unsigned long long)v.id);
        /* a live session's log is written on request */
        snprintf(logcmd, sizeof(logcmd), "log %llu", (unsigned long long)v.id);
        t_ctl(&e, logcmd, logout, sizeof(logout));
        for (long t0 = now_ms(); !found && now_ms() - t0 < 3000; usleep(20000)) {
            found = glob(pat, 0, NULL, &g) == 0;
            if (found) {
                const char *base = strrchr(g.gl_pathv[0], '/') + 1;
                if (r->arg == 3)
                    snprintf(arg, sizeof(arg), "%s", g.gl_pathv[0]);
                else
                    snprintf(arg, sizeof(arg), "../%llu/%s %s", (unsigned long long)v.id, base,
                             g.gl_pathv[0]);
                globfree(&g);
            }
        }
        cr_assert(found, "the victim has no event log %s", pat);
        break;
    }
    }
    long victim_before = v.count;
    snprintf(cmd, sizeof(cmd), r->cmd, arg);
    cr_assert_eq(cessna_ep_send(ep, cmd, strlen(cmd)), 0);

    switch (r->expect) {
    case EXPECT_ERROR:
        n = recv_within(ep, &got, 5000);
        cr_expect(n < 0, "'%s': the app was not stopped; it answered '%.*s'", cmd,
                  n > 0 ? (int)(n < 200 ? n : 200) : 0, n > 0 ? (const char *)got : "");
        if (n >= 0)
            n = recv_within(ep, &got, 5000);   /* KILLPARENT, FORK...: the ERROR may follow */
        cr_expect(n < 0 && strstr(cessna_ep_error(ep), r->want),
                  "'%s': want an ERROR naming '%s', got %ld '%s'", cmd, r->want, n,
                  cessna_ep_error(ep));
        cr_expect(proc_gone(hpid, 3000), "the hostile worker %d is still there", (int)hpid);
        break;
    case EXPECT_REPLY:
        n = recv_within(ep, &got, 5000);
        cr_expect(n > 0 && (size_t)n >= strlen(r->want) && memcmp(got, r->want, strlen(r->want)) == 0,
                  "'%s': want a reply '%s...', got %ld '%.*s' (%s)", cmd, r->want, n,
                  n > 0 ? (int)(n < 300 ? n : 300) : 0, n > 0 ? (const char *)got : "",
                  cessna_ep_error(ep));
        cessna_ep_close(ep, 5000);
        break;
    case EXPECT_ECHO:
        n = recv_within(ep, &got, 5000);
        cr_expect(n == (long)strlen(cmd) && memcmp(got, cmd, (size_t)n) == 0,
                  "'%s': echo came back as %ld (%s)", cmd, n, cessna_ep_error(ep));
        cr_expect_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
        break;
    }
    cessna_ep_free(ep);

    /* Nothing happened: no file, no connection, no process. */
    usleep(200000);
    cr_expect(access(marker, F_OK) == -1, "'%s': the app created %s", cmd, marker);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int c = accept(lfd, NULL, NULL);
    cr_expect(c == -1 && errno == EAGAIN, "'%s': the app connected to the test's listener", cmd);
    if (c >= 0)
        close(c);
    close(lfd);
    cr_expect_eq(kill_hostile_children(), 0, "'%s': a forked child lives on", cmd);

    /* The supervisor lives and serves; the victim kept going, byte-exact. */
    cr_assert_eq(waitpid(e.sup.pid, &status, WNOHANG), 0, "'%s': the supervisor died", cmd);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_expect(strstr(out, "sessions="), "'%s': no answer from the control socket: %s", cmd, out);
    for (long t0 = now_ms(); v.count < victim_before + 20 && !v.why[0] && now_ms() - t0 < 5000;)
        usleep(5000);
    v.stop = 1;
    pthread_join(v.th, NULL);
    cr_expect(v.ok, "the victim: %s", v.why);
    cr_expect(v.count >= victim_before + 20, "the victim stalled at %ld echoes", v.count);
    t_edge_stop(&e);
}

/* ---- hostile rows: each must end the session with an ERROR naming the call ---- */

Test(sandbox, socket_connect_is_refused)
{
    run_row(&(struct row){ "SOCKET %s", EXPECT_ERROR, "socket()", NULL, 2, 0 });
}

Test(sandbox, creating_a_file_is_refused)
{
    run_row(&(struct row){ "OPEN %s", EXPECT_ERROR, "openat()", NULL, 1, 0 });
}

Test(sandbox, reading_another_sessions_log_is_refused)
{
    run_row(&(struct row){ "READ %s", EXPECT_ERROR, "openat()", NULL, 3, 0 });
}

Test(sandbox, reading_etc_passwd_is_refused)
{
    run_row(&(struct row){ "READ /etc/passwd%s", EXPECT_ERROR, "openat()", NULL, 0, 0 });
}

Test(sandbox, a_thread_is_refused)
{
    run_row(&(struct row){ "THREAD %s", EXPECT_ERROR, "pthread_create()", NULL, 1, 0 });
}

Test(sandbox, fork_is_refused)
{
    run_row(&(struct row){ "FORK %s", EXPECT_ERROR, "fork()", NULL, 1, 0 });
}

Test(sandbox, execve_is_refused)
{
    run_row(&(struct row){ "EXEC %s", EXPECT_ERROR, "execve()", NULL, 1, 0 });
}

Test(sandbox, killing_the_supervisor_is_refused)
{
    run_row(&(struct row){ "KILLPARENT%s", EXPECT_ERROR, "kill()", NULL, 0, 0 });
}

Test(sandbox, ptrace_is_refused)
{
    run_row(&(struct row){ "PTRACE%s", EXPECT_ERROR, "ptrace()", NULL, 0, 0 });
}

/* The report socket is one a worker must hold (its snapshot children report on it): made-up
 * reports naming the supervisor must not make the supervisor signal it. Not a refused call:
 * the supervisor verifies reports itself (recovery.c), so the app gets to answer. */
Test(sandbox, forged_snapshot_reports_harm_nobody)
{
    run_row(&(struct row){ "FORGE%s", EXPECT_REPLY, "done forged", NULL, 0, 1 });
}

/* An app that closes the worker's own descriptors (allowed: close is) hurts only its own
 * session: the worker cannot be woken without its report socket, so its next sleep ends the
 * session with an error naming that socket, rather than a session that hangs. */
Test(sandbox, closing_the_workers_descriptors_ends_only_that_session)
{
    run_row(&(struct row){ "CLOSEFDS%s", EXPECT_ERROR, "report socket", NULL, 0, 0 });
}

/* The same while the worker waits for room in its ring in the middle of a long message:
 * the reason still gets out, not "a bad long record". */
Test(sandbox, closing_the_workers_descriptors_in_a_long_message)
{
    run_row(&(struct row){ "CLOSEFDSBIG%s", EXPECT_ERROR, "report socket", NULL, 0, 0 });
}

/* The same in a promoted hot standby (another pid, the same filter). */
Test(sandbox, a_promoted_standby_is_confined_too)
{
    run_row(&(struct row){ "KILLPARENT%s", EXPECT_ERROR, "kill()", NULL, 0, 2 });
}

/* ---- the session directory: reached through a descriptor, but only downwards ---- */

/* As the worker user (nobody when the tests run as root), both Landlock and the
 * permissions of state_dir stop it. */
Test(sandbox, escaping_the_session_directory_is_refused)
{
    run_row(&(struct row){ "ESCAPE %s", EXPECT_REPLY, "DENIED", NULL, 4, 0 });
}

/* With worker_user = root only Landlock stands in the way. */
Test(sandbox, escaping_the_session_directory_is_refused_by_landlock)
{
    if (!landlock_available())
        cr_skip_test("Landlock is not available on this kernel");
    run_row(&(struct row){ "ESCAPE %s", EXPECT_REPLY, "DENIED", "worker_user = root\n", 4, 0 });
}

/* ---- controls: what an app may do still works under the sandbox ---- */

Test(sandbox, echo_and_snapshots_still_work)
{
    run_row(&(struct row){ "ECHO control%s", EXPECT_ECHO, NULL, NULL, 0, 1 });
}

/* abort() signals the worker itself (tgkill to its own pid): allowed, in the worker and
 * in a promoted standby, so a crash stays a crash ("died again ... signal 6"). */
Test(sandbox, abort_is_a_crash_not_a_violation)
{
    run_row(&(struct row){ "ABORT%s", EXPECT_ERROR, "signal 6", NULL, 0, 1 });
}

/* Offline, cessna-replay runs the app under the same sandbox: a session failed for a refused
 * call fails the same way in the replay (determinism holds for violations too). */
Test(sandbox, replay_refuses_the_same_call)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[256], out[4096], state[300], sid[32];
    const void *got;
    int fd;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("hostile"), srv.addr, "snapshot_interval_ms = 10\n");
    struct cessna_ep *ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert(ep, "%s", err);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(cessna_ep_send(ep, "ECHO hello", 10), 0);
        cr_assert_eq(recv_within(ep, &got, 5000), 10);
    }
    uint64_t id = cessna_ep_session_id(ep);
    cr_assert_eq(cessna_ep_send(ep, "SOCKET 9", 8), 0);
    cr_assert_eq(recv_within(ep, &got, 5000), -ECONNABORTED);
    cr_assert(strstr(cessna_ep_error(ep), "app called socket()"), "%s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    usleep(100000);   /* the log's last batch reaches the file */

    snprintf(state, sizeof(state), "%s/state", e.dir);
    snprintf(sid, sizeof(sid), "%llu", (unsigned long long)id);
    char *argv[] = { (char *)t_bin("cessna-replay"), "--app", (char *)t_test_app("hostile"),
                     "--state-dir", state, "--session", sid, NULL };
    pid_t pid = t_start_raw(e.dir, "replay", argv, &fd);
    size_t n = t_read_n(fd, out, sizeof(out) - 1, 20000);
    out[n] = 0;
    int status = t_wait(pid, 20000);
    close(fd);
    cr_assert(status != -1 && WIFEXITED(status), "cessna-replay ends: %s", out);
    cr_assert(strstr(out, "app called socket()"), "replay says '%s'", out);
    t_edge_stop(&e);
}
