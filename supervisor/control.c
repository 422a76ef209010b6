/* control.c - the control socket that cessna-ctl talks to: one command line in, text out.
 *
 * Each connection is served through io_uring (a receive, then sends until the reply is
 * out), so a slow or silent client never stalls the loop; one that takes longer than
 * control_timeout_ms is closed by the periodic sweep (timeouts.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctlcmd.h"
#include "drain.h"
#include "log.h"
#include "reqconn.h"
#include "snapsync.h"
#include "sup.h"

static const char *const state_names[] = {
    [S_FREE] = "free", [S_HELLO] = "hello", [S_CONNECTING] = "connecting",
    [S_RESUMING] = "resuming",
    [S_LIVE] = "live", [S_CLOSING] = "closing", [S_DEAD] = "ending",
};

int ctl_listen(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -errno;
    }
    /* A socket at the path is stale (an earlier run) unless someone still accepts on it:
     * then it is another supervisor's, and stays. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        snprintf(err, errlen, "control socket %s is in use by another supervisor", path);
        close(fd);
        return -EADDRINUSE;
    }
    close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -errno;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || chmod(path, 0600) == -1 ||
        listen(fd, 16) == -1) {
        int e = errno;
        snprintf(err, errlen, "control socket %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

/* The last recovery, split as in the slides: process start, snapshot load, replay. */
static const char *recovery_timing(const struct session *s, char *out, size_t len)
{
    uint64_t started, load, replayed;
    char *buf = out;
    size_t n;

    buf[0] = 0;
    if (s->resume_ns[2]) {
        n = (size_t)snprintf(buf, len, " resume_at_ns=%llu resume_connect_us=%llu "
                             "resume_fetch_us=%llu", (unsigned long long)s->resume_ns[0],
                             (unsigned long long)((s->resume_ns[1] - s->resume_ns[0]) / 1000),
                             (unsigned long long)((s->resume_ns[2] - s->resume_ns[1]) / 1000));
        buf += n;
        len -= n;
    }
    if (!s->recoveries || !s->ctl)
        return out;
    started = atomic_load(&s->ctl->started_ns);
    load = atomic_load(&s->ctl->load_ns);
    replayed = atomic_load(&s->ctl->replayed_ns);
    if (!started || started < s->died_ns)
        return out;
    uint64_t start_us = (started - s->died_ns) / 1000;
    if (!replayed || replayed < started) {
        snprintf(buf, len, " recovery=%s recovery_start_us=%llu recovery_load_us=%llu "
                 "recovery_replay_us=-", s->recovery_mode ? s->recovery_mode : "?",
                 (unsigned long long)start_us, (unsigned long long)(load / 1000));
        return out;
    }
    snprintf(buf, len, " recovery=%s recovery_us=%llu recovery_start_us=%llu "
             "recovery_load_us=%llu recovery_replay_us=%llu",
             s->recovery_mode ? s->recovery_mode : "?",
             (unsigned long long)((replayed - s->died_ns) / 1000), (unsigned long long)start_us,
             (unsigned long long)(load / 1000),
             (unsigned long long)((replayed - started - load) / 1000));
    return out;
}

const char *ctl_state_name(const struct session *s)
{
    return hib_state_name(s, state_names[s->state]);
}

static size_t list_sessions(char *out, size_t cap)
{
    size_t n = 0;

    for (uint32_t i = 0; i < S.slot_high && n + 512 < cap; i++) {
        struct session *s = &S.sessions[i];
        char standby[16] = "-", snapshot[24] = "-", timing[320];
        if (s->state == S_FREE || s->state == S_HELLO)
            continue;
        if (s->standby_pid > 0)
            snprintf(standby, sizeof(standby), "%d", (int)s->standby_pid);
        if (s->snap_pos)
            snprintf(snapshot, sizeof(snapshot), "%llu", (unsigned long long)s->snap_pos);
        uint64_t events = s->ctl ? atomic_load(&s->ctl->consumed) : hib_events(s);
        n += (size_t)snprintf(out + n, cap - n,
            "id=%llu worker=%d state=%s events=%llu ordered=%llu to_client=%llu to_server=%llu "
            "recoveries=%u standby=%s snapshot=%s snapshots=%llu snapshot_bytes=%llu "
            "fork_us=%llu write_us=%llu held_events=%llu held_bytes=%llu snapshot_failures=%llu "
            "timers=%u order_held=%llu epoch=%llu remote_snapshot=%llu zygote_gen=%u%s\n",
            (unsigned long long)s->id, s->worker_reaped ? 0 : (int)s->pid,
            ctl_state_name(s),
            (unsigned long long)events, (unsigned long long)(s->next_pos - 1),
            (unsigned long long)s->outputs[0], (unsigned long long)s->outputs[1], s->recoveries,
            standby, snapshot, (unsigned long long)s->snapshots,
            (unsigned long long)s->snap_bytes, (unsigned long long)(s->snap_fork_ns / 1000),
            (unsigned long long)(s->snap_write_ns / 1000), (unsigned long long)s->ev.count,
            (unsigned long long)evstore_bytes(&s->ev), (unsigned long long)s->snap_failures,
            timers_armed(s), (unsigned long long)(s->next_pos - s->order_base),
            (unsigned long long)s->epoch, (unsigned long long)s->remote_pos, s->zgen,
            recovery_timing(s, timing, sizeof(timing)));
    }
    return n;
}

