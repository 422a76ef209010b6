/* t_world.c - the deployment of t_world.h: edges, proxies, the server program and the
 * lockstep client programs, shared by it_remote.c and it_remote_ops.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "t_world.h"

void w_keep(struct w_transcript *t, const void *data, size_t len)
{
    if (t->len + len + 1 > t->cap) {
        t->cap = (t->len + len + 1) * 2;
        t->buf = realloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    t->buf[t->len] = 0;
}

/* ---- the plain TCP server program: one reply per message it gets ---- */

struct server_conn {
    struct world *w;
    int fd;
};

/* The sequencer forwards "[c=.. s=.. h=..]\n" + the client's line: a message is complete at
 * the newline that ends a line not starting with '['. One reply, in one write, per message. */
static void *server_conn(void *p)
{
    struct server_conn *sc = p;
    struct w_transcript t = { 0 };
    char buf[4096], reply[64];
    size_t scanned = 0;
    int index = -1, k = 0;
    ssize_t n;

    while ((n = recv(sc->fd, buf, sizeof(buf), 0)) > 0) {
        w_keep(&t, buf, (size_t)n);
        char *nl;
        while ((nl = memchr(t.buf + scanned, '\n', t.len - scanned))) {
            char *line = t.buf + scanned;
            scanned = (size_t)(nl - t.buf) + 1;
            if (line[0] == '[')
                continue;
            if (index < 0 && strncmp(line, "hello client ", 13) == 0)
                index = atoi(line + 13);
            /* A short timer gets no reply: the reply and the timer's firing would race,
             * and either order is a correct history (only one can be compared). */
            if (strncmp(line, "TICK ", 5) == 0 && strncmp(line, "TICK 60000", 10) != 0)
                continue;
            int len = snprintf(reply, sizeof(reply), "reply %d\n", ++k);
            if (send(sc->fd, reply, (size_t)len, MSG_NOSIGNAL) != len)
                goto out;
        }
    }
out:
    if (index >= 0 && index < sc->w->o.sessions) {
        pthread_mutex_lock(&sc->w->lock);
        w_keep(&sc->w->server[index], t.buf ? t.buf : "", t.len);
        pthread_mutex_unlock(&sc->w->lock);
    }
    free(t.buf);
    close(sc->fd);
    free(sc);
    return NULL;
}

static void *server_accept(void *p)
{
    struct world *w = p;

    for (;;) {
        int fd = accept(w->server_lfd, NULL, NULL);
        if (fd < 0)
            continue;
        __atomic_add_fetch(&w->server_conns, 1, __ATOMIC_SEQ_CST);
        struct server_conn *sc = malloc(sizeof(*sc));
        pthread_t th;
        sc->w = w;
        sc->fd = fd;
        pthread_create(&th, NULL, server_conn, sc);
        pthread_detach(th);
    }
    return NULL;
}

/* ---- edges ---- */

int w_free_port(void)
{
    char err[128];
    int fd = addr_listen("127.0.0.1:0", err, sizeof(err)), port;

    cr_assert(fd >= 0, "%s", err);
    port = addr_local_port(fd);
    close(fd);
    return port;
}

int edge_alive(struct world *w, int i)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0), alive;

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/edge%d.sock", w->dir, i);
    alive = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return alive;
}

void edge_start(struct world *w, int i)
{
    char cfg[400], state[400], name[32], secret[360] = "";
    FILE *f;

    /* Each start is a new node: an empty state_dir. */
    snprintf(state, sizeof(state), "%s/edge%d-run%d", w->dir, i, w->restarts[i]);
    snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", w->dir, i);
    if (!w->o.no_secret[i])
        snprintf(secret, sizeof(secret), "edge_secret_file = %s\n", w->secret_file);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\nstate_dir = %s\n"
               "control = %s/edge%d.sock\nsnapshot_interval_ms = %d\nship_snapshots = on\n"
               "heartbeat_interval_ms = 100\n%sstandby = %s\nsandbox = off\n%s\n",
            w->port[i], w->sproxy.addr, t_app(w->o.app), state, w->dir, i,
            w->o.snapshot_interval_ms < 0 ? 0 : w->o.snapshot_interval_ms, secret,
            w->o.standby, w->o.edge_extra[i] ? w->o.edge_extra[i] : "");
    fclose(f);
    snprintf(name, sizeof(name), "edge%d-%d", i, w->restarts[i]);
    /* setsid: the node's processes are a group of their own, killed together. */
    char *argv[] = { "/usr/bin/setsid", (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&w->edge[i], w->dir, name, argv);
    w->restarts[i]++;
}

void edge_kill(struct world *w, int i)
{
    kill(-w->edge[i].pid, SIGKILL);
    t_stop(&w->edge[i]);
    for (int k = 0; k < 500 && edge_alive(w, i); k++)
        usleep(10000);
    cr_assert(!edge_alive(w, i), "edge %d's control socket outlived it", i);
}

