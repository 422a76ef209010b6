/* it_snapsync.c - group durability of snapshots (supervisor/snapsync.c) and snapshots taken
 * by what a session holds.
 *
 * A written snapshot file is not durable before the sync of its batch: a worker killed in
 * between recovers from the previous durable snapshot (or from the start) and loses nothing.
 * A failed sync is reported and loses nothing either. The sync is held or failed through the
 * supervisor's test hook (CESSNA_FAULT_SNAPSYNC names a file saying "hold" or "fail").
 * Every session runs the sequencer app, whose every output carries the counts and a hash of
 * every event so far; what the client receives must equal, byte for byte, what a session on
 * the same edge without faults receives for the same messages. A small state is written by
 * the worker itself, without a fork; a large one and a hot standby still fork. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "wire.h"

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}

static uint64_t stat_field(const struct t_edge *e, const char *key)
{
    char out[4096];

    t_ctl(e, "stats", out, sizeof(out));
    return t_field(out, key);
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

static void set_fault(const char *path, const char *word)
{
    FILE *f = fopen(path, "w");

    cr_assert(f, "%s: %s", path, strerror(errno));
    fputs(word, f);
    fclose(f);
}

/* Files in the session's directory named prefix..., holding part (if not NULL), temp files
 * ("...tmp...") only with with_tmp. 0 when the directory is not there. */
static int count_files(const struct t_edge *e, uint64_t id, const char *prefix,
                       const char *part, int with_tmp)
{
    char dir[600];
    struct dirent *d;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s/state/%llu", e->dir, (unsigned long long)id);
    DIR *dp = opendir(dir);
    if (!dp)
        return 0;
    while ((d = readdir(dp)))
        n += strncmp(d->d_name, prefix, strlen(prefix)) == 0 &&
             (with_tmp || !strstr(d->d_name, ".tmp")) && (!part || strstr(d->d_name, part));
    closedir(dp);
    return n;
}

/* Snapshot files (not temp files) in the session's directory. */
static int count_snapshot_files(const struct t_edge *e, uint64_t id, const char *suffix)
{
    return count_files(e, id, "snap-", suffix, 0);
}

/* What the client of a session receives, kept for the comparison. */
struct transcript {
    uint8_t *data;
    size_t len, cap;
};

static void keep(struct transcript *t, const void *p, size_t n)
{
    if (t->len + n + 8 > t->cap) {
        t->cap = 2 * (t->len + n + 8);
        t->data = realloc(t->data, t->cap);
        cr_assert(t->data);
    }
    uint64_t n64 = n;
    memcpy(t->data + t->len, &n64, 8);   /* length, then the bytes: boundaries count too */
    t->len += 8;
    memcpy(t->data + t->len, p, n);
    t->len += n;
}

/* Messages from..to-1, one round trip each (the sequencer's echo of message i). */
static void round_trips(struct cessna_ep *ep, struct transcript *t, int from, int to,
                        size_t len)
{
    uint8_t *buf = malloc(len);

    for (int i = from; i < to; i++) {
        const void *got;
        t_fill(buf, len, (uint64_t)i + 1);
        memcpy(buf, &i, sizeof(i));
        cr_assert_eq(cessna_ep_send(ep, buf, len), 0, "send %d: %s", i, cessna_ep_error(ep));
        long n = cessna_ep_recv(ep, &got);
        cr_assert(n > 0, "echo %d: %ld %s", i, n, cessna_ep_error(ep));
        keep(t, got, (size_t)n);
    }
    free(buf);
}

static void same(const struct transcript *a, const struct transcript *b)
{
    cr_assert_eq(a->len, b->len, "transcripts differ in length: %zu against %zu", a->len,
                 b->len);
    cr_assert(memcmp(a->data, b->data, a->len) == 0, "transcripts differ");
}

/* The end of a test with a session under test and its reference: both close, the edge
 * stops, the transcripts go. */
static void end_pair(struct t_edge *e, struct cessna_ep *ep, struct cessna_ep *rp,
                     struct transcript *ref, struct transcript *got)
{
    cessna_ep_close(ep, 5000);
    cessna_ep_close(rp, 5000);
    cessna_ep_free(ep);
    cessna_ep_free(rp);
    t_edge_stop(e);
    free(ref->data);
    free(got->data);
}

/* The edge, started with the sync test hook pointing at fault (which says "ok" at first). */
static void edge_with_hook(struct t_edge *e, struct t_echo_ep *srv, char *fault, size_t len,
                           const char *extra)
{
    const char *tmp = t_tmpdir();

    snprintf(fault, len, "%s/syncfault", tmp);
    set_fault(fault, "ok");
    setenv("CESSNA_FAULT_SNAPSYNC", fault, 1);
    t_echo_ep_start(srv);
    t_edge_start(e, t_app("sequencer"), srv->addr, extra);
    unsetenv("CESSNA_FAULT_SNAPSYNC");
}

