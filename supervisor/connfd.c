/* connfd.c - a session's two sockets as io_uring direct descriptors (registered files).
 *
 * The ring has a table of 2 * max_sessions files; session slot i keeps its client socket at
 * index 2i and its server socket at 2i + 1, so there is nothing to allocate. Entries of the
 * table are not descriptors: RLIMIT_NOFILE counts none of them, and a session's connections
 * cost the process no descriptor at all. A socket is still accepted or created as a plain
 * descriptor (TCP_NODELAY and the peer's address for the session log are taken there), then
 * installed at its index and closed at once; from then on everything names it by index with
 * IOSQE_FIXED_FILE: recv, send, connect, shutdown, the SO_LINGER of a reset (a socket
 * command, Linux 6.7) and the close. Children forked later inherit none of them.
 *
 * Order: a shutdown runs in io_uring's worker threads, so a close prepared after it could
 * overtake it. A connection is therefore not closed while one of its shutdowns or
 * setsockopts is in flight (connfd_busy; session.c conn_close waits, as it waits for the
 * pending recv and send), and each of these operations, the close included, counts in
 * s->inflight: a slot, and with it its two indexes, is never taken again while an
 * operation on them is in flight.
 *
 * A kernel that cannot do all of this, or CESSNA_NO_DIRECT_FILES=1 in the environment,
 * keeps plain descriptors: c->fd is the descriptor and the same calls act on it at once. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connfd.h"
#include "log.h"
#include "sup.h"

/* Not in Debian 12's liburing 2.3 and kernel headers: io_uring socket commands (Linux 6.7,
 * SOCKET_URING_OP_SETSOCKOPT of include/uapi/linux/io_uring.h). Its arguments sit in the
 * SQE where the newer header names them: level and optname over addr (low and high 32
 * bits), optlen over file_index, optval over addr3. */
#define SOCK_CMD_SETSOCKOPT 3

static const struct linger linger0 = { .l_onoff = 1, .l_linger = 0 };

static void prep_setsockopt(struct io_uring_sqe *sqe, int fd, uint32_t level, uint32_t name,
                            const void *val, uint32_t len)
{
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
    sqe->cmd_op = SOCK_CMD_SETSOCKOPT;
    memcpy((char *)&sqe->addr, &level, sizeof(level));
    memcpy((char *)&sqe->addr + sizeof(level), &name, sizeof(name));
    sqe->file_index = len;
    sqe->addr3 = (uint64_t)(uintptr_t)val;
}

/* Submit what is prepared on r and wait for its one completion: its result. */
static int run_one(struct io_uring *r)
{
    struct io_uring_cqe *cqe;
    int rc = io_uring_submit_and_wait(r, 1);

    if (rc < 0)
        return rc;
    if ((rc = io_uring_wait_cqe(r, &cqe)) < 0)
        return rc;
    rc = cqe->res;
    io_uring_cqe_seen(r, cqe);
    return rc;
}

/* Everything a direct socket needs, tried on a ring of our own: a sparse table, a TCP
 * socket installed in it, SO_LINGER set by index and read back through the descriptor,
 * a shutdown and a close by index. A TCP socket, unconnected, rather than a socketpair:
 * the kind of socket it will act on (socket commands go through its protocol), and
 * nothing to connect. 0, or -1 with the step that failed in why. */
static int probe(char *why, size_t len)
{
    struct io_uring r;
    struct io_uring_sqe *sqe;
    struct linger got = { 0 };
    socklen_t glen = sizeof(got);
    int fd = -1, rc;

    if ((rc = io_uring_queue_init(4, &r, 0)) < 0) {
        snprintf(why, len, "io_uring: %s", strerror(-rc));
        return -1;
    }
    if ((rc = io_uring_register_files_sparse(&r, 1)) < 0) {
        snprintf(why, len, "register_files_sparse: %s", strerror(-rc));
        goto fail;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        rc = -errno;
        snprintf(why, len, "socket: %s", strerror(errno));
        goto fail;
    }
    if ((rc = io_uring_register_files_update(&r, 0, &fd, 1)) != 1) {
        snprintf(why, len, "register_files_update: %s", strerror(rc < 0 ? -rc : EIO));
        goto fail;
    }
    sqe = io_uring_get_sqe(&r);
    prep_setsockopt(sqe, 0, SOL_SOCKET, SO_LINGER, &linger0, sizeof(linger0));
    sqe->flags |= IOSQE_FIXED_FILE;
    if ((rc = run_one(&r)) < 0) {
        snprintf(why, len, "setsockopt socket command: %s", strerror(-rc));
        goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &got, &glen) == -1 || !got.l_onoff) {
        rc = -EINVAL;
        snprintf(why, len, "setsockopt socket command: SO_LINGER not set");
        goto fail;
    }
    sqe = io_uring_get_sqe(&r);
    io_uring_prep_shutdown(sqe, 0, SHUT_RDWR);
    sqe->flags |= IOSQE_FIXED_FILE;
    if ((rc = run_one(&r)) < 0 && rc != -ENOTCONN) {   /* not connected: that is all */
        snprintf(why, len, "shutdown by index: %s", strerror(-rc));
        goto fail;
    }
    sqe = io_uring_get_sqe(&r);
    io_uring_prep_close_direct(sqe, 0);
    if ((rc = run_one(&r)) < 0) {
        snprintf(why, len, "close by index: %s", strerror(-rc));
        goto fail;
    }
    close(fd);
    io_uring_queue_exit(&r);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    io_uring_queue_exit(&r);
    return -1;
}

