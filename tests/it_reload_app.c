/* it_reload_app.c - SIGHUP with another `app` (issue 9): new sessions run the new module,
 * sessions that started before keep their own for every later worker (a cold recovery from
 * a snapshot, a wake from hibernation), the old zygote stops with its last session, a third
 * module waits until then, and a module that does not load changes nothing.
 *
 * The two modules answer differently: passthrough hands the echo back as it is; sequencer
 * puts a header before it with its counts of messages ("[c=3 s=3 h=...]"), so a reply tells
 * which module made it and whether the session's state came through a recovery. Real
 * supervisors, real signals, sessions on loopback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_world.h"

TestSuite(reload_app, .timeout = 90);

/* ---- helpers ---- */

/* Rewrite edge.ini as t_edge_start wrote it, with another app (atomically, by rename). */
static void edge_config(const struct t_edge *e, const char *server, const char *app,
                        const char *extra)
{
    char cfg[600], tmp[640];
    FILE *f;

    snprintf(cfg, sizeof(cfg), "%s/edge.ini", e->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", cfg);
    f = fopen(tmp, "w");
    cr_assert_not_null(f, "fopen %s: %s", tmp, strerror(errno));
    fprintf(f, "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\nstate_dir = %s/state\n"
               "control = %s\n%s", server, app, e->dir, e->control, extra ? extra : "");
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, cfg), 0, "rename: %s", strerror(errno));
}

/* SIGHUP; the n-th occurrence of needle shows up in the log. */
static void hup(const struct t_edge *e, const char *needle, int n)
{
    kill(e->sup.pid, SIGHUP);
    cr_assert(file_wait_count(e->sup.log, needle, n, 10000), "no '%s' (#%d) after SIGHUP (log: %s)",
              needle, n, e->sup.log);
}

static uint64_t stat_of(const struct t_edge *e, const char *key)
{
    char out[8192];

    t_ctl(e, "stats", out, sizeof(out));
    return t_field(out, key);
}

static void stats(const struct t_edge *e, char *out, size_t len)
{
    t_ctl(e, "stats", out, len);
}

/* msg there and back through passthrough: the echo, as it is. */
static void expect_passthrough(struct cessna_ep *ep, const char *msg)
{
    const void *data;

    cr_assert_eq(cessna_ep_send(ep, msg, strlen(msg)), 0, "send: %s", cessna_ep_error(ep));
    long n = cessna_ep_recv(ep, &data);
    cr_assert_gt(n, 0, "no reply to '%s': %s", msg, cessna_ep_error(ep));
    cr_assert(n == (long)strlen(msg) && memcmp(data, msg, (size_t)n) == 0,
              "'%s' came back as '%.*s': not passthrough's plain echo", msg, (int)n,
              (const char *)data);
}

/* msg there and back through sequencer, as the session's n-th message each way: its
 * header with c=n s=n, then the header it put on the way out, then msg. */
static void expect_sequencer(struct cessna_ep *ep, const char *msg, int n)
{
    const void *data;
    char head[64];

    cr_assert_eq(cessna_ep_send(ep, msg, strlen(msg)), 0, "send: %s", cessna_ep_error(ep));
    long len = cessna_ep_recv(ep, &data);
    cr_assert_gt(len, 0, "no reply to '%s': %s", msg, cessna_ep_error(ep));
    snprintf(head, sizeof(head), "[c=%d s=%d h=", n, n);
    size_t m = strlen(msg);
    cr_assert((size_t)len > strlen(head) + m && memcmp(data, head, strlen(head)) == 0 &&
              memcmp((const char *)data + len - (long)m, msg, m) == 0,
              "'%s' came back as '%.*s', want sequencer's '%s...%s'", msg, (int)len,
              (const char *)data, head, msg);
}

static int pid_gone(pid_t pid, int timeout_ms)
{
    for (long t0 = t_now_ms(); t_now_ms() - t0 < timeout_ms; usleep(10000))
        if (kill(pid, 0) == -1 && errno == ESRCH)
            return 1;
    return kill(pid, 0) == -1 && errno == ESRCH;
}

