/* it_olog.c - integration: the ordering log file a real supervisor writes (supervisor/olog.c)
 * under STATE_DIR/ID/events-FIRST.log on request (`log ID`) and when a session fails: the
 * events after the last durable snapshot, so a snapshot moves its start. olog.c works on the
 * supervisor's session table, so it is tested here, through the process, with the files
 * parsed by common/evlog.c's reader.
 *
 * Snapshots are taken on demand (`snapshot ID` on the control socket) with periodic ones
 * off, so each test knows the position a snapshot covers. Every wait is a poll with a
 * deadline on an observable state (the control socket, the files), never a bare sleep. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "evlog.h"
#include "shm.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(olog, .timeout = 60);

#define WAIT_MS 10000

struct t_olog {
    struct t_echo_ep srv;
    struct t_edge e;
    struct cessna_ep *ep;
    uint64_t id;
    char dir[400];      /* STATE_DIR/ID */
};

static long t_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An edge running passthrough toward an echo endpoint, and one client session on it. */
static void t_olog_start(struct t_olog *o, const char *extra)
{
    char err[256], cfg[256];

    snprintf(cfg, sizeof(cfg), "snapshot_interval_ms = 0\n%s", extra ? extra : "");
    t_echo_ep_start(&o->srv);
    t_edge_start(&o->e, t_app("passthrough"), o->srv.addr, cfg);
    o->ep = cessna_ep_connect(o->e.sup.addr, err, sizeof(err));
    cr_assert(o->ep, "connect: %s", err);
    o->id = cessna_ep_session_id(o->ep);
    snprintf(o->dir, sizeof(o->dir), "%s/state/%llu", o->e.dir, (unsigned long long)o->id);
}

static void t_olog_stop(struct t_olog *o)
{
    cessna_ep_close(o->ep, 5000);
    cessna_ep_free(o->ep);
    t_edge_stop(&o->e);
}

static int t_msg(char *buf, size_t cap, int i)
{
    return snprintf(buf, cap, "message %d %.*s", i, i % 40, "0123456789012345678901234567890123456789");
}

/* Messages from..from+n-1 in lockstep; each echo back is one client and one server event. */
static void t_rounds(struct t_olog *o, int from, int n)
{
    char msg[128];
    const void *got;

    for (int i = from; i < from + n; i++) {
        int len = t_msg(msg, sizeof(msg), i);
        cr_assert_eq(cessna_ep_send(o->ep, msg, (size_t)len), 0);
        cr_assert_eq(cessna_ep_recv(o->ep, &got), len, "echo of message %d (%s)", i,
                     cessna_ep_error(o->ep));
    }
}

/* A field of the session's line in `sessions`. */
static uint64_t t_sess_field(const struct t_olog *o, const char *key)
{
    char out[4096];

    t_ctl(&o->e, "sessions", out, sizeof(out));
    cr_assert_eq(t_field(out, "id"), o->id, "sessions: %s", out);
    return t_field(out, key);
}

/* Ask the supervisor to write the session's log now. */
static void t_dump(const struct t_olog *o)
{
    char cmd[64], out[1024];

    snprintf(cmd, sizeof(cmd), "log %llu", (unsigned long long)o->id);
    t_ctl(&o->e, cmd, out, sizeof(out));
    cr_assert(!strncmp(out, "ok log of session ", 18), "log: %s", out);
}

/* First positions of the events-*.log files in the session's directory, sorted. */
static int t_log_files(const struct t_olog *o, uint64_t *firsts, int max)
{
    DIR *d = opendir(o->dir);
    struct dirent *de;
    int n = 0;

    cr_assert(d, "%s: %s", o->dir, strerror(errno));
    while ((de = readdir(d))) {
        unsigned long long first;
        char tail[8];
        if (sscanf(de->d_name, "events-%20llu.%4s", &first, tail) == 2 && !strcmp(tail, "log")) {
            cr_assert_lt(n, max, "too many log files");
            int k = n++;
            while (k > 0 && firsts[k - 1] > first) {
                firsts[k] = firsts[k - 1];
                k--;
            }
            firsts[k] = first;
        }
    }
    closedir(d);
    return n;
}

