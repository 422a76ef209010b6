/* control.c - the control socket that cessna-ctl talks to: one command line in, text out.
 *
 * Commands are served inline in the loop, on a socket with short timeouts: the socket is
 * the operator's (mode 0600), and a command is one small read and one small write. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "sup.h"

#define CTL_TIMEOUT_MS 200

static const char *const state_names[] = {
    [S_FREE] = "free", [S_HELLO] = "hello", [S_CONNECTING] = "connecting",
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
    unlink(path);   /* a stale socket of an earlier run */
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
static const char *recovery_timing(const struct session *s, char *buf, size_t len)
{
    uint64_t started, load, replayed;

    buf[0] = 0;
    if (!s->recoveries || !s->ctl)
        return buf;
    started = atomic_load(&s->ctl->started_ns);
    load = atomic_load(&s->ctl->load_ns);
    replayed = atomic_load(&s->ctl->replayed_ns);
    if (!started || started < s->died_ns)
        return buf;
    uint64_t start_us = (started - s->died_ns) / 1000;
    if (!replayed || replayed < started) {
        snprintf(buf, len, " recovery=%s recovery_start_us=%llu recovery_load_us=%llu "
                 "recovery_replay_us=-", s->recovery_mode ? s->recovery_mode : "?",
                 (unsigned long long)start_us, (unsigned long long)(load / 1000));
        return buf;
    }
    snprintf(buf, len, " recovery=%s recovery_us=%llu recovery_start_us=%llu "
             "recovery_load_us=%llu recovery_replay_us=%llu",
             s->recovery_mode ? s->recovery_mode : "?",
             (unsigned long long)((replayed - s->died_ns) / 1000), (unsigned long long)start_us,
             (unsigned long long)(load / 1000),
             (unsigned long long)((replayed - started - load) / 1000));
    return buf;
}

static size_t list_sessions(char *out, size_t cap)
{
    size_t n = 0;

    for (uint32_t i = 0; i < S.cfg.max_sessions && n + 512 < cap; i++) {
        struct session *s = &S.sessions[i];
        char standby[16] = "-", snapshot[24] = "-", timing[200];
        if (s->state == S_FREE || s->state == S_HELLO)
            continue;
        if (s->standby_pid > 0)
            snprintf(standby, sizeof(standby), "%d", (int)s->standby_pid);
        if (s->snap_pos)
            snprintf(snapshot, sizeof(snapshot), "%llu", (unsigned long long)s->snap_pos);
        uint64_t events = s->ctl ? atomic_load(&s->ctl->consumed) : 0;
        n += (size_t)snprintf(out + n, cap - n,
            "id=%llu worker=%d state=%s events=%llu ordered=%llu to_client=%llu to_server=%llu "
            "recoveries=%u standby=%s snapshot=%s snapshots=%llu snapshot_bytes=%llu "
            "fork_us=%llu write_us=%llu held_events=%llu%s\n",
            (unsigned long long)s->id, s->worker_reaped ? 0 : (int)s->pid, state_names[s->state],
            (unsigned long long)events, (unsigned long long)(s->next_pos - 1),
            (unsigned long long)s->outputs[0], (unsigned long long)s->outputs[1], s->recoveries,
            standby, snapshot, (unsigned long long)s->snapshots,
            (unsigned long long)s->snap_bytes, (unsigned long long)(s->snap_fork_ns / 1000),
            (unsigned long long)(s->snap_write_ns / 1000), (unsigned long long)s->ev.count,
            recovery_timing(s, timing, sizeof(timing)));
    }
    return n;
}

static size_t stats(char *out, size_t cap)
{
    return (size_t)snprintf(out, cap,
        "sessions=%u sessions_total=%llu sessions_failed=%llu worker_deaths=%llu "
        "bad_frames=%llu msgs_in=%llu msgs_out=%llu bytes_in=%llu bytes_out=%llu recoveries=%llu "
        "hot_takeovers=%llu cold_restores=%llu snapshots=%llu snapshot_failures=%llu "
        "log_failures=%llu\n",
        S.nsessions, (unsigned long long)S.stats.sessions_total,
        (unsigned long long)S.stats.sessions_failed, (unsigned long long)S.stats.worker_deaths,
        (unsigned long long)S.stats.bad_frames, (unsigned long long)S.stats.msgs_in,
        (unsigned long long)S.stats.msgs_out, (unsigned long long)S.stats.bytes_in,
        (unsigned long long)S.stats.bytes_out, (unsigned long long)S.stats.recoveries,
        (unsigned long long)S.stats.hot_takeovers, (unsigned long long)S.stats.cold_restores,
        (unsigned long long)S.stats.snapshots, (unsigned long long)S.stats.snapshot_failures,
        (unsigned long long)S.stats.log_failures);
}

void ctl_serve(int fd)
{
    struct timeval tv = { 0, CTL_TIMEOUT_MS * 1000 };
    char cmd[256], *out;
    size_t cap = 256 * (size_t)S.cfg.max_sessions + 4096, n = 0;
    ssize_t got;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    got = recv(fd, cmd, sizeof(cmd) - 1, 0);
    out = malloc(cap);
    if (got <= 0 || !out) {
        free(out);
        close(fd);
        return;
    }
    cmd[got] = 0;
    cmd[strcspn(cmd, "\r\n")] = 0;
    if (strcmp(cmd, "sessions") == 0) {
        n = list_sessions(out, cap);
    } else if (strcmp(cmd, "stats") == 0) {
        n = stats(out, cap);
    } else if (strncmp(cmd, "snapshot ", 9) == 0) {
        char *end;
        unsigned long long id = strtoull(cmd + 9, &end, 0);
        struct session *s = *end || end == cmd + 9 ? NULL : sess_find(id);
        if (!s)
            n = (size_t)snprintf(out, cap, "error: no session '%s'\n", cmd + 9);
        else {
            recovery_request_snapshot(s, out, cap);
            n = strlen(out);
        }
    } else if (strncmp(cmd, "kill-worker ", 12) == 0) {
        char *end;
        unsigned long long id = strtoull(cmd + 12, &end, 0);
        if (*end || end == cmd + 12)
            n = (size_t)snprintf(out, cap, "error: bad session id '%s'\n", cmd + 12);
        else {
            sess_kill_worker(id, out, cap);
            n = strlen(out);
        }
    } else {
        n = (size_t)snprintf(out, cap, "error: unknown command '%s' (sessions, stats, "
                             "kill-worker ID, snapshot ID)\n", cmd);
    }
    if (send(fd, out, n, MSG_NOSIGNAL) == -1)
        LOG(LOG_DEBUG, "msg=\"control reply not delivered\" error=\"%s\"", strerror(errno));
    free(out);
    close(fd);
}
