/* remworld.c - the processes of a remote-recovery setup, for section "remote":
 *
 *   client -> cessna-client-proxy --edge A,B,C -> supervisor A (B, C standing by)
 *          -> cessna-server-proxy --store DIR --edge-secret-file F -> plain TCP echo
 *
 * Each edge listens on a port fixed at the start, so a restarted edge is found at the same
 * address; each start is a new node (an empty state_dir). An edge leads its own process
 * group (procs.c) and runs with sandbox = off, so its workers stay in that group: killing
 * the group is losing the node. Also the plain-TCP asks the section's clients use.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "bench.h"

#define READY_TIMEOUT_MS 10000
#define STOP_GRACE_MS    2000
#define LINGER_MS        "60000"
#define RESUME_TIMEOUT   "60000"

static int write_file(const char *path, const char *text, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");

    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        int rc = -errno;
        snprintf(err, errlen, "write %s: %s", path, strerror(errno));
        return rc;
    }
    return 0;
}

/* A port that was free a moment ago (the edge binds it; nothing else here picks ports). */
static int pick_port(char *err, size_t errlen)
{
    int fd = addr_listen("127.0.0.1:0", err, errlen), port;

    if (fd < 0)
        return fd;
    port = addr_local_port(fd);
    close(fd);
    return port;
}

/* A child that prints "ready listen=HOST:PORT"; its address in addr. */
static int start_ready(struct bench_proc *p, const struct bench_opts *o, const char *name,
                       char *const argv[], char *addr, size_t addrlen, char *err, size_t errlen)
{
    struct proc_spec spec = { .name = name, .want_stdout = 1, .keep_fd = -1, .argv = argv };
    int rc = proc_start(p, &spec, o->tmpdir, err, errlen);

    if (rc == 0)
        rc = proc_read_ready(p, READY_TIMEOUT_MS, addr, addrlen, err, errlen);
    return rc;
}

static int start_echo(struct rem_world *w, const struct bench_opts *o, char *err, size_t errlen)
{
    char name[64];
    int lfd = addr_listen("127.0.0.1:0", err, errlen), rc;

    if (lfd < 0)
        return lfd;
    snprintf(name, sizeof(name), "%s.echo", w->tag);
    snprintf(w->echo_addr, sizeof(w->echo_addr), "127.0.0.1:%d", addr_local_port(lfd));
    struct proc_spec spec = { .name = name, .keep_fd = lfd, .fn = echo_plain_main, .arg = &lfd };
    rc = proc_start(&w->echo, &spec, o->tmpdir, err, errlen);
    close(lfd);
    return rc;
}

static int start_server_proxy(struct rem_world *w, const struct bench_opts *o, char *err,
                              size_t errlen)
{
    char bin[PATH_MAX + 32], name[64];

    snprintf(bin, sizeof(bin), "%s/cessna-server-proxy", o->bin);
    snprintf(name, sizeof(name), "%s.server-proxy", w->tag);
    char *argv[] = { bin, "--listen", "127.0.0.1:0", "--target", w->echo_addr, "--store",
                     w->store, "--edge-secret-file", w->secret, "--linger-ms", LINGER_MS, NULL };
    return start_ready(&w->sproxy, o, name, argv, w->sproxy_addr, sizeof(w->sproxy_addr), err,
                       errlen);
}