static void kill_worker(const struct t_edge *e, uint64_t id)
{
    char cmd[64], out[256];

    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)id);
    t_ctl(e, cmd, out, sizeof(out));
    cr_assert(strncmp(out, "ok", 2) == 0, "kill-worker: %s", out);
}

/* A durable snapshot of session id within timeout_ms: its position. */
static uint64_t wait_snapshot(const struct t_edge *e, uint64_t id, uint64_t past, int timeout_ms)
{
    uint64_t p = 0;

    for (long t0 = t_now_ms(); t_now_ms() - t0 < timeout_ms; usleep(10000))
        if ((p = t_session_field(e, id, "snapshot")) > past)
            return p;
    cr_assert_fail("session %llu has no snapshot past %llu", (unsigned long long)id,
                   (unsigned long long)past);
    return 0;
}

static void wait_recoveries(const struct t_edge *e, uint64_t id, uint64_t n)
{
    for (long t0 = t_now_ms(); t_now_ms() - t0 < 10000; usleep(10000))
        if (t_session_field(e, id, "recoveries") >= n && t_session_field(e, id, "worker") > 0)
            return;
    cr_assert_fail("session %llu did not recover (%llu recoveries)", (unsigned long long)id,
                   (unsigned long long)t_session_field(e, id, "recoveries"));
}

static void wait_state(const struct t_edge *e, uint64_t id, const char *want, int timeout_ms)
{
    static char out[65536];

    for (long t0 = t_now_ms();; usleep(10000)) {
        t_ctl(e, "sessions", out, sizeof(out));
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
            char pat[48];
            snprintf(pat, sizeof(pat), " state=%s ", want);
            if (t_field(line, "id") == id && strstr(line, pat))
                return;
        }
        cr_assert(t_now_ms() - t0 < timeout_ms, "session %llu is not %s after %d ms",
                  (unsigned long long)id, want, timeout_ms);
    }
}

static void close_ep(struct cessna_ep *ep)
{
    cr_assert_eq(cessna_ep_close(ep, 5000), 0, "close: %s", cessna_ep_error(ep));
    cessna_ep_free(ep);
}

/* ---- the whole cycle: A, then B for new sessions, A's sessions recover with A, A goes,
 * then back to A while a B session runs ---- */

