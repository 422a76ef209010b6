/* it_replay.c - integration: the ordering log files and cessna-replay, offline. */
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"

TestSuite(replay, .timeout = 60);

/* Run cessna-replay (with --cache-dir cache unless NULL); its stdout in out, its exit
 * status returned. */
static int replay_with(const struct t_edge *e, const char *app, uint64_t id, const char *cache,
                       char *out, size_t len)
{
    char state[300], sid[32];
    int fd;

    snprintf(state, sizeof(state), "%s/state", e->dir);
    snprintf(sid, sizeof(sid), "%llu", (unsigned long long)id);
    char *argv[] = { (char *)t_bin("cessna-replay"), "--app", (char *)app, "--state-dir", state,
                     "--session", sid, cache ? "--cache-dir" : NULL, (char *)cache, NULL };
    pid_t pid = t_start_raw(e->dir, "replay", argv, &fd);
    memset(out, 0, len);   /* what arrived stays readable even after a timeout */
    t_read_n(fd, out, len - 1, 20000);   /* a hang shows in the status (-1) below */
    int status = t_wait(pid, 20000);
    close(fd);
    cr_assert(status != -1 && WIFEXITED(status), "cessna-replay ends: %s", out);
    return WEXITSTATUS(status);
}

static int replay(const struct t_edge *e, const char *app, uint64_t id, char *out, size_t len)
{
    return replay_with(e, app, id, NULL, out, len);
}

static int count_logs(const struct t_edge *e, uint64_t id)
{
    char dir[400];
    int n = 0;
    struct dirent *de;

    snprintf(dir, sizeof(dir), "%s/state/%llu", e->dir, (unsigned long long)id);
    DIR *d = opendir(dir);
    cr_assert(d, "%s exists", dir);
    while ((de = readdir(d)))
        n += strncmp(de->d_name, "events-", 7) == 0;
    closedir(d);
    return n;
}

Test(replay, crash_is_found_offline_at_the_same_event)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[256], out[4096];
    const void *got;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("crashy"), srv.addr, "snapshot_interval_ms = 10\n");
    struct cessna_ep *ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert(ep, "%s", err);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(cessna_ep_send(ep, "hello", 5), 0);
        cr_assert_eq(cessna_ep_recv(ep, &got), 5);
        usleep(1000);
    }
    uint64_t id = cessna_ep_session_id(ep);
    /* A durable snapshot first (forks are slow on a loaded machine or under ASan). */
    for (long deadline = t_now_ms() + 20000;; usleep(10000)) {
        char line[8192];
        t_ctl(&e, "sessions", line, sizeof(line));
        if (t_field(line, "snapshots") > 0)
            break;
        cr_assert(t_now_ms() < deadline, "no durable snapshot: %s", line);
    }
    cr_assert_eq(cessna_ep_send(ep, "CRASH", 5), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), -ECONNABORTED);
    const char *at = strstr(cessna_ep_error(ep), "again at event ");
    cr_assert(at, "%s", cessna_ep_error(ep));
    unsigned long long event = strtoull(at + strlen("again at event "), NULL, 10);
    cessna_ep_free(ep);
    usleep(100000);   /* the log's last batch reaches the file */

    cr_assert_eq(replay(&e, t_test_app("crashy"), id, out, sizeof(out)), 3, "%s", out);
    char want[64];
    snprintf(want, sizeof(want), "CRASH at event %llu: signal 11", event);
    cr_assert(strstr(out, want), "replay says '%s', want '%s'", out, want);
    cr_assert(!strstr(out, "snapshot 0,"), "replay started from a snapshot: %s", out);
    t_edge_stop(&e);
}

Test(replay, clean_session_replays_without_crash_from_a_log_on_request)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[256], out[4096];
    const void *got;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("sequencer"), srv.addr, "snapshot_interval_ms = 10\n");
    struct cessna_ep *ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert(ep, "%s", err);
    uint64_t id = cessna_ep_session_id(ep);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(cessna_ep_send(ep, "tick", 4), 0);
        cr_assert(cessna_ep_recv(ep, &got) > 0);
        usleep(1000);
    }
    usleep(100000);
    /* A live session writes no log per message: it is written on request (or failure), one
     * file, from the newest durable snapshot on. */
    cr_assert_eq(count_logs(&e, id), 0, "event log files before any was asked for");
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "log %llu", (unsigned long long)id);
    t_ctl(&e, cmd, out, sizeof(out));
    cr_assert(!strncmp(out, "ok log of session", 17), "%s", out);
    t_ctl(&e, cmd, out, sizeof(out));
    cr_assert_eq(count_logs(&e, id), 1, "a second request replaces the first file");
    cr_assert_eq(replay(&e, t_app("sequencer"), id, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "without a crash"), "%s", out);
    cessna_ep_close(ep, 5000);
    cessna_ep_free(ep);
    t_edge_stop(&e);
}

