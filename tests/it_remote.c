/* it_remote.c - sessions that outlive their edge node (issue 7, docs/protocol.md).
 *
 * Three supervisors behind one client proxy (--edge A,B,C) and one server proxy (--store,
 * --edge-secret-file); plain TCP client programs (threads here) run lockstep sessions through
 * sequencer.so (every output carries a hash of the exact event order), with timers, cancels
 * and PRNG draws; a plain TCP server program answers each message. The edge holding the
 * sessions is killed with SIGKILL to its whole process group (or stopped with SIGSTOP past the
 * client proxy's heartbeat), again and again, and restarted with an empty state_dir. Every
 * byte each program received must equal a run without faults. */
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
#include "t_helpers.h"

#define EDGES    3
#define SESSIONS 6
#define ROUNDS   900

TestSuite(remote, .timeout = 240);

struct transcript {
    char *buf;
    size_t len, cap;
};

static void keep(struct transcript *t, const void *data, size_t len)
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

struct world;

struct server_conn {
    struct world *w;
    int fd;
};

struct world {
    const char *dir;
    char secret_file[300], store[300];
    struct t_proc sproxy, cproxy;
    int server_lfd;
    char server_addr[64];
    struct t_proc edge[EDGES];
    int port[EDGES], restarts[EDGES];
    const char *standby;
    struct transcript client[SESSIONS], server[SESSIONS];
    pthread_mutex_t lock;
    char why[SESSIONS][400];
    volatile int done;
};

/* The sequencer forwards "[c=.. s=.. h=..]\n" + the client's line: a message is complete at
 * the newline that ends a line not starting with '['. One reply, in one write, per message. */
static void *server_conn(void *p)
{
    struct server_conn *sc = p;
    struct transcript t = { 0 };
    char buf[4096], reply[64];
    size_t scanned = 0;
    int index = -1, k = 0;
    ssize_t n;

    while ((n = recv(sc->fd, buf, sizeof(buf), 0)) > 0) {
        keep(&t, buf, (size_t)n);
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
    if (index >= 0 && index < SESSIONS) {
        pthread_mutex_lock(&sc->w->lock);
        keep(&sc->w->server[index], t.buf ? t.buf : "", t.len);
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

static int free_port(void)
{
    char err[128];
    int fd = addr_listen("127.0.0.1:0", err, sizeof(err)), port;

    cr_assert(fd >= 0, "%s", err);
    port = addr_local_port(fd);
    close(fd);
    return port;
}

/* 1 while something still accepts on edge i's control socket. */
static int control_alive(struct world *w, int i)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0), alive;

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/edge%d.sock", w->dir, i);
    alive = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return alive;
}

static void edge_start(struct world *w, int i)
{
    char cfg[400], state[400], name[32];
    FILE *f;

    /* Each start is a new node: an empty state_dir. */
    snprintf(state, sizeof(state), "%s/edge%d-run%d", w->dir, i, w->restarts[i]);
    snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", w->dir, i);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\nstate_dir = %s\n"
               "control = %s/edge%d.sock\nsnapshot_interval_ms = 50\nship_snapshots = on\n"
               "heartbeat_interval_ms = 100\nedge_secret_file = %s\nstandby = %s\n"
               "sandbox = off\n",
            w->port[i], w->sproxy.addr, t_app("sequencer"), state, w->dir, i, w->secret_file,
            w->standby);
    fclose(f);
    snprintf(name, sizeof(name), "edge%d-%d", i, w->restarts[i]);
    /* setsid: the node's processes are a group of their own, killed together. */
    char *argv[] = { "/usr/bin/setsid", (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&w->edge[i], w->dir, name, argv);
    w->restarts[i]++;
}

static void edge_ctl(struct world *w, int i, const char *cmd, char *out, size_t len)
{
    struct t_edge e;

    memset(&e, 0, sizeof(e));
    snprintf(e.control, sizeof(e.control), "%s/edge%d.sock", w->dir, i);
    t_ctl(&e, cmd, out, len);
}

/* The edge with the most sessions (-1: none has any). */
static int busiest_edge(struct world *w)
{
    char out[1 << 16];
    int best = -1;
    uint64_t most = 0;

    for (int i = 0; i < EDGES; i++) {
        edge_ctl(w, i, "stats", out, sizeof(out));
        uint64_t n = t_field(out, "sessions");
        if (n > most) {
            most = n;
            best = i;
        }
    }
    return best;
}

static void world_start(struct world *w, const char *standby)
{
    char err[128], edges[256] = "";
    pthread_t th;
    FILE *f;

    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->lock, NULL);
    w->dir = t_tmpdir();
    w->standby = standby;
    snprintf(w->secret_file, sizeof(w->secret_file), "%s/edge.secret", w->dir);
    f = fopen(w->secret_file, "w");
    fprintf(f, "a-shared-secret-for-the-edges\n");
    fclose(f);
    chmod(w->secret_file, 0600);
    snprintf(w->store, sizeof(w->store), "%s/store", w->dir);
    mkdir(w->store, 0700);

    w->server_lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(w->server_lfd >= 0, "%s", err);
    snprintf(w->server_addr, sizeof(w->server_addr), "127.0.0.1:%d",
             addr_local_port(w->server_lfd));
    pthread_create(&th, NULL, server_accept, w);
    pthread_detach(th);

    char *sargv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                      "--target", w->server_addr, "--store", w->store, "--edge-secret-file",
                      w->secret_file, "--linger-ms", "30000", NULL };
    t_start(&w->sproxy, w->dir, "server-proxy", sargv);
    for (int i = 0; i < EDGES; i++) {
        w->port[i] = free_port();
        edge_start(w, i);
        snprintf(edges + strlen(edges), sizeof(edges) - strlen(edges), "%s127.0.0.1:%d",
                 i ? "," : "", w->port[i]);
    }
    char *cargv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                      "--edge", edges, "--heartbeat-ms", "400", "--resume-timeout-ms", "30000",
                      NULL };
    t_start(&w->cproxy, w->dir, "client-proxy", cargv);
}