static void cycle(const char *mode)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char extra[256], line[2048], st[8192], want[1024];
    const char *A = t_app("sequencer"), *B = t_app("passthrough");

    snprintf(extra, sizeof(extra), "snapshot_interval_ms = 20\nstandby = %s\n", mode);
    t_echo_ep_start(&srv);
    t_edge_start(&e, A, srv.addr, extra);
    pid_t za = (pid_t)stat_of(&e, "zygote_pid");
    cr_assert_gt(za, 0);
    cr_assert_eq(stat_of(&e, "zygote_gen"), 1);

    struct cessna_ep *s1 = t_ep_connect(&e);
    uint64_t id1 = cessna_ep_session_id(s1);
    expect_sequencer(s1, "s1 one", 1);
    cr_assert_eq(t_session_field(&e, id1, "zygote_gen"), 1);

    /* B for new sessions; S1 keeps A */
    edge_config(&e, srv.addr, B, extra);
    hup(&e, "msg=\"app: new sessions run ", 1);
    file_last_line(e.sup.log, "msg=\"app: new sessions run ", line, sizeof(line));
    snprintf(want, sizeof(want), "new sessions run %s; older sessions keep %s\" old_sessions=1 ",
             B, A);
    cr_expect(strstr(line, want), "the log says what was applied: %s", line);
    file_last_line(e.sup.log, "msg=\"configuration reloaded\"", line, sizeof(line));
    cr_expect(strstr(line, "app ("), "applied names app: %s", line);
    stats(&e, st, sizeof(st));
    cr_assert_eq(t_field(st, "zygote_gen"), 2, "%s", st);
    cr_assert_eq(t_field(st, "old_zygote_gen"), 1, "%s", st);
    cr_assert_eq((pid_t)t_field(st, "old_zygote_pid"), za, "the old zygote is A's: %s", st);
    cr_assert_eq(t_field(st, "old_zygote_sessions"), 1, "%s", st);
    pid_t zb = (pid_t)t_field(st, "zygote_pid");
    cr_assert(zb > 0 && zb != za, "%s", st);

    struct cessna_ep *s2 = t_ep_connect(&e);
    uint64_t id2 = cessna_ep_session_id(s2);
    expect_passthrough(s2, "s2 one");
    cr_assert_eq(t_session_field(&e, id2, "zygote_gen"), 2);
    expect_sequencer(s1, "s1 two", 2);
    cr_assert_eq(t_session_field(&e, id1, "zygote_gen"), 1);

    /* S1's worker dies: it comes back with A, from its snapshot, nothing lost. The message
     * goes out right after the kill, while the recovery runs. */
    uint64_t snap = wait_snapshot(&e, id1, 0, 5000);
    kill_worker(&e, id1);
    expect_sequencer(s1, "s1 three, sent during the recovery", 3);
    wait_recoveries(&e, id1, 1);
    file_last_line(e.sup.log, "msg=\"worker died, recovering\"", line, sizeof(line));
    snprintf(want, sizeof(want), "mode=%s snapshot=", mode);
    cr_expect(strstr(line, want) && strtoull(strstr(line, " snapshot=") + 10, NULL, 10) >= snap,
              "recovered from its snapshot (>= %llu): %s", (unsigned long long)snap, line);
    expect_sequencer(s1, "s1 four", 4);
    /* and S2's with B */
    wait_snapshot(&e, id2, 0, 5000);
    kill_worker(&e, id2);
    expect_passthrough(s2, "s2 two, after its worker died");
    wait_recoveries(&e, id2, 1);

    /* A third module while A still has S1: refused, with the count; nothing changes. */
    edge_config(&e, srv.addr, t_test_app("framecount"), extra);
    hup(&e, "msg=\"reload: app not applied", 1);
    file_last_line(e.sup.log, "msg=\"reload: app not applied", line, sizeof(line));
    cr_expect(strstr(line, "level=warn") && strstr(line, "sessions still run the old module") && strstr(line, "(old_sessions=1;"),
              "the refusal names the sessions: %s", line);
    struct cessna_ep *s3 = t_ep_connect(&e);
    expect_passthrough(s3, "s3 one");
    cr_assert_eq(stat_of(&e, "zygote_gen"), 2);
    cr_assert(pid_gone(za, 0) == 0, "A's zygote runs while S1 does");

    /* S1 ends: A's zygote stops, and is gone. */
    close_ep(s1);
    cr_assert(file_wait_count(e.sup.log, "msg=\"old zygote stopped", 1, 5000), "log: %s", e.sup.log);
    file_last_line(e.sup.log, "msg=\"old zygote stopped", line, sizeof(line));
    snprintf(want, sizeof(want), "pid=%d gen=1 app=%s", (int)za, A);
    cr_expect(strstr(line, want), "%s", line);
    cr_assert(pid_gone(za, 5000), "A's zygote %d still exists", (int)za);
    stats(&e, st, sizeof(st));
    cr_assert(strstr(st, " old_zygote=none"), "%s", st);

    /* Back to A while S2 and S3 run B. */
    edge_config(&e, srv.addr, A, extra);
    hup(&e, "msg=\"app: new sessions run ", 2);
    file_last_line(e.sup.log, "msg=\"app: new sessions run ", line, sizeof(line));
    snprintf(want, sizeof(want), "new sessions run %s; older sessions keep %s\" old_sessions=2 ",
             A, B);
    cr_expect(strstr(line, want), "%s", line);
    cr_assert_eq(stat_of(&e, "zygote_gen"), 3);
    cr_assert_eq((pid_t)stat_of(&e, "old_zygote_pid"), zb);
    struct cessna_ep *s4 = t_ep_connect(&e);
    uint64_t id4 = cessna_ep_session_id(s4);
    expect_sequencer(s4, "s4 one", 1);
    cr_assert_eq(t_session_field(&e, id4, "zygote_gen"), 3);
    expect_passthrough(s2, "s2 three");
    kill_worker(&e, id2);
    expect_passthrough(s2, "s2 four, after its worker died again");
    wait_recoveries(&e, id2, 2);
    expect_passthrough(s3, "s3 two");
    close_ep(s2);
    cr_assert(pid_gone(zb, 0) == 0, "B's zygote runs while S3 does");
    close_ep(s3);
    cr_assert(file_wait_count(e.sup.log, "msg=\"old zygote stopped", 2, 5000), "log: %s", e.sup.log);
    cr_assert(pid_gone(zb, 5000), "B's zygote %d still exists", (int)zb);
    expect_sequencer(s4, "s4 two", 2);
    close_ep(s4);

    cr_assert_eq(stat_of(&e, "sessions_failed"), 0);
    cr_assert_eq(waitpid(e.sup.pid, NULL, WNOHANG), 0, "the supervisor runs on");
    t_edge_stop(&e);
}

