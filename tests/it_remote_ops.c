/* it_remote_ops.c - operating sessions across edges (issue 7, item 8; docs/protocol.md):
 * planned moves (drain, move), refusals (an edge without the secret, a wrong credential, an
 * incompatible edge, a corrupt stored snapshot) and an unmodified Redis behind the proxies
 * while its edges die. The world of t_world.h: real processes and sockets on loopback. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t_world.h"
#include "wire.h"

TestSuite(remote_ops, .timeout = 90);

#define SESSIONS 4
#define ROUNDS   300

static const struct w_opts base = { .sessions = SESSIONS, .rounds = ROUNDS };

/* A run without faults, for the byte-for-byte comparison. */
static void clean_run(struct world *w, const struct w_opts *o)
{
    struct w_clients c;

    world_start(w, o);
    run_clients(w, &c);
    join_clients(w, &c);
    wait_server_transcripts(w);
    world_stop(w);
}

/* Start w and its clients; return once every client is `rounds` messages in. */
static void start_busy(struct world *w, const struct w_opts *o, struct w_clients *c, int rounds)
{
    world_start(w, o);
    run_clients(w, c);
    cr_assert_eq(wait_rounds(w, rounds, 30000), 0, "the clients did not get going");
}

static void finish(struct world *w, struct w_clients *c)
{
    join_clients(w, c);
    wait_server_transcripts(w);
}

/* The edge holding session id (-1: none). */
static int edge_of(struct world *w, uint64_t id)
{
    for (int i = 0; i < w->o.edges; i++)
        if (edge_session_field(w, i, id, "epoch"))
            return i;
    return -1;
}

static uint64_t resumes_everywhere(struct world *w)
{
    uint64_t n = 0;

    for (int i = 0; i < w->o.edges; i++)
        n += edge_stat(w, i, "resumes");
    return n;
}

/* ---- planned moves ---- */

Test(remote_ops, drain_moves_every_session_and_the_edge_exits)
{
    static struct world clean, w;
    struct w_clients c;
    char out[4096], log[512];
    uint64_t moves = 0;
    int status = -1;

    clean_run(&clean, &base);
    start_busy(&w, &base, &c, 40);
    cr_assert_eq(edge_stat(&w, 0, "sessions"), SESSIONS, "every session opens at the first edge");

    long t0 = t_now_ms();
    edge_ctl(&w, 0, "drain", out, sizeof(out));
    cr_expect(strstr(out, "ok draining"), "drain: %s", out);
    /* Watch moves= until the supervisor is gone; it must exit by itself. */
    while (t_now_ms() - t0 < 20000) {
        uint64_t m = edge_stat(&w, 0, "moves");
        if (m > moves)
            moves = m;
        if (waitpid(w.edge[0].pid, &status, WNOHANG) == w.edge[0].pid)
            break;
        usleep(5000);
    }
    long drain_ms = t_now_ms() - t0;
    cr_assert(status != -1, "the draining edge did not exit within 20 s");
    w.edge[0].pid = 0;
    cr_log_info("drain of %d sessions: %ld ms, moves seen on the edge: %llu", SESSIONS,
                drain_ms, (unsigned long long)moves);
    fprintf(stderr, "drain_moves_every_session: drained %d sessions in %ld ms\n", SESSIONS,
            drain_ms);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the drained edge exited with "
              "status %#x", status);
    edge_log(&w, 0, log, sizeof(log));
    cr_expect_eq(file_count(log, "msg=\"moved off this edge\""), SESSIONS,
                 "the edge's log shows every session moved");
    /* The last moves and the exit can fall between two polls (more than one under load):
     * the log above is the exact count; the stats can only not exceed it. */
    cr_expect(moves <= SESSIONS, "stats moves=%llu", (unsigned long long)moves);
    /* The edge exits once its sessions are told to move: the resumes may still be on the way. */
    for (long t1 = t_now_ms(); t_now_ms() - t1 < 10000 &&
         edge_stat(&w, 1, "resumes") + edge_stat(&w, 2, "resumes") < SESSIONS; usleep(10000))
        ;
    cr_expect_eq(edge_stat(&w, 1, "resumes") + edge_stat(&w, 2, "resumes"), SESSIONS,
                 "every session resumed at the other edges");
    finish(&w, &c);
    world_stop(&w);
    compare(&clean, &w);
}

