/* it_native_resume.c - native programs on libcessna-endpoint survive their edge (issue 7).
 *
 * Three supervisors (passthrough.so, snapshots shipped) between a native client
 * (cessna_ep_connect with the three edges) and a native server that holds its sessions
 * (cessna_ep_server_new with a store directory and the edge secret). The client sends
 * numbered messages from one thread and reads the echoes on another; the server echoes
 * each. The edge holding the session is SIGKILLed with its whole node (setsid), hung past
 * the heartbeat (SIGSTOP), or asked to move the session (cessna-ctl move); every message
 * must reach the server exactly once and in order, and every echo the client. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"

#define EDGES  3
#define WINDOW 16   /* messages in flight */

TestSuite(native_resume, .timeout = 180);

struct world {
    const char *dir;
    char secret_file[300], store[300], edges[256];
    int lfd;
    char server_addr[64];
    struct cessna_ep_server *srv;
    struct t_proc edge[EDGES];
    int port[EDGES], restarts[EDGES];
    /* What the server side saw. */
    volatile int server_got, server_bad, sessions, server_closed;
    volatile long server_rc;
    struct cessna_ep *server_ep;   /* the last session (for the AUTH test) */
    volatile int hold;             /* server: stop echoing the last session and free it */
    char server_why[400];
};

/* ---- the native server: one thread per session echoes every message ---- */

struct server_sess {
    struct world *w;
    struct cessna_ep *ep;
};

static void *server_session(void *p)
{
    struct server_sess *ss = p;
    struct world *w = ss->w;
    int want = 1;

    for (;;) {
        const void *data;
        long n = cessna_ep_recv(ss->ep, &data);
        if (n == CESSNA_EP_CLOSED) {
            w->server_closed = 1;
            break;
        }
        if (n < 0) {
            w->server_rc = n;
            snprintf(w->server_why, sizeof(w->server_why), "server recv: %s",
                     cessna_ep_error(ss->ep));
            break;
        }
        char msg[64];
        int len = snprintf(msg, sizeof(msg), "msg %d", want);
        if (n != len || memcmp(data, msg, (size_t)len) != 0) {
            w->server_bad++;
            snprintf(w->server_why, sizeof(w->server_why), "server: want \"%s\", got \"%.*s\"",
                     msg, (int)(n < 60 ? n : 60), (const char *)data);
        }
        want++;
        w->server_got++;
        int rc = cessna_ep_send(ss->ep, data, (size_t)n);
        if (rc < 0) {
            w->server_rc = rc;
            snprintf(w->server_why, sizeof(w->server_why), "server send: %s (%s)",
                     strerror(-rc), cessna_ep_error(ss->ep));
            break;
        }
    }
    free(ss);
    return NULL;
}

static void *server_accept(void *p)
{
    struct world *w = p;
    char err[512];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_server_accept(w->srv, err, sizeof(err));
        if (!ep)
            continue;   /* a refused handshake */
        w->sessions++;
        w->server_ep = ep;
        if (w->hold)
            continue;   /* the AUTH test drives this session itself */
        struct server_sess *ss = malloc(sizeof(*ss));
        pthread_t th;
        ss->w = w;
        ss->ep = ep;
        pthread_create(&th, NULL, server_session, ss);
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

    snprintf(state, sizeof(state), "%s/edge%d-run%d", w->dir, i, w->restarts[i]);
    snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", w->dir, i);
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\nstate_dir = %s\n"
               "control = %s/edge%d.sock\nsnapshot_interval_ms = 50\nship_snapshots = on\n"
               "heartbeat_interval_ms = 100\nedge_secret_file = %s\nsandbox = off\n"
               /* resumed_where_spawns_wait_for_a_hung_zygote stops a zygote while 600
                * sessions open and 1.8 s more: past the default 5 s where opens are slow
                * (under the sanitizers on a VM whose forks cost a millisecond) */
               "zygote_answer_timeout_ms = 30000\n",
            w->port[i], w->server_addr, t_app("passthrough"), state, w->dir, i,
            w->secret_file);
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

/* The edge whose session is live (-1: none). */
static int holding_edge(struct world *w)
{
    char out[1 << 14];

    for (int i = 0; i < EDGES; i++) {
        edge_ctl(w, i, "sessions", out, sizeof(out));
        if (strstr(out, "state=live"))
            return i;
    }
    return -1;
}

