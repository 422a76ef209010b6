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
            "timers=%u order_held=%llu epoch=%llu remote_snapshot=%llu%s\n",
            (unsigned long long)s->id, s->worker_reaped ? 0 : (int)s->pid,
            ctl_state_name(s),
            (unsigned long long)events, (unsigned long long)(s->next_pos - 1),
            (unsigned long long)s->outputs[0], (unsigned long long)s->outputs[1], s->recoveries,
            standby, snapshot, (unsigned long long)s->snapshots,
            (unsigned long long)s->snap_bytes, (unsigned long long)(s->snap_fork_ns / 1000),
            (unsigned long long)(s->snap_write_ns / 1000), (unsigned long long)s->ev.count,
            (unsigned long long)evstore_bytes(&s->ev), (unsigned long long)s->snap_failures,
            timers_armed(s), (unsigned long long)(s->next_pos - s->order_base),
            (unsigned long long)s->epoch, (unsigned long long)s->remote_pos,
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
        "zygote=%s zygote_pid=%d dirs_removed=%llu ctl_timeouts=%llu resumes=%llu moves=%llu "
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
        S.zygote_sock >= 0 ? "up" : "restarting", S.zygote_sock >= 0 ? (int)S.zygote_pid : 0,
        (unsigned long long)S.stats.dirs_removed,
        (unsigned long long)S.stats.ctl_timeouts, (unsigned long long)S.stats.resumes,
        (unsigned long long)S.stats.moves, S.draining);
    size_t len = n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
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
    if (len + 1 < cap) {
        out[len++] = '\n';
        out[len] = 0;
    }
    return len;
}

/* ---- control connections, served through io_uring ---- */

#define CTL_CONNS      64     /* at once; more are closed at accept */

struct ctl_conn {
    int fd;                   /* -1: free */
    uint64_t start_ms;
    char in[CTL_LINE_MAX];
    size_t inlen;
    char *out;
    size_t outlen, sent;
    unsigned armed : 1, closing : 1;
};

static struct ctl_conn conns[CTL_CONNS];
static int conns_init;

static void conn_free(struct ctl_conn *c)
{
    close(c->fd);
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static void arm_recv(uint32_t idx)
{
    struct ctl_conn *c = &conns[idx];
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_recv(sqe, c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_CTL_RECV, idx, 0));
    c->armed = 1;
}

static void arm_send(uint32_t idx)
{
    struct ctl_conn *c = &conns[idx];
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_send(sqe, c->fd, c->out + c->sent, c->outlen - c->sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_CTL_SEND, idx, 0));
    c->armed = 1;
}

/* Run one command; the reply is malloc()ed into c->out. */
static void execute(struct ctl_conn *c)
{
    size_t cap = 256 * (size_t)S.nsessions + 4096;
    struct ctl_cmd cmd;
    struct session *s;

    c->out = malloc(cap);
    if (!c->out)
        return;
    c->out[0] = 0;
    if (ctl_parse(c->in, c->inlen, &cmd, c->out, cap) < 0) {
        c->outlen = strlen(c->out);
        return;
    }
    switch (cmd.verb) {
    case CTL_SESSIONS:
        c->outlen = list_sessions(c->out, cap);
        break;
    case CTL_STATS:
        c->outlen = stats(c->out, cap);
        break;
    case CTL_SNAPSHOT:
        s = sess_find(cmd.id);
        if (!s)
            snprintf(c->out, cap, "error: no session %llu\n", (unsigned long long)cmd.id);
        else
            recovery_request_snapshot(s, c->out, cap);
        c->outlen = strlen(c->out);
        break;
    case CTL_KILL_WORKER:
        sess_kill_worker(cmd.id, c->out, cap);
        c->outlen = strlen(c->out);
        break;
    case CTL_MOVE:
        s = sess_find(cmd.id);
        if (!s)
            snprintf(c->out, cap, "error: no session %llu\n", (unsigned long long)cmd.id);
        else
            drain_move(s, c->out, cap);
        c->outlen = strlen(c->out);
        break;
    case CTL_LOG: {
        char path[PATH_MAX + 80], err[PATH_MAX + 160];
        s = sess_find(cmd.id);
        if (!s || !s->ctl)
            snprintf(c->out, cap, "error: no session %llu with events\n", (unsigned long long)cmd.id);
        else if (olog_dump(s, path, sizeof(path), err, sizeof(err)) < 0)
            snprintf(c->out, cap, "error: %s\n", err);
        else
            snprintf(c->out, cap, "ok log of session %llu: %llu events from position %llu in %s\n",
                     (unsigned long long)s->id, (unsigned long long)s->ev.count,
                     (unsigned long long)(s->ev.count ? s->ev.first : s->next_pos), path);
        c->outlen = strlen(c->out);
        break;
    }
    case CTL_DRAIN:
        snprintf(c->out, cap, "ok draining sessions=%u\n", S.nsessions);
        c->outlen = strlen(c->out);
        drain_start("cessna-ctl drain");
        break;
    }
    if (c->outlen >= cap)
        c->outlen = cap - 1;
}