Test(remote_ops, move_one_session)
{
    static struct world clean, w;
    struct w_clients c;
    uint64_t ids[W_SESSIONS_MAX];
    char cmd[64], out[4096];
    int to = -1;

    clean_run(&clean, &base);
    start_busy(&w, &base, &c, 40);
    cr_assert_eq(edge_session_ids(&w, 0, ids, W_SESSIONS_MAX), SESSIONS);
    uint64_t epoch = edge_session_field(&w, 0, ids[0], "epoch");
    cr_assert_gt(epoch, 0);

    snprintf(cmd, sizeof(cmd), "move %llu", (unsigned long long)ids[0]);
    edge_ctl(&w, 0, cmd, out, sizeof(out));
    cr_expect(strstr(out, "ok moving"), "move: %s", out);
    for (long t0 = t_now_ms(); t_now_ms() - t0 < 10000 && to <= 0; usleep(10000))
        to = edge_of(&w, ids[0]);
    cr_assert(to > 0, "session %llu did not arrive at another edge", (unsigned long long)ids[0]);
    cr_expect_gt(edge_session_field(&w, to, ids[0], "epoch"), epoch,
                 "the epoch goes up at the new edge");
    cr_expect_eq(edge_stat(&w, 0, "moves"), 1);
    cr_expect_eq(resumes_everywhere(&w), 1, "only the moved session resumed");
    for (int k = 1; k < SESSIONS; k++)
        cr_expect_eq(edge_session_field(&w, 0, ids[k], "epoch"), epoch,
                     "session %llu stays on the first edge", (unsigned long long)ids[k]);
    finish(&w, &c);
    world_stop(&w);
    compare(&clean, &w);
}

/* ---- refusals ---- */

Test(remote_ops, edge_without_the_secret_is_refused)
{
    static struct world clean, w;
    struct w_opts o = base;
    struct w_clients c;
    char log[512];

    o.no_secret[0] = 1;
    clean_run(&clean, &base);
    start_busy(&w, &o, &c, 40);
    cr_expect_eq(edge_stat(&w, 0, "sessions"), 0, "no session lives on the edge without it");
    cr_expect_eq(edge_stat(&w, 1, "sessions"), SESSIONS, "the next edge opened every session");
    finish(&w, &c);
    world_stop(&w);
    cr_expect_eq(w.server_conns, SESSIONS, "the server program saw %d connections, not one "
                 "per session", w.server_conns);
    /* The first refusal marks edge 0 failed in the client proxy (--edge-retry-ms), so the
     * sessions that open after it skip that edge: at least one refusal, at most one per
     * session (as in incompatible_edge_is_skipped). */
    snprintf(log, sizeof(log), "%s/server-proxy.log", w.dir);
    int refusals = file_count(log, "why=\"HELLO with a wrong edge secret\"");
    cr_expect(refusals >= 1 && refusals <= SESSIONS,
              "the server proxy refused the edge without the secret %d times", refusals);
    edge_log(&w, 0, log, sizeof(log));
    int heard = file_count(log, "msg=\"session failed\" reason=\"server endpoint refused the "
                           "session: authentication failed\"");
    cr_expect(heard >= 1 && heard <= SESSIONS, "the edge heard ERROR AUTH %d times", heard);
    compare(&clean, &w);
}

/* A RESUME of session id with a wrong credential, from a raw client to edge i: the code of
 * the ERROR it gets (0: none). */
static uint32_t resume_with_wrong_credential(struct world *w, int i, uint64_t id)
{
    static const uint8_t wrong[WIRE_TOKEN_LEN] = "not-the-cred-XYZ";
    uint8_t buf[WIRE_RESUME_MAX + WIRE_HDR_LEN], frame[4096];
    char addr[64];
    struct wire_frame f;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", w->port[i]);
    int fd = t_connect(addr);
    size_t n = wire_put_resume(buf, id, wrong, 1, 0, 1, 0, NULL, 0);
    n += wire_put_empty(buf + n, WIRE_RESUME_END);
    t_write_all(fd, buf, n);
    long got = t_read_frame(fd, frame, sizeof(frame), 5000);
    close(fd);
    cr_assert_gt(got, 0, "edge %d: no answer to a RESUME with a wrong credential (%ld)", i, got);
    cr_assert_eq(wire_next(frame, (size_t)got, sizeof(frame), &f), got);
    cr_assert_eq(f.type, WIRE_ERROR, "edge %d answered %s", i, wire_type_name(f.type));
    return f.u.error.code;
}

