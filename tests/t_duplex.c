/* t_duplex.c - see t_duplex.h. */
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
#include "t_duplex.h"

static int free_port(void)
{
    char err[128];
    int fd = addr_listen("127.0.0.1:0", err, sizeof(err)), port;

    cr_assert(fd >= 0, "%s", err);
    port = addr_local_port(fd);
    close(fd);
    return port;
}

static void control_path(struct dx *d, int i, char *out, size_t len)
{
    snprintf(out, len, "%s/edge%d.sock", d->dir, i);
}

static int edge_alive(struct dx *d, int i)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0), alive;

    control_path(d, i, sa.sun_path, sizeof(sa.sun_path));
    alive = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return alive;
}

/* Edge i as a new node (an empty state_dir), in a process group of its own. */
static void edge_start(struct dx *d, int i)
{
    char cfg[400], state[400], name[32], sock[300];
    FILE *f;

    snprintf(state, sizeof(state), "%s/edge%d-run%d", d->dir, i, d->restarts[i]);
    snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", d->dir, i);
    control_path(d, i, sock, sizeof(sock));
    f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\nstate_dir = %s\n"
               "control = %s\n%sheartbeat_interval_ms = 100\nedge_secret_file = %s\n%s\n"
               "[app]\n%s\n",
            d->port[i], d->server_addr, d->app, state, sock,
            strstr(d->extra, "snapshot_interval_ms") ? "" : "snapshot_interval_ms = 50\n",
            d->secret_file, d->extra, d->app_cfg);
    fclose(f);
    snprintf(name, sizeof(name), "edge%d-%d", i, d->restarts[i]++);
    char *argv[] = { "/usr/bin/setsid", (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&d->edge[i], d->dir, name, argv);
}

static void edge_kill(struct dx *d, int i)
{
    kill(-d->edge[i].pid, SIGKILL);
    t_stop(&d->edge[i]);
    for (int k = 0; k < 500 && edge_alive(d, i); k++)
        usleep(10000);
}

static void edge_ctl(struct dx *d, int i, const char *cmd, char *out, size_t len)
{
    struct t_edge e;

    memset(&e, 0, sizeof(e));
    control_path(d, i, e.control, sizeof(e.control));
    t_ctl(&e, cmd, out, len);
}

/* The edge holding the live session and its worker's pid; -1 when none does now. */
static int holder(struct dx *d, uint64_t *worker)
{
    char out[4096];

    for (int i = 0; i < d->nedges; i++) {
        if (!edge_alive(d, i))
            continue;
        edge_ctl(d, i, "sessions", out, sizeof(out));
        char *line = strstr(out, "state=live");
        if (line) {
            while (line > out && line[-1] != '\n')
                line--;
            *worker = t_field(line, "worker");
            return i;
        }
    }
    return -1;
}

/* ---- the two ends ---- */

struct reader_arg { struct dx *d; int side; };

static void *reader_main(void *p)
{
    struct reader_arg *a = p;
    struct dx *d = a->d;
    struct dx_side *s = &d->side[a->side];

    free(a);
    for (;;) {
        const void *msg;
        long n = cessna_ep_recv(s->ep, &msg);
        pthread_mutex_lock(&d->lock);
        if (n >= 0) {
            if (s->len + (size_t)n + 1 > s->cap) {
                s->cap = (s->len + (size_t)n + 1) * 2;
                s->buf = realloc(s->buf, s->cap);
            }
            memcpy(s->buf + s->len, msg, (size_t)n);
            s->last = s->len;
            s->len += (size_t)n;
            s->buf[s->len] = 0;
            s->msgs++;
        } else {
            s->ended = n == CESSNA_EP_CLOSED ? 1 : -1;
            if (n != CESSNA_EP_CLOSED)
                snprintf(s->why, sizeof(s->why), "recv: %ld %s", n, cessna_ep_error(s->ep));
        }
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
        if (n < 0)
            return NULL;
    }
}

static void start_reader(struct dx *d, int side)
{
    struct reader_arg *a = malloc(sizeof(*a));

    *a = (struct reader_arg){ d, side };
    pthread_create(&d->side[side].th, NULL, reader_main, a);
}

/* The server program: takes the one session; RESUMEs are handled inside the call. */
static void *server_accept(void *p)
{
    struct dx *d = p;
    char err[512];

    for (;;) {
        struct cessna_ep *ep = cessna_ep_server_accept(d->srv, err, sizeof(err));
        if (!ep)
            continue;
        pthread_mutex_lock(&d->lock);
        d->side[DX_SERVER].ep = ep;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
    }
    return NULL;
}

