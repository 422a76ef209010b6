/* it_determinism.c - ordinary C stays deterministic (docs/determinism.md): an app that keeps
 * its state in malloc/realloc/strdup memory and reads time(), clock_gettime(), rand() and
 * getrandom() (tests/apps/libcstate.c) gives the client the same bytes whether or not its
 * worker is SIGKILLed along the way; the memory cap fails malloc the same way on replay; a
 * cache object changed under a replay fails the session with a clear error. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"

/* Under ASan the app's heap is ASan's (worker/determ.c leaves malloc alone there), so state
 * kept in malloc memory does not survive a kill: nothing here can pass. */
#ifdef __SANITIZE_ADDRESS__
#define SKIP_UNDER_ASAN() cr_skip_test("ASan build: malloc is ASan's, not the arena " \
                                       "(docs/determinism.md); run the plain build")
#else
#define SKIP_UNDER_ASAN() do { } while (0)
#endif

#define MSGS 60
#define MAXR 1024

struct dsess {
    struct t_edge e;
    struct t_echo_ep srv;
    struct cessna_ep *ep;
    uint64_t id;
    int kills;
};

static void ds_start(struct dsess *d, const char *extra)
{
    char err[256];

    memset(d, 0, sizeof(*d));
    t_echo_ep_start(&d->srv);
    t_edge_start(&d->e, t_test_app("libcstate"), d->srv.addr, extra);
    d->ep = cessna_ep_connect(d->e.sup.addr, err, sizeof(err));
    if (!d->ep)
        cr_assert_fail("cessna_ep_connect %s: %s", d->e.sup.addr, err);
    d->id = cessna_ep_session_id(d->ep);
}

/* The sessions line of our session (into out), or 0 when it is gone. */
static int ds_line(struct dsess *d, char *out, size_t len)
{
    char all[8192], key[40];

    t_ctl(&d->e, "sessions", all, sizeof(all));
    snprintf(key, sizeof(key), "id=%llu ", (unsigned long long)d->id);
    char *line = strstr(all, key);
    if (!line)
        return 0;
    size_t n = strcspn(line, "\n");
    snprintf(out, len, "%.*s", (int)n, line);
    return 1;
}

/* Send one message, return its answer (NUL-terminated) or stop the test. */
static void ask(struct dsess *d, const char *msg, char *out)
{
    const void *got;
    long n = -1;

    if (cessna_ep_send(d->ep, msg, strlen(msg)) < 0 || (n = cessna_ep_recv(d->ep, &got)) < 0)
        cr_assert_fail("'%s': %s", msg, cessna_ep_error(d->ep));
    cr_assert(n < MAXR, "answer of %ld bytes", n);
    memcpy(out, got, (size_t)n);
    out[n] = 0;
}

/* SIGKILL the session's worker (through the control socket), then (wait) until a new one
 * runs: recoveries counts up and the session is live with a worker again. */
static void ds_kill_wait(struct dsess *d, int wait)
{
    char cmd[64], out[512], line[1024];

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)d->id);
    t_ctl(&d->e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "%s", out);
    d->kills++;
    for (int i = 0; !wait && i < 500; i++) {   /* at least: the worker is gone */
        if (!ds_line(d, line, sizeof(line)) || t_field(line, "recoveries") >= (uint64_t)d->kills ||
            !strstr(line, "state=live"))
            return;
        usleep(10000);
    }
    for (int i = 0; i < 500; i++) {
        if (ds_line(d, line, sizeof(line)) && t_field(line, "recoveries") >= (uint64_t)d->kills &&
            strstr(line, "state=live") && t_field(line, "worker") > 0)
            return;
        usleep(10000);
    }
    cr_assert_fail("no recovery after kill %d: %s", d->kills, line);
}

static void ds_kill(struct dsess *d)
{
    ds_kill_wait(d, 1);
}

