/* it_session.c - integration: native endpoints through a real supervisor and workers. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "order.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(session, .timeout = 60);

/* Send one message and expect it back unchanged (passthrough + echo server). */
static void round_trip(struct cessna_ep *ep, const void *msg, size_t len)
{
    const void *got;
    long n;

    cr_assert_eq(cessna_ep_send(ep, msg, len), 0);
    n = cessna_ep_recv(ep, &got);
    cr_assert_eq(n, (long)len, "echo of %zu bytes came back as %ld (%s)", len, n, cessna_ep_error(ep));
    cr_assert(memcmp(got, msg, len) == 0, "echo differs");
}

Test(session, echo_round_trip_and_piggybacked_order)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char buf[64];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    for (int i = 0; i < 100; i++) {
        int n = snprintf(buf, sizeof(buf), "message %d", i);
        round_trip(ep, buf, (size_t)n);
    }
    cr_assert_eq(cessna_ep_last_out(ep), 100);

    /* The order this endpoint holds: START, then (client, server) 100 times, because
     * each echo came back before the next message went out; the last entry is the server
     * message whose output (the last echo) the client received. */
    size_t olen, off = 0;
    const uint8_t *order = cessna_ep_order(ep, &olen);
    uint64_t prev = 0;
    struct order_entry ent;
    cr_assert_eq(order_decode(order, olen, &off, &ent, &prev), 0);
    cr_assert_eq(ent.src, ORDER_START);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(order_decode(order, olen, &off, &ent, &prev), 0);
        cr_assert_eq(ent.src, ORDER_CLIENT, "entry %d", 2 * i + 2);
        cr_assert_eq(order_decode(order, olen, &off, &ent, &prev), 0);
        cr_assert_eq(ent.src, ORDER_SERVER, "entry %d", 2 * i + 3);
    }
    cr_assert_eq(off, olen, "no entries beyond the last output's event");

    char out[4096];
    t_ctl(&e, "sessions", out, sizeof(out));
    cr_assert_eq(t_field(out, "id"), cessna_ep_session_id(ep), "ctl: %s", out);
    cr_assert(t_field(out, "worker") > 0, "ctl: %s", out);
    cr_assert_eq(t_field(out, "to_client"), 100, "ctl: %s", out);
    cr_assert(t_field(out, "events") >= 200, "ctl: %s", out);

    /* The worker is a process named cessna-worker. */
    char path[64], comm[64] = "";
    snprintf(path, sizeof(path), "/proc/%llu/comm", (unsigned long long)t_field(out, "worker"));
    FILE *f = fopen(path, "r");
    cr_assert(f && fgets(comm, sizeof(comm), f), "no process %s", path);
    fclose(f);
    cr_assert_str_eq(comm, "cessna-worker\n");

    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

struct stream_arg {
    const struct t_edge *e;
    int index;
    int ok;
    char why[256];
};

/* One session: 200 messages of varied sizes, pipelined 8 deep, checked byte for byte. */
static void *stream_session(void *p)
{
    struct stream_arg *a = p;
    char err[256];
    struct cessna_ep *ep = cessna_ep_connect(a->e->sup.addr, err, sizeof(err));
    static __thread uint8_t msg[70000];
    uint8_t expect[70000];
    int sent = 0, recvd = 0;

    if (!ep) {
        snprintf(a->why, sizeof(a->why), "connect: %s", err);
        return NULL;
    }
    while (recvd < 200) {
        while (sent < 200 && sent - recvd < 8) {
            size_t len = 1 + (size_t)((sent * 7919 + a->index * 104729) % 65536);
            t_fill(msg, len, (uint64_t)a->index << 32 | (uint64_t)sent);
            if (cessna_ep_send(ep, msg, len) < 0) {
                snprintf(a->why, sizeof(a->why), "send %d failed", sent);
                goto out;
            }
            sent++;
        }
        const void *got;
        long n = cessna_ep_recv(ep, &got);
        size_t len = 1 + (size_t)((recvd * 7919 + a->index * 104729) % 65536);
        t_fill(expect, len, (uint64_t)a->index << 32 | (uint64_t)recvd);
        if (n != (long)len || memcmp(got, expect, len) != 0) {
            snprintf(a->why, sizeof(a->why), "message %d: got %ld bytes, want %zu (%s)", recvd, n,
                     len, cessna_ep_error(ep));
            goto out;
        }
        recvd++;
    }
    a->ok = cessna_ep_close(ep, 5000) == 0;
    if (!a->ok)
        snprintf(a->why, sizeof(a->why), "close: %s", cessna_ep_error(ep));
out:
    cessna_ep_free(ep);
    return NULL;
}