/* A snapshot file written while the sync is held is not durable: no snapshot counts, the
 * events stay held, and a worker killed then comes back from the start (no durable
 * snapshot yet) or from the previous durable one, losing nothing. Once the sync goes, the
 * next snapshot is durable and a later kill recovers from it. */
static void written_not_durable_before_sync(const char *extra)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault), extra);
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 120, 200);   /* the reference: no fault at all */

    /* A first durable snapshot, after 20 round trips. */
    round_trips(ep, &got, 0, 20, 200);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 1, 10000);
    uint64_t p1 = t_session_field(&e, id, "snapshot");
    cr_assert_gt(p1, 0);

    /* The sync held: a snapshot 20 round trips later is written but stays not durable. */
    set_fault(fault, "hold");
    round_trips(ep, &got, 20, 40, 200);
    ctl_ok(&e, "snapshot %llu", id);
    long deadline = t_now_ms() + 10000;
    while (count_snapshot_files(&e, id, NULL) < 2) {
        cr_assert(t_now_ms() < deadline, "the held snapshot's file was never written");
        sleep_ms(10);
    }
    sleep_ms(300);   /* its outputs are long out: only the sync keeps it from durable */
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 1, "durable before its sync");
    cr_assert_eq(t_session_field(&e, id, "snapshot"), p1, "durable before its sync");
    cr_assert_eq(t_session_field(&e, id, "held_events"), t_session_field(&e, id, "ordered") - p1,
                 "events dropped before the sync");
    cr_assert_geq(stat_field(&e, "snapshot_sync_waiting"), 1);

    /* Killed now: recovery starts at p1, not at the written one, and loses nothing. */
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 40, 60, 200);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 1);
    cr_assert_eq(t_session_field(&e, id, "snapshot"), p1);

    /* The sync goes on: what was written by the dead worker never counts; a new snapshot
     * does, and a later kill recovers from it. */
    set_fault(fault, "ok");
    round_trips(ep, &got, 60, 80, 200);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 2, 10000);
    cr_assert_eq(t_session_field(&e, id, "snapshot"), t_session_field(&e, id, "ordered"));
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 80, 120, 200);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 2);
    same(&ref, &got);
    cr_assert_geq(stat_field(&e, "snapshot_syncs"), 2);
    end_pair(&e, ep, rp, &ref, &got);
}

Test(snapsync, written_not_durable_before_sync_cold, .timeout = 90)
{
    written_not_durable_before_sync("standby = cold\nsnapshot_interval_ms = 0\n");
}

Test(snapsync, written_not_durable_before_sync_hot, .timeout = 90)
{
    written_not_durable_before_sync("standby = hot\nsnapshot_interval_ms = 0\n");
}

/* A failed sync: the snapshot is counted as failed (session and node), named in the log,
 * its file removed, its events kept; a kill then loses nothing; the next snapshot after
 * the disk is back is a full one and durable. */
static void failed_sync_loses_nothing(const char *extra)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512], log[4096] = "";

    edge_with_hook(&e, &srv, fault, sizeof(fault), extra);
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 100, 300);

    round_trips(ep, &got, 0, 20, 300);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 1, 10000);
    uint64_t p1 = t_session_field(&e, id, "snapshot");

    set_fault(fault, "fail");
    round_trips(ep, &got, 20, 40, 300);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshot_failures", 1, 10000);
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 1);
    cr_assert_eq(t_session_field(&e, id, "snapshot"), p1);
    cr_assert_eq(t_session_field(&e, id, "held_events"), t_session_field(&e, id, "ordered") - p1);
    cr_assert_geq(stat_field(&e, "snapshot_sync_failures"), 1);
    cr_assert_eq(count_snapshot_files(&e, id, NULL), 1, "the unsynced file was not removed");
    FILE *f = fopen(e.sup.log, "r");
    cr_assert(f);
    int named = 0;
    while (fgets(log, sizeof(log), f))
        named |= strstr(log, "snapshot sync failed") != NULL;
    fclose(f);
    cr_assert(named, "the failed sync is not in the supervisor's log");

    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 40, 60, 300);
    cr_assert_eq(t_session_field(&e, id, "snapshot"), p1);

    set_fault(fault, "ok");
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 2, 10000);
    cr_assert_eq(t_session_field(&e, id, "snapshot"), t_session_field(&e, id, "ordered"));
    cr_assert_eq(count_snapshot_files(&e, id, ".full"), 1, "the snapshot after a failed "
                 "sync must be full (older chains are pruned once it is durable)");
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 60, 100, 300);
    same(&ref, &got);
    end_pair(&e, ep, rp, &ref, &got);
}