/* Ask for a snapshot of everything so far and wait until it is durable. */
static void ds_snapshot(struct dsess *d)
{
    char cmd[64], out[512], line[1024];

    cr_assert(ds_line(d, line, sizeof(line)));
    uint64_t pos = t_field(line, "ordered");
    snprintf(cmd, sizeof(cmd), "snapshot %llu", (unsigned long long)d->id);
    t_ctl(&d->e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "%s", out);
    for (int i = 0; i < 500; i++) {
        if (ds_line(d, line, sizeof(line)) && t_field(line, "snapshot") >= pos)
            return;
        usleep(10000);
    }
    cr_assert_fail("snapshot at %llu never durable: %s", (unsigned long long)pos, line);
}

static void ds_stop(struct dsess *d)
{
    char stats[1024];

    if (d->ep) {
        cessna_ep_close(d->ep, 5000);
        cessna_ep_free(d->ep);
    }
    t_ctl(&d->e, "stats", stats, sizeof(stats));
    cr_log_info("%s", stats);
    t_edge_stop(&d->e);
}

/* "STATE|PREV->CUR": the chain must go on from the previous answer's CUR. */
static void check_chain(const char *ans, char *prev_cur, int i, const char *run)
{
    const char *bar = strrchr(ans, '|');

    cr_assert(bar && strlen(bar) == 1 + 16 + 2 + 16, "%s answer %d malformed: %s", run, i, ans);
    if (prev_cur[0])
        cr_assert(strncmp(bar + 1, prev_cur, 16) == 0, "%s answer %d: the session's random "
                  "draws diverged on replay: chain goes on from %.16s, the last answer ended "
                  "at %s", run, i, bar + 1, prev_cur);
    snprintf(prev_cur, 17, "%s", bar + 19);
}

/* MSGS messages; with kills, the worker dies after every 7th answer (8 kills). Fills
 * state[i] with the part of answer i that is the same in every run. */
static int run(const char *extra, int with_kills, char (*state)[MAXR])
{
    struct dsess d;
    char ans[MAXR], msg[64], prev_cur[17] = "";
    const char *name = with_kills ? "with kills" : "without kills";

    ds_start(&d, extra);
    for (int i = 0; i < MSGS; i++) {
        snprintf(msg, sizeof(msg), "message-%d%.*s", i, i % 13, "abcdefghijklm");
        ask(&d, msg, ans);
        check_chain(ans, prev_cur, i, name);
        snprintf(state[i], MAXR, "%.*s", (int)(strrchr(ans, '|') - ans), ans);
        if (with_kills && i % 7 == 3)
            ds_kill(&d);
        usleep(3000);   /* periodic snapshots fall between messages */
    }
    int kills = d.kills;
    ds_stop(&d);
    return kills;
}

static void compare(const char *extra)
{
    static char clean[MSGS][MAXR], faulty[MSGS][MAXR];

    run(extra, 0, clean);
    int kills = run(extra, 1, faulty);
    cr_assert(kills >= 8, "kills: %d", kills);
    cr_log_info("last answer: %s", clean[MSGS - 1]);
    /* the clocks are the event's: every offset is 0 */
    cr_assert(strstr(clean[MSGS - 1], "time=0 rt_ns=0 tod_us=0 mono_subms=0 t0_past=1"),
              "libc clocks are not the event's time: %s", clean[MSGS - 1]);
    for (int i = 0; i < MSGS; i++)
        cr_assert_str_eq(faulty[i], clean[i], "answer %d differs after kills", i);
}