/* Events and outputs of 1 MiB cross the replay's rings in pieces, as they do the edge's. */
Test(replay, one_mebibyte_messages_replay_to_the_same_crash)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[256], out[4096];
    const void *got;
    const size_t big = 1u << 20;
    uint8_t *msg = malloc(big);

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("crashy"), srv.addr, "snapshot_interval_ms = 0\n");
    struct cessna_ep *ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert(ep, "%s", err);
    for (int i = 0; i < 6; i++) {
        size_t len = i % 2 ? big : big / 3 + (size_t)i;
        t_fill(msg, len, (uint64_t)i);
        cr_assert_eq(cessna_ep_send(ep, msg, len), 0);
        cr_assert_eq(cessna_ep_recv(ep, &got), (long)len);
        cr_assert(memcmp(got, msg, len) == 0);
    }
    uint64_t id = cessna_ep_session_id(ep);
    cr_assert_eq(cessna_ep_send(ep, "CRASH", 5), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), -ECONNABORTED);
    const char *at = strstr(cessna_ep_error(ep), "again at event ");
    cr_assert(at, "%s", cessna_ep_error(ep));
    unsigned long long event = strtoull(at + strlen("again at event "), NULL, 10);
    cr_assert_eq(event, 14, "START, 6 x (client, server), then CRASH");
    cessna_ep_free(ep);
    usleep(100000);   /* the log's last batch reaches the file */

    cr_assert_eq(replay(&e, t_test_app("crashy"), id, out, sizeof(out)), 3, "%s", out);
    char want[64];
    snprintf(want, sizeof(want), "CRASH at event %llu: signal 11", event);
    cr_assert(strstr(out, want), "replay says '%s', want '%s'", out, want);
    t_edge_stop(&e);
    free(msg);
}

/* A crash that depends on what the app read from its cache: a replay given the edge's
 * cache_dir finds it at the same event; one without says what it lacks and does not. */
Test(replay, a_crash_from_a_cache_object_needs_the_cache_dir)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[256], out[4096], cache[320], path[400], extra[400];
    const void *got;

    snprintf(cache, sizeof(cache), "%s/cache", t_tmpdir());
    cr_assert_eq(mkdir(cache, 0755), 0);
    snprintf(path, sizeof(path), "%s/trigger", cache);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("boom", f);
    fclose(f);
    t_echo_ep_start(&srv);
    snprintf(extra, sizeof(extra), "cache_dir = %s\nsnapshot_interval_ms = 0\n", cache);
    t_edge_start(&e, t_test_app("crashy"), srv.addr, extra);
    struct cessna_ep *ep = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert(ep, "%s", err);
    cr_assert_eq(cessna_ep_send(ep, "hello", 5), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), 5);
    uint64_t id = cessna_ep_session_id(ep);
    cr_assert_eq(cessna_ep_send(ep, "CACHE trigger", 13), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), -ECONNABORTED, "the crash ends the session");
    const char *at = strstr(cessna_ep_error(ep), "again at event ");
    cr_assert(at, "%s", cessna_ep_error(ep));
    char want[64];
    snprintf(want, sizeof(want), "CRASH at event %llu: signal 11",
             strtoull(at + strlen("again at event "), NULL, 10));
    cessna_ep_free(ep);
    usleep(100000);   /* the log's last batch reaches the file */

    cr_assert_eq(replay_with(&e, t_test_app("crashy"), id, cache, out, sizeof(out)), 3, "%s",
                 out);
    cr_assert(strstr(out, want), "replay says '%s', want '%s'", out, want);
    cr_assert_eq(replay(&e, t_test_app("crashy"), id, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "read 'trigger' from its cache, which this replay does not have"),
              "%s", out);
    t_edge_stop(&e);
}