Test(session, fifty_concurrent_sessions_byte_exact, .timeout = 120)
{
    enum { N = 50 };
    struct t_echo_ep srv;
    struct t_edge e;
    struct stream_arg args[N];
    pthread_t th[N];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    for (int i = 0; i < N; i++) {
        args[i] = (struct stream_arg){ .e = &e, .index = i };
        pthread_create(&th[i], NULL, stream_session, &args[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_expect(args[i].ok, "session %d: %s", i, args[i].why);
    }
    char out[1024];
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "sessions_total"), N, "%s", out);
    cr_assert_eq(t_field(out, "msgs_in"), 2 * N * 200, "%s", out);
    cr_assert_eq(t_field(out, "worker_deaths"), 0, "%s", out);
    t_edge_stop(&e);
}

Test(session, client_close_reaches_server_and_runs_shutdown)
{
    struct t_echo_ep srv;
    struct t_edge e;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    round_trip(ep, "x", 1);
    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "%s", cessna_ep_error(ep));
    cessna_ep_free(ep);
    for (int i = 0; i < 200 && srv.closes == 0; i++)
        usleep(10000);
    cr_assert_eq(srv.closes, 1, "the server endpoint saw CLOSE");
    cr_assert_eq(srv.errors, 0);
    /* The worker is gone and the session freed. */
    char out[1024];
    cr_assert_eq(t_wait_sessions(&e, 0, 2000, out, sizeof(out)), 0, "%s", out);
    t_edge_stop(&e);
}

/* A server endpoint that answers one message and then closes the session. */
static void *close_after_one(void *arg)
{
    int lfd = *(int *)arg;
    char err[256];
    const void *msg;
    struct cessna_ep *ep = cessna_ep_accept(lfd, err, sizeof(err));

    if (!ep)
        return NULL;
    long n = cessna_ep_recv(ep, &msg);
    if (n >= 0)
        cessna_ep_send(ep, "bye", 3);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    return NULL;
}

Test(session, server_close_reaches_client)
{
    char err[256];
    int lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    char addr[64];
    pthread_t t;
    struct t_edge e;
    const void *got;

    cr_assert(lfd >= 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(lfd));
    pthread_create(&t, NULL, close_after_one, &lfd);
    t_edge_start(&e, t_app("passthrough"), addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    cr_assert_eq(cessna_ep_send(ep, "hi", 2), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), 3);
    cr_assert(memcmp(got, "bye", 3) == 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), CESSNA_EP_CLOSED, "then CLOSE (%s)", cessna_ep_error(ep));
    cessna_ep_free(ep);
    pthread_join(t, NULL);
    t_edge_stop(&e);
}

Test(session, timers_fire_as_ordered_events)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const void *got;
    long n;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    cr_assert_eq(cessna_ep_send(ep, "TICK 30", 7), 0);
    /* The echo of TICK (tagged by the sequencer) and the TOCK, in some order. */
    int tocks = 0, echoes = 0;
    for (int i = 0; i < 2; i++) {
        n = cessna_ep_recv(ep, &got);
        cr_assert(n > 0, "%s", cessna_ep_error(ep));
        if (n >= 4 && memcmp(got, "TOCK", 4) == 0)
            tocks++;
        else
            echoes++;
    }
    cr_assert_eq(tocks, 1);
    cr_assert_eq(echoes, 1);
    /* The order holds a TIMER entry with the timer's id. */
    size_t olen, off = 0;
    const uint8_t *order = cessna_ep_order(ep, &olen);
    uint64_t prev = 0;
    struct order_entry ent;
    int timers = 0;
    while (off < olen) {
        cr_assert_eq(order_decode(order, olen, &off, &ent, &prev), 0);
        if (ent.src == ORDER_TIMER) {
            timers++;
            cr_assert_eq(ent.timer_id, 1);
        }
    }
    cr_assert_eq(timers, 1);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(session, killed_worker_is_replaced_and_the_session_goes_on)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char out[4096], cmd[64];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, NULL);
    struct cessna_ep *victim = t_ep_connect(&e), *other = t_ep_connect(&e);
    const void *got;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(cessna_ep_send(victim, "abc", 3), 0);
        cr_assert(cessna_ep_recv(victim, &got) > 0);
    }
    cr_assert_eq(cessna_ep_send(other, "b", 1), 0);
    cr_assert(cessna_ep_recv(other, &got) > 0);
    t_ctl(&e, "sessions", out, sizeof(out));
    uint64_t old_pid = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (t_field(line, "id") == cessna_ep_session_id(victim))
            old_pid = t_field(line, "worker");
    cr_assert(old_pid > 0);

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)cessna_ep_session_id(victim));
    t_ctl(&e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "%s", out);

    /* The session goes on with a new worker that replayed the events: the sequencer's
     * counters continue where they were (4th client message, 4th server message). */
    cr_assert_eq(cessna_ep_send(victim, "abc", 3), 0);
    long n = cessna_ep_recv(victim, &got);
    cr_assert(n > 0, "recv after the kill: %ld %s", n, cessna_ep_error(victim));
    cr_assert(memmem(got, (size_t)n, "c=4 s=4", 7), "got %.*s", (int)n, (const char *)got);
    cr_assert_eq(cessna_ep_last_out(victim), 4, "no output duplicated or lost");

    cr_assert_eq(cessna_ep_send(other, "still here", 10), 0);
    n = cessna_ep_recv(other, &got);
    cr_assert(n > 0 && memmem(got, (size_t)n, "c=2 s=2", 7), "the other session goes on");
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert_eq(t_field(out, "worker_deaths"), 1, "%s", out);
    cr_assert_eq(t_field(out, "recoveries"), 1, "%s", out);
    t_ctl(&e, "sessions", out, sizeof(out));
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (t_field(line, "id") == cessna_ep_session_id(victim)) {
            cr_assert_neq(t_field(line, "worker"), old_pid, "a new worker: %s", line);
            cr_assert_eq(t_field(line, "recoveries"), 1, "%s", line);
        }
    cessna_ep_close(victim, 5000);
    cessna_ep_free(victim);
    cessna_ep_close(other, 5000);
    cessna_ep_free(other);
    t_edge_stop(&e);
}

