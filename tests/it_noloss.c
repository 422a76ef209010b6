/* it_noloss.c - no silent loss and no wedged snapshots, with faults combined: a worker
 * killed while its reader is slow, a stray SIGCONT to the hot standby, a snapshot child
 * killed mid-write, a snapshot that fails on a session that then idles, an app that ends its
 * session while its reader is slow, held events under
 * their cap with snapshots off, and no zombie left after many short sessions. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}

static void wait_field_at_least(const struct t_edge *e, uint64_t id, const char *key,
                                uint64_t want, int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;
    uint64_t v;

    while ((v = t_session_field(e, id, key)) < want) {
        cr_assert(t_now_ms() < deadline, "%s=%llu after %d ms, want >= %llu", key,
                  (unsigned long long)v, timeout_ms, (unsigned long long)want);
        sleep_ms(10);
    }
}

static void ctl_ok(const struct t_edge *e, const char *fmt, uint64_t id)
{
    char cmd[96], out[512];

    snprintf(cmd, sizeof(cmd), fmt, (unsigned long long)id);
    t_ctl(e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "%s: %s", cmd, out);
}

/* Message i: its index, then a pattern derived from it. */
#define BIG 16384

static void make_msg(uint8_t *buf, size_t len, uint32_t i)
{
    t_fill(buf, len, i + 1);
    memcpy(buf, &i, sizeof(i));
}

struct sender {
    struct cessna_ep *ep;
    int count;
    size_t len;
    int failed;
};

static void *send_all(void *p)
{
    struct sender *s = p;
    uint8_t *buf = malloc(s->len);

    for (int i = 0; i < s->count && !s->failed; i++) {
        make_msg(buf, s->len, (uint32_t)i);
        if (cessna_ep_send(s->ep, buf, s->len) < 0)
            s->failed = 1;
    }
    free(buf);
    return NULL;
}

/* Read count echoes and check each one, in order, byte for byte. */
static void expect_echoes(struct cessna_ep *ep, int count, size_t len)
{
    uint8_t *want = malloc(len);

    for (int i = 0; i < count; i++) {
        const void *got;
        long n = cessna_ep_recv(ep, &got);
        cr_assert(n >= 0, "echo %d of %d: %ld %s", i, count, n, cessna_ep_error(ep));
        uint32_t idx;
        memcpy(&idx, got, sizeof(idx));
        cr_assert_eq(idx, (uint32_t)i, "echo %d is message %u: lost or reordered", i, idx);
        make_msg(want, len, (uint32_t)i);
        cr_assert(n == (long)len && memcmp(got, want, len) == 0, "echo %d differs", i);
    }
    free(want);
}

/* The client sends 1,500 x 16 KiB and reads nothing for 4 s: more than 4 MiB waits for it,
 * so the supervisor stops draining the worker, which goes on snapshotting (every 50 ms).
 * The worker is killed meanwhile. Then the client reads: every echo arrives, in order. */
static void slow_reader_kill(const char *extra)
{
    struct t_echo_ep srv;
    struct t_edge e;
    pthread_t t;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, extra);
    struct sender snd = { .ep = t_ep_connect(&e), .count = 1500, .len = BIG };
    uint64_t id = cessna_ep_session_id(snd.ep);
    pthread_create(&t, NULL, send_all, &snd);
    sleep_ms(2500);
    uint64_t snaps = t_session_field(&e, id, "snapshots");
    ctl_ok(&e, "kill-worker %llu", id);
    sleep_ms(1500);
    expect_echoes(snd.ep, 1500, BIG);
    pthread_join(t, NULL);
    cr_assert_not(snd.failed);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 1);
    cr_log_info("snapshots before the kill: %llu", (unsigned long long)snaps);
    cessna_ep_close(snd.ep, 5000);
    cessna_ep_free(snd.ep);
    t_edge_stop(&e);
}

Test(noloss, slow_reader_kill_cold, .timeout = 90)
{
    slow_reader_kill("snapshot_interval_ms = 50\nstandby = cold\n");
}

Test(noloss, slow_reader_kill_hot, .timeout = 90)
{
    slow_reader_kill("snapshot_interval_ms = 50\nstandby = hot\n");
}

