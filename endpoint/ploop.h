/* ploop.h - the proxies' event loop: one process, one io_uring, every session.
 *
 * A session (struct psess) is a slot: a plain TCP connection, an edge connection and the
 * relay state between them (relay.h). user_data of every operation is {op, slot, arg}; arg
 * is the side (edge or plain) and that side's generation, so a completion for a connection
 * the session has dropped (a timed-out edge, say) is recognised and only counted. A slot is
 * freed only when nothing of it is in flight. Sessions are also found by id (ploop_bind,
 * ploop_find): the client proxy binds the id from WELCOME, the server proxy the id from the
 * edge's HELLO, so that a RESUME arriving on a new connection can find its session.
 *
 * The two proxies differ only in their handshake, given as callbacks in struct proxy_spec.
 *
 * Remote recovery (docs/protocol.md): what an endpoint keeps for a new edge is in struct
 * relay (keep.h). A live session whose edge is lost without CLOSE is *detached*: its edge
 * connection is dropped, its plain side stays open (read into the keep buffer up to its cap),
 * and the proxy resumes it (the client proxy connects to another edge; the server proxy waits
 * for a RESUME, found with ploop_find()) until ploop_detach_ms passes; then the plain peer is
 * reset. */
#ifndef CESSNA_PLOOP_H
#define CESSNA_PLOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <getopt.h>
#include <sys/socket.h>

#include "relay.h"

enum psess_state {
    P_FREE = 0,
    P_HS_EDGE,      /* waiting for the edge's handshake frame (HELLO or WELCOME) */
    P_HS_CONNECT,   /* connecting (client proxy: to an edge; server proxy: to the target) */
    P_LIVE,         /* relaying (or flushing an ERROR: r.done) */
    P_DETACHED,     /* no edge connection; the plain side still open (r.detached) */
    P_CLOSING,      /* both connections closed; waiting for what is in flight */
};

enum pside { PS_EDGE = 0, PS_PLAIN = 1 };

struct psess {
    uint32_t slot;
    enum psess_state state;
    int fd[2];              /* [PS_EDGE], [PS_PLAIN]; -1 when none */
    uint32_t gen[2];        /* bumped when a side's connection is dropped */
    bool recv_armed[2], send_armed[2], connect_armed[2];
    bool drained[2];        /* the last read returned less than asked */
    size_t recv_len[2];     /* what the read in flight asked for */
    unsigned inflight;      /* operations of this slot the kernel still holds */
    bool bound;             /* in the id table */
    bool was_live;
    uint32_t hnext;         /* next slot + 1 in the id table's chain, 0 at the end */
    int64_t hs_deadline;    /* in P_HS_*: when the handshake step gives up */
    int attempt;            /* client proxy: index of the edge being tried */
    int lost;               /* client proxy: index of the edge lost */
    int tries, backoff_ms;  /* client proxy: resume attempts so far, the next pass's wait */
    uint64_t tried;         /* client proxy: edges tried (opening: all; resuming: this pass) */
    uint64_t material_seq;  /* client proxy: the last DATA in the RESUME being made */
    int64_t detach_start, detach_deadline;  /* when the edge was lost, when to give up */
    int64_t retry_at;       /* P_DETACHED: when spec->retry runs (0: never) */
    int64_t plain_unread;   /* at the last drain deadline: bytes the program had not taken
                             * from the kernel yet (SIOCOUTQ), -1 before the first */
    uint8_t verifier[WIRE_VERIFIER_LEN];    /* server proxy: of the client's credential */
    void *priv;             /* the proxy's own per-session data */
    struct sockaddr_storage addr;   /* what P_HS_CONNECT connects to */
    socklen_t addrlen;
    uint8_t token[WIRE_TOKEN_LEN];
    struct relay r;
};