Test(reload_app, new_sessions_get_the_new_app_old_ones_recover_cold_with_theirs)
{
    cycle("cold");
}

Test(reload_app, new_sessions_get_the_new_app_old_ones_recover_hot_with_theirs)
{
    cycle("hot");
}

/* ---- a module that does not load ---- */

Test(reload_app, a_module_that_does_not_load_changes_nothing)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char line[2048], notelf[300], st[8192];
    const char *A = t_app("passthrough");

    t_echo_ep_start(&srv);
    t_edge_start(&e, A, srv.addr, NULL);
    pid_t za = (pid_t)stat_of(&e, "zygote_pid");
    struct cessna_ep *s1 = t_ep_connect(&e);
    expect_passthrough(s1, "one");

    snprintf(notelf, sizeof(notelf), "%s/notelf.so", e.dir);
    FILE *f = fopen(notelf, "w");
    cr_assert_not_null(f);
    fputs("not an ELF file\n", f);
    fclose(f);
    edge_config(&e, srv.addr, notelf, NULL);
    hup(&e, "msg=\"reload: app not applied: the new module does not load", 1);
    file_last_line(e.sup.log, "the new module does not load", line, sizeof(line));
    cr_expect(strstr(line, "level=error") && strstr(line, notelf), "%s", line);
    stats(&e, st, sizeof(st));
    cr_assert_eq(t_field(st, "zygote_gen"), 1, "%s", st);
    cr_assert_eq((pid_t)t_field(st, "zygote_pid"), za, "%s", st);
    cr_assert(strstr(st, " old_zygote=none") && !strstr(st, "new_zygote"), "%s", st);
    expect_passthrough(s1, "two");
    struct cessna_ep *s2 = t_ep_connect(&e);
    expect_passthrough(s2, "a new session, still passthrough");
    cr_assert_eq(file_count(e.sup.log, "msg=\"app: new sessions run"), 0);

    /* The same file again is tried again (nothing was taken as applied), and a good module
     * afterwards applies. */
    hup(&e, "msg=\"reload: app not applied: the new module does not load", 2);
    edge_config(&e, srv.addr, t_app("sequencer"), NULL);
    hup(&e, "msg=\"app: new sessions run ", 1);
    struct cessna_ep *s3 = t_ep_connect(&e);
    expect_sequencer(s3, "three", 1);
    expect_passthrough(s1, "four");
    close_ep(s1);
    close_ep(s2);
    cr_assert(file_wait_count(e.sup.log, "msg=\"old zygote stopped", 1, 5000), "log: %s", e.sup.log);
    cr_assert(pid_gone(za, 5000), "A's zygote %d still exists", (int)za);
    close_ep(s3);
    t_edge_stop(&e);
}

/* ---- hibernation: an old session wakes with its module, a new one with the new ---- */

