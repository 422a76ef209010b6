/* edgectl.c - one edge session driven from outside, for the snapshot and recovery sections:
 * commands on the supervisor's control socket (connect, write one line, read the reply
 * until EOF), the fields of its key=value lines, a snapshot taken and waited for until
 * durable, and messages with a deadline (a broken edge ends the run with an error, never
 * a hang).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cessna_endpoint.h"

#define CTL_IO_TIMEOUT_MS 5000
#define SNAP_TIMEOUT_MS   120000 /* a 256 MiB snapshot is written and fsynced meanwhile */

uint64_t ectl_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ectl_pause_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int ctl_connect(const char *sock, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { CTL_IO_TIMEOUT_MS / 1000, 0 };
    int fd, rc;

    if (strlen(sock) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", sock);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, sock);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        rc = -errno;
        snprintf(err, errlen, "control socket %s: connect: %s", sock, strerror(errno));
        if (fd != -1)
            close(fd);
        return rc;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

int ectl_cmd(const char *sock, const char *cmd, char *out, size_t outlen, char *err,
             size_t errlen)
{
    char line[256];
    size_t have = 0;
    int fd = ctl_connect(sock, err, errlen), rc = 0;

    if (fd < 0)
        return fd;
    snprintf(line, sizeof(line), "%s\n", cmd);
    ssize_t sent = send(fd, line, strlen(line), MSG_NOSIGNAL);
    if (sent != (ssize_t)strlen(line)) {
        rc = sent == -1 ? -errno : -EIO;
        snprintf(err, errlen, "control '%s': send: %s", cmd, strerror(-rc));
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, out + have, outlen - 1 - have);

        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1) {
            rc = -errno;
            snprintf(err, errlen, "control '%s': read: %s", cmd, strerror(errno));
            goto out;
        }
        if (n == 0 || (have += (size_t)n) == outlen - 1)
            break;
    }
    out[have] = 0;
    if (have == 0) {
        snprintf(err, errlen, "control '%s': empty reply", cmd);
        rc = -EPROTO;
    }
out:
    close(fd);
    return rc;
}

int ectl_session(const char *sock, uint64_t id, char *line, size_t len, char *err,
                 size_t errlen)
{
    static char all[256 * 1024];   /* every session's line; the bench asks from one thread */
    char key[32];
    int rc = ectl_cmd(sock, "sessions", all, sizeof(all), err, errlen);

    if (rc < 0)
        return rc;
    snprintf(key, sizeof(key), "id=%" PRIu64 " ", id);
    for (char *l = all; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, strlen(key)) != 0)
            continue;
        size_t n = strcspn(l, "\n");
        if (n >= len)
            n = len - 1;
        memcpy(line, l, n);
        line[n] = 0;
        return 0;
    }
    snprintf(err, errlen, "control 'sessions' does not list session %" PRIu64, id);
    return -ENOENT;
}

/* Where " key=" (or "key=" at the start) is in line: the value, or NULL. */
static const char *field_at(const char *line, const char *key)
{
    size_t klen = strlen(key);

    for (const char *p = line; (p = strstr(p, key)); p += klen)
        if ((p == line || p[-1] == ' ') && p[klen] == '=')
            return p + klen + 1;
    return NULL;
}

int ectl_field(const char *line, const char *key, uint64_t *v)
{
    const char *p = field_at(line, key);
    char *end;

    if (!p || *p < '0' || *p > '9')
        return -ENOENT;
    *v = strtoull(p, &end, 10);
    return 0;
}

void ectl_text(const char *line, const char *key, char *out, size_t outlen)
{
    const char *p = field_at(line, key);
    size_t n = p ? strcspn(p, " \n") : 0;

    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p ? p : "", n);
    out[n] = 0;
}

/* "ok snapshot of session 7 at position 12 (full) requested" */
static int parse_snap_reply(const char *reply, struct ectl_snap *r, char *err, size_t errlen)
{
    const char *at = strstr(reply, "at position ");

    if (strncmp(reply, "ok", 2) != 0 || !at) {
        snprintf(err, errlen, "control 'snapshot' refused: %.*s", (int)strcspn(reply, "\n"),
                 reply);
        return -EPROTO;
    }
    r->position = strtoull(at + 12, NULL, 10);
    r->full = strstr(reply, "(full)") != NULL;
    return 0;
}

/* The supervisor's count of failed snapshots (stats snapshot_failures=). */
static int snap_failures(const char *sock, uint64_t *n, char *err, size_t errlen)
{
    char buf[1024];
    int rc = ectl_cmd(sock, "stats", buf, sizeof(buf), err, errlen);

    if (rc == 0 && ectl_field(buf, "snapshot_failures", n) < 0) {
        snprintf(err, errlen, "control 'stats' has no snapshot_failures=");
        rc = -EPROTO;
    }
    return rc;
}

/* Poll `sessions` until snapshots= passes `before` at the asked position, backing off from
 * 200 µs to 10 ms (the polls wake the supervisor, on a machine the snapshot child shares).
 * Every 20 polls (and at the deadline) look for a failed snapshot or a dead process, to
 * say why. */