/* Edge i, a new node: a fresh state_dir, the same port and control socket. */
int rw_edge_start(struct rem_world *w, int i, const struct bench_opts *o, char *err,
                  size_t errlen)
{
    char ini[PATH_MAX + 64], state[PATH_MAX + 64], text[4 * PATH_MAX + 1024], name[64];
    char bin[PATH_MAX + 32], addr[64];
    int rc;

    snprintf(ini, sizeof(ini), "%s/%s.edge%d.ini", o->tmpdir, w->tag, i);
    snprintf(state, sizeof(state), "%s/%s.edge%d.run%d", o->tmpdir, w->tag, i, w->runs[i]);
    snprintf(w->control[i], sizeof(w->control[i]), "%s/%s.e%d.sock", o->tmpdir, w->tag, i);
    if (mkdir(state, 0700) == -1) {
        rc = -errno;
        snprintf(err, errlen, "mkdir %s: %s", state, strerror(errno));
        return rc;
    }
    snprintf(text, sizeof(text),
             "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s/%s\nstate_dir = %s\n"
             "control = %s\nstandby = cold\nsnapshot_interval_ms = %u\nship_snapshots = %s\n"
             "heartbeat_interval_ms = %u\nedge_secret_file = %s\nmax_sessions = 64\n"
             "max_session_memory = 1073741824\nbusy_poll = %s\nsandbox = off\n",
             w->port[i], w->sproxy_addr, o->apps, w->spec.app, state, w->control[i],
             w->spec.snapshot_interval_ms, w->spec.ship_off ? "off" : "on",
             w->spec.edge_heartbeat_ms, w->secret, o->busy_poll_off ? "off" : "auto");
    rc = write_file(ini, text, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(bin, sizeof(bin), "%s/cessna-supervisor", o->bin);
    snprintf(name, sizeof(name), "%s.edge%d-%d", w->tag, i, w->runs[i]);
    w->runs[i]++;
    char *argv[] = { bin, "-c", ini, NULL };
    return start_ready(&w->edge[i], o, name, argv, addr, sizeof(addr), err, errlen);
}

static int start_client_proxy(struct rem_world *w, const struct bench_opts *o, char *err,
                              size_t errlen)
{
    char bin[PATH_MAX + 32], name[64], edges[REM_EDGES * 32] = "", hb[16];

    for (int i = 0; i < w->spec.nedges; i++)
        snprintf(edges + strlen(edges), sizeof(edges) - strlen(edges), "%s127.0.0.1:%d",
                 i ? "," : "", w->port[i]);
    snprintf(bin, sizeof(bin), "%s/cessna-client-proxy", o->bin);
    snprintf(name, sizeof(name), "%s.client-proxy", w->tag);
    snprintf(hb, sizeof(hb), "%u", w->spec.proxy_heartbeat_ms);
    char *argv[] = { bin, "--listen", "127.0.0.1:0", "--edge", edges, "--heartbeat-ms", hb,
                     "--resume-timeout-ms", RESUME_TIMEOUT, NULL };
    return start_ready(&w->cproxy, o, name, argv, w->entry, sizeof(w->entry), err, errlen);
}

int rw_up(struct rem_world *w, const struct rem_spec *spec, const struct bench_opts *o,
          char *err, size_t errlen)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->spec = *spec;
    snprintf(w->tag, sizeof(w->tag), "%s", spec->tag);
    snprintf(w->secret, sizeof(w->secret), "%s/%s.secret", o->tmpdir, w->tag);
    snprintf(w->store, sizeof(w->store), "%s/%s.store", o->tmpdir, w->tag);
    rc = write_file(w->secret, "bench-edge-secret-not-for-production\n", err, errlen);
    if (rc == 0 && chmod(w->secret, 0600) == -1) {
        rc = -errno;
        snprintf(err, errlen, "chmod %s: %s", w->secret, strerror(errno));
    }
    for (int i = 0; rc == 0 && i < spec->nedges; i++)
        if ((w->port[i] = pick_port(err, errlen)) < 0)
            rc = w->port[i];
    if (rc == 0)
        rc = start_echo(w, o, err, errlen);
    if (rc == 0)
        rc = start_server_proxy(w, o, err, errlen);
    for (int i = 0; rc == 0 && i < spec->nedges; i++)
        rc = rw_edge_start(w, i, o, err, errlen);
    if (rc == 0)
        rc = start_client_proxy(w, o, err, errlen);
    return rc;
}