void ctl_accept(int fd)
{
    static uint64_t refused;

    if (!conns_init) {
        for (int i = 0; i < CTL_CONNS; i++)
            conns[i].fd = -1;
        conns_init = 1;
    }
    for (uint32_t i = 0; i < CTL_CONNS; i++) {
        if (conns[i].fd >= 0)
            continue;
        memset(&conns[i], 0, sizeof(conns[i]));
        conns[i].fd = fd;
        conns[i].start_ms = tmo_now_ms();
        arm_recv(i);
        return;
    }
    if (refused++ % 1000 == 0)
        LOG(LOG_WARN, "msg=\"control connection refused: too many open\" max=%d refused=%llu",
            CTL_CONNS, (unsigned long long)refused);
    close(fd);
}

void ctl_on_recv(uint32_t idx, int res)
{
    struct ctl_conn *c;

    if (idx >= CTL_CONNS || conns[idx].fd < 0)
        return;
    c = &conns[idx];
    c->armed = 0;
    if (c->closing || res < 0 || (res == 0 && !c->inlen))
        return conn_free(c);
    c->inlen += (size_t)res;
    if (res > 0 && !memchr(c->in, '\n', c->inlen) && c->inlen < sizeof(c->in) - 1)
        return arm_recv(idx);   /* the rest of the line */
    if (memchr(c->in, '\n', c->inlen))
        c->inlen = (size_t)((char *)memchr(c->in, '\n', c->inlen) - c->in) + 1;
    execute(c);
    if (!c->out || !c->outlen)
        return conn_free(c);
    arm_send(idx);
}

void ctl_on_send(uint32_t idx, int res)
{
    struct ctl_conn *c;

    if (idx >= CTL_CONNS || conns[idx].fd < 0)
        return;
    c = &conns[idx];
    c->armed = 0;
    if (res <= 0 || c->closing) {
        if (res < 0)
            LOG(LOG_DEBUG, "msg=\"control reply not delivered\" error=\"%s\"", strerror(-res));
        return conn_free(c);
    }
    c->sent += (size_t)res;
    if (c->sent < c->outlen)
        return arm_send(idx);
    conn_free(c);
}

void ctl_sweep(uint64_t now_ms)
{
    for (int i = 0; i < CTL_CONNS && conns_init; i++) {
        struct ctl_conn *c = &conns[i];
        if (c->fd < 0 || c->closing || now_ms - c->start_ms < S.cfg.control_timeout_ms)
            continue;
        c->closing = 1;
        S.stats.ctl_timeouts++;
        LOG(LOG_DEBUG, "msg=\"control connection timed out\" control_timeout_ms=%u",
            S.cfg.control_timeout_ms);
        if (c->armed)
            shutdown(c->fd, SHUT_RDWR);   /* its completion frees it */
        else
            conn_free(c);
    }
}