Test(remote_ops, wrong_credential_gets_auth_error)
{
    static struct world clean, w;
    struct w_clients c;
    uint64_t ids[W_SESSIONS_MAX];
    char log[512];

    clean_run(&clean, &base);
    start_busy(&w, &base, &c, 40);
    cr_assert_eq(edge_session_ids(&w, 0, ids, W_SESSIONS_MAX), SESSIONS);
    uint64_t epoch = edge_session_field(&w, 0, ids[0], "epoch");

    /* At another edge: it asks the server endpoint, which must refuse without fencing. */
    cr_expect_eq(resume_with_wrong_credential(&w, 1, ids[0]), WIRE_ERR_AUTH);
    /* At the edge that holds the session: it must not give its copy away either. */
    cr_expect_eq(resume_with_wrong_credential(&w, 0, ids[0]), WIRE_ERR_AUTH);
    usleep(300 * 1000);   /* a fenced edge, or a lost copy, would show by now */
    cr_expect_eq(edge_session_field(&w, 0, ids[0], "epoch"), epoch,
                 "the session still lives on its edge, in its epoch");
    cr_expect_eq(resumes_everywhere(&w), 0, "nothing resumed");
    snprintf(log, sizeof(log), "%s/server-proxy.log", w.dir);
    cr_expect_geq(file_count(log, "RESUME with a wrong client credential"), 1);
    cr_expect_eq(file_count(log, "fenced=old_edge"), 0, "the server endpoint fenced the edge");
    finish(&w, &c);
    world_stop(&w);
    compare(&clean, &w);
}

/* ---- a corrupt snapshot in the store ---- */

