/* reqconn.h - short request/reply connections served through io_uring: the control socket
 * (control.c) and the metrics endpoint (metrics.c).
 *
 * A pool is a fixed table of slots. A connection gets a slot and a receive; its owner is
 * called on each receive completion and either asks for more or puts a reply in c->out;
 * sends go on until the reply is out, then the connection closes. A full table refuses
 * (closed at once, logged at most once per 1000), and the sweep closes a connection that is
 * not done in time, so a slow, silent or hostile peer costs one slot and never the loop. */
#ifndef CESSNA_REQCONN_H
#define CESSNA_REQCONN_H

#include <stddef.h>
#include <stdint.h>

#include "sup.h"

struct reqconn {
    int fd;                   /* -1: free */
    uint64_t start_ms;
    char *in;                 /* in_max bytes, the pool's: a request of in_max - 1 at most,
                               * so there is always room for a NUL after it */
    size_t inlen;
    struct outbuf out;        /* the reply */
    size_t sent;
    unsigned armed : 1, closing : 1;
};

struct reqpool {
    const char *what;         /* "control", "metrics": in log lines */
    unsigned n;               /* slots */
    size_t in_max;            /* request bytes at most */
    uint8_t op_recv, op_send; /* the io_uring ops of its completions (sup.h) */
    struct reqconn *conns;    /* allocated by reqpool_init */
    uint64_t refused;
};

/* Allocates the slots and their request buffers; -ENOMEM. */
int  reqpool_init(struct reqpool *p);
/* A new connection: a free slot and a receive, or refused and closed. */
void reqpool_add(struct reqpool *p, int fd);
/* On a completion for slot idx: the connection it was for (no longer armed), or NULL. */
struct reqconn *reqpool_completed(struct reqpool *p, uint32_t idx);
/* Receive more of the request into c->in after c->inlen (inlen < in_max - 1). */
void reqpool_recv(struct reqpool *p, struct reqconn *c);
/* Send c->out (from c->sent); the send completions are reqpool_on_send's. */
void reqpool_send(struct reqpool *p, struct reqconn *c);
void reqpool_on_send(struct reqpool *p, uint32_t idx, int res);
void reqpool_close(struct reqconn *c);
/* Close the connections older than timeout_ms; returns how many. */
unsigned reqpool_sweep(struct reqpool *p, uint64_t now_ms, uint64_t timeout_ms);

#endif