static void world_start(struct world *w)
{
    char err[512];
    pthread_t th;
    FILE *f;

    memset(w, 0, sizeof(*w));
    w->dir = t_tmpdir();
    snprintf(w->secret_file, sizeof(w->secret_file), "%s/edge.secret", w->dir);
    f = fopen(w->secret_file, "w");
    fprintf(f, "a-shared-secret-for-the-edges\n");
    fclose(f);
    chmod(w->secret_file, 0600);
    snprintf(w->store, sizeof(w->store), "%s/store", w->dir);

    w->lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(w->lfd >= 0, "%s", err);
    snprintf(w->server_addr, sizeof(w->server_addr), "127.0.0.1:%d", addr_local_port(w->lfd));
    w->srv = cessna_ep_server_new(w->lfd, w->store, w->secret_file, err, sizeof(err));
    cr_assert_not_null(w->srv, "cessna_ep_server_new: %s", err);
    pthread_create(&th, NULL, server_accept, w);
    pthread_detach(th);
    for (int i = 0; i < EDGES; i++) {
        w->port[i] = free_port();
        edge_start(w, i);
        snprintf(w->edges + strlen(w->edges), sizeof(w->edges) - strlen(w->edges),
                 "%s127.0.0.1:%d", i ? "," : "", w->port[i]);
    }
}

static void world_stop(struct world *w)
{
    for (int i = 0; i < EDGES; i++) {
        kill(-w->edge[i].pid, SIGCONT);
        kill(-w->edge[i].pid, SIGKILL);
        t_stop(&w->edge[i]);
    }
}

static void kill_node(struct world *w, int i)
{
    kill(-w->edge[i].pid, SIGKILL);
    t_stop(&w->edge[i]);
    for (int k = 0; k < 500 && control_alive(w, i); k++)
        usleep(10000);
    cr_log_info("killed edge %d (pid %d) at %ld; restarting", i, (int)w->edge[i].pid,
                t_now_ms());
    edge_start(w, i);
}

/* ---- the native client: a sender thread and a receiving thread ---- */

struct client {
    struct world *w;
    struct cessna_ep *ep;
    int total;
    volatile int sent, got, bad;
    volatile int send_rc;
    long recv_rc;
    char why[400];
};

static void *client_sender(void *p)
{
    struct client *c = p;

    for (int i = 1; i <= c->total; i++) {
        while (c->sent - c->got >= WINDOW && !c->bad)
            usleep(200);
        if (c->bad)
            break;
        char msg[64];
        int len = snprintf(msg, sizeof(msg), "msg %d", i);
        int rc = cessna_ep_send(c->ep, msg, (size_t)len);
        if (rc < 0) {
            c->send_rc = rc;
            break;
        }
        c->sent = i;
        usleep(1500);   /* spread the run over the faults */
    }
    return NULL;
}

/* Receive every echo: exactly once, in order. 0, or the failing recv's result. */
static long client_receive(struct client *c)
{
    while (c->got < c->total) {
        const void *data;
        long n = cessna_ep_recv(c->ep, &data);
        if (n < 0) {
            snprintf(c->why, sizeof(c->why), "recv after %d echoes: %ld %s", c->got, n,
                     cessna_ep_error(c->ep));
            c->bad = 1;
            return n;
        }
        char msg[64];
        int len = snprintf(msg, sizeof(msg), "msg %d", c->got + 1);
        if (n != len || memcmp(data, msg, (size_t)len) != 0) {
            snprintf(c->why, sizeof(c->why), "echo %d: want \"%s\", got \"%.*s\"", c->got + 1,
                     msg, (int)(n < 60 ? n : 60), (const char *)data);
            c->bad = 1;
            return -EPROTO;
        }
        c->got++;
    }
    return 0;
}

static void *receiver_main(void *p)
{
    struct client *c = p;

    c->recv_rc = client_receive(c);
    return NULL;
}

static struct cessna_ep *client_connect(struct world *w)
{
    char err[512];
    struct cessna_ep *ep = cessna_ep_connect(w->edges, err, sizeof(err));

    cr_assert_not_null(ep, "cessna_ep_connect %s: %s", w->edges, err);
    cessna_ep_set_heartbeat(ep, 400);
    cessna_ep_set_resume_timeout(ep, 30000);
    return ep;
}

enum fault { KILL, STOP, MOVE };

struct faulter {
    struct world *w;
    struct client *c;
    enum fault fault;
    int faults, gap_ms;
    int made;
};

static void *faulter_main(void *p);