/* A server endpoint that reads `count` messages, then answers once. */
struct quiet_arg { int lfd; int count; };

static void *quiet_server(void *p)
{
    struct quiet_arg *a = p;
    char err[256];
    const void *msg;
    struct cessna_ep *ep = cessna_ep_accept(a->lfd, err, sizeof(err));

    if (!ep)
        return NULL;
    for (int i = 0; i < a->count; i++)
        if (cessna_ep_recv(ep, &msg) < 0)
            break;
    cessna_ep_send(ep, "done", 4);
    cessna_ep_recv(ep, &msg);   /* until the session closes */
    cessna_ep_free(ep);
    return NULL;
}

/* Thousands of events before the client's first output: the order delta it needs is far
 * longer than one frame may carry, so it arrives in ORDER frames ahead of the OUT. */
Test(session, long_order_delta_arrives_in_pieces)
{
    enum { N = 5000 };
    char err[256], addr[64];
    struct quiet_arg qa = { .count = N };
    struct t_edge e;
    pthread_t t;
    const void *got;

    qa.lfd = cessna_ep_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert(qa.lfd >= 0, "%s", err);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", addr_local_port(qa.lfd));
    pthread_create(&t, NULL, quiet_server, &qa);
    t_edge_start(&e, t_app("passthrough"), addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    for (int i = 0; i < N; i++)
        cr_assert_eq(cessna_ep_send(ep, "m", 1), 0);
    long n = cessna_ep_recv(ep, &got);
    cr_assert_eq(n, 4, "the answer arrives (%s)", cessna_ep_error(ep));

    size_t olen, off = 0;
    const uint8_t *order = cessna_ep_order(ep, &olen);
    uint64_t prev = 0;
    struct order_entry ent;
    int clients = 0, servers = 0, entries = 0;
    while (off < olen) {
        cr_assert_eq(order_decode(order, olen, &off, &ent, &prev), 0);
        entries++;
        clients += ent.src == ORDER_CLIENT;
        servers += ent.src == ORDER_SERVER;
    }
    cr_assert_eq(entries, 1 + N + 1, "START, every client message, the answer");
    cr_assert_eq(clients, N);
    cr_assert_eq(servers, 1);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    pthread_join(t, NULL);
    t_edge_stop(&e);
}

/* TCP sockets among a process's descriptors: socket inodes of /proc/PID/fd that
 * /proc/net/tcp or tcp6 lists. */
static int tcp_fds(pid_t pid)
{
    char path[64], line[512], target[64];
    const char *tables[] = { "/proc/net/tcp", "/proc/net/tcp6" };
    unsigned long *inodes = NULL;
    size_t n = 0, cap = 0;
    int count = 0;

    /* Every TCP socket of the machine's network namespace is listed, other tests' too:
     * thousands, at times. */
    for (int t = 0; t < 2; t++) {
        FILE *f = fopen(tables[t], "r");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f)) {
            unsigned long ino;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %lu", &ino) != 1 || !ino)
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                inodes = realloc(inodes, cap * sizeof(*inodes));
                cr_assert(inodes, "out of memory");
            }
            inodes[n++] = ino;
        }
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert(d, "%s: %s", path, strerror(errno));
    for (struct dirent *de; (de = readdir(d));) {
        unsigned long ino;
        ssize_t len = readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        if (sscanf(target, "socket:[%lu]", &ino) != 1)
            continue;
        for (size_t i = 0; i < n; i++)
            if (inodes[i] == ino) {
                count++;
                break;
            }
    }
    closedir(d);
    free(inodes);
    return count;
}

