/* stacks.c - bring up (and down) the processes of one path, from the echo server outwards,
 * each one ready before the next one that connects to it starts.
 *
 *   direct        client -> echo
 *   haproxy1      client -> hap -> echo
 *   haproxy3      client -> hap -> hap -> hap -> echo
 *   edge-native   cessna_ep_connect -> cessna-supervisor (passthrough.so) -> native echo
 *   edge-proxies  client -> cessna-client-proxy -> cessna-supervisor -> cessna-server-proxy -> echo
 *
 * stack_up_edge brings up an edge-native stack with its own app and snapshot settings, for
 * the snapshot and recovery sections; its files and processes carry a tag ("recovery-hot").
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "bench.h"
#include "cessna_endpoint.h"

#define READY_TIMEOUT_MS 10000
#define STOP_GRACE_MS    2000
#define HAPROXY_MAXCONN  1024  /* the latency paths' one connection at a time */

static const char *const path_names[PATH_COUNT] = {
    [PATH_DIRECT] = "direct",           [PATH_HAPROXY1] = "haproxy1",
    [PATH_HAPROXY1_BUSY] = "haproxy1-busy",
    [PATH_EDGE_NATIVE] = "edge-native", [PATH_EDGE_NATIVE_OFF] = "edge-native-off",
    [PATH_HAPROXY3] = "haproxy3",       [PATH_HAPROXY3_BUSY] = "haproxy3-busy",
    [PATH_EDGE_PROXIES] = "edge-proxies", [PATH_EDGE_PROXIES_OFF] = "edge-proxies-off",
};

const char *stack_path_name(enum bench_path path)
{
    return path < PATH_COUNT ? path_names[path] : "?";
}

int stack_path_parse(const char *name, enum bench_path *path)
{
    for (int i = 0; i < PATH_COUNT; i++)
        if (strcmp(name, path_names[i]) == 0) {
            *path = (enum bench_path)i;
            return 0;
        }
    return -EINVAL;
}

enum bench_path stack_baseline(enum bench_path edge)
{
    if (edge == PATH_EDGE_NATIVE || edge == PATH_EDGE_NATIVE_OFF)
        return PATH_HAPROXY1;
    if (edge == PATH_EDGE_PROXIES || edge == PATH_EDGE_PROXIES_OFF)
        return PATH_HAPROXY3;
    return PATH_COUNT;
}

int stack_path_busy(enum bench_path path)
{
    return path == PATH_HAPROXY1_BUSY || path == PATH_HAPROXY3_BUSY;
}

int stack_path_edge_off(enum bench_path path, const struct bench_opts *o)
{
    if (path == PATH_EDGE_NATIVE_OFF || path == PATH_EDGE_PROXIES_OFF)
        return 1;
    return (path == PATH_EDGE_NATIVE || path == PATH_EDGE_PROXIES) && o->busy_poll_off;
}

enum bench_path stack_like_baseline(enum bench_path edge, const struct bench_opts *o)
{
    enum bench_path base = stack_baseline(edge);

    if (base == PATH_COUNT || stack_path_edge_off(edge, o))
        return base;
    return base == PATH_HAPROXY1 ? PATH_HAPROXY1_BUSY : PATH_HAPROXY3_BUSY;
}

static struct bench_proc *stack_next(struct bench_stack *s)
{
    return &s->procs[s->nprocs];
}

/* Start a child; on success it belongs to the stack (stopped by stack_down). */
static int stack_start(struct bench_stack *s, const struct proc_spec *spec,
                       const struct bench_opts *o, char *err, size_t errlen)
{
    struct proc_spec named = *spec;
    char name[sizeof(s->procs[0].name)];
    int rc;

    if (s->nprocs == BENCH_MAX_PROCS) {
        snprintf(err, errlen, "too many processes in one path");
        return -E2BIG;
    }
    if (s->tag[0]) { /* "recovery-hot.echo-native": one log per stack */
        snprintf(name, sizeof(name), "%s.%s", s->tag, spec->name);
        named.name = name;
    }
    rc = proc_start(stack_next(s), &named, o->tmpdir, err, errlen);
    if (rc == 0)
        s->nprocs++;
    return rc;
}

