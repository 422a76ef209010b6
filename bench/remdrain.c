/* remdrain.c - section "remote", part 2: how long draining an edge takes, per session.
 *
 * o->drain_sessions plain TCP sessions through the client proxy, all on edge A (the first
 * of its list; B and C stand by), each with one message echoed. Then `drain` on A, and at
 * once one message on every session (it is answered by A before the session moves, or by
 * the next edge after). Timed from the drain command: A's supervisor exit (its pidfd turns
 * readable: every session moved); then one more message on every session, now necessarily
 * answered at another edge, and the time until every one of them is back. Per session: the
 * client proxy's own "session resumed ... took_ms=" (from its MOVE to the new WELCOME).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"

#define MAX_SESSIONS     64
#define REPLY_TIMEOUT_MS 30000
#define EXIT_TIMEOUT_MS  60000   /* drain_timeout_ms is 30 s: A ends by then in any case */

struct drain_result {
    int      ran, failed, sessions;
    double   exit_ms;                  /* drain command to A's exit */
    double   first_ms[MAX_SESSIONS];   /* drain command to the echo of the message sent at once */
    double   all_ms;                   /* drain command to every session answered elsewhere */
    double   took_ms[MAX_SESSIONS];    /* the client proxy's resume times */
    int      ntook;
    uint64_t moved_to[REM_EDGES];      /* sessions= at B and C afterwards */
    int      moved, moved_stored;      /* A's log: sessions moved, of them after their
                                          snapshot was stored (else: timeout, no shipping) */
    char     drain_reply[128];
    char     err[BENCH_ERRLEN];
};

static void fail(struct drain_result *r, struct rem_world *w, const char *what, const char *why)
{
    char dead[BENCH_ERRLEN / 2];
    int died = w && rw_check(w, dead, sizeof(dead)) < 0 && !strstr(why, dead); /* once */

    r->failed = 1;
    snprintf(r->err, sizeof(r->err), "remote drain %s: %s%s%s", what, why, died ? "; " : "",
             died ? dead : "");
    fprintf(stderr, "cessna-bench: FAILED %s\n", r->err);
}

static double ms_since(uint64_t t0)
{
    return (double)(ectl_now_ns() - t0) / 1e6;
}

/* Send msg on every session, then wait for all the echoes; each one's time since t0 in
 * at[] (may be NULL). */
static int echo_all(const int *fd, int n, const char *what, uint64_t t0, double *at,
                    char *err, size_t errlen)
{
    char msg[MAX_SESSIONS][48], back[48];
    uint64_t deadline = ectl_now_ns() + (uint64_t)REPLY_TIMEOUT_MS * 1000000u;

    for (int i = 0; i < n; i++) {
        snprintf(msg[i], sizeof(msg[i]), "%s %d", what, i);
        if (send(fd[i], msg[i], strlen(msg[i]), MSG_NOSIGNAL) != (ssize_t)strlen(msg[i])) {
            int rc = -errno;
            snprintf(err, errlen, "session %d: send '%s': %s", i, msg[i], strerror(errno));
            return rc;
        }
    }
    /* The echoes come back in any order across sessions: read each one in turn (each is
     * stamped when it is complete, so a session read later is not timed later). */
    for (int i = 0; i < n; i++) {
        size_t len = strlen(msg[i]);
        int rc = rw_read(fd[i], back, len, deadline, err, errlen);
        if (rc == 0 && memcmp(back, msg[i], len) != 0) {
            snprintf(err, errlen, "session %d: sent '%s', got '%.*s'", i, msg[i], (int)len, back);
            rc = -EPROTO;
        }
        if (rc < 0) {
            char why[BENCH_ERRLEN / 2];
            snprintf(why, sizeof(why), "%s", err);
            snprintf(err, errlen, "session %d, '%s': %s", i, msg[i], why);
            return rc;
        }
        if (at)
            at[i] = ms_since(t0);
    }
    return 0;
}