static void t_format_files(char *buf, size_t cap, const uint64_t *f, int n)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && off + 24 < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%llu", i ? "," : "",
                                (unsigned long long)f[i]);
}

/* Wait until the log files are exactly {first}; fail with what is there otherwise. */
static void t_expect_files(const struct t_olog *o, uint64_t first)
{
    uint64_t f[64];
    int n;
    long deadline = t_ms() + WAIT_MS;

    do {
        t_dump(o);
        n = t_log_files(o, f, 64);
        if (n == 1 && f[0] == first)
            return;
        usleep(5000);
    } while (t_ms() < deadline);
    char got[512];
    t_format_files(got, sizeof(got), f, n);
    cr_assert_fail("log files start at {%s}, want exactly {%llu}", got,
                   (unsigned long long)first);
}

/* Wait until reading the log's events after position `after` gives `count` of them (the
 * last batch is written asynchronously), then leave them in r. */
static void t_read_log(const struct t_olog *o, uint64_t after, uint64_t count,
                       struct evlog_reader *r)
{
    char err[512] = "";
    long deadline = t_ms() + WAIT_MS;
    int rc;

    do {
        t_dump(o);
        rc = evlog_read_dir(o->dir, o->id, after, r, err, sizeof(err));
        if (rc == 0 && r->count >= count)
            break;
        if (rc == 0)
            evlog_reader_free(r);
        usleep(5000);
    } while (t_ms() < deadline);
    cr_assert_eq(rc, 0, "read the log: %s", err);
    cr_assert_eq(r->count, count, "the log holds %llu events, want %llu",
                 (unsigned long long)r->count, (unsigned long long)count);
}

/* Records [r->first, ...] are the events of messages from, from+1, ...: each a client
 * message then its echo from the server, with the message bytes. */
static void t_check_rounds(const struct evlog_reader *r, int from)
{
    size_t off = 0;

    cr_assert_eq(r->count % 2, 0, "whole rounds: %llu events", (unsigned long long)r->count);
    for (uint64_t k = 0; k < r->count; k++) {
        uint32_t len;
        uint16_t type;
        struct shm_rec rec;
        char want[128];
        int wlen = t_msg(want, sizeof(want), from + (int)(k / 2));

        cr_assert_leq(off + 8 + sizeof(rec), r->len);
        memcpy(&len, r->buf + off, 4);
        memcpy(&type, r->buf + off + 4, 2);
        memcpy(&rec, r->buf + off + 8, sizeof(rec));
        cr_assert_eq(rec.pos, r->first + k);
        cr_assert_eq(type, k % 2 ? EV_SERVER : EV_CLIENT, "event %llu has type %u",
                     (unsigned long long)rec.pos, type);
        cr_assert_eq(len, sizeof(rec) + (size_t)wlen, "event %llu: %u bytes",
                     (unsigned long long)rec.pos, len);
        cr_assert(memcmp(r->buf + off + 8 + sizeof(rec), want, (size_t)wlen) == 0,
                  "event %llu: not '%s'", (unsigned long long)rec.pos, want);
        off += (8 + len + 7) & ~7u;
    }
    cr_assert_eq(off, r->len);
}

/* Ask for a snapshot and wait until it is durable; returns its position. */
static uint64_t t_snapshot_durable(const struct t_olog *o)
{
    char cmd[64], out[512];
    uint64_t before = t_sess_field(o, "snapshots");

    snprintf(cmd, sizeof(cmd), "snapshot %llu", (unsigned long long)o->id);
    t_ctl(&o->e, cmd, out, sizeof(out));
    const char *at = strstr(out, "at position ");
    cr_assert(!strncmp(out, "ok ", 3) && at, "snapshot: %s", out);
    uint64_t p = strtoull(at + strlen("at position "), NULL, 10);
    long deadline = t_ms() + WAIT_MS;
    while (t_sess_field(o, "snapshots") == before) {
        cr_assert(t_ms() < deadline, "snapshot at %llu not durable after %d ms",
                  (unsigned long long)p, WAIT_MS);
        usleep(5000);
    }
    cr_assert_eq(t_sess_field(o, "snapshot"), p, "the durable snapshot is the one requested");
    return p;
}