static int need_file(const char *path, int exec, const char *hint, char *err, size_t errlen)
{
    if (access(path, exec ? X_OK : R_OK) == 0)
        return 0;
    int rc = -errno;
    snprintf(err, errlen, "%s: %s%s", path, strerror(errno), hint);
    return rc;
}

/* A plain TCP echo server in a child; its address in addr. */
static int start_echo(struct bench_stack *s, const struct bench_opts *o, int native, int many,
                      char *addr, size_t addrlen, char *err, size_t errlen)
{
    char why[256];
    int lfd, port, rc;

    if (native)
        lfd = cessna_ep_listen("127.0.0.1:0", why, sizeof(why));
    else
        lfd = addr_listen("127.0.0.1:0", why, sizeof(why));
    if (lfd < 0) {
        snprintf(err, errlen, "%s echo server: %s", native ? "native" : "plain", why);
        return lfd;
    }
    port = addr_local_port(lfd);
    struct proc_spec spec = {
        .name = native ? "echo-native" : "echo", .keep_fd = lfd,
        .fn = native ? (many ? echo_native_many_main : echo_native_main)
                     : (many ? echo_plain_many_main : echo_plain_main),
        .arg = &lfd,
    };
    rc = stack_start(s, &spec, o, err, errlen);
    close(lfd); /* the child has it; connections queue in its backlog meanwhile */
    if (rc < 0)
        return rc;
    snprintf(addr, addrlen, "127.0.0.1:%d", port);
    return 0;
}

/* A port that was free a moment ago, for HAProxy's frontend. */
static int free_port(char *err, size_t errlen)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

    if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) == -1) {
        rc = -errno;
        snprintf(err, errlen, "picking a free port: %s", strerror(errno));
        if (fd != -1)
            close(fd);
        return rc;
    }
    close(fd);
    return ntohs(sin.sin_port);
}

static int write_text(const char *path, const char *text, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    int rc = 0;

    if (!f) {
        rc = -errno;
        snprintf(err, errlen, "create %s: %s", path, strerror(errno));
        return rc;
    }
    fputs(text, f);
    if (fclose(f) != 0) {
        rc = -errno;
        snprintf(err, errlen, "write %s: %s", path, strerror(errno));
    }
    return rc;
}

static int write_haproxy_cfg(const char *path, int port, const char *backend, int maxconn,
                             int busy, char *err, size_t errlen)
{
    char cfg[1024];

    snprintf(cfg, sizeof(cfg),
             "global\n"
             "    nbthread 1\n"
             "    maxconn %d\n"
             "%s"
             "defaults\n"
             "    mode tcp\n"
             "    timeout connect 30s\n"
             "    timeout client 30s\n"
             "    timeout server 30s\n"
             "frontend fe\n"
             "    maxconn %d\n"
             "    bind 127.0.0.1:%d\n"
             "    default_backend be\n"
             "backend be\n"
             "    server next %s\n",
             maxconn, busy ? "    busy-polling\n" : "", maxconn, port, backend);
    return write_text(path, cfg, err, errlen);
}

/* One HAProxy in TCP mode forwarding to backend; its frontend address in addr. A port
 * taken between picking and binding makes HAProxy exit: try another one. */
static int start_haproxy(struct bench_stack *s, const struct bench_opts *o, const char *name,
                         const char *backend, int maxconn, int busy, char *addr, size_t addrlen,
                         char *err, size_t errlen)
{
    char cfg[PATH_MAX + 64];
    int rc = -EINVAL;

    snprintf(cfg, sizeof(cfg), "%s/%s.cfg", o->tmpdir, name);
    for (int attempt = 0; attempt < 3; attempt++) {
        char *argv[] = { (char *)o->haproxy, "-f", cfg, "-db", NULL };
        struct proc_spec spec = { .name = name, .keep_fd = -1, .argv = argv };
        int port = free_port(err, errlen);

        if (port < 0)
            return port;
        rc = write_haproxy_cfg(cfg, port, backend, maxconn, busy, err, errlen);
        if (rc < 0)
            return rc;
        rc = stack_start(s, &spec, o, err, errlen);
        if (rc < 0)
            return rc;
        rc = proc_wait_port(&s->procs[s->nprocs - 1], port, READY_TIMEOUT_MS, err, errlen);
        if (rc == 0) {
            snprintf(addr, addrlen, "127.0.0.1:%d", port);
            return 0;
        }
        proc_stop(&s->procs[--s->nprocs], STOP_GRACE_MS);
    }
    return rc;
}