Test(snapsync, failed_sync_is_reported_and_loses_nothing_cold, .timeout = 90)
{
    failed_sync_loses_nothing("standby = cold\nsnapshot_interval_ms = 0\n");
}

Test(snapsync, failed_sync_is_reported_and_loses_nothing_hot, .timeout = 90)
{
    failed_sync_loses_nothing("standby = hot\nsnapshot_interval_ms = 0\n");
}

/* Periodic snapshots keep going through a sync that fails for a while: no snapshot is
 * durable meanwhile, the events stay held, random kills lose nothing, and snapshots are
 * durable again once the sync works. */
Test(snapsync, periodic_snapshots_through_failing_syncs, .timeout = 120)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault), "snapshot_interval_ms = 20\n");
    set_fault(fault, "fail");
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 400, 100);
    for (int i = 0; i < 200; i += 20) {
        round_trips(ep, &got, i, i + 20, 100);
        if (i % 60 == 20)
            ctl_ok(&e, "kill-worker %llu", id);
    }
    /* The failure is counted when the sync batch comes back: wait for it (a fast run can be
     * over before the first 50 ms tick asked for a snapshot). */
    wait_field_at_least(&e, id, "snapshot_failures", 1, 10000);
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 0);
    cr_assert_eq(t_session_field(&e, id, "held_events"), t_session_field(&e, id, "ordered"));
    set_fault(fault, "ok");
    for (int i = 200; i < 400; i += 20) {
        round_trips(ep, &got, i, i + 20, 100);
        if (i % 60 == 20)
            ctl_ok(&e, "kill-worker %llu", id);
    }
    wait_field_at_least(&e, id, "snapshots", 1, 10000);
    same(&ref, &got);
    end_pair(&e, ep, rp, &ref, &got);
}

/* A real full disk: state_dir on a small tmpfs. Snapshots fail (ENOSPC) and are reported,
 * the session goes on and loses nothing across a kill; once there is room they are durable
 * again. Needs root for the mount (skipped otherwise). */
Test(snapsync, full_disk_reported_and_loses_nothing, .timeout = 90)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char state[600], filler[700], extra[900];

    if (geteuid() != 0)
        cr_skip_test("mounting a tmpfs needs root");
    t_own_mounts();
    const char *tmp = t_tmpdir();
    snprintf(state, sizeof(state), "%s/small", tmp);
    cr_assert_eq(mkdir(state, 0755), 0);
    if (mount("cessna-test", state, "tmpfs", 0, "size=2m") == -1)
        cr_skip_test("mount tmpfs: %s", strerror(errno));
    t_echo_ep_start(&srv);
    /* t_edge_start's config with state_dir on the small disk. */
    snprintf(e.dir, sizeof(e.dir), "%s", tmp);
    snprintf(e.control, sizeof(e.control), "%s/control.sock", tmp);
    snprintf(extra, sizeof(extra), "%s/edge.ini", tmp);
    FILE *f = fopen(extra, "w");
    cr_assert(f);
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s\n"
            "control = %s\nsnapshot_interval_ms = 0\n", srv.addr, t_app("sequencer"), state,
            e.control);
    fclose(f);
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", extra, NULL };
    t_start(&e.sup, e.dir, "supervisor", argv);
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 60, 300);
    round_trips(ep, &got, 0, 20, 300);

    /* Fill the disk. */
    snprintf(filler, sizeof(filler), "%s/filler", state);
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    static char block[65536];
    while (write(fd, block, sizeof(block)) > 0)
        ;
    fsync(fd);
    close(fd);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshot_failures", 1, 10000);
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 0);
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 20, 40, 300);

    unlink(filler);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 1, 10000);
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 40, 60, 300);
    same(&ref, &got);
    end_pair(&e, ep, rp, &ref, &got);
    umount2(state, MNT_DETACH);
}

/* Held events ask for a snapshot without time: the interval is a day, yet every 50 events
 * a session is snapshotted (and recovers from the newest one, losing nothing). */
Test(snapsync, held_events_threshold_snapshots_without_time, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault),
                   "snapshot_interval_ms = 86400000\nsnapshot_max_events = 50\n"
                   "snapshot_max_bytes = 0\n");
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 200, 64);
    for (int i = 0; i < 100; i += 20) {   /* 40 events a step, the 50 ms tick between */
        round_trips(ep, &got, i, i + 20, 64);
        sleep_ms(120);
    }
    wait_field_at_least(&e, id, "snapshots", 2, 5000);
    cr_assert_leq(t_session_field(&e, id, "held_events"), 90);
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 100, 200, 64);
    same(&ref, &got);
    end_pair(&e, ep, rp, &ref, &got);
}