/* After N events and a durable snapshot at P, the files covering positions <= P are gone and
 * a new one starts at P + 1; it then holds exactly the events after P. Twice, to see a file
 * that itself began at a rotation go too. */
static void rotation(const char *extra)
{
    struct t_olog o;
    struct evlog_reader r;
    const int N = 30, M = 25;

    t_olog_start(&o, extra);
    t_rounds(&o, 0, N);
    uint64_t ordered = t_sess_field(&o, "ordered");
    cr_assert_eq(ordered, 1 + 2 * (uint64_t)N, "START, then a client and a server event each");
    t_read_log(&o, 0, ordered, &r);
    cr_assert_eq(r.first, 1, "before any snapshot the log starts at the session's start");
    evlog_reader_free(&r);
    t_expect_files(&o, 1);

    uint64_t p = t_snapshot_durable(&o);
    cr_assert_eq(p, ordered, "an idle session snapshots at its last event");
    t_expect_files(&o, p + 1);

    t_rounds(&o, N, M);
    t_read_log(&o, p, 2 * (uint64_t)M, &r);
    cr_assert_eq(r.first, p + 1);
    t_check_rounds(&r, N);
    evlog_reader_free(&r);
    t_expect_files(&o, p + 1);

    uint64_t p2 = t_snapshot_durable(&o);
    cr_assert_eq(p2, p + 2 * (uint64_t)M);
    t_expect_files(&o, p2 + 1);
    t_rounds(&o, N + M, 5);
    t_read_log(&o, p2, 10, &r);
    cr_assert_eq(r.first, p2 + 1);
    t_check_rounds(&r, N + M);
    evlog_reader_free(&r);
    t_olog_stop(&o);
}

Test(olog, rotation_removes_covered_files_cold_standby)
{
    rotation("standby = cold\n");
}

Test(olog, rotation_removes_covered_files_hot_standby)
{
    rotation("standby = hot\n");
}

/* A second snapshot at the same position (no events since): the supervisor may refuse it,
 * or take it and keep the one file; what it must not do is accept it and then never see it
 * durable, leaving the session unable to snapshot again. */
Test(olog, second_snapshot_at_one_position_completes_or_is_refused)
{
    struct t_olog o;
    struct evlog_reader r;
    char cmd[64], out[512];

    t_olog_start(&o, NULL);
    t_rounds(&o, 0, 10);
    uint64_t p = t_snapshot_durable(&o);
    t_expect_files(&o, p + 1);

    snprintf(cmd, sizeof(cmd), "snapshot %llu", (unsigned long long)o.id);
    t_ctl(&o.e, cmd, out, sizeof(out));
    /* Refused, answered as durable already (nothing moved), or taken: never left hanging. */
    if (strncmp(out, "error:", 6) != 0 && !strstr(out, "durable already")) {
        cr_assert(!strncmp(out, "ok ", 3), "snapshot: %s", out);
        long deadline = t_ms() + WAIT_MS;
        while (t_sess_field(&o, "snapshots") < 2) {
            cr_assert(t_ms() < deadline, "a second snapshot at %llu was accepted (%s) but never "
                      "became durable", (unsigned long long)p, out);
            usleep(5000);
        }
    }
    t_expect_files(&o, p + 1);

    /* The session still snapshots, and rotates, after new events. */
    t_rounds(&o, 10, 4);
    t_read_log(&o, p, 8, &r);
    cr_assert_eq(r.first, p + 1);
    t_check_rounds(&r, 10);
    evlog_reader_free(&r);
    uint64_t p2 = t_snapshot_durable(&o);
    cr_assert_eq(p2, p + 8);
    t_expect_files(&o, p2 + 1);
    t_olog_stop(&o);
}