/* What differs between the two proxies. */
struct proxy_spec {
    const char *name;         /* "cessna-client-proxy" */
    const char *peer_opt;     /* "edge" or "target" */
    const char *usage;        /* the --help text */
    const char **peer;        /* where the peer option's value goes */
    size_t *max_msg;          /* where --max-message-bytes goes (holds the default) */
    int (*init)(void);        /* after the command line: 0, or exit status */
    /* A new connection was accepted: the session holds nothing yet. */
    void (*accepted)(struct psess *s, int fd);
    /* In P_HS_EDGE, a read from the edge completed: res bytes were appended to s->r.in, 0 is
     * the end of the stream, -ETIMEDOUT the handshake deadline (the edge was dropped). */
    void (*hs_input)(struct psess *s, long res);
    /* In P_HS_CONNECT, the connect of side completed: 0 or -errno (-ETIMEDOUT: the
     * deadline passed; that side was dropped). */
    void (*connected)(struct psess *s, enum pside side, int res);
    /* A live session lost its edge and is now P_DETACHED (its edge connection dropped). */
    void (*detached)(struct psess *s);
    /* P_DETACHED and s->retry_at passed. */
    void (*retry)(struct psess *s);
    /* The session is ending (before its connections close). */
    void (*ended)(struct psess *s);
    /* What giving up on a detached session is called in the log. */
    const char *detach_expired;
    /* Extra long options (val >= 256) and their handler: 0, or the exit status. */
    const struct option *opts;
    int (*option)(int val, const char *arg);
};

/* Parse a decimal option value in [min, max] (the error goes to stderr). 0 or -EINVAL. */
int  ploop_parse_num(const char *name, const char *opt, const char *s, unsigned long long min,
                     unsigned long long max, unsigned long long *v);

extern int ploop_handshake_ms;  /* the wait for the peer's handshake frame */
extern int ploop_connect_ms;    /* a connect; 0: ploop_handshake_ms */
extern int ploop_heartbeat_ms;  /* a live edge silent this long is lost; 0: never */
extern int ploop_detach_ms;     /* how long a detached session waits */
extern int ploop_framing;       /* --framing (framing.h); 0: not given */

/* Parse the command line, listen, print the ready line, run for ever. Exit status. */
int  ploop_main(int argc, char **argv, const struct proxy_spec *spec);

/* Wait for the edge's next handshake bytes (P_HS_EDGE), sending what to_edge holds. 0, or -EMSGSIZE when the
 * handshake frame would not fit in HANDSHAKE_FRAME_MAX bytes, -ENOMEM. */
int  ploop_hs_recv(struct psess *s);
/* Connect fd (a fresh socket) to s->addr as side (P_HS_CONNECT). */
void ploop_connect(struct psess *s, enum pside side, int fd);
/* Start relaying (or flushing an ERROR queued with relay_fail()). */
void ploop_live(struct psess *s);
/* Move src's edge connection (and what was read from it after the frame consumed) into
 * dst as its edge; an edge dst still had is dropped first (fencing). dst is attached again
 * (not detached, nothing queued to the edge); src is left without an edge. */
void ploop_adopt_edge(struct psess *dst, struct psess *src);
/* Close a side's connection at once (cancelling its operations). */
void ploop_drop(struct psess *s, enum pside side);
/* End the session: both connections closed (the plain one reset if r.edge_lost), the id
 * forgotten; the slot is freed once nothing is in flight. */
void ploop_end(struct psess *s);

/* Find a session by id: 0, or -EEXIST when another session has it. */
int  ploop_bind(struct psess *s, uint64_t id);
struct psess *ploop_find(uint64_t id);

/* Resolve a peer that did not resolve at start. The lookup blocks every session, so it is
 * tried at most once a second (*last_try keeps when); in between -EAGAIN with a reason. */
int  ploop_resolve(const char *name, struct sockaddr_storage *ss, socklen_t *len,
                   int64_t *last_try, char *err, size_t errlen);

/* Print "ready listen=ADDR" for the bound listener. 0 or -errno. */
int  proxy_print_ready(int lfd);

#endif