/* The same by bytes: 64 KiB of held events ask for a snapshot, a few small ones do not. */
Test(snapsync, held_bytes_threshold_snapshots_without_time, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript t = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault),
                   "snapshot_interval_ms = 86400000\nsnapshot_max_events = 0\n"
                   "snapshot_max_bytes = 65536\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(ep, &t, 0, 10, 64);
    sleep_ms(300);
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 0, "a snapshot below every threshold");
    round_trips(ep, &t, 10, 20, 8192);   /* 160 KiB and more held */
    wait_field_at_least(&e, id, "snapshots", 1, 5000);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
    free(t.data);
}

/* snapshot_min_events: a session that moved by fewer events than that waits for up to ten
 * intervals; once it holds that many, the next interval takes it. */
Test(snapsync, a_session_that_moved_little_waits_for_min_events, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript t = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault),
                   "snapshot_interval_ms = 300\nsnapshot_min_events = 6\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(ep, &t, 0, 1, 64);   /* START, the message, its echo: 3 events */
    long moved = t_now_ms();
    sleep_ms(1200);                   /* four intervals */
    cr_assert_eq(t_session_field(&e, id, "snapshots"), 0, "3 events of 6 yet a snapshot");
    wait_field_at_least(&e, id, "snapshots", 1, 10000);   /* ten intervals: 3 s */
    cr_assert_geq(t_now_ms() - moved, 2900, "the quiet session waited ten intervals");
    round_trips(ep, &t, 1, 4, 64);   /* 6 events */
    long busy = t_now_ms();
    wait_field_at_least(&e, id, "snapshots", 2, 10000);
    cr_assert_lt(t_now_ms() - busy, 2500, "6 events: the next interval's snapshot, not ten "
                 "intervals later");
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
    free(t.data);
}

/* A session that has not moved since its snapshot gets no other, however short the
 * interval. */
Test(snapsync, no_snapshot_of_a_session_that_has_not_moved, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript t = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault), "snapshot_interval_ms = 20\n");
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(ep, &t, 0, 10, 64);
    wait_field_at_least(&e, id, "snapshots", 1, 5000);
    long deadline = t_now_ms() + 5000;
    while (t_session_field(&e, id, "held_events") != 0) {
        cr_assert(t_now_ms() < deadline, "events still held");
        sleep_ms(10);
    }
    uint64_t snaps = t_session_field(&e, id, "snapshots");
    sleep_ms(500);
    cr_assert_eq(t_session_field(&e, id, "snapshots"), snaps, "snapshots of a session that "
                 "did not move");
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
    free(t.data);
}

/* A small state is written by the worker itself, without a fork (cold standby only): the
 * snapshots count as such, and kills recover from them losing nothing. A large state (1 MiB
 * of ballast) and a hot standby still fork. */
Test(snapsync, small_state_written_without_fork, .timeout = 90)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault), "standby = cold\nsnapshot_interval_ms = 20\n");
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 300, 100);
    for (int i = 0; i < 300; i += 30) {
        round_trips(ep, &got, i, i + 30, 100);
        sleep_ms(60);
        if (i % 90 == 30)
            ctl_ok(&e, "kill-worker %llu", id);
    }
    same(&ref, &got);
    cr_assert_geq(t_session_field(&e, id, "snapshots"), 2);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 3);
    uint64_t inl = stat_field(&e, "snapshots_without_fork");
    cr_assert_geq(inl, stat_field(&e, "snapshots") / 2, "small states still fork: %llu",
                  (unsigned long long)inl);
    end_pair(&e, ep, rp, &ref, &got);
}

/* snapshot_sync_gap_ms: at most one sync per gap, the files written meanwhile share it,
 * and none waits forever. A session snapshotting every 20 ms, killed now and then, and a
 * reference beside it: the syncs are spaced by the gap (their count is bounded by the time
 * over the gap), several files share one, the transcripts match byte for byte, and once the
 * traffic stops the last snapshot is durable within a gap or two. */
Test(snapsync, syncs_wait_out_their_gap_and_lose_nothing, .timeout = 90)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512];

    edge_with_hook(&e, &srv, fault, sizeof(fault), "standby = cold\nsnapshot_interval_ms = 20\n"
                   "snapshot_min_events = 1\nsnapshot_sync_gap_ms = 300\n");
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    uint64_t syncs0 = stat_field(&e, "snapshot_syncs"), files0 = stat_field(&e, "snapshot_sync_files");
    long t0 = t_now_ms();
    for (int i = 0; i < 400; i += 20) {
        round_trips(rp, &ref, i, i + 20, 100);
        round_trips(ep, &got, i, i + 20, 100);
        sleep_ms(50);
        if (i % 100 == 40)
            ctl_ok(&e, "kill-worker %llu", id);
    }
    long took = t_now_ms() - t0;
    uint64_t syncs = stat_field(&e, "snapshot_syncs") - syncs0;
    uint64_t files = stat_field(&e, "snapshot_sync_files") - files0;
    same(&ref, &got);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 4);
    cr_assert_leq(syncs, (uint64_t)(took / 300 + 2), "%llu syncs in %ld ms with a 300 ms gap",
                  (unsigned long long)syncs, took);
    cr_assert_gt(files, 2 * syncs, "%llu files in %llu syncs: no batch gathered",
                 (unsigned long long)files, (unsigned long long)syncs);
    /* Quiet now: the last snapshot of each session is durable soon (a gap, a sync). */
    wait_field_at_least(&e, id, "snapshot", t_session_field(&e, id, "ordered"), 3000);
    uint64_t rid = cessna_ep_session_id(rp);
    wait_field_at_least(&e, rid, "snapshot", t_session_field(&e, rid, "ordered"), 3000);
    end_pair(&e, ep, rp, &ref, &got);
}