/* Snapshots off: the log always starts at event 1 and grows with every batch. */
Test(olog, without_snapshots_one_file_keeps_growing)
{
    struct t_olog o;
    struct evlog_reader r;
    char path[600], name[64];
    off_t last_size = 0;

    t_olog_start(&o, NULL);
    evlog_name(name, sizeof(name), 1);
    snprintf(path, sizeof(path), "%s/%s", o.dir, name);
    for (int batch = 0; batch < 4; batch++) {
        t_rounds(&o, batch * 20, 20);
        uint64_t ordered = t_sess_field(&o, "ordered");
        cr_assert_eq(ordered, 1 + 40 * (uint64_t)(batch + 1));
        t_read_log(&o, 0, ordered, &r);
        cr_assert_eq(r.first, 1);
        /* Event 1 is START; the rounds follow. */
        struct evlog_reader rounds = r;
        size_t start = (8 + wire_get32(r.buf) + 7) & ~7u;
        rounds.buf += start;
        rounds.len -= start;
        rounds.first = 2;
        rounds.count = r.count - 1;
        t_check_rounds(&rounds, 0);
        evlog_reader_free(&r);
        t_expect_files(&o, 1);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
        cr_assert_gt(st.st_size, last_size, "the file grows");
        last_size = st.st_size;
    }
    cr_assert_eq(t_sess_field(&o, "snapshots"), 0);
    t_olog_stop(&o);
}

/* Traffic from another thread while snapshots become durable one after another: once all
 * is quiet, the files still hold every event after the last durable snapshot, contiguous,
 * and no file whose events that snapshot covers entirely is left. */
struct t_traffic {
    struct t_olog *o;
    volatile int stop;
    int sent;
    char why[256];
};

static void *t_traffic_main(void *p)
{
    struct t_traffic *t = p;
    char msg[128];
    const void *got;

    while (!t->stop) {
        int len = t_msg(msg, sizeof(msg), t->sent);
        if (cessna_ep_send(t->o->ep, msg, (size_t)len) < 0 ||
            cessna_ep_recv(t->o->ep, &got) != len) {
            snprintf(t->why, sizeof(t->why), "message %d: %s", t->sent,
                     cessna_ep_error(t->o->ep));
            break;
        }
        t->sent++;
    }
    return NULL;
}

Test(olog, rotation_under_traffic_loses_nothing)
{
    struct t_olog o;
    struct t_traffic t = { .o = &o };
    pthread_t th;
    uint64_t p = 0;
    char err[512] = "";

    t_olog_start(&o, NULL);
    pthread_create(&th, NULL, t_traffic_main, &t);
    for (int i = 0; i < 15; i++) {
        usleep(20000);
        p = t_snapshot_durable(&o);
    }
    t.stop = 1;
    pthread_join(th, NULL);
    cr_assert_str_empty(t.why, "%s", t.why);
    cr_assert_gt(t.sent, 15, "traffic ran during the snapshots (%d messages)", t.sent);

    uint64_t ordered = t_sess_field(&o, "ordered");
    cr_assert_eq(ordered, 1 + 2 * (uint64_t)t.sent);
    cr_assert_eq(t_sess_field(&o, "snapshot"), p);

    /* Every event after p, from the files that are left, wherever the rotations fell. */
    struct evlog_reader r;
    long deadline = t_ms() + WAIT_MS;
    int rc;
    for (;;) {
        t_dump(&o);
        rc = evlog_read_dir(o.dir, o.id, p, &r, err, sizeof(err));
        if (rc == 0 && r.count >= ordered - p)
            break;
        if (rc == 0)
            evlog_reader_free(&r);
        cr_assert(t_ms() < deadline, "events %llu..%llu from the log: %s",
                  (unsigned long long)p + 1, (unsigned long long)ordered,
                  rc ? err : "not all there");
        usleep(5000);
    }
    cr_assert_eq(r.first, p + 1);
    cr_assert_eq(r.count, ordered - p);
    evlog_reader_free(&r);

    /* No file entirely at or before p: only the first file may start at or before p + 1. */
    uint64_t f[64];
    int n = t_log_files(&o, f, 64);
    char got[512];
    t_format_files(got, sizeof(got), f, n);
    cr_assert_geq(n, 1);
    cr_assert_leq(f[0], p + 1, "files {%s}: events after %llu missing", got,
                  (unsigned long long)p);
    if (n > 1)
        cr_assert_gt(f[1], p + 1, "files {%s}: file %llu is covered by the snapshot at %llu",
                     got, (unsigned long long)f[0], (unsigned long long)p);
    t_olog_stop(&o);
}