void edge_ctl(struct world *w, int i, const char *cmd, char *out, size_t len)
{
    struct t_edge e;

    memset(&e, 0, sizeof(e));
    snprintf(e.control, sizeof(e.control), "%s/edge%d.sock", w->dir, i);
    t_ctl(&e, cmd, out, len);
}

int edge_ctl_try(struct world *w, int i, const char *cmd, char *out, size_t len)
{
    char path[300];

    snprintf(path, sizeof(path), "%s/edge%d.sock", w->dir, i);
    return t_ctl_try(path, cmd, out, len);
}

uint64_t edge_stat(struct world *w, int i, const char *key)
{
    char out[4096];

    if (edge_ctl_try(w, i, "stats", out, sizeof(out)) < 0)
        return 0;
    return t_field(out, key);
}

int busiest_edge(struct world *w)
{
    int best = -1;
    uint64_t most = 0;

    for (int i = 0; i < w->o.edges; i++) {
        uint64_t n = edge_stat(w, i, "sessions");
        if (n > most) {
            most = n;
            best = i;
        }
    }
    return best;
}

int edge_session_ids(struct world *w, int i, uint64_t *ids, int max)
{
    char out[1 << 16];   /* not static: the tests call these from several threads */
    int n = 0;

    if (edge_ctl_try(w, i, "sessions", out, sizeof(out)) < 0)
        return 0;
    for (char *line = out; line && *line && n < max; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, "id=", 3) == 0 && strstr(line, "state=live"))
            ids[n++] = strtoull(line + 3, NULL, 10);
    }
    return n;
}

uint64_t edge_session_field(struct world *w, int i, uint64_t id, const char *key)
{
    char out[1 << 16];   /* not static: the tests call these from several threads */
    char pat[40];

    if (edge_ctl_try(w, i, "sessions", out, sizeof(out)) < 0)
        return 0;
    snprintf(pat, sizeof(pat), "id=%llu ", (unsigned long long)id);
    for (char *line = out; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, pat, strlen(pat)) == 0) {
            char *end = strchr(line, '\n');
            if (end)
                *end = 0;   /* t_field reads this line only */
            return t_field(line, key);
        }
    }
    return 0;
}

void edge_log(struct world *w, int i, char *path, size_t len)
{
    snprintf(path, len, "%s/edge%d-%d.log", w->dir, i, w->restarts[i] - 1);
}

int file_count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    int n = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        for (char *p = line; (p = strstr(p, needle)); p += strlen(needle))
            n++;
    fclose(f);
    return n;
}

int file_wait_count(const char *path, const char *needle, int n, int timeout_ms)
{
    for (long t0 = t_now_ms(); t_now_ms() - t0 < timeout_ms; usleep(10000))
        if (file_count(path, needle) >= n)
            return 1;
    return file_count(path, needle) >= n;
}

void file_last_line(const char *path, const char *needle, char *out, size_t len)
{
    char line[2048];
    FILE *f = fopen(path, "r");

    out[0] = 0;
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            snprintf(out, len, "%s", line);
    fclose(f);
}

/* ---- the world ---- */

static void fill_defaults(struct w_opts *o)
{
    if (!o->edges)
        o->edges = 3;
    if (!o->sessions)
        o->sessions = 6;
    if (!o->rounds)
        o->rounds = 900;
    if (!o->standby)
        o->standby = "cold";
    if (!o->app)
        o->app = "sequencer";
    if (!o->heartbeat_ms)
        o->heartbeat_ms = 400;
    if (!o->resume_timeout_ms)
        o->resume_timeout_ms = 30000;
    if (!o->snapshot_interval_ms)
        o->snapshot_interval_ms = 50;
    cr_assert(o->edges <= W_EDGES_MAX && o->sessions <= W_SESSIONS_MAX);
}

/* The plain TCP server program, on a thread per connection. */
static void server_program_start(struct world *w)
{
    char err[128];
    pthread_t th;

    w->server_lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(w->server_lfd >= 0, "%s", err);
    snprintf(w->server_addr, sizeof(w->server_addr), "127.0.0.1:%d",
             addr_local_port(w->server_lfd));
    pthread_create(&th, NULL, server_accept, w);
    pthread_detach(th);
}