static void world_stop(struct world *w)
{
    t_stop(&w->cproxy);
    for (int i = 0; i < EDGES; i++) {
        kill(-w->edge[i].pid, SIGKILL);
        t_stop(&w->edge[i]);
    }
    t_stop(&w->sproxy);
}

/* ---- the client programs: lockstep, each waits for everything its message causes ---- */

struct client_arg {
    struct world *w;
    int index;
};

/* Read until the transcript holds `want` more occurrences of each needle after `from`. */
static int wait_for(int fd, struct transcript *t, size_t from, const char *const *needles,
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
        keep(t, buf, (size_t)got);
    }
}

static void *client_run(void *p)
{
    struct client_arg *a = p;
    struct world *w = a->w;
    struct transcript *t = &w->client[a->index];
    int fd = t_connect(w->cproxy.addr), replies = 0, tocks = 0;
    char msg[128], want_reply[32], want_tock[32];
    long deadline = t_now_ms() + 150000;

    for (int r = 0; r < ROUNDS; r++) {
        const char *needles[2];
        int n = 1, len;
        size_t from = t->len;

        if (r == 0)
            len = snprintf(msg, sizeof(msg), "hello client %d\n", a->index);
        else if (r % 10 == 3)
            len = snprintf(msg, sizeof(msg), "TICK %d\n", 20 + (r * 7 + a->index * 13) % 60);
        else if (r % 10 == 6)
            len = snprintf(msg, sizeof(msg), "TICK 60000\n");
        else if (r % 10 == 7)
            len = snprintf(msg, sizeof(msg), "CANCEL\n");
        else if (r % 10 == 8)
            len = snprintf(msg, sizeof(msg), "RAND\n");
        else
            len = snprintf(msg, sizeof(msg), "message %d of client %d\n", r, a->index);
        if (send(fd, msg, (size_t)len, MSG_NOSIGNAL) != len) {
            snprintf(w->why[a->index], sizeof(w->why[0]), "send round %d: %s", r, strerror(errno));
            break;
        }
        /* Lockstep: each message waits for all it causes, so each is read as one chunk. */
        n = 0;
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
    }
    shutdown(fd, SHUT_WR);
    /* The session ends with CLOSE: the proxy's EOF follows. */
    char buf[4096];
    while (t_read_n(fd, buf, sizeof(buf), 10000) > 0)
        ;
    close(fd);
    return NULL;
}

static void run_clients(struct world *w, pthread_t *th, struct client_arg *args)
{
    for (int i = 0; i < SESSIONS; i++) {
        args[i].w = w;
        args[i].index = i;
        pthread_create(&th[i], NULL, client_run, &args[i]);
    }
}