static size_t stats(char *out, size_t cap)
{
    const struct snapsync_stats *y = snapsync_stats();
    int n = snprintf(out, cap,
        "sessions=%u sessions_total=%llu sessions_failed=%llu worker_deaths=%llu "
        "bad_frames=%llu msgs_in=%llu msgs_out=%llu bytes_in=%llu bytes_out=%llu recoveries=%llu "
        "hot_takeovers=%llu cold_restores=%llu snapshots=%llu snapshot_failures=%llu "
        "log_failures=%llu hello_timeouts=%llu connect_timeouts=%llu idle_timeouts=%llu "
        "forced_closes=%llu accept_fd_limit=%llu accept_paused=%llu zygote_restarts=%llu "
        "dirs_removed=%llu dirs_free=%zu dirs_reused=%llu dirs_ahead_pending=%zu "
        "ctl_timeouts=%llu resumes=%llu moves=%llu "
        "draining=%d",
        S.nsessions, (unsigned long long)S.stats.sessions_total,
        (unsigned long long)S.stats.sessions_failed, (unsigned long long)S.stats.worker_deaths,
        (unsigned long long)S.stats.bad_frames, (unsigned long long)S.stats.msgs_in,
        (unsigned long long)S.stats.msgs_out, (unsigned long long)S.stats.bytes_in,
        (unsigned long long)S.stats.bytes_out, (unsigned long long)S.stats.recoveries,
        (unsigned long long)S.stats.hot_takeovers, (unsigned long long)S.stats.cold_restores,
        (unsigned long long)S.stats.snapshots, (unsigned long long)S.stats.snapshot_failures,
        (unsigned long long)S.stats.log_failures, (unsigned long long)S.stats.hello_timeouts,
        (unsigned long long)S.stats.connect_timeouts, (unsigned long long)S.stats.idle_timeouts,
        (unsigned long long)S.stats.forced_closes, (unsigned long long)S.stats.accept_fd_limit,
        (unsigned long long)S.stats.accept_paused, (unsigned long long)S.stats.zygote_restarts,
        (unsigned long long)S.stats.dirs_removed, sdir_free_dirs(),
        (unsigned long long)S.stats.dirs_reused, sdir_ahead_pending(),
        (unsigned long long)S.stats.ctl_timeouts, (unsigned long long)S.stats.resumes,
        (unsigned long long)S.stats.moves, S.draining);
    size_t len = n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
    if (len + 1 < cap) {
        out[len++] = ' ';   /* the zygotes: which app new sessions run, and the old one's */
        len += zygote_stats(out + len, cap - len);
    }
    len += hib_stats(out + len, cap - len);   /* hibernate.c */
    /* Group durability of snapshot files (snapsync.c). */
    n = snprintf(out + len, cap - len, " snapshot_syncs=%llu snapshot_sync_failures=%llu "
                 "snapshot_sync_files=%llu snapshot_sync_us_avg=%llu snapshot_sync_us_max=%llu "
                 "snapshot_sync_waiting=%llu snapshots_without_fork=%llu", (unsigned long long)y->syncs,
                 (unsigned long long)y->failures, (unsigned long long)y->files,
                 (unsigned long long)(y->syncs ? y->sync_ns_total / y->syncs / 1000 : 0),
                 (unsigned long long)(y->sync_ns_max / 1000), (unsigned long long)y->waiting,
                 (unsigned long long)y->inline_files);
    len += n < 0 ? 0 : (size_t)n >= cap - len ? cap - len - 1 : (size_t)n;
    /* Sessions whose worker's bell the loop waits on (doorbell.c): those that owe it
     * something; an idle one is not waited on. */
    uint32_t waits = 0;
    for (uint32_t i = 0; i < S.slot_high; i++)
        waits += S.sessions[i].state != S_FREE && S.sessions[i].doorbell_armed;
    n = snprintf(out + len, cap - len, " bell_waits=%u lazy_rings=%llu "
                 "snapshot_reports_ring_full=%llu", waits, (unsigned long long)S.stats.lazy_rings,
                 (unsigned long long)S.stats.snap_reports_ring_full);
    len += n < 0 ? 0 : (size_t)n >= cap - len ? cap - len - 1 : (size_t)n;
    if (len + 1 < cap) {
        out[len++] = '\n';
        out[len] = 0;
    }
    return len;
}