static int start_haproxy_chain(struct bench_stack *s, const struct bench_opts *o, int hops,
                               const char *target, char *err, size_t errlen)
{
    char next[64], addr[64];
    int rc;

    snprintf(next, sizeof(next), "%s", target);
    /* Start from the hop next to the echo server, so each backend exists already. */
    for (int hop = hops; hop >= 1; hop--) {
        char name[48];

        snprintf(name, sizeof(name), "%s.hop%d", stack_path_name(s->path), hop);
        rc = start_haproxy(s, o, name, next, HAPROXY_MAXCONN, stack_path_busy(s->path), addr,
                           sizeof(addr), err, errlen);
        if (rc < 0)
            return rc;
        snprintf(next, sizeof(next), "%s", addr);
    }
    snprintf(s->entry, sizeof(s->entry), "%s", next);
    return 0;
}

/* A child that says "ready listen=HOST:PORT" on stdout when it listens. */
static int start_ready_child(struct bench_stack *s, const struct bench_opts *o, const char *name,
                             char *const argv[], int machine_nofile, char *addr, size_t addrlen,
                             char *err, size_t errlen)
{
    struct proc_spec spec = { .name = name, .want_stdout = 1, .keep_fd = -1, .argv = argv,
                              .machine_nofile = machine_nofile };
    int rc = need_file(argv[0], 1, " (build it: make)", err, errlen);

    if (rc < 0)
        return rc;
    rc = stack_start(s, &spec, o, err, errlen);
    if (rc < 0)
        return rc;
    return proc_read_ready(&s->procs[s->nprocs - 1], READY_TIMEOUT_MS, addr, addrlen, err,
                           errlen);
}

/* The supervisor's INI: standby and snapshot cadence from e (the latency paths: cold, no
 * snapshots). */
static int write_supervisor_ini(const char *ini, const struct bench_opts *o,
                                const struct edge_spec *e, const char *server, const char *app,
                                const char *state, const char *control, char *err,
                                size_t errlen)
{
    char text[4 * PATH_MAX + 512];

    snprintf(text, sizeof(text),
             "[edge]\n"
             "listen = 127.0.0.1:0\n"
             "server = %s\n"
             "app = %s\n"
             "state_dir = %s\n"
             "control = %s\n"
             "standby = %s\n"
             "snapshot_interval_ms = %u\n"
             "max_sessions = %u\n"
             "max_message_bytes = 1048576\n"
             "max_session_memory = 4293918720\n"   /* ballast up to MAX_STATE (1 GiB) */
             "busy_poll = %s\n"
             "sandbox = %s\n"
             "hibernate_after_ms = %u\n"
             "session_dirs_ahead = %u\n",
             server, app, state, control, e->hot ? "hot" : "cold", e->snapshot_interval_ms,
             e->max_sessions ? e->max_sessions : 64,
             o->busy_poll_off || e->busy_poll_off ? "off" : "auto",
             o->sandbox_off ? "off" : "on",
             e->hibernate_after_ms ? e->hibernate_after_ms : 30000, e->dirs_ahead);
    return write_text(ini, text, err, errlen);
}