Test(reload_app, an_old_session_wakes_with_its_own_module)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const char *extra = "hibernate_after_ms = 200\nsnapshot_interval_ms = 0\n";

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, extra);
    pid_t za = (pid_t)stat_of(&e, "zygote_pid");
    struct cessna_ep *s1 = t_ep_connect(&e);
    uint64_t id1 = cessna_ep_session_id(s1);
    expect_sequencer(s1, "s1 one", 1);
    wait_state(&e, id1, "hibernated", 5000);

    edge_config(&e, srv.addr, t_app("passthrough"), extra);
    hup(&e, "msg=\"app: new sessions run ", 1);
    struct cessna_ep *s2 = t_ep_connect(&e);
    uint64_t id2 = cessna_ep_session_id(s2);
    expect_passthrough(s2, "s2 one");

    /* S1 sleeps through the reload and wakes with the sequencer, its count intact. */
    expect_sequencer(s1, "s1 two, the wake", 2);
    wait_state(&e, id1, "hibernated", 5000);
    wait_state(&e, id2, "hibernated", 5000);
    expect_sequencer(s1, "s1 three, another wake", 3);
    expect_passthrough(s2, "s2 two, its wake");
    cr_assert_geq(stat_of(&e, "wakes"), 3);
    cr_assert_eq(stat_of(&e, "wake_failures"), 0);
    cr_assert_eq(stat_of(&e, "old_zygote_pid"), (uint64_t)za);

    /* Asleep when it ends: the old zygote goes once it is freed. */
    wait_state(&e, id1, "hibernated", 5000);
    close_ep(s1);
    cr_assert(file_wait_count(e.sup.log, "msg=\"old zygote stopped", 1, 5000), "log: %s", e.sup.log);
    cr_assert(pid_gone(za, 5000), "the old zygote %d still exists", (int)za);
    close_ep(s2);
    cr_assert_eq(stat_of(&e, "sessions_failed"), 0);
    t_edge_stop(&e);
}

/* ---- each zygote keeps its own restart: the old one dies, comes back, serves its session ---- */

Test(reload_app, the_old_zygote_restarts_when_it_dies)
{
    struct t_echo_ep srv;
    struct t_edge e;
    const char *extra = "snapshot_interval_ms = 20\n";
    char line[2048];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, extra);
    struct cessna_ep *s1 = t_ep_connect(&e);
    uint64_t id1 = cessna_ep_session_id(s1);
    expect_sequencer(s1, "s1 one", 1);
    edge_config(&e, srv.addr, t_app("passthrough"), extra);
    hup(&e, "msg=\"app: new sessions run ", 1);
    pid_t za = (pid_t)stat_of(&e, "old_zygote_pid"), zb = (pid_t)stat_of(&e, "zygote_pid");
    cr_assert(za > 0 && zb > 0 && za != zb);

    kill(za, SIGKILL);
    cr_assert(file_wait_count(e.sup.log, "msg=\"the old zygote died; restarting it", 1, 5000),
              "log: %s", e.sup.log);
    cr_assert(file_wait_count(e.sup.log, "msg=\"zygote restarted\"", 1, 5000), "log: %s", e.sup.log);
    file_last_line(e.sup.log, "msg=\"zygote restarted\"", line, sizeof(line));
    cr_expect(strstr(line, " gen=1 "), "the old generation came back: %s", line);
    pid_t za2 = (pid_t)stat_of(&e, "old_zygote_pid");
    cr_assert(za2 > 0 && za2 != za, "a new old zygote: %d", (int)za2);
    cr_assert_eq((pid_t)stat_of(&e, "zygote_pid"), zb, "the current one was not touched");

    /* S1 recovers from the restarted zygote, with its module and state. */
    wait_snapshot(&e, id1, 0, 5000);
    kill_worker(&e, id1);
    expect_sequencer(s1, "s1 two, after the recovery", 2);
    wait_recoveries(&e, id1, 1);
    struct cessna_ep *s2 = t_ep_connect(&e);
    expect_passthrough(s2, "s2 one");
    close_ep(s1);
    cr_assert(file_wait_count(e.sup.log, "msg=\"old zygote stopped", 1, 5000), "log: %s", e.sup.log);
    cr_assert(pid_gone(za2, 5000), "the old zygote %d still exists", (int)za2);
    close_ep(s2);
    cr_assert_eq(stat_of(&e, "sessions_failed"), 0);
    t_edge_stop(&e);
}