/* The newest snap-* file under dir (highest position); its size, 0 when none. */
static off_t newest_snapshot(const char *dir, char *path, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char best[300] = "";
    struct stat st;

    if (!d)
        return 0;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "snap-", 5) == 0 && !strstr(e->d_name, ".tmp") &&
            strcmp(e->d_name + 5, best[0] ? best + 5 : "") > 0)
            snprintf(best, sizeof(best), "%s", e->d_name);   /* positions are zero-padded */
    closedir(d);
    if (!best[0])
        return 0;
    snprintf(path, len, "%s/%s", dir, best);
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Wait until the store's newest file stays the same for quiet_ms; its size. */
static off_t settled_snapshot(const char *dir, char *path, size_t len, int quiet_ms)
{
    char last[600] = "";
    off_t size = 0, last_size = -1;
    long since = t_now_ms();

    for (long t0 = t_now_ms(); t_now_ms() - t0 < 10000; usleep(20000)) {
        size = newest_snapshot(dir, path, len);
        if (!size || strcmp(path, last) || size != last_size) {
            snprintf(last, sizeof(last), "%s", size ? path : "");
            last_size = size;
            since = t_now_ms();
        } else if (t_now_ms() - since >= quiet_ms) {
            return size;
        }
    }
    return 0;
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    uint8_t b;

    cr_assert(fd >= 0 && pread(fd, &b, 1, at) == 1);
    b ^= 0x5a;
    cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

/* Lockstep messages of one plain client through the sequencer: each waits for its reply. */
static void talk(int fd, int from, int to)
{
    char msg[64], want[32], buf[4096], seen[1 << 14];
    size_t have = 0;

    for (int r = from; r < to; r++) {
        int len = snprintf(msg, sizeof(msg), r ? "message %d\n" : "hello client 0\n", r);
        snprintf(want, sizeof(want), "reply %d\n", r + 1);
        t_write_all(fd, msg, (size_t)len);
        have = 0;
        while (!memmem(seen, have, want, strlen(want))) {
            long n = t_read_n(fd, buf, 1, 5000);
            cr_assert_eq(n, 1, "round %d: no reply", r);
            if (have == sizeof(seen))
                have = 0;
            seen[have++] = buf[0];
        }
    }
}

Test(remote_ops, corrupt_snapshot_in_the_store_is_never_loaded)
{
    static struct world w;
    struct w_opts o = base;
    uint64_t id;
    char dir[400], path[700], log[512], named[64], buf[256];

    o.resume_timeout_ms = 3000;
    world_start(&w, &o);
    int fd = t_connect(w.cproxy.addr);
    talk(fd, 0, 60);
    cr_assert_eq(edge_session_ids(&w, 0, &id, 1), 1);
    snprintf(dir, sizeof(dir), "%s/%llu", w.store, (unsigned long long)id);
    off_t size = settled_snapshot(dir, path, sizeof(path), 600);
    cr_assert_gt(size, 0, "no snapshot settled in the store %s", dir);
    flip_byte(path, size / 2);
    const char *name = strrchr(path, '/') + 1;
    snprintf(named, sizeof(named), "the snapshot %llu stored",
             strtoull(name + 5, NULL, 10));

    long t0 = t_now_ms();
    edge_kill(&w, 0);
    /* The session must end with a reset after the resume timeout, never with more bytes. */
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    cr_assert_eq(poll(&pfd, 1, 15000), 1, "the client was neither reset nor answered");
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    long ended_ms = t_now_ms() - t0;
    cr_expect(n < 0 && errno == ECONNRESET, "the client got %zd bytes (%s), not a reset", n,
              n < 0 ? strerror(errno) : "");
    cr_expect_geq(ended_ms, 2500, "reset after %ld ms, before the resume timeout", ended_ms);
    cr_log_info("corrupt snapshot: client reset after %ld ms", ended_ms);
    close(fd);

    int refusals = 0;
    for (int i = 1; i < w.o.edges; i++) {
        edge_log(&w, i, log, sizeof(log));
        refusals += file_count(log, "not usable, not loaded");
        cr_expect_eq(file_count(log, "msg=\"resumed\""), 0, "edge %d loaded the snapshot", i);
        cr_expect_eq(edge_stat(&w, i, "resumes"), 0, "edge %d resumed the session", i);
    }
    cr_expect_geq(refusals, 2, "the edges did not refuse the corrupt snapshot by name");
    int named_refusals = 0;
    for (int i = 1; i < w.o.edges; i++) {
        edge_log(&w, i, log, sizeof(log));
        named_refusals += file_count(log, named);
    }
    cr_expect_geq(named_refusals, 2, "the refusal does not name %s", named);
    world_stop(&w);
}

/* ---- an incompatible edge ---- */

/* Wait until every session on edge i has a snapshot stored at the server endpoint. */
static void wait_remote_snapshots(struct world *w, int i)
{
    uint64_t ids[W_SESSIONS_MAX];
    int n = edge_session_ids(w, i, ids, W_SESSIONS_MAX), stored = 0;

    for (long t0 = t_now_ms(); t_now_ms() - t0 < 10000 && stored < n; usleep(20000)) {
        stored = 0;
        for (int k = 0; k < n; k++)
            stored += edge_session_field(w, i, ids[k], "remote_snapshot") > 0;
    }
    cr_assert_eq(stored, n, "only %d of %d sessions have a snapshot off the node", stored, n);
}

Test(remote_ops, incompatible_edge_is_skipped)
{
    static struct world clean, w;
    struct w_opts o = base;
    struct w_clients c;
    char log[512];

    o.edge_extra[1] = "max_message_bytes = 262144";
    clean_run(&clean, &o);
    start_busy(&w, &o, &c, 40);
    cr_assert_eq(edge_stat(&w, 0, "sessions"), SESSIONS);
    wait_remote_snapshots(&w, 0);
    edge_kill(&w, 0);
    /* The sessions try edge 1 first (the one after the lost edge), then edge 2. */
    for (long t0 = t_now_ms(); t_now_ms() - t0 < 15000 &&
         edge_stat(&w, 2, "resumes") < SESSIONS; usleep(20000))
        ;
    cr_expect_eq(edge_stat(&w, 2, "resumes"), SESSIONS, "the sessions resumed at the third edge");
    cr_expect_eq(edge_stat(&w, 1, "resumes"), 0, "the incompatible edge resumed a session");
    /* Each refusal marks edge 1 failed in the client proxy (--edge-retry-ms), so the
     * sessions whose resume starts after the first refusal skip it: at least one refusal,
     * and never more than one per session. */
    edge_log(&w, 1, log, sizeof(log));
    int refusals = file_count(log, "max_message_bytes=1048576, this edge has 262144");
    cr_expect(refusals >= 1 && refusals <= SESSIONS,
              "the incompatible edge's log shows %d refusals", refusals);
    snprintf(log, sizeof(log), "%s/client-proxy.log", w.dir);
    int incompatible = file_count(log, "code=9 ");
    cr_expect(incompatible >= 1 && incompatible <= SESSIONS,
              "the client proxy got %d INCOMPATIBLE", incompatible);
    finish(&w, &c);
    world_stop(&w);
    compare(&clean, &w);
}

/* ---- Redis through the proxies ---- */

#define REDIS_REQUESTS 20000
#define REDIS_KILLS    12

static pid_t redis_start(const char *dir, int port)
{
    char p[16];
    int out;

    snprintf(p, sizeof(p), "%d", port);
    char *argv[] = { "/usr/bin/redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", NULL };
    pid_t pid = t_start_raw(dir, "redis", argv, &out);
    for (int k = 0; k < 500; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(0x7f000001) };
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok)
            return pid;
        usleep(10000);
    }
    cr_assert_fail("redis-server did not start");
    return -1;
}