static void round_trips(struct cessna_ep *ep, int from, int n)
{
    char msg[64];

    for (int i = from; i < from + n; i++) {
        int len = snprintf(msg, sizeof(msg), "message %d", i);
        const void *got;
        cr_assert_eq(cessna_ep_send(ep, msg, (size_t)len), 0);
        long r = cessna_ep_recv(ep, &got);
        cr_assert(r == len && memcmp(got, msg, (size_t)len) == 0, "round trip %d: %ld %s", i, r,
                  cessna_ep_error(ep));
    }
}

/* A SIGCONT from anyone but the supervisor does not wake a hot standby: it stays a standby
 * and never consumes the live rings. */
Test(noloss, stray_sigcont_does_not_wake_the_standby, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "snapshot_interval_ms = 20\nstandby = hot\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(ep, 0, 10);
    wait_field_at_least(&e, id, "standby", 1, 5000);
    for (int k = 0; k < 20; k++) {
        pid_t standby = (pid_t)t_session_field(&e, id, "standby");
        if (standby > 0)
            kill(standby, SIGCONT);
        round_trips(ep, 10 + k * 10, 10);
    }
    /* And the standby still takes over when the worker dies. */
    wait_field_at_least(&e, id, "standby", 1, 5000);
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, 1000, 20);
    char out[1024];
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_geq(t_field(out, "hot_takeovers"), 1, "%s", out);
    cr_assert_eq(cessna_ep_last_out(ep), 230, "no output lost or repeated");
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A snapshot child killed while it writes: the failure is counted, the child reaped, and
 * the session snapshots again. */
Test(noloss, snapshot_child_killed_midwrite_is_reaped_and_retried, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const void *got;
    char out[1024];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("ballast"), srv.addr,   /* 256 MiB of ballast: above the default cap */
                 "snapshot_interval_ms = 0\nmax_session_memory = 536870912\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    cr_assert_eq(cessna_ep_send(ep, "BALLAST 268435456", 17), 0);
    long n = cessna_ep_recv(ep, &got);
    cr_assert(n > 0, "%s", cessna_ep_error(ep));
    cr_assert(!memmem(got, (size_t)n, "error", 5), "%.*s", (int)n, (const char *)got);
    t_ctl(&e, "stats", out, sizeof(out));
    pid_t known[2] = { (pid_t)t_session_field(&e, id, "worker"), (pid_t)t_field(out, "zygote_pid") };
    cr_assert(known[0] > 0 && known[1] > 0, "worker %d zygote %d", known[0], known[1]);

    ctl_ok(&e, "snapshot %llu", id);
    /* The child: a child of the supervisor that is neither the worker nor the zygote. */
    pid_t live[64];
    int nlive = 0;
    long deadline = t_now_ms() + 5000;
    while (nlive == 0 && t_now_ms() < deadline)
        t_children(e.sup.pid, known, 2, live, 64, &nlive);
    cr_assert_gt(nlive, 0, "no snapshot child seen");
    for (int i = 0; i < nlive; i++)
        kill(live[i], SIGKILL);
    wait_field_at_least(&e, id, "snapshot_failures", 1, 5000);
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 0);

    /* Not wedged: the next request is taken and becomes durable. */
    round_trips(ep, 0, 1);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 1, 20000);
    sleep_ms(200);
    cr_assert_eq(t_children(e.sup.pid, known, 2, live, 64, &nlive), 0, "zombie children left");
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A snapshot fails (its directory is gone) on a session that then idles: it is retried,
 * without any new event, once the directory is back. */