static void forks_for(const char *extra, const char *app, const char *first)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const void *got;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app(app), srv.addr, extra);
    struct cessna_ep *ep = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    cr_assert_eq(cessna_ep_send(ep, first, strlen(first)), 0);
    cr_assert(cessna_ep_recv(ep, &got) > 0, "%s", cessna_ep_error(ep));
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 1, 10000);
    cr_assert_eq(stat_field(&e, "snapshots_without_fork"), 0);
    cr_assert_gt(t_session_field(&e, id, "fork_us"), 0);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

Test(snapsync, large_state_forks, .timeout = 60)
{
    forks_for("standby = cold\nsnapshot_interval_ms = 0\n", "ballast", "BALLAST 1048576");
}

Test(snapsync, hot_standby_forks, .timeout = 60)
{
    forks_for("standby = hot\nsnapshot_interval_ms = 0\n", "sequencer", "hello");
}

/* Read frames from a raw client connection until one of `type` arrives; counts the OUTs
 * passed on the way. */
static void next_frame_of(int fd, uint8_t type, struct wire_frame *f, int *outs)
{
    static uint8_t buf[1 << 17];

    for (;;) {
        long n = t_read_frame(fd, buf, sizeof(buf), 5000);
        cr_assert_gt(n, 0, "waiting for a %s frame: %s", wire_type_name(type),
                     n == 0 ? "EOF" : strerror((int)-n));
        cr_assert_eq(wire_next(buf, (size_t)n, sizeof(buf), f), n);
        if (f->type == WIRE_OUT && outs)
            ++*outs;
        if (f->type == type)
            return;
    }
}

/* A raw client connection to a new edge (passthrough, cfg) before an echo server: its
 * session id in *id. */
static int raw_session(struct t_edge *e, struct t_echo_ep *srv, const char *cfg, uint64_t *id)
{
    struct wire_frame f;
    uint8_t buf[64];

    t_echo_ep_start(srv);
    t_edge_start(e, t_app("passthrough"), srv->addr, cfg);
    int fd = t_connect(e->sup.addr);
    t_write_all(fd, buf, wire_put_hello(buf, WIRE_ROLE_CLIENT, 0, NULL));
    next_frame_of(fd, WIRE_WELCOME, &f, NULL);
    *id = f.u.welcome.session_id;
    return fd;
}

/* The next frame on a raw connection, whatever it is, within timeout_ms. */
static void read_one_frame(int fd, struct wire_frame *f, int timeout_ms, const char *what)
{
    static uint8_t buf[1 << 17];
    long n = t_read_frame(fd, buf, sizeof(buf), timeout_ms);

    cr_assert_gt(n, 0, "%s: %s", what, n == 0 ? "EOF" : strerror((int)-n));
    cr_assert_eq(wire_next(buf, (size_t)n, sizeof(buf), f), n);
}

/* SNAP_DURABLE tells both endpoints the last message of each side the snapshot covers, so
 * each frees what it kept up to there and nothing after: the supervisor counts them as it
 * gives messages their positions (it does not read them back from the worker's file). */
Test(snapsync, snap_durable_names_the_messages_it_covers, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct wire_frame f;
    uint8_t buf[256];
    uint64_t seq = 0, id;
    int fd = raw_session(&e, &srv, "snapshot_interval_ms = 0\n", &id);

    for (int round = 1; round <= 3; round++) {
        int outs = 0, sent = round * 2;   /* 2, 4, 6 messages */
        for (int i = 0; i < sent; i++) {
            size_t n = wire_put_data_hdr(buf, ++seq, 5);
            memcpy(buf + n, "hello", 5);
            t_write_all(fd, buf, n + 5);
        }
        while (outs < sent)   /* each echoed: the server's messages are ordered too */
            next_frame_of(fd, WIRE_OUT, &f, &outs);
        ctl_ok(&e, "snapshot %llu", id);
        next_frame_of(fd, WIRE_SNAP_DURABLE, &f, NULL);
        /* START, then each client message and its echo from the server */
        cr_expect_eq(f.u.durable.position, 1 + 2 * seq, "position %llu",
                     (unsigned long long)f.u.durable.position);
        cr_expect_eq(f.u.durable.seq[0], seq, "client messages covered: %llu of %llu",
                     (unsigned long long)f.u.durable.seq[0], (unsigned long long)seq);
        cr_expect_eq(f.u.durable.seq[1], seq, "server messages covered: %llu of %llu",
                     (unsigned long long)f.u.durable.seq[1], (unsigned long long)seq);
    }
    close(fd);
    t_edge_stop(&e);
}