void world_start(struct world *w, const struct w_opts *o)
{
    char edges[256] = "", heartbeat[16], resume_timeout[16];
    FILE *f;

    memset(w, 0, sizeof(*w));
    w->o = *o;
    fill_defaults(&w->o);
    pthread_mutex_init(&w->lock, NULL);
    w->dir = t_tmpdir();
    snprintf(w->secret_file, sizeof(w->secret_file), "%s/edge.secret", w->dir);
    f = fopen(w->secret_file, "w");
    fprintf(f, "a-shared-secret-for-the-edges\n");
    fclose(f);
    chmod(w->secret_file, 0600);
    snprintf(w->store, sizeof(w->store), "%s/store", w->dir);
    mkdir(w->store, 0700);

    if (w->o.target)
        snprintf(w->server_addr, sizeof(w->server_addr), "%s", w->o.target);
    else
        server_program_start(w);

    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", w->server_addr, "--store", w->store, "--edge-secret-file",
                      w->secret_file, "--linger-ms", "30000", NULL };
    t_start(&w->sproxy, w->dir, "server-proxy", sargv);
    for (int i = 0; i < w->o.edges; i++) {
        w->port[i] = w_free_port();
        edge_start(w, i);
        snprintf(edges + strlen(edges), sizeof(edges) - strlen(edges), "%s127.0.0.1:%d",
                 i ? "," : "", w->port[i]);
    }
    snprintf(heartbeat, sizeof(heartbeat), "%d", w->o.heartbeat_ms);
    snprintf(resume_timeout, sizeof(resume_timeout), "%d", w->o.resume_timeout_ms);
    char *cargv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                      "--edge", edges, "--heartbeat-ms", heartbeat, "--resume-timeout-ms",
                      resume_timeout, NULL };
    t_start(&w->cproxy, w->dir, "client-proxy", cargv);
}

void world_stop(struct world *w)
{
    t_stop(&w->cproxy);
    for (int i = 0; i < w->o.edges; i++) {
        if (w->edge[i].pid > 0)
            kill(-w->edge[i].pid, SIGKILL);
        t_stop(&w->edge[i]);
    }
    t_stop(&w->sproxy);
}

/* ---- the client programs: lockstep, each waits for everything its message causes ---- */

/* Read until the transcript holds each needle after `from`. */
static int wait_for(int fd, struct w_transcript *t, size_t from, const char *const *needles,
                    int n, long deadline)
{
    char buf[65536];

    for (;;) {
        int all = 1;
        for (int i = 0; i < n && all; i++)
            all = memmem(t->buf ? t->buf + from : "", t->len - from, needles[i],
                         strlen(needles[i])) != NULL;
        if (all)
            return 0;
        long left = deadline - t_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got <= 0)
            return got == 0 ? -EPIPE : -errno;
        w_keep(t, buf, (size_t)got);
    }
}

/* Round r's message of client index. */
static int round_message(char *msg, size_t len, int r, int index)
{
    if (r == 0)
        return snprintf(msg, len, "hello client %d\n", index);
    if (r % 10 == 3)
        return snprintf(msg, len, "TICK %d\n", 20 + (r * 7 + index * 13) % 60);
    if (r % 10 == 6)
        return snprintf(msg, len, "TICK 60000\n");
    if (r % 10 == 7)
        return snprintf(msg, len, "CANCEL\n");
    if (r % 10 == 8)
        return snprintf(msg, len, "RAND\n");
    return snprintf(msg, len, "message %d of client %d\n", r, index);
}

static void *client_run(void *p)
{
    struct w_client_arg *a = p;
    struct world *w = a->w;
    struct w_transcript *t = &w->client[a->index];
    int fd = t_connect(w->cproxy.addr), replies = 0, tocks = 0;
    char msg[128], want_reply[32], want_tock[32];
    long deadline = t_now_ms() + 150000 + w->o.pause_ms;

    for (int r = 0; r < w->o.rounds; r++) {
        const char *needles[2];
        int n = 0, len = round_message(msg, sizeof(msg), r, a->index);
        size_t from = t->len;

        if (send(fd, msg, (size_t)len, MSG_NOSIGNAL) != len) {
            snprintf(w->why[a->index], sizeof(w->why[0]), "send round %d: %s", r, strerror(errno));
            break;
        }
        /* Lockstep: each message waits for all it causes, so each is read as one chunk. */
        if (strncmp(msg, "TICK", 4) == 0 && strncmp(msg, "TICK 60000", 10) != 0) {
            snprintf(want_tock, sizeof(want_tock), "TOCK %d\n", ++tocks);
            needles[n++] = want_tock;
        } else {
            snprintf(want_reply, sizeof(want_reply), "reply %d\n", ++replies);
            needles[n++] = want_reply;
            if (strncmp(msg, "CANCEL", 6) == 0)
                needles[n++] = "CANCEL ";
            else if (strncmp(msg, "RAND", 4) == 0)
                needles[n++] = "RAND ";
        }
        int rc = wait_for(fd, t, from, needles, n, deadline);
        if (rc < 0) {
            snprintf(w->why[a->index], sizeof(w->why[0]), "round %d (%.20s): waiting for %s: "
                     "%s; the last bytes: %s", r, msg, needles[0], strerror(-rc),
                     t->len > 120 ? t->buf + t->len - 120 : t->buf ? t->buf : "");
            break;
        }
        w->rounds_done[a->index] = r + 1;
        if (w->o.pause_ms && r + 1 == w->o.pause_after)
            usleep((useconds_t)w->o.pause_ms * 1000);   /* idle: the session may hibernate */
    }
    shutdown(fd, SHUT_WR);
    /* The session ends with CLOSE: the proxy's EOF follows. */
    char buf[4096];
    while (t_read_n(fd, buf, sizeof(buf), 10000) > 0)
        ;
    close(fd);
    return NULL;
}