/* A supervisor running e->app; its INI, state dir and control socket are named by e->tag. */
static int start_supervisor(struct bench_stack *s, const struct bench_opts *o,
                            const struct edge_spec *e, const char *server, char *addr,
                            size_t addrlen, char *err, size_t errlen)
{
    char bin[PATH_MAX + 32], app[2 * PATH_MAX], ini[PATH_MAX + 32], state[PATH_MAX + 32];
    int rc;

    snprintf(bin, sizeof(bin), "%s/cessna-supervisor", o->bin);
    snprintf(app, sizeof(app), "%s/%s", o->apps, e->app);
    snprintf(ini, sizeof(ini), "%s/%s.ini", o->tmpdir, e->tag);
    snprintf(state, sizeof(state), "%s/%s.state", o->tmpdir, e->tag);
    snprintf(s->control, sizeof(s->control), "%s/%s.ctl.sock", o->tmpdir, e->tag);
    rc = need_file(app, 0, " (build it: make)", err, errlen);
    if (rc < 0)
        return rc;
    if (mkdir(state, 0700) == -1 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "mkdir %s: %s", state, strerror(errno));
        return rc;
    }
    rc = write_supervisor_ini(ini, o, e, server, app, state, s->control, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(s->ini, sizeof(s->ini), "%s", ini);
    char *argv[] = { bin, "-c", ini, NULL };
    return start_ready_child(s, o, "cessna-supervisor", argv, 1, addr, addrlen, err, errlen);
}

int stack_edge_reload(struct bench_stack *s, const char *key, const char *value, char *err,
                      size_t errlen)
{
    char text[8192], out[8192 + 256];
    size_t klen = strlen(key), o = 0;
    FILE *f = fopen(s->ini, "re");
    size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;

    if (!f) {
        snprintf(err, errlen, "%s: %s", s->ini[0] ? s->ini : "(no edge INI)", strerror(errno));
        return -ENOENT;
    }
    fclose(f);
    text[n] = 0;
    for (char *line = text, *next; *line; line = next) {
        next = strchr(line, '\n');
        next = next ? next + 1 : line + strlen(line);
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            o += (size_t)snprintf(out + o, sizeof(out) - o, "%s = %s\n", key, value);
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s", (int)(next - line), line);
        if (o >= sizeof(out)) {
            snprintf(err, errlen, "%s: too long", s->ini);
            return -E2BIG;
        }
    }
    int rc = write_text(s->ini, out, err, errlen);
    if (rc < 0)
        return rc;
    return kill(s->procs[1].pid, SIGHUP) == -1 ? -errno : 0;
}

/* The latency paths' edge: passthrough.so, no snapshots. */
static struct edge_spec plain_edge(const struct bench_stack *s)
{
    struct edge_spec e = { .app = "passthrough.so",
                           .busy_poll_off = s->path == PATH_EDGE_NATIVE_OFF ||
                                            s->path == PATH_EDGE_PROXIES_OFF };

    snprintf(e.tag, sizeof(e.tag), "%s", stack_path_name(s->path));
    return e;
}

static int up_edge_native(struct bench_stack *s, const struct bench_opts *o,
                          const struct edge_spec *e, char *err, size_t errlen)
{
    char echo[64];
    int rc = start_echo(s, o, 1, e->many, echo, sizeof(echo), err, errlen);

    if (rc == 0)
        rc = start_supervisor(s, o, e, echo, s->entry, sizeof(s->entry), err, errlen);
    s->native = 1;
    return rc;
}

static int up_edge_proxies(struct bench_stack *s, const struct bench_opts *o, char *err,
                           size_t errlen)
{
    char echo[64], sproxy[64], edge[64], bin[PATH_MAX + 32];
    int rc = start_echo(s, o, 0, 0, echo, sizeof(echo), err, errlen);

    if (rc < 0)
        return rc;
    snprintf(bin, sizeof(bin), "%s/cessna-server-proxy", o->bin);
    char *sargv[] = { bin, "--listen", "127.0.0.1:0", "--target", echo, NULL };
    rc = start_ready_child(s, o, "cessna-server-proxy", sargv, 1, sproxy, sizeof(sproxy), err,
                           errlen);
    if (rc < 0)
        return rc;
    struct edge_spec e = plain_edge(s);
    rc = start_supervisor(s, o, &e, sproxy, edge, sizeof(edge), err, errlen);
    if (rc < 0)
        return rc;
    snprintf(bin, sizeof(bin), "%s/cessna-client-proxy", o->bin);
    char *cargv[] = { bin, "--listen", "127.0.0.1:0", "--edge", edge, NULL };
    return start_ready_child(s, o, "cessna-client-proxy", cargv, 1, s->entry, sizeof(s->entry),
                             err, errlen);
}