/* One session of total messages with faults of one kind every gap_ms; the faults made. */
static int run(struct world *w, enum fault fault, int total, int faults, int gap_ms)
{
    struct client c = { .w = w, .total = total };
    pthread_t th;
    int made = 0;

    c.ep = client_connect(w);
    uint64_t epoch0 = cessna_ep_epoch(c.ep);
    pthread_create(&th, NULL, client_sender, &c);
    /* Faults come from this thread (edges die with the thread that started them:
     * PR_SET_PDEATHSIG); another one receives. */
    struct faulter fa = { w, &c, fault, faults, gap_ms, 0 };
    pthread_t rth;
    pthread_create(&rth, NULL, receiver_main, &c);
    faulter_main(&fa);
    pthread_join(rth, NULL);
    long rc = c.recv_rc;
    pthread_join(th, NULL);
    made = fa.made;
    cr_expect_eq(rc, 0, "%s", c.why);
    cr_expect_eq(c.send_rc, 0, "send: %s (%s)", strerror(-c.send_rc), cessna_ep_error(c.ep));
    cr_expect_eq(c.got, total, "echoes: %d of %d (%s)", c.got, total, c.why);
    cr_expect_eq(w->server_got, total, "the server got %d of %d (%s)", w->server_got, total,
                 w->server_why);
    cr_expect_eq(w->server_bad, 0, "%s", w->server_why);
    cr_expect(cessna_ep_epoch(c.ep) >= epoch0 + (uint64_t)made,
              "epoch %llu after %d faults from %llu",
              (unsigned long long)cessna_ep_epoch(c.ep), made, (unsigned long long)epoch0);
    int crc = cessna_ep_close(c.ep, 10000);
    cr_expect_eq(crc, 0, "close: %d %s", crc, cessna_ep_error(c.ep));
    for (int k = 0; k < 500 && !w->server_closed; k++)
        usleep(10000);
    cr_expect(w->server_closed, "the server's session did not end with CLOSE (%s)",
              w->server_why);
    cr_log_info("faults: %d, epoch %llu", made, (unsigned long long)cessna_ep_epoch(c.ep));
    cessna_ep_free(c.ep);
    return made;
}

static void *faulter_main(void *p)
{
    struct faulter *fa = p;
    struct world *w = fa->w;
    char out[4096], cmd[64];

    usleep(300 * 1000);
    for (int k = 0; k < fa->faults && fa->c->got < fa->c->total && !fa->c->bad; k++) {
        int i = holding_edge(w);
        if (i < 0) {
            usleep(50 * 1000);
            continue;
        }
        if (fa->fault == KILL) {
            kill_node(w, i);
        } else if (fa->fault == STOP) {
            /* A hang past the client's heartbeat: it resumes elsewhere; the stale node,
             * continued, must change nothing. */
            kill(-w->edge[i].pid, SIGSTOP);
            usleep(1200 * 1000);
            kill(-w->edge[i].pid, SIGCONT);
        } else {
            edge_ctl(w, i, "sessions", out, sizeof(out));
            uint64_t id = t_field(out, "id");
            snprintf(cmd, sizeof(cmd), "move %llu", (unsigned long long)id);
            edge_ctl(w, i, cmd, out, sizeof(out));
            if (!strstr(out, "ok moving")) {
                cr_log_info("move: %s", out);
                continue;
            }
        }
        fa->made++;
        usleep((useconds_t)fa->gap_ms * 1000);
    }
    return NULL;
}

Test(native_resume, edge_node_killed_again_and_again)
{
    static struct world w;

    world_start(&w);
    int made = run(&w, KILL, 4000, 8, 250);
    world_stop(&w);
    cr_expect(made >= 5, "only %d node kills landed", made);
}

Test(native_resume, edge_hangs_past_the_heartbeat)
{
    static struct world w;

    world_start(&w);
    int made = run(&w, STOP, 2500, 3, 300);
    world_stop(&w);
    cr_expect(made >= 2, "only %d hangs landed", made);
}

Test(native_resume, moved_with_cessna_ctl)
{
    static struct world w;

    world_start(&w);
    int made = run(&w, MOVE, 2500, 4, 300);
    world_stop(&w);
    cr_expect(made >= 3, "only %d moves landed", made);
}

/* The server endpoint forgot the session: the client's resume gets ERROR AUTH, which ends
 * its session with -ECONNABORTED and the edge's text. */