/* redis-cli's answer to cmd (one line), as a number. */
static long long redis_number(int port, const char *cmd)
{
    char line[256], buf[64] = "";
    FILE *p;

    snprintf(line, sizeof(line), "redis-cli -p %d %s", port, cmd);
    cr_assert_not_null(p = popen(line, "r"));
    if (!fgets(buf, sizeof(buf), p))
        buf[0] = 0;
    pclose(p);
    return strtoll(buf, NULL, 10);
}

/* Everything the process wrote on fd, until it closes it. */
static void slurp(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t got;

    while (n + 1 < cap && (got = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)got;
    buf[n] = 0;
}

Test(remote_ops, redis_through_the_proxies_while_edges_die)
{
    static struct world w;
    static char out[1 << 16];
    struct w_opts o = { .app = "passthrough" };
    char target[32], host[64], *port, n[16];
    int redis_port = w_free_port(), bench_out, status = -1, kills = 0;

    pid_t redis = redis_start(t_tmpdir(), redis_port);
    snprintf(target, sizeof(target), "127.0.0.1:%d", redis_port);
    o.target = target;
    world_start(&w, &o);
    snprintf(host, sizeof(host), "%s", w.cproxy.addr);
    port = strrchr(host, ':');
    *port++ = 0;
    snprintf(n, sizeof(n), "%d", REDIS_REQUESTS);
    /* -P 1: one command per chunk, so each is one message; no -r: one key for INCR. */
    char *argv[] = { "/usr/bin/redis-benchmark", "-h", host, "-p", port, "-t", "incr,lpush",
                     "-n", n, "-c", "10", "-P", "1", "-q", NULL };
    long t0 = t_now_ms();
    pid_t bench = t_start_raw(w.dir, "redis-benchmark", argv, &bench_out);
    fcntl(bench_out, F_SETFL, O_NONBLOCK);
    size_t got = 0;
    while (waitpid(bench, &status, WNOHANG) == 0 && t_now_ms() - t0 < 60000) {
        ssize_t r = read(bench_out, out + got, sizeof(out) - 1 - got);
        if (r > 0 && got + (size_t)r < sizeof(out) - 1)
            got += (size_t)r;
        usleep(500 * 1000);
        int i = busiest_edge(&w);
        if (i >= 0 && kills < REDIS_KILLS) {
            edge_kill(&w, i);
            edge_start(&w, i);
            kills++;
        }
    }
    long took = t_now_ms() - t0;
    fcntl(bench_out, F_SETFL, 0);
    slurp(bench_out, out + got, sizeof(out) - got);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "redis-benchmark: status %#x "
              "after %ld ms: %s", status, took, out);
    long long counter = redis_number(redis_port, "GET counter:__rand_int__");
    long long list = redis_number(redis_port, "LLEN mylist");
    char log[512];
    snprintf(log, sizeof(log), "%s/client-proxy.log", w.dir);
    int resumed = file_count(log, "msg=\"session resumed\"");
    cr_log_info("redis: %d kills, %d resumes, %ld ms, counter=%lld list=%lld", kills, resumed,
                took, counter, list);
    fprintf(stderr, "redis_through_the_proxies: %d edge kills, %d resumes in %ld ms; "
            "counter=%lld llen=%lld (want %d each)\n%s\n", kills, resumed, took, counter, list,
            REDIS_REQUESTS, strrchr(out, '\r') ? strrchr(out, '\r') + 1 : out);
    cr_expect_geq(resumed, kills, "fewer resumes than kills");
    cr_expect_geq(kills, 5, "only %d kills landed while redis-benchmark ran", kills);
    cr_expect_eq(counter, REDIS_REQUESTS, "INCR applied %lld times", counter);
    cr_expect_eq(list, REDIS_REQUESTS, "LPUSH applied %lld times", list);
    world_stop(&w);
    kill(redis, SIGTERM);
    t_wait(redis, 2000);
}