void dx_start(struct dx *d, const char *app_path, const char *app_cfg, const char *extra,
              int nedges)
{
    char err[512];
    pthread_t th;
    FILE *f;

    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    d->dir = strdup(t_tmpdir());
    d->nedges = nedges;
    snprintf(d->app, sizeof(d->app), "%s", app_path);
    snprintf(d->app_cfg, sizeof(d->app_cfg), "%s", app_cfg ? app_cfg : "");
    snprintf(d->extra, sizeof(d->extra), "%s", extra ? extra : "");
    snprintf(d->secret_file, sizeof(d->secret_file), "%s/edge.secret", d->dir);
    f = fopen(d->secret_file, "w");
    cr_assert_not_null(f);
    fprintf(f, "a-shared-secret-for-the-edges\n");
    fclose(f);
    chmod(d->secret_file, 0600);
    snprintf(d->store, sizeof(d->store), "%s/store", d->dir);

    d->lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(d->lfd >= 0, "%s", err);
    snprintf(d->server_addr, sizeof(d->server_addr), "127.0.0.1:%d", addr_local_port(d->lfd));
    d->srv = cessna_ep_server_new(d->lfd, d->store, d->secret_file, err, sizeof(err));
    cr_assert_not_null(d->srv, "cessna_ep_server_new: %s", err);
    pthread_create(&th, NULL, server_accept, d);
    pthread_detach(th);
    for (int i = 0; i < nedges; i++) {
        d->port[i] = free_port();
        edge_start(d, i);
        snprintf(d->edges + strlen(d->edges), sizeof(d->edges) - strlen(d->edges),
                 "%s127.0.0.1:%d", i ? "," : "", d->port[i]);
    }

    struct cessna_ep_options o = { .heartbeat_ms = 400, .resume_timeout_ms = 30000,
                                   .edge_retry_ms = -1 };
    d->side[DX_CLIENT].ep = cessna_ep_connect_opts(d->edges, &o, err, sizeof(err));
    cr_assert_not_null(d->side[DX_CLIENT].ep, "connect %s: %s", d->edges, err);
    pthread_mutex_lock(&d->lock);
    for (int k = 0; k < 100 && !d->side[DX_SERVER].ep; k++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }
    pthread_mutex_unlock(&d->lock);
    cr_assert_not_null(d->side[DX_SERVER].ep, "the server endpoint got no session");
    cessna_ep_set_resume_timeout(d->side[DX_SERVER].ep, 30000);
    start_reader(d, DX_CLIENT);
    start_reader(d, DX_SERVER);
}

/* ---- scripts ---- */

static const char *side_name(int side) { return side == DX_CLIENT ? "client" : "server"; }

int dx_send(struct dx *d, int side, const char *text)
{
    int rc = cessna_ep_send(d->side[side].ep, text, strlen(text));

    if (rc < 0)
        snprintf(d->script_why, sizeof(d->script_why), "%s send \"%s\": %s (%s)",
                 side_name(side), text, strerror(-rc), cessna_ep_error(d->side[side].ep));
    return rc;
}

void dx_last(struct dx *d, int side, char *out, size_t len)
{
    struct dx_side *s = &d->side[side];

    pthread_mutex_lock(&d->lock);
    snprintf(out, len, "%s", s->buf ? s->buf + s->last : "");
    pthread_mutex_unlock(&d->lock);
}

int dx_msgs(struct dx *d, int side)
{
    pthread_mutex_lock(&d->lock);
    int n = d->side[side].msgs;
    pthread_mutex_unlock(&d->lock);
    return n;
}