/* Client messages of `len` bytes (at most 64 KiB) on a raw connection, each echoed. */
static void echo_round(int fd, uint64_t *seq, int count, size_t len)
{
    static uint8_t buf[WIRE_HDR_LEN + 16 + (64 << 10)];
    struct wire_frame f;
    int outs = 0;

    for (int i = 0; i < count; i++) {
        size_t n = wire_put_data_hdr(buf, ++*seq, (uint32_t)len);
        memset(buf + n, 'a' + i % 26, len);
        t_write_all(fd, buf, n + len);
    }
    while (outs < count)
        next_frame_of(fd, WIRE_OUT, &f, &outs);
}

/* A session whose server stores nothing hears SNAP_DURABLE with the next frames that go
 * to it, not in a send of its own (notice.c): after a durable snapshot, the next message's
 * echo comes first and the notice right behind it. A notice freeing more than 64 KiB of
 * held events goes at once; one freeing 4 KiB, at the next tick to an endpoint that sent
 * nothing since; a small one with nothing to ride on, after two intervals. */
Test(snapsync, durable_notices_ride_with_the_next_output, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct wire_frame f;
    uint64_t seq = 0, id;
    /* No periodic snapshot gets in the way (1,000 events wanted, or 20 s quiet); notices
     * wait 4 s. No HEARTBEAT comes between. */
    int fd = raw_session(&e, &srv, "snapshot_interval_ms = 2000\nsnapshot_min_events = 1000\n"
                         "heartbeat_interval_ms = 60000\n", &id);

    /* Small: the notice waits for the next output. */
    echo_round(fd, &seq, 2, 5);
    ctl_ok(&e, "snapshot %llu", id);
    wait_field_at_least(&e, id, "snapshots", 1, 10000);
    long t0 = t_now_ms();
    echo_round(fd, &seq, 1, 5);   /* a SNAP_DURABLE before the echo is passed over here */
    read_one_frame(fd, &f, 5000, "no frame after the echo");
    cr_assert_eq(f.type, WIRE_SNAP_DURABLE, "after the echo: %s, not SNAP_DURABLE",
                 wire_type_name(f.type));
    cr_expect_lt(t_now_ms() - t0, 3000, "the notice came with the echo, not at the tick");
    cr_expect_eq(f.u.durable.seq[0], 2, "covers the 2 messages before the snapshot: %llu",
                 (unsigned long long)f.u.durable.seq[0]);

    /* 40 x 4 KiB held: the notice goes at once, with no output to ride on. */
    echo_round(fd, &seq, 40, 4096);
    t0 = t_now_ms();
    ctl_ok(&e, "snapshot %llu", id);
    next_frame_of(fd, WIRE_SNAP_DURABLE, &f, NULL);
    cr_expect_lt(t_now_ms() - t0, 3000, "a large notice waited %ld ms", t_now_ms() - t0);
    cr_expect_eq(f.u.durable.seq[0], seq, "covers all %llu: %llu", (unsigned long long)seq,
                 (unsigned long long)f.u.durable.seq[0]);

    /* 2 x 4 KiB held and no DATA after: what an endpoint stopped at a small keep cap looks
     * like; the notice goes at the next tick. */
    echo_round(fd, &seq, 2, 4096);
    t0 = t_now_ms();
    ctl_ok(&e, "snapshot %llu", id);
    next_frame_of(fd, WIRE_SNAP_DURABLE, &f, NULL);
    cr_expect_lt(t_now_ms() - t0, 3000, "a notice to a quiet endpoint waited %ld ms",
                 t_now_ms() - t0);

    /* Small and nothing follows: the tick sends it after two intervals (4 s). */
    echo_round(fd, &seq, 1, 5);
    t0 = t_now_ms();
    ctl_ok(&e, "snapshot %llu", id);
    read_one_frame(fd, &f, 10000, "no notice within 10 s");
    cr_assert_eq(f.type, WIRE_SNAP_DURABLE, "%s", wire_type_name(f.type));
    cr_expect_geq(t_now_ms() - t0, 3500, "came after %ld ms: it did not wait for an output",
                  t_now_ms() - t0);
    close(fd);
    t_edge_stop(&e);
}