/* From the logs: the took_ms= of each "session resumed" line of the client proxy; A's
 * "moved off this edge" lines and how each move ended. */
static void read_logs(struct rem_world *w, struct drain_result *r)
{
    char line[2048];
    FILE *f = fopen(w->cproxy.log_path, "r");

    while (f && fgets(line, sizeof(line), f) && r->ntook < MAX_SESSIONS) {
        const char *p = strstr(line, "session resumed");
        if (p && (p = strstr(p, "took_ms=")))
            r->took_ms[r->ntook++] = strtod(p + 8, NULL);
    }
    if (f)
        fclose(f);
    f = fopen(w->edge[0].log_path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, "moved off this edge")) {
            r->moved++;
            r->moved_stored += strstr(line, "how=snapshot stored") != NULL;
        }
    if (f)
        fclose(f);
}

static void drain_once(struct rem_world *w, const struct bench_opts *o, struct drain_result *r)
{
    int n = o->drain_sessions < MAX_SESSIONS ? o->drain_sessions : MAX_SESSIONS;
    int fd[MAX_SESSIONS], opened = 0, pidfd = -1, rc = 0;
    char err[BENCH_ERRLEN], out[1024];
    uint64_t on_a = 0;

    for (; opened < n && rc == 0; opened++)
        if ((fd[opened] = rw_connect(w, err, sizeof(err))) < 0) {
            rc = fd[opened];
            break;
        }
    if (rc == 0)
        rc = echo_all(fd, n, "hello", ectl_now_ns(), NULL, err, sizeof(err));
    if (rc == 0)
        rc = ectl_cmd(w->control[0], "stats", out, sizeof(out), err, sizeof(err));
    if (rc == 0 && (ectl_field(out, "sessions", &on_a) < 0 || on_a != (uint64_t)n)) {
        snprintf(err, sizeof(err), "edge A holds %" PRIu64 " sessions, not %d: %s", on_a, n, out);
        rc = -EPROTO;
    }
    if (rc == 0 && (pidfd = (int)syscall(SYS_pidfd_open, w->edge[0].pid, 0)) < 0) {
        rc = -errno;
        snprintf(err, sizeof(err), "pidfd_open of edge A: %s", strerror(errno));
    }
    if (rc < 0) {
        fail(r, w, "setup", err);
        goto out;
    }
    r->sessions = n;

    uint64_t t0 = ectl_now_ns();
    rc = ectl_cmd(w->control[0], "drain", r->drain_reply, sizeof(r->drain_reply), err,
                  sizeof(err));
    if (rc == 0 && strncmp(r->drain_reply, "ok", 2) != 0) {
        snprintf(err, sizeof(err), "'drain' refused: %s", r->drain_reply);
        rc = -EPROTO;
    }
    r->drain_reply[strcspn(r->drain_reply, "\n")] = 0;
    if (rc == 0)
        rc = echo_all(fd, n, "during drain", t0, r->first_ms, err, sizeof(err));
    if (rc < 0) {
        fail(r, w, "while draining", err);
        goto out;
    }
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    if (poll(&p, 1, EXIT_TIMEOUT_MS) != 1) {
        snprintf(err, sizeof(err), "edge A's supervisor did not exit within %d ms",
                 EXIT_TIMEOUT_MS);
        fail(r, w, "exit", err);
        goto out;
    }
    r->exit_ms = ms_since(t0);
    rc = echo_all(fd, n, "after drain", t0, NULL, err, sizeof(err));
    r->all_ms = ms_since(t0);
    if (rc < 0) {
        fail(r, w, "after A exited", err);
        goto out;
    }
    for (int i = 1; i < w->spec.nedges; i++)
        if (ectl_cmd(w->control[i], "stats", out, sizeof(out), err, sizeof(err)) == 0)
            ectl_field(out, "sessions", &r->moved_to[i]);
    proc_check(&w->edge[0], err, sizeof(err));   /* copies A's last output into its log */
    read_logs(w, r);
    r->ran = 1;
out:
    if (pidfd >= 0)
        close(pidfd);
    for (int i = 0; i < opened; i++)
        close(fd[i]);
}