Test(determinism, kills_cold_standby, .timeout = 120)
{
    SKIP_UNDER_ASAN();
    compare("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(determinism, kills_hot_standby, .timeout = 120)
{
    SKIP_UNDER_ASAN();
    compare("standby = hot\nsnapshot_interval_ms = 20\n");
}

Test(determinism, kills_without_snapshots, .timeout = 120)
{
    SKIP_UNDER_ASAN();
    compare("snapshot_interval_ms = 0\n");
}

/* max_session_memory = 8 MiB: the app gets fewer than 8 blocks of 1 MiB, then NULL; after
 * a kill the restored session is just as full, and answers as a run without kills. */
static void memcap_run(int with_kills, char (*ans)[MAXR])
{
    static const char *script[] = { "a", "HOG", "b", "HOG", "FREE", "HOG", "c" };
    struct dsess d;

    ds_start(&d, "max_session_memory = 8388608\nsnapshot_interval_ms = 0\nstandby = hot\n");
    for (int i = 0; i < 7; i++) {
        ask(&d, script[i], ans[i]);
        *strrchr(ans[i], '|') = 0;
        if (with_kills && i == 0)
            ds_snapshot(&d);            /* a snapshot before the hog... */
        if (with_kills && (i == 1 || i == 2))
            ds_kill(&d);                /* ...so the hog is replayed once, then restored */
        if (with_kills && i == 3)
            ds_snapshot(&d);            /* a snapshot of a full arena */
        if (with_kills && i == 4)
            ds_kill(&d);
    }
    ds_stop(&d);
}

Test(determinism, memory_cap, .timeout = 60)
{
    char clean[7][MAXR], faulty[7][MAXR];
    int got = -1;

    SKIP_UNDER_ASAN();
    memcap_run(0, clean);
    memcap_run(1, faulty);
    sscanf(clean[1], "hog=%d", &got);
    cr_log_info("first HOG: %s", clean[1]);
    cr_assert(got > 0 && got < 8, "malloc must fail past max_session_memory: %s", clean[1]);
    cr_assert_str_eq(clean[3], "hog=0 held=7", "%s", clean[3]);
    for (int i = 0; i < 7; i++)
        cr_assert_str_eq(faulty[i], clean[i], "answer %d differs after kills", i);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* A cache object read after the last durable snapshot, then changed, then the worker dies:
 * the replay would read other bytes, and the session fails saying so. With changed = 0 the
 * same steps recover and go on. */
static void cache_run(int changed)
{
    char dir[300], path[400], extra[600], ans[MAXR];
    struct dsess d;
    const void *got;

    snprintf(dir, sizeof(dir), "%s", t_tmpdir());
    chmod(dir, 0755);   /* sandboxed workers run as worker_user (nobody) and must read it */
    snprintf(path, sizeof(path), "%s/obj", dir);
    write_file(path, "version-1");
    snprintf(extra, sizeof(extra), "cache_dir = %s\nsnapshot_interval_ms = 0\n", dir);
    ds_start(&d, extra);
    ask(&d, "CACHE none", ans);
    ds_snapshot(&d);
    ask(&d, "CACHE obj", ans);
    cr_assert(strncmp(ans, "cache=version-1|", 16) == 0, "%s", ans);
    if (changed)
        write_file(path, "version-2");
    ds_kill_wait(&d, !changed);
    if (!changed) {
        ask(&d, "CACHE other", ans);   /* (no malloc state: runs under ASan too) */
        cr_assert(strncmp(ans, "cache=miss|", 11) == 0, "%s", ans);
        ask(&d, "CACHE obj", ans);
        cr_assert(strncmp(ans, "cache=version-1|", 16) == 0, "%s", ans);
        ds_stop(&d);
        return;
    }
    cr_assert(cessna_ep_send(d.ep, "after", 5) == 0);
    long n = cessna_ep_recv(d.ep, &got);
    const char *err = cessna_ep_error(d.ep);
    cr_log_info("%s", err);
    cr_assert(n < 0, "the session went on with a changed cache object");
    cr_assert(strstr(err, "cache object obj changed since event 3: replay would diverge"),
              "%s", err);
    ds_stop(&d);
}

Test(determinism, cache_changed_fails_replay, .timeout = 60)
{
    cache_run(1);
}

Test(determinism, cache_unchanged_replays, .timeout = 60)
{
    cache_run(0);
}