int stack_up(struct bench_stack *s, enum bench_path path, const struct bench_opts *o,
             char *err, size_t errlen)
{
    char echo[64];
    int rc;

    memset(s, 0, sizeof(*s));
    s->path = path;
    switch (path) {
    case PATH_EDGE_NATIVE:
    case PATH_EDGE_NATIVE_OFF: {
        struct edge_spec e = plain_edge(s);
        return up_edge_native(s, o, &e, err, errlen);
    }
    case PATH_EDGE_PROXIES:
    case PATH_EDGE_PROXIES_OFF:
        return up_edge_proxies(s, o, err, errlen);
    default:
        break;
    }
    if (path != PATH_DIRECT) {
        rc = need_file(o->haproxy, 1, " (install haproxy or pass --haproxy)", err, errlen);
        if (rc < 0)
            return rc;
    }
    rc = start_echo(s, o, 0, 0, echo, sizeof(echo), err, errlen);
    if (rc < 0)
        return rc;
    if (path == PATH_DIRECT) {
        snprintf(s->entry, sizeof(s->entry), "%s", echo);
        return 0;
    }
    return start_haproxy_chain(s, o, path == PATH_HAPROXY1 || path == PATH_HAPROXY1_BUSY ? 1 : 3,
                               echo, err, errlen);
}

/* native echo <- supervisor running e->app with e's snapshot settings <- the bench. */
int stack_up_edge(struct bench_stack *s, const struct edge_spec *e, const struct bench_opts *o,
                  char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->path = PATH_EDGE_NATIVE;
    snprintf(s->tag, sizeof(s->tag), "%s", e->tag);
    return up_edge_native(s, o, e, err, errlen);
}

/* HAProxy needs two descriptors per connection (client and server side) and a few of its
 * own (it said "Cannot raise FD limit to 20014" for maxconn 10000). */
#define HAPROXY_FDS_OWN 32

int stack_haproxy_max_conns(void)
{
    long hard = proc_nofile_hard();

    return hard > 2 * HAPROXY_FDS_OWN ? (int)((hard - HAPROXY_FDS_OWN) / 2) : 0;
}

/* plain echo <- HAProxy (maxconn) <- the bench: the sessions section's baseline. */
int stack_up_haproxy(struct bench_stack *s, const struct bench_opts *o, int maxconn, int busy,
                     char *err, size_t errlen)
{
    char echo[64];
    int rc;

    memset(s, 0, sizeof(*s));
    s->path = busy ? PATH_HAPROXY1_BUSY : PATH_HAPROXY1;
    snprintf(s->tag, sizeof(s->tag), "sessions-%d%s", maxconn, busy ? "-busy" : "");
    rc = need_file(o->haproxy, 1, " (install haproxy or pass --haproxy)", err, errlen);
    if (rc == 0)
        rc = start_echo(s, o, 0, 1, echo, sizeof(echo), err, errlen);
    if (rc == 0)
        rc = start_haproxy(s, o, "haproxy", echo, maxconn, busy, s->entry, sizeof(s->entry),
                           err, errlen);
    return rc;
}

/* 0 while every process of the path runs; else which one ended and how. */
int stack_check(struct bench_stack *s, char *err, size_t errlen)
{
    for (int i = 0; i < s->nprocs; i++) {
        int rc = proc_check(&s->procs[i], err, errlen);

        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Stop from the client side inwards, so no process sees its upstream vanish first. */
void stack_down(struct bench_stack *s)
{
    for (int i = s->nprocs - 1; i >= 0; i--)
        proc_stop(&s->procs[i], STOP_GRACE_MS);
    s->nprocs = 0;
}