static void print_drain(FILE *f, const struct bench_opts *o, struct drain_result *r)
{
    fprintf(f, "## Drain: every session of an edge moved to the others\n\n");
    fprintf(f, "%d sessions (ballast.so, no ballast) through the client proxy, all on edge A; "
               "B and C stand by; server proxy with --store. `cessna-ctl drain` on A, then one "
               "message on every session at once (echo: by A before its move or by the next "
               "edge after). A exits: A's supervisor has ended (every session moved). Every "
               "session answered elsewhere: one more message on each after A's exit, all "
               "echoed. All from the drain command, ms. Resume took_ms: the client proxy's "
               "own, from the MOVE to the new edge's WELCOME, per session.\n\n",
            o->drain_sessions);
    if (!r->ran) {
        fprintf(f, "| sessions | A exits | failed |\n|---:|---:|---|\n| %d | | FAILED |\n\n"
                   "- error: %s\n\n", o->drain_sessions, r->err);
        return;
    }
    double first[MAX_SESSIONS], took[MAX_SESSIONS];
    memcpy(first, r->first_ms, sizeof(first));
    memcpy(took, r->took_ms, sizeof(took));
    double fmed = report_median(first, r->sessions), fmax = first[r->sessions - 1];
    fprintf(f, "| sessions | A exits | every session answered elsewhere | per session (A exits "
               "/ sessions) | echo of the message sent at once, median / max | resume took_ms, "
               "median / max |\n|---:|---:|---:|---:|---:|---:|\n");
    fprintf(f, "| %d | %.1f | %.1f | %.2f | %.1f / %.1f |", r->sessions, r->exit_ms, r->all_ms,
            r->exit_ms / r->sessions, fmed, fmax);
    if (r->ntook) {
        double tmed = report_median(took, r->ntook);   /* sorts took */
        fprintf(f, " %.0f / %.0f |\n\n", tmed, took[r->ntook - 1]);
    }
    else
        fprintf(f, " none logged |\n\n");
    fprintf(f, "- `drain` answered \"%s\"; A logged %d sessions moved off, %d of them after "
               "their snapshot was stored; afterwards B holds %" PRIu64 " and C %" PRIu64
               " sessions; the client proxy logged %d resumes\n", r->drain_reply, r->moved,
            r->moved_stored, r->moved_to[1], r->moved_to[2], r->ntook);
    if (r->moved_to[1] + r->moved_to[2] != (uint64_t)r->sessions)
        fprintf(f, "- **B and C hold %" PRIu64 " sessions, not %d**\n",
                r->moved_to[1] + r->moved_to[2], r->sessions);
    if (r->ntook != r->sessions)
        fprintf(f, "- **the client proxy logged %d resumes for %d sessions**\n", r->ntook,
                r->sessions);
    fprintf(f, "\n");
}

int remdrain_run(FILE *f, const struct bench_opts *o)
{
    static struct rem_world w;
    static struct drain_result r;
    struct rem_spec spec = {
        .tag = "remote-drain", .nedges = REM_EDGES, .app = "ballast.so",
        .snapshot_interval_ms = 3600000, .edge_heartbeat_ms = 100, .proxy_heartbeat_ms = 400,
    };
    char err[BENCH_ERRLEN];

    memset(&r, 0, sizeof(r));
    fprintf(stderr, "cessna-bench: remote: drain of %d sessions\n", o->drain_sessions);
    if (rw_up(&w, &spec, o, err, sizeof(err)) < 0)
        fail(&r, &w, "setup", err);
    else
        drain_once(&w, o, &r);
    rw_down(&w);
    print_drain(f, o, &r);
    fflush(f);
    return r.ran ? 0 : -1;
}