/* ---- a session that moves in resumes with the module its snapshot was written by ---- */

/* Edge i's config file with app replaced by the built app `name`. */
static void world_edge_app(struct world *w, int i, const char *name)
{
    char cfg[400], tmp[420], line[1024];
    FILE *in, *out;

    snprintf(cfg, sizeof(cfg), "%s/edge%d.ini", w->dir, i);
    snprintf(tmp, sizeof(tmp), "%s.tmp", cfg);
    in = fopen(cfg, "r");
    out = fopen(tmp, "w");
    cr_assert(in && out, "%s: %s", cfg, strerror(errno));
    while (fgets(line, sizeof(line), in))
        if (strncmp(line, "app = ", 6) == 0)
            fprintf(out, "app = %s\n", t_app(name));
        else
            fputs(line, out);
    fclose(in);
    cr_assert_eq(fclose(out), 0);
    cr_assert_eq(rename(tmp, cfg), 0);
}

static void move_to(struct world *w, uint64_t id, int from, int to)
{
    char cmd[64], out[1024];

    snprintf(cmd, sizeof(cmd), "move %llu", (unsigned long long)id);
    edge_ctl(w, from, cmd, out, sizeof(out));
    cr_assert(strstr(out, "ok moving"), "move: %s", out);
    for (long t0 = t_now_ms(); t_now_ms() - t0 < 10000; usleep(10000))
        if (edge_session_field(w, to, id, "epoch"))
            return;
    cr_assert_fail("session %llu did not arrive at edge %d", (unsigned long long)id, to);
}

Test(reload_app, a_session_moving_in_resumes_with_its_module, .timeout = 180)
{
    static struct world clean, w;
    static const struct w_opts o = { .edges = 2, .sessions = 4, .rounds = 300 };
    struct w_clients c;
    uint64_t ids[W_SESSIONS_MAX];
    char log[512], line[2048];

    world_start(&clean, &o);
    run_clients(&clean, &c);
    join_clients(&clean, &c);
    wait_server_transcripts(&clean);
    world_stop(&clean);

    world_start(&w, &o);
    run_clients(&w, &c);
    cr_assert_eq(wait_rounds(&w, 40, 30000), 0, "the clients did not get going");
    cr_assert_eq(edge_session_ids(&w, 0, ids, W_SESSIONS_MAX), 4, "all open at edge 0");

    /* Edge 1 gets a sequencer session, then changes to passthrough: the old zygote stays. */
    move_to(&w, ids[0], 0, 1);
    world_edge_app(&w, 1, "passthrough");
    kill(w.edge[1].pid, SIGHUP);
    edge_log(&w, 1, log, sizeof(log));
    cr_assert(file_wait_count(log, "msg=\"app: new sessions run ", 1, 10000), "log: %s", log);
    file_last_line(log, "msg=\"app: new sessions run ", line, sizeof(line));
    cr_expect(strstr(line, " old_sessions=1 "), "%s", line);
    cr_assert_eq(edge_session_field(&w, 1, ids[0], "zygote_gen"), 1);

    /* Another sequencer session moves in: its snapshot's layout is the old zygote's. */
    move_to(&w, ids[1], 0, 1);
    cr_assert_eq(edge_session_field(&w, 1, ids[1], "zygote_gen"), 1,
                 "the resumed session runs the module of its snapshot");
    cr_assert_eq(edge_stat(&w, 1, "old_zygote_sessions"), 2);
    cr_assert_eq(edge_stat(&w, 1, "zygote_sessions"), 0);

    join_clients(&w, &c);
    wait_server_transcripts(&w);
    cr_assert(file_wait_count(log, "msg=\"old zygote stopped", 1, 10000), "log: %s", log);
    world_stop(&w);
    compare(&clean, &w);   /* every byte as without the reload and the moves */
}