/* ---- control connections, served through io_uring (reqconn.c) ---- */

#define CTL_CONNS      64     /* at once; more are closed at accept */

static struct reqpool pool = {
    .what = "control", .n = CTL_CONNS, .in_max = CTL_LINE_MAX,
    .op_recv = OP_CTL_RECV, .op_send = OP_CTL_SEND,
};

/* Run one command; the reply goes to c->out (empty when out of memory). */
static void execute(struct reqconn *c)
{
    size_t cap = 256 * (size_t)S.nsessions + 4096;
    struct ctl_cmd cmd;
    struct session *s;

    if (outbuf_reserve(&c->out, cap) < 0)
        return;
    char *out = (char *)c->out.data;
    size_t outlen = 0;
    out[0] = 0;
    if (ctl_parse(c->in, c->inlen, &cmd, out, cap) < 0) {
        c->out.len = strlen(out);
        return;
    }
    switch (cmd.verb) {
    case CTL_SESSIONS:
        outlen = list_sessions(out, cap);
        break;
    case CTL_STATS:
        outlen = stats(out, cap);
        break;
    case CTL_SNAPSHOT:
        s = sess_find(cmd.id);
        if (!s)
            snprintf(out, cap, "error: no session %llu\n", (unsigned long long)cmd.id);
        else
            recovery_request_snapshot(s, out, cap);
        outlen = strlen(out);
        break;
    case CTL_KILL_WORKER:
        sess_kill_worker(cmd.id, out, cap);
        outlen = strlen(out);
        break;
    case CTL_MOVE:
        s = sess_find(cmd.id);
        if (!s)
            snprintf(out, cap, "error: no session %llu\n", (unsigned long long)cmd.id);
        else
            drain_move(s, out, cap);
        outlen = strlen(out);
        break;
    case CTL_LOG: {
        char path[PATH_MAX + 80], err[PATH_MAX + 160];
        s = sess_find(cmd.id);
        if (!s || !s->ctl)
            snprintf(out, cap, "error: no session %llu with events\n", (unsigned long long)cmd.id);
        else if (olog_dump(s, path, sizeof(path), err, sizeof(err)) < 0)
            snprintf(out, cap, "error: %s\n", err);
        else
            snprintf(out, cap, "ok log of session %llu: %llu events from position %llu in %s\n",
                     (unsigned long long)s->id, (unsigned long long)s->ev.count,
                     (unsigned long long)(s->ev.count ? s->ev.first : s->next_pos), path);
        outlen = strlen(out);
        break;
    }
    case CTL_DRAIN:
        snprintf(out, cap, "ok draining sessions=%u\n", S.nsessions);
        outlen = strlen(out);
        drain_start("cessna-ctl drain");
        break;
    }
    if (outlen >= cap)
        outlen = cap - 1;
    c->out.len = outlen;
}

void ctl_accept(int fd)
{
    if (!pool.conns && reqpool_init(&pool) < 0) {
        LOG(LOG_ERROR, "msg=\"control connection refused: out of memory\"");
        close(fd);
        return;
    }
    reqpool_add(&pool, fd);
}

void ctl_on_recv(uint32_t idx, int res)
{
    struct reqconn *c = reqpool_completed(&pool, idx);

    if (!c)
        return;
    if (c->closing || res < 0 || (res == 0 && !c->inlen))
        return reqpool_close(c);
    c->inlen += (size_t)res;
    char *nl = memchr(c->in, '\n', c->inlen);
    if (res > 0 && !nl && c->inlen < pool.in_max - 1)
        return reqpool_recv(&pool, c);   /* the rest of the line */
    if (nl)
        c->inlen = (size_t)(nl - c->in) + 1;
    execute(c);
    if (!c->out.len)
        return reqpool_close(c);
    reqpool_send(&pool, c);
}

void ctl_on_send(uint32_t idx, int res)
{
    reqpool_on_send(&pool, idx, res);
}

void ctl_sweep(uint64_t now_ms)
{
    S.stats.ctl_timeouts += reqpool_sweep(&pool, now_ms, S.cfg.control_timeout_ms);
}