/* 0 while every process runs (an edge with pid 0 is down on purpose); else which one died. */
int rw_check(struct rem_world *w, char *err, size_t errlen)
{
    struct bench_proc *all[3 + REM_EDGES] = { &w->echo, &w->sproxy, &w->cproxy };
    int n = 3;

    for (int i = 0; i < w->spec.nedges; i++)
        all[n++] = &w->edge[i];
    for (int i = 0; i < n; i++)
        if (all[i]->pid > 0 && proc_check(all[i], err, errlen) < 0)
            return -ECHILD;
    return 0;
}

/* The whole node: every process of edge i's group. */
void rw_edge_signal(struct rem_world *w, int i, int sig)
{
    if (w->edge[i].pid > 0)
        kill(-w->edge[i].pid, sig);
}

void rw_edge_stop(struct rem_world *w, int i)
{
    rw_edge_signal(w, i, SIGCONT);   /* a stopped node takes SIGTERM only once continued */
    proc_stop(&w->edge[i], STOP_GRACE_MS);
}

void rw_down(struct rem_world *w)
{
    if (w->cproxy.pid > 0)
        proc_stop(&w->cproxy, STOP_GRACE_MS);
    for (int i = 0; i < w->spec.nedges; i++)
        rw_edge_stop(w, i);
    if (w->sproxy.pid > 0)
        proc_stop(&w->sproxy, STOP_GRACE_MS);
    if (w->echo.pid > 0)
        proc_stop(&w->echo, STOP_GRACE_MS);
}

/* The edge other than `skip` whose `sessions` lists session id (-1: none). A dead edge
 * refuses at once; a stopped one would stall each ask for seconds: the caller skips it. */
int rw_find_session(struct rem_world *w, uint64_t id, int skip, char *line, size_t len)
{
    char err[BENCH_ERRLEN];

    for (int i = 0; i < w->spec.nedges; i++)
        if (i != skip && w->edge[i].pid > 0 &&
            ectl_session(w->control[i], id, line, len, err, sizeof(err)) == 0)
            return i;
    return -1;
}

/* ---- plain TCP asks ---- */

int rw_connect(struct rem_world *w, char *err, size_t errlen)
{
    struct bench_conn c;
    int rc = load_connect(&c, w->entry, 0, err, errlen);

    return rc < 0 ? rc : c.fd;
}

/* Read exactly len bytes within the deadline (CLOCK_MONOTONIC ns). */
int rw_read(int fd, char *buf, size_t len, uint64_t deadline, char *err, size_t errlen)
{
    size_t have = 0;

    while (have < len) {
        uint64_t now = ectl_now_ns();
        if (now >= deadline) {
            snprintf(err, errlen, "timed out with %zu of %zu bytes", have, len);
            return -ETIMEDOUT;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, (int)((deadline - now) / 1000000u) + 1) <= 0)
            continue;
        ssize_t n = recv(fd, buf + have, len - have, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            snprintf(err, errlen, "the client proxy %s after %zu of %zu bytes",
                     n == 0 ? "closed the connection" : strerror(errno), have, len);
            return n == 0 ? -ECONNRESET : -errno;
        }
        if (n > 0)
            have += (size_t)n;
    }
    return 0;
}

/* Send msg, expect exactly `expect` back within timeout_ms. */
int rw_ask(int fd, const char *msg, const char *expect, int timeout_ms, char *err,
           size_t errlen)
{
    size_t n = strlen(expect);
    char back[256];
    int rc;

    if (n >= sizeof(back) || send(fd, msg, strlen(msg), MSG_NOSIGNAL) != (ssize_t)strlen(msg)) {
        rc = n >= sizeof(back) ? -EINVAL : -errno;
        snprintf(err, errlen, "send '%s': %s", msg, strerror(-rc));
        return rc;
    }
    rc = rw_read(fd, back, n, ectl_now_ns() + (uint64_t)timeout_ms * 1000000u, err, errlen);
    if (rc == 0 && memcmp(back, expect, n) != 0) {
        snprintf(err, errlen, "sent '%s', want '%s', got '%.*s'", msg, expect, (int)n, back);
        rc = -EPROTO;
    } else if (rc < 0) {
        char why[BENCH_ERRLEN / 2];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "'%s': %s", msg, why);
    }
    return rc;
}