static void join_clients(pthread_t *th)
{
    for (int i = 0; i < SESSIONS; i++)
        pthread_join(th[i], NULL);
}

/* The server program files a transcript when its connection ends. */
static void wait_server_transcripts(struct world *w)
{
    for (int k = 0; k < 1000; k++) {
        int n = 0;
        pthread_mutex_lock(&w->lock);
        for (int i = 0; i < SESSIONS; i++)
            n += w->server[i].len > 0;
        pthread_mutex_unlock(&w->lock);
        if (n == SESSIONS)
            return;
        usleep(10000);
    }
}

enum fault { NONE, KILL, STOP };

/* One run: returns the number of node faults injected. */
static int run(struct world *w, enum fault fault)
{
    pthread_t th[SESSIONS];
    struct client_arg args[SESSIONS];
    int faults = 0;

    run_clients(w, th, args);
    if (fault != NONE) {
        usleep(300 * 1000);
        for (int k = 0; k < 40; k++) {
            int i = busiest_edge(w);
            if (i < 0)
                break;   /* every session ended */
            if (fault == KILL) {
                kill(-w->edge[i].pid, SIGKILL);
                t_stop(&w->edge[i]);
                for (int k2 = 0; k2 < 500 && control_alive(w, i); k2++)
                    usleep(10000);
                cr_assert(!control_alive(w, i), "edge %d's control socket outlived it", i);
                edge_start(w, i);
            } else {
                /* A hang longer than the heartbeat: the sessions move on; the stale node,
                 * continued, must change nothing and end its copies quietly. */
                kill(-w->edge[i].pid, SIGSTOP);
                usleep(900 * 1000);
                kill(-w->edge[i].pid, SIGCONT);
            }
            faults++;
            usleep((useconds_t)(60 + (k * 37) % 100) * 1000);
        }
    }
    join_clients(th);
    wait_server_transcripts(w);
    return faults;
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

/* Mask every RAND value in t and check they are consecutive draws; the number of draws. */
static int check_rand(struct transcript *t, int session)
{
    char *p = t->buf;
    uint64_t prev = 0;
    int n = 0;

    while (p && (p = memmem(p, t->len - (size_t)(p - t->buf), "RAND ", 5))) {
        p += 5;
        if (strlen(p) < 16 || p[16] != '\n') {
            continue;   /* the client's own "RAND" command echoed in a header line */
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

static void compare(struct world *a, struct world *b)
{
    for (int i = 0; i < SESSIONS; i++) {
        int draws = check_rand(&a->client[i], i);
        cr_expect(draws > 0 && draws == check_rand(&b->client[i], i),
                  "session %d: %d RAND draws without faults", i, draws);
        cr_expect(!a->why[i][0], "fault-free session %d: %s", i, a->why[i]);
        cr_expect(!b->why[i][0], "session %d: %s", i, b->why[i]);
        cr_expect(a->client[i].len > 0 && a->client[i].len == b->client[i].len &&
                  memcmp(a->client[i].buf, b->client[i].buf, a->client[i].len) == 0,
                  "session %d: the client program received other bytes (%zu vs %zu)", i,
                  a->client[i].len, b->client[i].len);
        cr_expect(a->server[i].len > 0 && a->server[i].len == b->server[i].len &&
                  memcmp(a->server[i].buf, b->server[i].buf, a->server[i].len) == 0,
                  "session %d: the server program received other bytes (%zu vs %zu)", i,
                  a->server[i].len, b->server[i].len);
    }
}

static void node_losses(const char *standby, enum fault fault, int min_faults)
{
    static struct world clean, faulty;

    world_start(&clean, standby);
    run(&clean, NONE);
    world_stop(&clean);

    world_start(&faulty, standby);
    int faults = run(&faulty, fault);
    world_stop(&faulty);
    cr_log_info("node faults: %d", faults);
    cr_expect(faults >= min_faults, "only %d node faults landed", faults);
    compare(&clean, &faulty);
}

Test(remote, edge_node_killed_again_and_again)
{
    node_losses("cold", KILL, 20);
}

Test(remote, edge_node_hangs_past_the_heartbeat)
{
    node_losses("cold", STOP, 5);
}
