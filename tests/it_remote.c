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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "t_world.h"

TestSuite(remote, .timeout = 240);

enum fault { NONE, KILL, STOP };

/* One run: returns the number of node faults injected; *resumes counts the sessions the
 * edges killed meanwhile had resumed (their counters go with them). */
static int run(struct world *w, enum fault fault, uint64_t *resumes)
{
    struct w_clients c;
    int faults = 0;

    run_clients(w, &c);
    if (fault != NONE) {
        usleep(300 * 1000);
        for (int k = 0; k < 40; k++) {
            int i = busiest_edge(w);
            if (i < 0)
                break;   /* every session ended */
            if (fault == KILL) {
                *resumes += edge_stat(w, i, "resumes");
                edge_kill(w, i);
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
    join_clients(w, &c);
    wait_server_transcripts(w);
    return faults;
}

static void node_losses(const struct w_opts *o, enum fault fault, int min_faults)
{
    static struct world clean, faulty;

    uint64_t resumes = 0;
    world_start(&clean, o);
    run(&clean, NONE, &resumes);
    world_stop(&clean);

    world_start(&faulty, o);
    int faults = run(&faulty, fault, &resumes);
    for (int i = 0; i < faulty.o.edges; i++)
        resumes += edge_stat(&faulty, i, "resumes");
    world_stop(&faulty);
    cr_log_info("node faults: %d", faults);
    cr_expect(faults >= min_faults, "only %d node faults landed", faults);
    cr_expect(resumes > 0, "no edge resumed a session (counted before each kill and at the "
              "end)");
    compare(&clean, &faulty);
}

Test(remote, edge_node_killed_again_and_again)
{
    struct w_opts o = { .standby = "cold" };
    node_losses(&o, KILL, 20);
}

Test(remote, edge_node_hangs_past_the_heartbeat)
{
    struct w_opts o = { .standby = "cold" };
    node_losses(&o, STOP, 5);
}

/* No snapshot is ever taken, so none is shipped: each new edge replays the session from its
 * first event, from what the two endpoints kept. */
Test(remote, without_a_stored_snapshot_a_session_replays_from_its_start)
{
    /* 900 rounds: with 300 a fast machine finished them after 2 of the 8 kills (CI). */
    struct w_opts o = { .standby = "cold", .rounds = 900, .snapshot_interval_ms = -1 };
    node_losses(&o, KILL, 8);
}

/* Read from fd until the received bytes hold needle (or timeout_ms passes). */
static int read_until(int fd, char *buf, size_t cap, size_t *len, const char *needle,
                      int timeout_ms)
{
    long deadline = t_now_ms() + timeout_ms;

    while (!memmem(buf, *len, needle, strlen(needle))) {
        long left = deadline - t_now_ms();
        if (left <= 0 || *len >= cap)
            return -1;
        long n = t_recv_wait(fd, buf + *len, cap - *len, (int)left);
        if (n <= 0)
            return -1;
        *len += (size_t)n;
    }
    return 0;
}

/* Two faults together: the node holding a session with a timer pending dies, and at the
 * new edge the worker is killed too, as soon as the session is there (during or right after
 * its remote replay, before or after it announced its pending timers). The timer fires,
 * once. */
Test(remote, worker_killed_while_a_resumed_session_replays_keeps_its_timer)
{
    static struct world w;
    static char buf[1 << 20];
    struct w_opts o = { .standby = "cold", .sessions = 1, .snapshot_interval_ms = -1 };
    char line[64], out[1 << 16];
    size_t len = 0;
    uint64_t id = 0;

    world_start(&w, &o);
    int fd = t_connect(w.cproxy.addr);
    for (int i = 1; i <= 300; i++) {   /* 600 events to replay from the start */
        int n = snprintf(line, sizeof(line), "%s %d\n", i == 1 ? "hello client" : "message", i);
        t_write_all(fd, line, (size_t)n);
        snprintf(line, sizeof(line), "reply %d\n", i);
        cr_assert_eq(read_until(fd, buf, sizeof(buf), &len, line, 5000), 0, "%s", line);
    }
    t_write_all(fd, "TICK 1500\n", 10);
    usleep(100 * 1000);   /* the TICK is ordered (its echo to the server carries it) */
    int a = busiest_edge(&w);
    cr_assert_geq(a, 0);
    edge_kill(&w, a);
    edge_start(&w, a);
    /* Kill the worker wherever the session shows up first. */
    for (long t0 = t_now_ms(); !id && t_now_ms() - t0 < 10000; ) {
        for (int i = 0; i < w.o.edges && !id; i++) {
            if (i == a || edge_session_ids(&w, i, &id, 1) != 1)
                continue;
            snprintf(line, sizeof(line), "kill-worker %llu", (unsigned long long)id);
            edge_ctl(&w, i, line, out, sizeof(out));
            cr_log_info("killed the resumed worker: %s", out);
        }
    }
    cr_assert(id, "the session resumed nowhere");
    cr_assert_eq(read_until(fd, buf, sizeof(buf), &len, "TOCK 1\n", 10000), 0,
                 "the pending timer never fired after the resume and the worker kill");
    t_write_all(fd, "message 301\n", 12);
    cr_assert_eq(read_until(fd, buf, sizeof(buf), &len, "reply 301\n", 5000), 0);
    cr_expect(!memmem(buf, len, "TOCK 2", 6), "the timer fired twice");
    close(fd);
    world_stop(&w);
}

/* Two faults together: a slow reader and a node loss. A client sends 8 MiB through
 * passthrough.so to a plain echo server and reads nothing for 1.5 s, so echoes pile up in
 * front of it while snapshots are taken (and cannot be shipped before the client proxy has
 * read what comes before the edge's RECEIPT); then the node holding the session is killed;
 * then the client reads. Every byte comes back once and in order. */
struct sender { int fd; const uint8_t *buf; size_t len; volatile size_t sent; };

static void *send_all(void *p)
{
    struct sender *sd = p;

    while (sd->sent < sd->len) {
        ssize_t n = send(sd->fd, sd->buf + sd->sent, sd->len - sd->sent, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sd->sent += (size_t)n;
    }
    return NULL;
}

Test(remote, slow_reader_when_the_node_dies_loses_nothing)
{
    static struct world w;
    static uint8_t sent[32 << 20], got[32 << 20];
    struct t_echo_tcp echo;
    struct w_opts o = { .standby = "cold", .sessions = 1, .app = "passthrough" };
    pthread_t th;

    t_echo_tcp_start(&echo);
    o.target = echo.addr;
    world_start(&w, &o);
    t_fill(sent, sizeof(sent), 11);
    struct sender sd = { .fd = t_connect(w.cproxy.addr), .buf = sent, .len = sizeof(sent) };
    pthread_create(&th, NULL, send_all, &sd);
    usleep(1500 * 1000);   /* snapshots every 50 ms meanwhile, the client reading nothing */
    int a = busiest_edge(&w);
    cr_assert_geq(a, 0);
    size_t before = sd.sent;
    edge_kill(&w, a);
    edge_start(&w, a);
    size_t n_got = 0;
    for (long deadline = t_now_ms() + 60000; n_got < sizeof(got) && t_now_ms() < deadline; ) {
        long n = t_recv_wait(sd.fd, got + n_got, sizeof(got) - n_got, 1000);
        if (n > 0)
            n_got += (size_t)n;
        else if (n != -ETIMEDOUT)
            break;
    }
    pthread_join(th, NULL);
    /* Nothing was read before the kill: what was sent by then (all of it, usually: the
     * buffers on the way hold 32 MiB) was waiting for the slow reader somewhere. */
    cr_log_info("%zu bytes sent before the kill, %zu in all, %zu echoed", before, sd.sent, n_got);
    cr_assert_eq(sd.sent, sizeof(sent), "the client could not send it all");
    cr_assert_eq(n_got, sizeof(got), "%zu of %zu bytes came back", n_got, sizeof(got));
    for (size_t k = 0; k < sizeof(got); k++)
        cr_assert_eq(got[k], sent[k], "byte %zu differs", k);
    uint64_t resumes = 0;
    for (int i = 0; i < w.o.edges; i++)
        resumes += edge_stat(&w, i, "resumes");
    /* One move, for the one node lost: a slow reader is not a silent edge. */
    cr_expect_eq(resumes, 1, "the session resumed %llu times", (unsigned long long)resumes);
    close(sd.fd);
    world_stop(&w);
}