/* Wait until done(d, side, arg) holds; -1 with script_why set on timeout or end. */
static int wait_for(struct dx *d, int side, int (*done)(struct dx_side *s, const void *arg),
                    const void *arg, int timeout_ms, const char *what)
{
    struct dx_side *s = &d->side[side];
    struct timespec until;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&d->lock);
    while (!done(s, arg)) {
        if (s->ended || pthread_cond_timedwait(&d->cond, &d->lock, &until) == ETIMEDOUT) {
            snprintf(d->script_why, sizeof(d->script_why),
                     "%s: waited for %s; it has %d messages, ended=%d %s; last: \"%.120s\"",
                     side_name(side), what, s->msgs, s->ended, s->why,
                     s->len > 120 ? s->buf + s->len - 120 : s->buf ? s->buf : "");
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int has_msgs(struct dx_side *s, const void *arg) { return s->msgs >= *(const int *)arg; }
static int has_text(struct dx_side *s, const void *arg)
{
    return s->buf && strstr(s->buf, arg) != NULL;
}

int dx_wait_msgs(struct dx *d, int side, int n, int timeout_ms)
{
    char what[64];

    snprintf(what, sizeof(what), "%d messages", n);
    return wait_for(d, side, has_msgs, &n, timeout_ms, what);
}

int dx_wait_text(struct dx *d, int side, const char *needle, int timeout_ms)
{
    char what[128];

    snprintf(what, sizeof(what), "\"%.100s\"", needle);
    return wait_for(d, side, has_text, needle, timeout_ms, what);
}

/* ---- runs with faults ---- */

static void *script_main(void *p)
{
    struct dx *d = p;
    d->script(d);
    d->script_done = 1;
    return NULL;
}

int dx_run(struct dx *d, void (*script)(struct dx *d), enum dx_fault f, int gap_min_ms,
           int gap_max_ms)
{
    unsigned seed0 = (unsigned)t_now_ms() ^ (unsigned)getpid(), seed = seed0;  /* new moments */
    int faults = 0;
    pthread_t th;
    char out[256], cmd[64];

    d->script = script;
    pthread_create(&th, NULL, script_main, d);
    cr_log_info("faults: %s", f == DX_NONE ? "none" : f == DX_KILL_WORKER ? "worker kills" :
                "edge node kills");
    /* Faults come from this thread: the edges it restarts die with the thread that started
     * them (PR_SET_PDEATHSIG). */
    while (!d->script_done && f != DX_NONE) {
        unsigned gap = (unsigned)(gap_max_ms - gap_min_ms + 1);
        gap = (unsigned)gap_min_ms + rand_r(&seed) % gap;
        usleep(gap * 1000);
        if (d->script_done)
            break;
        uint64_t worker = 0;
        int i = holder(d, &worker);
        if (i < 0)
            continue;
        if (f == DX_KILL_WORKER && worker > 0) {
            snprintf(cmd, sizeof(cmd), "kill-worker %llu",
                     (unsigned long long)cessna_ep_session_id(d->side[DX_CLIENT].ep));
            edge_ctl(d, i, cmd, out, sizeof(out));
            faults += strncmp(out, "ok", 2) == 0;
        } else if (f == DX_KILL_EDGE) {
            edge_kill(d, i);
            edge_start(d, i);
            faults++;
        }
    }
    pthread_join(th, NULL);
    cr_log_info("%d faults (seed %u)", faults, seed0);
    return faults;
}

/* Both transcripts go to DIR/client.transcript and DIR/server.transcript (for a reader
 * of a failed test). */
static void save(struct dx *d)
{
    for (int side = 0; side < 2; side++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s.transcript", d->dir, side_name(side));
        FILE *f = fopen(path, "w");
        if (f) {
            fwrite(d->side[side].buf ? d->side[side].buf : "", 1, d->side[side].len, f);
            fclose(f);
        }
    }
}

void dx_finish(struct dx *d)
{
    for (int k = 0; k < 1000 && !(d->side[0].ended && d->side[1].ended); k++)
        usleep(10000);
    pthread_mutex_lock(&d->lock);
    save(d);
    pthread_mutex_unlock(&d->lock);
    for (int side = 0; side < 2; side++) {
        struct dx_side *s = &d->side[side];
        cr_assert_eq(s->ended, 1, "the %s side did not end with CLOSE: %s", side_name(side),
                     s->why);
        pthread_join(s->th, NULL);
        cessna_ep_free(s->ep);
        s->ep = NULL;
    }
}

void dx_stop(struct dx *d)
{
    for (int i = 0; i < d->nedges; i++) {
        kill(-d->edge[i].pid, SIGKILL);
        t_stop(&d->edge[i]);
    }
}

void dx_compare(struct dx *a, struct dx *b)
{
    cr_log_info("transcripts in %s and %s", a->dir, b->dir);
    for (int side = 0; side < 2; side++) {
        struct dx_side *x = &a->side[side], *y = &b->side[side];
        size_t at = 0;
        while (at < x->len && at < y->len && x->buf[at] == y->buf[at])
            at++;
        cr_assert(at == x->len && at == y->len, "%s: %zu bytes without faults, %zu with; they "
                  "differ from byte %zu: without \"%.80s\", with \"%.80s\"", side_name(side),
                  x->len, y->len, at, x->buf ? x->buf + (at > 40 ? at - 40 : 0) : "",
                  y->buf ? y->buf + (at > 40 ? at - 40 : 0) : "");
    }
}

void dx_bad_setting(const char *app, const char *app_cfg, const char *want)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const void *msg;
    char cfg[512], log[8192] = "";

    t_echo_ep_start(&srv);
    snprintf(cfg, sizeof(cfg), "[app]\n%s\n", app_cfg);
    t_edge_start(&e, t_app(app), srv.addr, cfg);
    struct cessna_ep *ep = t_ep_connect(&e);
    long n = cessna_ep_recv(ep, &msg);
    cr_expect_eq(n, -ECONNABORTED, "recv: %ld %s", n, cessna_ep_error(ep));
    cr_expect(strstr(cessna_ep_error(ep), "init"), "error: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    t_edge_stop(&e);
    FILE *f = fopen(e.sup.log, "r");
    cr_assert_not_null(f);
    log[fread(log, 1, sizeof(log) - 1, f)] = 0;
    fclose(f);
    cr_expect(strstr(log, want), "no '%s' in the log: %s", want, log);
}

void dx_compare_faulty(struct dx *clean, const char *app_path, const char *app_cfg,
                       const char *extra, void (*script)(struct dx *d), enum dx_fault f,
                       int nedges, int gap_min, int gap_max, int min_faults)
{
    static struct dx faulty;

    dx_start(&faulty, app_path, app_cfg, extra, nedges);
    int faults = dx_run(&faulty, script, f, gap_min, gap_max);
    cr_assert_str_empty(faulty.script_why, "%s", faulty.script_why);
    dx_finish(&faulty);
    dx_stop(&faulty);
    cr_expect(faults >= min_faults, "only %d faults landed", faults);
    dx_compare(clean, &faulty);
}