Test(native_resume, error_auth_ends_the_session)
{
    static struct world w;
    const void *data;

    world_start(&w);
    w.hold = 1;
    struct cessna_ep *ep = client_connect(&w);
    cr_assert_eq(cessna_ep_send(ep, "msg 1", 5), 0);
    for (int k = 0; k < 500 && !w.server_ep; k++)
        usleep(10000);
    cr_assert_not_null(w.server_ep, "no session at the server");
    long n = cessna_ep_recv(w.server_ep, &data);
    cr_assert_eq(n, 5, "server recv: %ld %s", n, cessna_ep_error(w.server_ep));
    cr_assert_eq(cessna_ep_send(w.server_ep, "msg 1", 5), 0);
    n = cessna_ep_recv(ep, &data);
    cr_assert_eq(n, 5, "client recv: %ld %s", n, cessna_ep_error(ep));
    /* Forgotten: its edge loses the server connection and drops the client's, whose
     * RESUME the server endpoint then refuses. */
    cessna_ep_free(w.server_ep);
    int64_t t0 = t_now_ms();
    n = cessna_ep_recv(ep, &data);
    cr_expect_eq(n, -ECONNABORTED, "recv: %ld %s", n, cessna_ep_error(ep));
    cr_expect(strstr(cessna_ep_error(ep), "authentication failed"), "error: %s",
              cessna_ep_error(ep));
    cr_expect(t_now_ms() - t0 < 20000, "AUTH took %lld ms", (long long)(t_now_ms() - t0));
    cessna_ep_free(ep);
    world_stop(&w);
}

/* Lockstep: messages from..to of the session, each echoed before the next goes. */
static void lockstep(struct cessna_ep *ep, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char msg[64];
        const void *data;
        int len = snprintf(msg, sizeof(msg), "msg %d", i);
        cr_assert_eq(cessna_ep_send(ep, msg, (size_t)len), 0, "send %d: %s", i,
                     cessna_ep_error(ep));
        long n = cessna_ep_recv(ep, &data);
        cr_assert(n == len && memcmp(data, msg, (size_t)len) == 0, "echo %d: %ld %s", i, n,
                  n < 0 ? cessna_ep_error(ep) : "other bytes");
    }
}

static void *continue_later(void *p)
{
    usleep(1500 * 1000);
    kill(*(pid_t *)p, SIGCONT);
    return NULL;
}

/* Two faults together: the node holding a session dies while the edge it resumes at cannot
 * start workers (its zygote hangs, and a burst of new sessions there fills the zygote's
 * socket, so their spawns wait in the supervisor). The resumed session's worker waits with
 * them; when the zygote goes on, every session starts and nothing is lost or repeated. */
Test(native_resume, resumed_where_spawns_wait_for_a_hung_zygote)
{
    enum { BURST = 600 };
    static struct world w;
    static struct cessna_ep *burst[BURST];
    char out[4096], addr[64], err[512];
    pthread_t th;

    world_start(&w);
    struct cessna_ep *ep = client_connect(&w);
    uint64_t epoch0 = cessna_ep_epoch(ep);
    lockstep(ep, 1, 50);
    int a = holding_edge(&w);
    cr_assert_geq(a, 0);
    int b = (a + 1) % EDGES;   /* the client tries the next edge of its list first */
    edge_ctl(&w, b, "stats", out, sizeof(out));
    pid_t z = (pid_t)t_field(out, "zygote_pid");
    cr_assert_gt(z, 0, "%s", out);
    kill(z, SIGSTOP);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", w.port[b]);
    for (int i = 0; i < BURST; i++) {
        burst[i] = cessna_ep_connect(addr, err, sizeof(err));
        cr_assert(burst[i], "burst session %d: %s", i, err);
    }
    usleep(300 * 1000);   /* a few ticks find the zygote's socket full */
    edge_ctl(&w, b, "stats", out, sizeof(out));
    uint64_t deferred = t_field(out, "zygote_spawns_deferred");
    kill_node(&w, a);
    pthread_create(&th, NULL, continue_later, &z);
    lockstep(ep, 51, 100);   /* resumes at b, its worker spawned once the zygote goes on */
    pthread_join(th, NULL);
    cr_assert_gt(deferred, 0, "the burst should not fit in the zygote's socket: %s", out);
    cr_expect_gt(cessna_ep_epoch(ep), epoch0, "the session never resumed");
    edge_ctl(&w, b, "stats", out, sizeof(out));
    cr_expect_geq(t_field(out, "resumes"), 1, "%s", out);
    for (int i = 0; i < BURST; i++) {
        lockstep(burst[i], 1, 1);
        cessna_ep_close(burst[i], 5000);
        cessna_ep_free(burst[i]);
    }
    edge_ctl(&w, b, "stats", out, sizeof(out));
    cr_expect_eq(t_field(out, "sessions_failed"), 0, "%s", out);
    cr_expect_eq(w.server_bad, 0, "%s", w.server_why);
    cr_expect_eq(w.server_got, 100 + BURST, "the server got %d messages", w.server_got);
    cessna_ep_close(ep, 10000);
    cessna_ep_free(ep);
    world_stop(&w);
}