Test(noloss, failed_snapshot_on_an_idle_session_is_retried, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char dir[600];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "snapshot_interval_ms = 50\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(ep, 0, 3);
    wait_field_at_least(&e, id, "snapshots", 1, 5000);
    snprintf(dir, sizeof(dir), "%s/state/%llu", e.dir, (unsigned long long)id);
    /* The worker writes through a descriptor of its directory (docs/sandbox.md), as
     * worker_user (nobody when we are root): taking the write permission away fails its
     * snapshots, giving it back lets them succeed. */
    cr_assert_eq(chmod(dir, 0500), 0, "chmod %s: %s", dir, strerror(errno));
    round_trips(ep, 3, 1);
    wait_field_at_least(&e, id, "snapshot_failures", 1, 5000);
    uint64_t snaps = t_session_field(&e, id, "snapshots");
    cr_assert_eq(chmod(dir, 0700), 0, "chmod %s: %s", dir, strerror(errno));
    /* No new event: the retry alone must make it durable. */
    wait_field_at_least(&e, id, "snapshots", snaps + 1, 5000);
    cr_assert_eq(t_session_field(&e, id, "held_events"), 0);
    round_trips(ep, 4, 3);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

struct reader {
    struct cessna_ep *ep;
    int count;
    size_t len;
};

static void *read_all(void *p)
{
    struct reader *r = p;

    expect_echoes(r->ep, r->count, r->len);
    return NULL;
}

/* Snapshots off and a small max_held_bytes: held events stay under the cap (snapshots are
 * forced, then input waits), and every echo arrives. */
Test(noloss, held_events_stay_under_their_cap_with_snapshots_off, .timeout = 90)
{
    struct t_echo_ep srv;
    struct t_edge e;
    pthread_t ts, tr;
    const uint64_t cap = 1u << 20;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr,
                 "snapshot_interval_ms = 0\nmax_held_bytes = 1048576\n");
    struct sender snd = { .ep = t_ep_connect(&e), .count = 2000, .len = BIG };
    struct reader rd = { .ep = snd.ep, .count = 2000, .len = BIG };
    uint64_t id = cessna_ep_session_id(snd.ep), worst = 0;
    pthread_create(&ts, NULL, send_all, &snd);
    pthread_create(&tr, NULL, read_all, &rd);
    for (int i = 0; i < 100; i++) {
        uint64_t held = t_session_field(&e, id, "held_bytes");
        worst = held > worst ? held : worst;
        sleep_ms(20);
    }
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    cr_assert_not(snd.failed);
    /* One message may go in past the cap: the check is made before it is appended. */
    cr_assert_leq(worst, cap + 2 * BIG, "held %llu bytes", (unsigned long long)worst);
    cr_assert_gt(t_session_field(&e, id, "snapshots"), 0, "snapshots forced by the cap");
    cr_log_info("worst held bytes %llu", (unsigned long long)worst);
    cessna_ep_close(snd.ep, 5000);
    cessna_ep_free(snd.ep);
    t_edge_stop(&e);
}

/* 1,000 short sessions with 20 ms snapshots, 20 at a time: no zombie child remains. */
struct shorts { const struct t_edge *e; int n; int failed; };

static void *short_sessions(void *p)
{
    struct shorts *a = p;
    char err[256];

    for (int i = 0; i < a->n; i++) {
        struct cessna_ep *ep = cessna_ep_connect(a->e->sup.addr, err, sizeof(err));
        if (!ep) {
            a->failed++;
            continue;
        }
        for (int k = 0; k < 3; k++) {
            const void *got;
            if (cessna_ep_send(ep, "tick", 4) < 0 || cessna_ep_recv(ep, &got) != 4)
                a->failed++;
            sleep_ms(10);
        }
        cessna_ep_close(ep, 5000);
        cessna_ep_free(ep);
    }
    return NULL;
}

Test(noloss, no_zombies_after_a_thousand_short_sessions, .timeout = 180)
{
    struct t_echo_ep srv;
    struct t_edge e;
    pthread_t t[20];
    struct shorts a[20];
    char out[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "snapshot_interval_ms = 20\nstandby = hot\n");
    for (int i = 0; i < 20; i++) {
        a[i] = (struct shorts){ .e = &e, .n = 50 };
        pthread_create(&t[i], NULL, short_sessions, &a[i]);
    }
    for (int i = 0; i < 20; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(a[i].failed, 0);
    }
    sleep_ms(500);
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_total"), 1000, "%s", out);
    cr_assert_gt(t_field(out, "snapshots"), 100, "%s", out);
    pid_t known[1] = { (pid_t)t_field(out, "zygote_pid") }, live[64];
    int nlive;
    cr_assert_eq(t_children(e.sup.pid, known, 1, live, 64, &nlive), 0, "zombie children");
    char states[512] = "";
    for (int i = 0; i < nlive && i < 8; i++) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/stat", live[i]);
        FILE *f = fopen(path, "r");
        if (f && fgets(line, sizeof(line), f))
            snprintf(states + strlen(states), sizeof(states) - strlen(states), "[%.60s] ", line);
        if (f)
            fclose(f);
    }
    cr_assert_eq(nlive, 0, "%d children left besides the zygote: %s", nlive, states);
    t_edge_stop(&e);
}

/* The order held at the supervisor is trimmed at durable snapshots, even for an endpoint
 * that gets no output at all (here the server: the hog app answers the client only). */