void run_clients(struct world *w, struct w_clients *c)
{
    for (int i = 0; i < w->o.sessions; i++) {
        c->arg[i].w = w;
        c->arg[i].index = i;
        pthread_create(&c->th[i], NULL, client_run, &c->arg[i]);
    }
}

void join_clients(struct world *w, struct w_clients *c)
{
    for (int i = 0; i < w->o.sessions; i++)
        pthread_join(c->th[i], NULL);
}

int wait_rounds(struct world *w, int rounds, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;

    for (;;) {
        int all = 1;
        for (int i = 0; i < w->o.sessions; i++)
            all &= w->rounds_done[i] >= rounds || w->why[i][0];
        if (all)
            return 0;
        if (t_now_ms() > deadline)
            return -ETIMEDOUT;
        usleep(10000);
    }
}

void wait_server_transcripts(struct world *w)
{
    for (int k = 0; k < 1000; k++) {
        int n = 0;
        pthread_mutex_lock(&w->lock);
        for (int i = 0; i < w->o.sessions; i++)
            n += w->server[i].len > 0;
        pthread_mutex_unlock(&w->lock);
        if (n == w->o.sessions)
            return;
        usleep(10000);
    }
}

/* ---- PRNG draws: a session's RAND answers come from its own splitmix64 stream, seeded
 * with its session id (different in every run), so they are masked for the comparison and
 * checked on their own: consecutive draws must be consecutive states of one stream, which
 * a replay that drew twice, or skipped a draw, would break. ---- */

static uint64_t unxorshift(uint64_t y, int s)
{
    uint64_t x = y;

    for (int i = 0; i < 64 / s + 1; i++)
        x = y ^ (x >> s);
    return x;
}

static uint64_t inverse(uint64_t c)
{
    uint64_t inv = c;   /* Newton: each step doubles the correct low bits */

    for (int i = 0; i < 6; i++)
        inv *= 2 - c * inv;
    return inv;
}

/* The splitmix64 state that gave output z. */
static uint64_t unmix(uint64_t z)
{
    z = unxorshift(z, 31);
    z *= inverse(0x94d049bb133111ebull);
    z = unxorshift(z, 27);
    z *= inverse(0xbf58476d1ce4e5b9ull);
    return unxorshift(z, 30);
}

int check_rand(struct w_transcript *t, int session)
{
    char *p = t->buf;
    uint64_t prev = 0;
    int n = 0;

    while (p && (p = memmem(p, t->len - (size_t)(p - t->buf), "RAND ", 5))) {
        p += 5;
        if (strlen(p) < 16 || p[16] != '\n') {
            continue;   /* the client's own "RAND" command echoed in a header line */
        }
        if (p[0] == 'x') {   /* masked by an earlier compare (a soak compares one clean run
                              * with many): counted, checked then */
            n++;
            continue;
        }
        uint64_t state = unmix(strtoull(p, NULL, 16));
        if (n)
            cr_expect_eq(state - prev, 0x9e3779b97f4a7c15ull,
                         "session %d: RAND draw %d is not the next of its stream", session, n + 1);
        prev = state;
        n++;
        memset(p, 'x', 16);
    }
    return n;
}

static int same(const struct w_transcript *a, const struct w_transcript *b)
{
    return a->len > 0 && a->len == b->len && memcmp(a->buf, b->buf, a->len) == 0;
}

void compare(struct world *a, struct world *b)
{
    for (int i = 0; i < a->o.sessions; i++) {
        int draws = check_rand(&a->client[i], i);
        cr_expect(draws > 0 && draws == check_rand(&b->client[i], i),
                  "session %d: %d RAND draws without faults", i, draws);
        cr_expect(!a->why[i][0], "fault-free session %d: %s", i, a->why[i]);
        cr_expect(!b->why[i][0], "session %d: %s", i, b->why[i]);
        cr_expect(same(&a->client[i], &b->client[i]),
                  "session %d: the client program received other bytes (%zu vs %zu)", i,
                  a->client[i].len, b->client[i].len);
        cr_expect(same(&a->server[i], &b->server[i]),
                  "session %d: the server program received other bytes (%zu vs %zu)", i,
                  a->server[i].len, b->server[i].len);
    }
}