/* A drain while workers die: a killer SIGKILLs a random live worker of the draining edge
 * every 2-7 ms, before and during the drain, so sessions are mid-recovery when they are
 * told to move (and their final snapshots are taken by replacement workers). Every session
 * still moves, the edge exits 0, and every byte is what a run without faults gives. */
struct drain_killer { struct world *w; volatile int stop, draining; int kills, drain_kills; };

/* At most this many kills per session once the drain began: the last session left on the
 * edge would otherwise take every kill, one each 2-7 ms, and under load never stay up long
 * enough to snapshot and move (its client then finishes and closes it there). */
#define KILLS_PER_SESSION 8

static void *kill_workers_of_edge0(void *p)
{
    struct drain_killer *k = p;
    uint64_t ids[64], killed_id[64];
    int killed_n[64], nkilled = 0;
    unsigned seed = 4242;

    while (!k->stop && edge_alive(k->w, 0)) {
        usleep(2000 + rand_r(&seed) % 5000);
        int n = edge_session_ids(k->w, 0, ids, 64);
        if (n <= 0)
            continue;
        uint64_t id = ids[rand_r(&seed) % (unsigned)n];
        int j = 0;
        while (j < nkilled && killed_id[j] != id)
            j++;
        if (j == nkilled && nkilled < 64) {
            killed_id[nkilled] = id;
            killed_n[nkilled++] = 0;
        }
        int draining = k->draining;
        if (draining && (j == 64 || killed_n[j] >= KILLS_PER_SESSION))
            continue;
        uint64_t pid = edge_session_field(k->w, 0, id, "worker");
        if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0) {
            k->kills++;
            if (draining) {
                k->drain_kills++;
                killed_n[j]++;
            }
        }
    }
    return NULL;
}

