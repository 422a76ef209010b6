/* ep_priv.h - the inside of struct cessna_ep, shared by endpoint.c (sessions and the
 * client's resume) and ep_server.c (native servers that hold sessions across edges).
 *
 * Threads: one sender and one receiver per endpoint, plus (server) the accept thread that
 * attaches a resumed edge. Locks, always taken in this order:
 *   resume_mu  one resume at a time (the client's; the server's attach),
 *   wlock      the socket's write side: one frame at a time,
 *   lock       keep, last_out, next_seq, fd, gen, resuming, state; cond waits on it.
 * A new connection bumps gen; the receiver drops what it buffered from the old one the
 * next time it reads, and closes the old fd (stale_fd) then. */
#ifndef CESSNA_EP_PRIV_H
#define CESSNA_EP_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cessna_endpoint.h"
#include "keep.h"
#include "wire.h"

#define EP_HANDSHAKE_MS   10000
#define EP_HS_FRAME_MAX   1024u   /* HELLO, WELCOME, RESUME, ERROR are small */

enum ep_role { EP_CLIENT, EP_SERVER };

struct store;
struct cessna_ep_server;

struct cessna_ep {
    int fd;
    int nonblocking;
    enum ep_role role;
    uint64_t session_id;
    uint8_t token[WIRE_TOKEN_LEN];
    size_t max_msg;
    size_t max_body;

    pthread_mutex_t resume_mu, wlock, lock;
    pthread_cond_t cond;        /* room in keep, a new connection, a final state */
    uint64_t gen;               /* bumped by every new edge connection */
    int stale_fd;               /* the previous connection, closed by the receiver */
    bool resuming;              /* frames from the old connection are dropped */
    bool resumable;             /* keep what a new edge needs; lost edges are resumed */
    bool close_sent;
    struct keep keep;           /* keep.epoch is the session's epoch */
    int resume_timeout_ms;      /* client: trying edges; server: waiting for a RESUME */

    /* Client side. */
    char **edges;
    int nedges, cur;
    int heartbeat_ms;
    int handshake_ms;           /* per edge: connect, then WELCOME */
    int edge_retry_ms;          /* a failed edge is skipped this long; 0: never */
    int64_t last_rx;            /* when the edge's last bytes arrived */

    /* Server side (ep_server.c). */
    struct cessna_ep_server *srv;
    struct store *store;
    uint8_t verifier[WIRE_VERIFIER_LEN];
    struct cessna_ep *srv_next;

    /* Sender side. */
    uint64_t next_seq;
    uint8_t *scratch;           /* a DATA frame assembled for keep */
    size_t scratch_cap;

    /* Receiver side: frames are parsed in place from rbuf[roff, roff + rlen). */
    uint64_t rgen;              /* the connection rbuf's bytes came from */
    uint8_t *rbuf;
    size_t rcap, roff, rlen;
    size_t consumed;
    int state;                  /* 0 open, 1 closed by the edge, or a sticky -errno */
    uint64_t last_out;
    uint8_t *order;
    size_t order_len, order_cap;
    uint64_t order_time;
    char err[WIRE_ERROR_MAX + 256];
};

/* A growable byte buffer for frames built before they are written. */
struct ep_buf {
    uint8_t *p;
    size_t len, cap;
    int rc;                     /* -ENOMEM once a put failed */
};
void ep_buf_put(struct ep_buf *b, const void *data, size_t len);

int64_t ep_now_ms(void);
struct cessna_ep *ep_new(int fd, enum ep_role role);
void ep_seterr(struct cessna_ep *ep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whole buffer to fd before deadline (monotonic ms). 0, -ETIMEDOUT or -errno. */
int  ep_write_all(int fd, const void *buf, size_t len, int64_t deadline);
/* One whole frame from fd before deadline, reading exactly its bytes (what follows stays
 * in the socket): its total length, or -ETIMEDOUT, -ECONNRESET (EOF), -EPROTO, -EMSGSIZE. */
long ep_read_hs_frame(int fd, uint8_t *buf, size_t cap, struct wire_frame *f, int64_t deadline);
/* Best effort ERROR on a connection that is being given up. */
void ep_refuse(int fd, uint32_t code, const char *text);

/* ep_server.c: a SNAP_PUT piece for a server endpoint (called with ep->lock held). 0, or
 * -errno with the reason in ep->err; *ack is set when the file is durable. */
int  ep_server_snap_put(struct cessna_ep *ep, const struct wire_frame *f, int *ack);
/* The session ended (CLOSE): forget its stored snapshots. */
void ep_server_ended(struct cessna_ep *ep);
void ep_server_forget(struct cessna_ep *ep);

#endif