Test(noloss, order_trimmed_at_durable_snapshots, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("hog"), srv.addr, "snapshot_interval_ms = 20\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(ep, 0, 4000);
    /* a snapshot that covers (nearly) everything: the order before it can go */
    wait_field_at_least(&e, id, "snapshot", 4000, 20000);
    uint64_t held = t_session_field(&e, id, "order_held");
    cr_assert_lt(held, 2100, "order entries held after 4,000 events: %llu",
                 (unsigned long long)held);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* A server endpoint that sends `count` messages of `len` bytes (make_msg) on the one
 * session it accepts, then reads until the session ends. */
struct pusher {
    int lfd, count;
    size_t len;
    volatile int sent;
};

static void *push_all(void *p)
{
    struct pusher *ps = p;
    char err[256];
    const void *msg;
    struct cessna_ep *ep = cessna_ep_accept(ps->lfd, err, sizeof(err));
    uint8_t *buf = malloc(ps->len);

    for (int i = 0; ep && i < ps->count; i++) {
        make_msg(buf, ps->len, (uint32_t)i);
        if (cessna_ep_send(ep, buf, ps->len) < 0)
            break;
    }
    ps->sent = 1;
    while (ep && cessna_ep_recv(ep, &msg) >= 0)
        ;
    if (ep)
        cessna_ep_free(ep);
    free(buf);
    return NULL;
}

/* The app ends its own session while its client reads slowly: more than the high-water mark
 * waits for the client, so the supervisor has stopped taking the worker's outputs; the
 * worker (room left in its 16 MiB ring) goes on, takes a malformed reading, writes its end
 * record and exits 0, with events queued behind the close. Its end is in its ring, not a
 * crash: no recovery, every message arrives, then the app's own ERROR. (Taken for a crash,
 * it was recovered, replayed to the same end, and the session failed "died again".) */
Test(noloss, app_close_while_the_reader_is_slow_is_no_crash, .timeout = 90)
{
    struct pusher ps = { .count = 300, .len = 65536 };
    char err[256], stats[2048];
    struct t_edge e;
    pthread_t t;

    ps.lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(ps.lfd >= 0, "listen: %s", err);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char srv[64];
    cr_assert(getsockname(ps.lfd, (struct sockaddr *)&ss, &sl) == 0);
    snprintf(srv, sizeof(srv), "127.0.0.1:%u",
             ntohs(((struct sockaddr_in *)&ss)->sin_port));
    pthread_create(&t, NULL, push_all, &ps);
    t_edge_start(&e, t_app("iotagg"), srv,
                 "ring_bytes = 16777216\nsnapshot_interval_ms = 100\nsnapshot_min_events = 1\n"
                 "hibernate_after_ms = 0\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    int small = 65536;
    setsockopt(cessna_ep_fd(ep), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    /* Every server message taken by the worker; the client has read none of them. */
    while (!ps.sent)
        sleep_ms(10);
    wait_field_at_least(&e, id, "events", (uint64_t)ps.count + 1, 20000);
    uint64_t sent_on = t_session_field(&e, id, "to_client");
    cr_assert_lt(sent_on, (uint64_t)ps.count, "no stall: all %llu outputs taken before the "
                 "close (the test would prove nothing)", (unsigned long long)sent_on);
    cr_assert_eq(cessna_ep_send(ep, "t01 five", 8), 0);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(cessna_ep_send(ep, "t02 5", 5), 0);
    sleep_ms(1000);   /* the worker ends meanwhile, its outputs still waiting */
    expect_echoes(ep, ps.count, ps.len);
    const void *msg;
    long n = cessna_ep_recv(ep, &msg);
    cr_assert_lt(n, 0, "a message after the last one: %ld bytes", n);
    cr_assert(strstr(cessna_ep_error(ep), "app error 2: iotagg: bad reading \"t01 five\""),
              "the session ended with: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    t_ctl(&e, "stats", stats, sizeof(stats));
    cr_assert_eq(t_field(stats, "worker_deaths"), 0, "%s", stats);
    cr_assert_eq(t_field(stats, "recoveries"), 0, "%s", stats);
    cr_assert_eq(t_field(stats, "sessions_failed"), 0, "%s", stats);
    pthread_join(t, NULL);
    close(ps.lfd);
    t_edge_stop(&e);
}