Test(remote_ops, drain_while_workers_die)
{
    static struct world clean, w;
    struct w_clients c;
    struct drain_killer k = { .w = &w };
    pthread_t killer;
    char out[4096], log[512];
    int status = -1;

    clean_run(&clean, &base);
    start_busy(&w, &base, &c, 40);
    cr_assert_eq(edge_stat(&w, 0, "sessions"), SESSIONS, "every session opens at the first edge");
    pthread_create(&killer, NULL, kill_workers_of_edge0, &k);
    usleep(100 * 1000);
    /* Every session mid-recovery when the drain begins: all workers killed just before. */
    uint64_t ids[SESSIONS];
    int n = 0, mid = 0;
    /* (A listing can come back short while the killer thread asks too, under load.) */
    for (long t1 = t_now_ms(); n < SESSIONS && t_now_ms() - t1 < 5000; )
        n = edge_session_ids(&w, 0, ids, SESSIONS);
    for (int i = 0; i < n; i++) {
        uint64_t pid = edge_session_field(&w, 0, ids[i], "worker");
        /* killed now, or already dead (the killer's last kill: pid 0 once the supervisor
         * knows, ESRCH before) and being recovered */
        mid += pid == 0 || kill((pid_t)pid, SIGKILL) == 0 || errno == ESRCH;
    }
    k.draining = 1;
    edge_ctl(&w, 0, "drain", out, sizeof(out));
    cr_expect(strstr(out, "ok draining"), "drain: %s", out);
    long t0 = t_now_ms();
    while (t_now_ms() - t0 < 30000 && waitpid(w.edge[0].pid, &status, WNOHANG) != w.edge[0].pid)
        usleep(5000);
    k.stop = 1;
    pthread_join(killer, NULL);
    cr_assert(status != -1, "the draining edge did not exit within 30 s");
    w.edge[0].pid = 0;
    cr_log_info("drain with %d sessions killed at its start and %d random kills (%d during "
                "the drain): %ld ms", mid, k.kills, k.drain_kills, t_now_ms() - t0);
    cr_expect_eq(mid, SESSIONS, "every session was mid-recovery as the drain began (%d)", mid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %#x", status);
    cr_assert_geq(k.kills, 5, "kills must land for the test to mean anything");
    edge_log(&w, 0, log, sizeof(log));
    cr_expect_eq(file_count(log, "msg=\"moved off this edge\""), SESSIONS,
                 "the edge's log shows every session moved");
    finish(&w, &c);
    world_stop(&w);
    compare(&clean, &w);
}

/* A move asked for while the session's last snapshot waits for its sync (held by the test
 * hook): the move's own request is refused then, and with no periodic snapshots nothing
 * asked again, so the move waited for its deadline (drain_timeout_ms). It goes once the sync
 * does, and the transcripts match a run without the move. */
Test(remote_ops, a_move_asked_while_a_snapshot_waits_for_its_sync)
{
    static struct world clean, w;
    struct w_clients c;
    uint64_t ids[W_SESSIONS_MAX];
    char cmd[64], out[4096], fault[512];
    struct w_opts o = base;
    int to = -1;

    o.snapshot_interval_ms = -1;
    o.edge_extra[0] = "drain_timeout_ms = 30000\n";
    clean_run(&clean, &o);
    snprintf(fault, sizeof(fault), "%s/syncfault", t_tmpdir());
    FILE *f = fopen(fault, "w");
    cr_assert(f && fputs("ok", f) >= 0 && fclose(f) == 0);
    setenv("CESSNA_FAULT_SNAPSYNC", fault, 1);
    start_busy(&w, &o, &c, 40);
    unsetenv("CESSNA_FAULT_SNAPSYNC");
    cr_assert_eq(edge_session_ids(&w, 0, ids, W_SESSIONS_MAX), SESSIONS);
    f = fopen(fault, "w");
    cr_assert(f && fputs("hold", f) >= 0 && fclose(f) == 0);
    snprintf(cmd, sizeof(cmd), "snapshot %llu", (unsigned long long)ids[0]);
    edge_ctl(&w, 0, cmd, out, sizeof(out));
    cr_expect(strncmp(out, "ok", 2) == 0, "snapshot: %s", out);
    usleep(300 * 1000);   /* written, waiting for the held sync; the session moves on */
    snprintf(cmd, sizeof(cmd), "move %llu", (unsigned long long)ids[0]);
    edge_ctl(&w, 0, cmd, out, sizeof(out));
    cr_expect(strstr(out, "ok moving"), "move: %s", out);
    usleep(300 * 1000);
    f = fopen(fault, "w");
    cr_assert(f && fputs("ok", f) >= 0 && fclose(f) == 0);
    long t0 = t_now_ms();
    while (t_now_ms() - t0 < 10000 && (to = edge_of(&w, ids[0])) <= 0)
        usleep(10000);
    cr_assert(to > 0, "session %llu had not moved %ld ms after the sync went on",
              (unsigned long long)ids[0], t_now_ms() - t0);
    cr_expect_eq(edge_stat(&w, 0, "moves"), 1);
    finish(&w, &c);
    world_stop(&w);
    compare(&clean, &w);
}
