/* relay.h - the core shared by cessna-client-proxy and cessna-server-proxy: one process
 * per connection pair relaying between a plain TCP peer and an edge (CESSNA frames).
 *
 * One poll() loop, nonblocking sockets and a bounded buffer per direction: a side is not
 * read while the buffer toward the other side is over RELAY_LIMIT, so neither direction
 * ever waits on the other. Every chunk read from the plain peer becomes one DATA frame;
 * every new OUT payload is written to the plain peer. */
#ifndef CESSNA_RELAY_H
#define CESSNA_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

#define RELAY_LIMIT      (4u << 20)  /* stop reading a side past this much pending output */
#define RELAY_IN_MIN     (64u << 10) /* initial edge input buffer, and least read size */
#define RELAY_DRAIN_MS   5000        /* flushing what is left once the session ended */
#define HANDSHAKE_MS     10000
#define CLOSE_WAIT_MS    5000        /* default wait for the edge's CLOSE after the plain EOF */
#define MAX_MESSAGE_MAX  (1u << 30)
#define RELAY_CTL_ROOM   (2 * (WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX)) /* CLOSE, ERROR */

/* ---- relay core ---- */

struct buf {
    uint8_t *p;
    size_t cap, off, len;   /* pending bytes are p[off, off + len) */
};

struct relay {
    int efd;                /* the edge: CESSNA frames */
    int pfd;                /* the plain TCP peer */
    uint64_t session_id;
    size_t max_msg, max_body;
    struct buf in;          /* read from the edge, not yet handled */
    struct buf to_edge;     /* whole DATA, CLOSE and ERROR frames */
    struct buf to_plain;    /* OUT payloads */
    uint64_t seq;           /* last DATA sent */
    uint64_t last_out;      /* last OUT received */
    uint64_t order_time;    /* time of the last order entry seen */
    int close_wait_ms;      /* for the edge's CLOSE after the plain peer's EOF; -1: for ever */
    int64_t deadline;       /* 0, or when to give up (monotonic ms) */
    bool plain_eof;         /* nothing more to read from the plain peer */
    bool plain_dead;        /* nor to write to it */
    bool edge_dead;         /* the edge connection failed */
    bool close_sent;
    bool done;              /* the session ended: only flushing is left */
};

int  relay_init(struct relay *r, int efd, int pfd, size_t max_msg);
/* Relay until the session ends and everything is flushed (or given up on). */
void relay_run(struct relay *r);
void relay_free(struct relay *r);
/* The edge sent something wrong: queue ERROR to it and end the session. */
void relay_fail(struct relay *r, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void buf_put(struct buf *b, const void *data, size_t len);
/* Wait for one whole frame from the edge into r->in; it stays there. 0 with *f, or -errno
 * (-ETIMEDOUT, -ECONNRESET at end of stream, -EPROTO, -EMSGSIZE). */
int  handshake_frame(struct relay *r, struct wire_frame *f, size_t *flen);

/* Print "ready listen=ADDR" for the bound listener. 0 or -errno. */
int  proxy_print_ready(int lfd);
/* Accept for ever; each connection gets a child process running serve(fd). */
void proxy_accept_loop(int lfd, void (*serve)(int fd));

/* What differs between the two proxies' command lines. */
struct proxy_spec {
    const char *name;         /* "cessna-client-proxy" */
    const char *peer_opt;     /* "edge" or "target" */
    const char *usage;        /* the --help text */
    void (*serve)(int fd);    /* runs in the child for each accepted connection */
    const char **peer;        /* where the peer option's value goes */
    size_t *max_msg;          /* where --max-message-bytes goes (holds the default) */
};
/* Parse the command line, listen, print the ready line, serve for ever. Exit status. */
int  proxy_main(int argc, char **argv, const struct proxy_spec *spec);

#endif