/* Files in the session's directory whose name holds `part`. */
static int count_named(const struct t_edge *e, uint64_t id, const char *part)
{
    return count_files(e, id, "", part, 1);
}

/* One snapshot more, durable: its position. */
static uint64_t durable_snapshot(struct t_edge *e, uint64_t id)
{
    uint64_t before = t_session_field(e, id, "snapshots");

    ctl_ok(e, "snapshot %llu", id);
    wait_field_at_least(e, id, "snapshots", before + 1, 10000);
    return t_session_field(e, id, "snapshot");
}

/* A small state is written full every time, and the full before it is handed to the next
 * writer by its name (the directory is not read), which writes over it: two snapshot files
 * at most (the newest and the one handed on), whatever the count, and no temp file. A
 * worker that dies may have left a temp file of a write it never finished (here: put there
 * by hand, as a kill in the middle of a write would leave it); after its death the next
 * prune reads the directory and the leftover goes too. The transcript is the same as
 * without any of it. */
Test(snapsync, old_fulls_go_by_name_and_a_dead_writers_leftover_goes_after_it, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    char fault[512], path[700];

    edge_with_hook(&e, &srv, fault, sizeof(fault), "snapshot_interval_ms = 0\n");
    struct cessna_ep *ep = t_ep_connect(&e), *rp = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(ep);
    round_trips(rp, &ref, 0, 40, 100);   /* the reference: no fault at all */
    for (int i = 0; i < 6; i++) {
        round_trips(ep, &got, i * 5, i * 5 + 5, 100);
        durable_snapshot(&e, id);
        cr_assert_eq(count_snapshot_files(&e, id, NULL), i ? 2 : 1, "after snapshot %d: %d "
                     "snapshot files", i + 1, count_snapshot_files(&e, id, NULL));
        cr_assert_eq(count_named(&e, id, ".tmp"), 0);
    }
    cr_assert_leq(count_named(&e, id, "spare."), 12);
    snprintf(path, sizeof(path), "%s/state/%llu/snap-00000000000000000002.full.tmp.99999",
             e.dir, (unsigned long long)id);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, "half a snapshot", 15), 15);
    close(fd);
    ctl_ok(&e, "kill-worker %llu", id);
    round_trips(ep, &got, 30, 35, 100);
    cr_assert_geq(t_session_field(&e, id, "recoveries"), 1);
    durable_snapshot(&e, id);
    cr_assert_eq(count_named(&e, id, ".tmp"), 0, "the dead writer's temp file stayed");
    cr_assert_leq(count_snapshot_files(&e, id, NULL), 2);
    round_trips(ep, &got, 35, 40, 100);
    same(&ref, &got);
    end_pair(&e, ep, rp, &ref, &got);
}

/* The loop waits on a worker's bell only while the worker owes it something: once every
 * session has had its round trip and taken its snapshot, no bell is waited on. Then every
 * session still answers at once (a fed event arms the wait again), a killed idle worker
 * recovers, and the waits go back to none. The idle workers, the new ones too, sleep in
 * read() on their report sockets: none waits in the kernel's futex hash either. */
static uint64_t bell_waits(const struct t_edge *e)
{
    char out[4096];

    t_ctl(e, "stats", out, sizeof(out));
    cr_assert(strstr(out, " bell_waits="), "stats has no bell_waits: %s", out);
    return t_field(out, "bell_waits");
}

static void wait_no_bell_waits(const struct t_edge *e, const char *when)
{
    long deadline = t_now_ms() + 10000;
    uint64_t n;

    while ((n = bell_waits(e)) != 0) {
        cr_assert(t_now_ms() < deadline, "%s: %llu bells still waited on after 10 s", when,
                  (unsigned long long)n);
        sleep_ms(20);
    }
}

/* An idle worker sleeps in read() on its report socket, not on a futex (common/bell.h):
 * /proc/PID/syscall names the call it is blocked in and its first argument. */
static int asleep_on_a_socket(pid_t pid, char *what, size_t len)
{
    char path[64], buf[256], link[128];
    long nr;
    unsigned long fd;
    FILE *f;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
    if (!(f = fopen(path, "r")))
        return snprintf(what, len, "%s: %s", path, strerror(errno)), 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = 0;
    fclose(f);
    buf[strcspn(buf, "\n")] = 0;
    snprintf(what, len, "worker %d in syscall \"%.60s\"", (int)pid, buf);
    if (sscanf(buf, "%ld %lx", &nr, &fd) != 2 || nr != SYS_read)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/fd/%lu", (int)pid, fd);
    n = readlink(path, link, sizeof(link) - 1);
    link[n > 0 ? n : 0] = 0;
    snprintf(what, len, "worker %d reads fd %lu (%s)", (int)pid, fd, link);
    return strncmp(link, "socket:", 7) == 0;
}

