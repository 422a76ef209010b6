/* reqconn.c - see reqconn.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "reqconn.h"
#include "timeouts.h"

int reqpool_init(struct reqpool *p)
{
    p->conns = calloc(p->n, sizeof(*p->conns));
    if (!p->conns)
        return -ENOMEM;
    for (unsigned i = 0; i < p->n; i++) {
        p->conns[i].fd = -1;
        if (!(p->conns[i].in = malloc(p->in_max)))
            return -ENOMEM;
    }
    return 0;
}

void reqpool_close(struct reqconn *c)
{
    char *in = c->in;

    close(c->fd);
    free(c->out.data);
    memset(c, 0, sizeof(*c));
    c->in = in;
    c->fd = -1;
}

void reqpool_add(struct reqpool *p, int fd)
{
    for (unsigned i = 0; p->conns && i < p->n; i++) {
        struct reqconn *c = &p->conns[i];
        if (c->fd >= 0)
            continue;
        c->fd = fd;
        c->start_ms = tmo_now_ms();
        return reqpool_recv(p, c);
    }
    if (p->refused++ % 1000 == 0)
        LOG(LOG_WARN, "msg=\"%s connection refused: too many open\" max=%u refused=%llu",
            p->what, p->n, (unsigned long long)p->refused);
    close(fd);
}

struct reqconn *reqpool_completed(struct reqpool *p, uint32_t idx)
{
    if (!p->conns || idx >= p->n || p->conns[idx].fd < 0)
        return NULL;
    p->conns[idx].armed = 0;
    return &p->conns[idx];
}

void reqpool_recv(struct reqpool *p, struct reqconn *c)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_recv(sqe, c->fd, c->in + c->inlen, p->in_max - 1 - c->inlen, 0);
    io_uring_sqe_set_data64(sqe, UD(p->op_recv, (uint32_t)(c - p->conns), 0));
    c->armed = 1;
}

void reqpool_send(struct reqpool *p, struct reqconn *c)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_send(sqe, c->fd, c->out.data + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(p->op_send, (uint32_t)(c - p->conns), 0));
    c->armed = 1;
}

void reqpool_on_send(struct reqpool *p, uint32_t idx, int res)
{
    struct reqconn *c = reqpool_completed(p, idx);

    if (!c)
        return;
    if (res <= 0 || c->closing) {
        if (res < 0)
            LOG(LOG_DEBUG, "msg=\"%s reply not delivered\" error=\"%s\"", p->what,
                strerror(-res));
        return reqpool_close(c);
    }
    c->sent += (size_t)res;
    if (c->sent < c->out.len)
        return reqpool_send(p, c);
    reqpool_close(c);
}

unsigned reqpool_sweep(struct reqpool *p, uint64_t now_ms, uint64_t timeout_ms)
{
    unsigned n = 0;

    for (unsigned i = 0; p->conns && i < p->n; i++) {
        struct reqconn *c = &p->conns[i];
        if (c->fd < 0 || c->closing || now_ms - c->start_ms < timeout_ms)
            continue;
        c->closing = 1;
        n++;
        LOG(LOG_DEBUG, "msg=\"%s connection timed out\" after_ms=%llu", p->what,
            (unsigned long long)timeout_ms);
        if (c->armed)
            shutdown(c->fd, SHUT_RDWR);   /* its completion frees it */
        else
            reqpool_close(c);
    }
    return n;
}