/* Sockets in the file table of pid's io_uring, as its fdinfo lists them after "UserFiles:"
 * (the kernel lists them only when it gets the ring's lock at once: -1 when the list is
 * not there). */
static int ring_sockets(pid_t pid)
{
    char path[64], target[64], line[256];
    int count = -1;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert(d, "%s: %s", path, strerror(errno));
    for (struct dirent *de; count < 0 && (de = readdir(d));) {
        ssize_t len = readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        if (!strstr(target, "io_uring"))
            continue;
        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, de->d_name);
        FILE *f = fopen(path, "r");
        int in_files = 0;
        unsigned idx;
        while (f && fgets(line, sizeof(line), f)) {
            if (strncmp(line, "UserFiles:", 10) == 0) {
                in_files = 1;
                count = 0;
            } else if (in_files && sscanf(line, " %u: socket:[", &idx) == 1 &&
                       strstr(line, "socket:[")) {
                count++;
            } else if (in_files && !strchr(line, ':')) {
                break;
            } else if (in_files && sscanf(line, " %u:", &idx) != 1) {
                break;
            }
        }
        if (f)
            fclose(f);
    }
    closedir(d);
    return count;
}

/* ring_sockets until it is want, for up to 2 s (the ring may be busy): the last count. */
static int wait_ring_sockets(pid_t pid, int want)
{
    int n = ring_sockets(pid);

    for (long until = t_now_ms() + 2000; n != want && t_now_ms() < until; usleep(10000))
        n = ring_sockets(pid);
    return n;
}

/* The sessions' sockets are io_uring direct descriptors (supervisor/connfd.c): a supervisor
 * holding N sessions has one TCP descriptor, its listener, not 2N + 1; with
 * CESSNA_NO_DIRECT_FILES=1 (the fallback of kernels before 6.7) it has 2N + 1. Either way
 * every session works, ends, and its slot and table entries serve the next one. */
static void sockets_per_session(int plain)
{
    enum { N = 20 };
    struct t_echo_ep srv;
    struct t_edge e;
    struct cessna_ep *ep[N];
    char buf[64], out[1024];

    if (plain)
        setenv("CESSNA_NO_DIRECT_FILES", "1", 1);
    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    int direct = t_edge_direct_sockets(&e);
    if (!plain && !direct) {
        t_edge_stop(&e);
        cr_skip_test("this kernel cannot keep sockets as io_uring direct descriptors");
    }
    cr_assert(!plain || !direct, "CESSNA_NO_DIRECT_FILES=1 left direct descriptors on");
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            ep[i] = t_ep_connect(&e);
            int n = snprintf(buf, sizeof(buf), "round %d session %d", round, i);
            round_trip(ep[i], buf, (size_t)n);
        }
        int tcp = tcp_fds(e.sup.pid);
        cr_assert_eq(tcp, plain ? 2 * N + 1 : 1, "round %d: the supervisor holds %d TCP "
                     "descriptors with %d sessions open", round, tcp, N);
        if (!plain) {
            int n = wait_ring_sockets(e.sup.pid, 2 * N);
            cr_assert_eq(n, 2 * N, "round %d: %d sockets in the ring's file table with %d "
                         "sessions open", round, n, N);
        }
        for (int i = 0; i < N; i++) {
            cr_assert_eq(cessna_ep_close(ep[i], 5000), 0, "close: %s", cessna_ep_error(ep[i]));
            cessna_ep_free(ep[i]);
        }
        for (long until = t_now_ms() + 5000; t_now_ms() < until; usleep(20000)) {
            t_ctl(&e, "stats", out, sizeof(out));
            if (t_field(out, "sessions") == 0 && tcp_fds(e.sup.pid) == 1)
                break;
        }
        cr_assert_eq(t_field(out, "sessions"), 0, "%s", out);
        cr_assert_eq(t_field(out, "sessions_failed"), 0, "%s", out);
        if (!plain) {   /* every entry closed: none left behind (-1: not listed, as good) */
            int n = wait_ring_sockets(e.sup.pid, 0);
            cr_assert(n <= 0, "round %d: %d sockets left in the file table", round, n);
        }
    }
    t_edge_stop(&e);
}

Test(session, sockets_are_direct_descriptors)
{
    sockets_per_session(0);
}

Test(session, sockets_are_plain_descriptors_when_direct_ones_are_off)
{
    sockets_per_session(1);
}