static int wait_durable(struct bench_stack *s, uint64_t id, uint64_t before, uint64_t failed0,
                        struct ectl_snap *r, char *err, size_t errlen)
{
    uint64_t deadline = ectl_now_ns() + (uint64_t)SNAP_TIMEOUT_MS * 1000000u, count, pos;
    long wait_us = 200;

    for (int poll = 1;; poll++) {
        int rc = ectl_session(s->control, id, r->line, sizeof(r->line), err, errlen);

        if (rc < 0)
            return rc;
        if (ectl_field(r->line, "snapshots", &count) == 0 && count > before &&
            ectl_field(r->line, "snapshot", &pos) == 0 && pos >= r->position)
            return 0;
        if (poll % 20 == 0 || ectl_now_ns() > deadline) {
            uint64_t failed;
            if (stack_check(s, err, errlen) < 0)
                return -ECHILD;
            rc = snap_failures(s->control, &failed, err, errlen);
            if (rc < 0)
                return rc;
            if (failed > failed0) {
                snprintf(err, errlen, "the snapshot at position %" PRIu64 " failed (stats "
                         "snapshot_failures=%" PRIu64 "; see the supervisor's log)",
                         r->position, failed);
                return -EIO;
            }
            if (ectl_now_ns() > deadline) {
                snprintf(err, errlen, "the snapshot at position %" PRIu64 " was not durable "
                         "after %d ms (last: %s)", r->position, SNAP_TIMEOUT_MS, r->line);
                return -ETIMEDOUT;
            }
        }
        ectl_pause_us(wait_us);
        wait_us = wait_us * 2 > 10000 ? 10000 : wait_us * 2;
    }
}

int ectl_snapshot(struct bench_stack *s, uint64_t id, struct ectl_snap *r, char *err,
                  size_t errlen)
{
    char cmd[64], reply[512];
    uint64_t before = 0, failed0 = 0;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = ectl_session(s->control, id, r->line, sizeof(r->line), err, errlen);
    if (rc == 0)
        ectl_field(r->line, "snapshots", &before);
    if (rc == 0)
        rc = snap_failures(s->control, &failed0, err, errlen);
    snprintf(cmd, sizeof(cmd), "snapshot %" PRIu64, id);
    if (rc == 0)
        rc = ectl_cmd(s->control, cmd, reply, sizeof(reply), err, errlen);
    if (rc == 0)
        rc = parse_snap_reply(reply, r, err, errlen);
    if (rc == 0)
        rc = wait_durable(s, id, before, failed0, r, err, errlen);
    if (rc < 0)
        return rc;
    if (ectl_field(r->line, "fork_us", &r->fork_us) < 0 ||
        ectl_field(r->line, "write_us", &r->write_us) < 0 ||
        ectl_field(r->line, "snapshot_bytes", &r->bytes) < 0) {
        snprintf(err, errlen, "the sessions line lacks fork_us=, write_us= or snapshot_bytes=: "
                 "%s", r->line);
        return -EPROTO;
    }
    return 0;
}

long ectl_recv(struct bench_conn *c, const void **data, int timeout_ms, char *err,
               size_t errlen)
{
    uint64_t deadline = ectl_now_ns() + (uint64_t)timeout_ms * 1000000u;

    cessna_ep_set_nonblocking(c->ep, 1);
    for (;;) {
        long n = cessna_ep_recv(c->ep, data);

        if (n >= 0)
            return n;
        if (n == CESSNA_EP_CLOSED) {
            snprintf(err, errlen, "the edge closed the session");
            return -ECONNRESET;
        }
        if (n != -EAGAIN) {
            snprintf(err, errlen, "cessna_ep_recv: %s %s", strerror((int)-n),
                     cessna_ep_error(c->ep));
            return n;
        }
        uint64_t now = ectl_now_ns();
        if (now >= deadline) {
            snprintf(err, errlen, "no message from the edge within %d ms", timeout_ms);
            return -ETIMEDOUT;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int left = (int)((deadline - now) / 1000000u) + 1;
        if (poll(&pfd, 1, left) == -1 && errno != EINTR) {
            int rc = -errno;
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return rc;
        }
    }
}

int ectl_ask(struct bench_conn *c, const char *msg, size_t len, char *buf, size_t cap,
             int timeout_ms, char *err, size_t errlen)
{
    const void *data;
    long n;
    int rc = cessna_ep_send(c->ep, msg, len);

    if (rc < 0) {
        snprintf(err, errlen, "cessna_ep_send: %s %s", strerror(-rc), cessna_ep_error(c->ep));
        return rc;
    }
    n = ectl_recv(c, &data, timeout_ms, err, errlen);
    if (n < 0)
        return (int)n;
    if ((size_t)n >= cap)
        n = (long)cap - 1;
    memcpy(buf, data, (size_t)n);
    buf[n] = 0;
    return 0;
}