static void wait_workers_asleep(const struct t_edge *e, struct cessna_ep **ep, int n)
{
    for (int i = 0; i < n; i++) {
        long deadline = t_now_ms() + 10000;
        pid_t pid = (pid_t)t_session_field(e, cessna_ep_session_id(ep[i]), "worker");
        char what[256];

        while (!asleep_on_a_socket(pid, what, sizeof(what))) {
            cr_assert(t_now_ms() < deadline, "session %d idle 10 s, and %s", i, what);
            sleep_ms(20);
        }
    }
}

Test(snapsync, idle_workers_are_not_waited_on, .timeout = 90)
{
    enum { N = 20 };
    struct t_echo_ep srv;
    struct t_edge e;
    struct cessna_ep *ep[N];
    struct transcript ref = { 0 }, got[N];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, "snapshot_interval_ms = 50\n");
    struct cessna_ep *rp = t_ep_connect(&e);
    round_trips(rp, &ref, 0, 40, 100);
    memset(got, 0, sizeof(got));
    for (int i = 0; i < N; i++) {
        ep[i] = t_ep_connect(&e);
        round_trips(ep[i], &got[i], 0, 10, 100);
    }
    cr_assert_eq(stat_field(&e, "sessions"), N + 1);
    wait_no_bell_waits(&e, "after the first round trips");
    wait_workers_asleep(&e, ep, N);
    for (int i = 0; i < N; i++) {
        if (i % 5 == 0)
            ctl_ok(&e, "kill-worker %llu", cessna_ep_session_id(ep[i]));
        round_trips(ep[i], &got[i], 10, 40, 100);
        same(&ref, &got[i]);
    }
    wait_no_bell_waits(&e, "after kills and more round trips");
    wait_workers_asleep(&e, ep, N);   /* the new ones too */
    for (int i = 0; i < N; i++) {
        cessna_ep_close(ep[i], 5000);
        cessna_ep_free(ep[i]);
        free(got[i].data);
    }
    cessna_ep_close(rp, 5000);
    cessna_ep_free(rp);
    t_edge_stop(&e);
    free(ref.data);
}

/* A worker killed while its session waits for the server endpoint's WELCOME (the worker is
 * spawned at the client's HELLO, in parallel) was handed nothing yet: a fresh one replaces
 * it, and the session goes live and answers as one never killed. The server endpoint does
 * not accept until the kills are done, so the session stays connecting meanwhile. */
static void *connect_thread(void *arg)
{
    const struct t_edge *e = arg;

    return t_ep_connect(e);
}

Test(snapsync, a_worker_killed_before_welcome_is_replaced, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct transcript ref = { 0 }, got = { 0 };
    pthread_t th;
    void *ret;
    char out[4096];

    t_echo_ep_listen(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, "");
    pthread_create(&th, NULL, connect_thread, &e);
    uint64_t id = 0;
    pid_t first = 0, now = 0;
    for (long deadline = t_now_ms() + 10000; !first; sleep_ms(10)) {
        cr_assert(t_now_ms() < deadline, "no connecting session with a worker in 10 s");
        t_ctl(&e, "sessions", out, sizeof(out));
        id = t_field(out, "id");
        if (id && strstr(out, "state=connecting"))
            first = (pid_t)t_field(out, "worker");
    }
    for (int k = 0; k < 3; k++) {   /* three kills, each of the worker that replaced the last */
        pid_t victim = now ? now : first;
        ctl_ok(&e, "kill-worker %llu", (unsigned long long)id);
        for (long deadline = t_now_ms() + 10000;; sleep_ms(10)) {
            cr_assert(t_now_ms() < deadline, "kill %d: worker %d not replaced in 10 s", k,
                      (int)victim);
            t_ctl(&e, "sessions", out, sizeof(out));
            cr_assert(strstr(out, "state=connecting"), "kill %d: the session is not "
                      "connecting any more: '%s'", k, out);
            now = (pid_t)t_field(out, "worker");
            if (now > 0 && now != victim)
                break;
        }
    }
    t_echo_ep_serve(&srv);
    pthread_join(th, &ret);
    struct cessna_ep *ep = ret;
    cr_assert_not_null(ep);
    struct cessna_ep *rp = t_ep_connect(&e);
    round_trips(rp, &ref, 0, 20, 100);   /* a session never killed */
    round_trips(ep, &got, 0, 20, 100);
    same(&ref, &got);
    cr_assert_eq(t_session_field(&e, id, "recoveries"), 0);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    cessna_ep_close(rp, 5000);
    cessna_ep_free(rp);
    t_edge_stop(&e);
    free(ref.data);
    free(got.data);
}