void connfd_probe(void)
{
    const char *off = getenv("CESSNA_NO_DIRECT_FILES");
    char why[160];

    S.direct = 0;
    if (off && *off && strcmp(off, "0") != 0) {
        LOG(LOG_INFO, "msg=\"session sockets stay plain descriptors\" "
            "why=\"CESSNA_NO_DIRECT_FILES is set\"");
        return;
    }
    if (probe(why, sizeof(why)) < 0) {
        LOG(LOG_INFO, "msg=\"io_uring cannot keep session sockets as direct descriptors "
            "(Linux < 6.7?): they stay plain descriptors\" why=\"%s\"", why);
        return;
    }
    S.direct = 1;
}

int connfd_register(unsigned slots)
{
    int rc;

    if (!S.direct)
        return 0;
    if ((rc = io_uring_register_files_sparse(&S.ring, 2 * slots)) < 0) {
        LOG(LOG_WARN, "msg=\"io_uring file table: session sockets stay plain descriptors\" "
            "entries=%u error=\"%s\"", 2 * slots, strerror(-rc));
        S.direct = 0;
        return rc;
    }
    LOG(LOG_INFO, "msg=\"session sockets are io_uring direct descriptors\" max_sessions=%u "
        "table_entries=%u", slots, 2 * slots);
    return 0;
}

int connfd_install(struct session *s, struct conn *c, int fd)
{
    int idx = (int)(2 * s->slot + (uint32_t)c->side), rc;

    c->shut = 0;
    c->ctl_ops = 0;
    if (!S.direct) {
        c->fd = fd;
        return 0;
    }
    rc = io_uring_register_files_update(&S.ring, (unsigned)idx, &fd, 1);
    close(fd);   /* the table holds the socket now (or nobody does) */
    if (rc != 1) {
        c->fd = -1;
        return rc < 0 ? rc : -EIO;
    }
    c->fd = idx;
    return 0;
}

void connfd_prep(struct io_uring_sqe *sqe)
{
    if (S.direct)
        sqe->flags |= IOSQE_FIXED_FILE;
}

/* A shutdown or setsockopt prepared on c's index: counted until OP_SOCK_CTL completes
 * (a close waits for it, connfd_busy). */
static void submit_ctl(struct session *s, struct conn *c, struct io_uring_sqe *sqe)
{
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, UD(OP_SOCK_CTL, s->slot, c->side));
    c->ctl_ops++;
    s->inflight++;
}

void connfd_shutdown(struct session *s, struct conn *c, int how)
{
    unsigned bits = how == SHUT_RD ? 1u : how == SHUT_WR ? 2u : 3u;

    if (c->fd < 0 || (c->shut & bits) == bits)
        return;
    c->shut |= bits;
    if (!S.direct) {
        shutdown(c->fd, how);
        return;
    }
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_shutdown(sqe, c->fd, how);
    submit_ctl(s, c, sqe);
}

void connfd_linger0(struct session *s, struct conn *c)
{
    if (c->fd < 0)
        return;
    if (!S.direct) {
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &linger0, sizeof(linger0));
        return;
    }
    struct io_uring_sqe *sqe = sup_sqe();
    prep_setsockopt(sqe, c->fd, SOL_SOCKET, SO_LINGER, &linger0, sizeof(linger0));
    submit_ctl(s, c, sqe);
}

void connfd_close(struct session *s, struct conn *c)
{
    if (c->fd < 0)
        return;
    if (!S.direct) {
        close(c->fd);
    } else {
        struct io_uring_sqe *sqe = sup_sqe();
        io_uring_prep_close_direct(sqe, (unsigned)c->fd);
        io_uring_sqe_set_data64(sqe, UD(OP_SOCK_CLOSE, s->slot, c->side));
        s->inflight++;
    }
    c->fd = -1;
}

int connfd_busy(const struct conn *c)
{
    return c->ctl_ops != 0;
}

void connfd_ctl_done(struct session *s, struct conn *c, int res)
{
    if (c->ctl_ops)
        c->ctl_ops--;
    sess_release_op(s);
    /* A peer that reset or never answered leaves nothing to shut down: not worth a line. */
    if (res < 0 && res != -ENOTCONN)
        LOG(LOG_DEBUG, "session=%llu msg=\"socket shutdown or setsockopt\" side=%s "
            "error=\"%s\"", (unsigned long long)s->id,
            c->side == SIDE_CLIENT ? "client" : "server", strerror(-res));
}

void connfd_close_done(struct session *s, int side, int res)
{
    sess_release_op(s);
    if (res < 0)
        LOG(LOG_WARN, "session=%llu msg=\"close of a direct socket\" side=%s error=\"%s\"",
            (unsigned long long)s->id, side == SIDE_CLIENT ? "client" : "server",
            strerror(-res));
}
