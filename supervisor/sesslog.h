/* sesslog.h - one log line per session end, in the spirit of HAProxy's tcplog:
 *
 *   ts=... prog=cessna-supervisor pid=... level=info event=session_end session=ID
 *   client=IP:PORT server=HOST:PORT duration_ms=N bytes_in=N bytes_out=N
 *   server_bytes_in=N server_bytes_out=N events=N recoveries=N hibernations=N end=CAUSE
 *   [reason="..."]
 *
 * bytes_in / bytes_out are message bytes (payloads, without CESSNA framing) from and to the
 * client endpoint, server_bytes_* the same for the server endpoint, all on this edge.
 * CAUSE says why this edge's copy of the session ended (enum sesslog_end). */
#ifndef CESSNA_SESSLOG_H
#define CESSNA_SESSLOG_H

#include <stddef.h>
#include <stdint.h>

enum sesslog_end {
    END_NONE = 0,
    END_CLIENT_CLOSE,     /* the client endpoint said CLOSE (or ERROR) first */
    END_SERVER_CLOSE,     /* the server endpoint did */
    END_HELLO_TIMEOUT,    /* hello_timeout_ms */
    END_CONNECT_TIMEOUT,  /* connect_timeout_ms: the server endpoint did not answer */
    END_IDLE_TIMEOUT,     /* idle_timeout_ms */
    END_REFUSED,          /* edge full, draining, or the server endpoint refused it */
    END_FAILED,           /* an error ended it (reason says which) */
    END_CLIENT_LOST,      /* a connection lost without CLOSE: the session resumes elsewhere */
    END_SERVER_LOST,
    END_MOVED,            /* moved to another edge (cessna-ctl move, drain) */
    END_DRAIN_TIMEOUT,    /* a drain gave up moving it and closed it */
    END_RESUME_FAILED,    /* a RESUME here could not rebuild it */
    END_SUPERSEDED,       /* its client resumed it again here: the newer copy goes on */
    END_APP_CLOSE,        /* the app ended it: cessna_close_session(0, ...) */
    END_APP_ERROR,        /* the app ended it with an error code (reason: its text) */
};

/* What the line reports; embedded in struct session, written only through these. */
struct sesslog {
    uint64_t start_ms;          /* tmo_now_ms() at accept */
    uint64_t bytes[2][2];       /* [side][0: from it, 1: to it] */
    uint32_t hibernations;
    enum sesslog_end cause;
    unsigned quiet : 1;         /* a connection that never became a session: debug level */
    char client[56];            /* IP:PORT, or [V6]:PORT */
};

struct session;

/* At accept: the client's address and the start time. */
void sesslog_accept(struct sesslog *l, int fd);
/* Why it is ending; the first cause given wins. */
void sesslog_cause(struct sesslog *l, enum sesslog_end cause);
/* Connections that end before saying anything are logged at debug only (HAProxy's
 * dontlognull): port scans and health checks do not fill the log. */
static inline void sesslog_quiet(struct sesslog *l) { l->quiet = 1; }
/* Message bytes: counted where each message is taken in or queued out. side is 0 (client)
 * or 1 (server). */
static inline void sesslog_in(struct sesslog *l, int side, uint64_t n) { l->bytes[side][0] += n; }
static inline void sesslog_out(struct sesslog *l, int side, uint64_t n) { l->bytes[side][1] += n; }
static inline void sesslog_hibernated(struct sesslog *l) { l->hibernations++; }
/* The session ends now: its line (reason NULL or the failure's text; the cause defaults to
 * `dflt` when none was given). */
void sesslog_end(const struct session *s, enum sesslog_end dflt, const char *reason);
/* A connection refused before it got a slot (edge full): a line of its own, at most
 * SESSLOG_REFUSED_PER_S a second (the supervisor's warning counts the rest). */
#define SESSLOG_REFUSED_PER_S 10
void sesslog_refused(int fd, const char *reason);
/* The name of a cause, as the line writes it. */
const char *sesslog_end_name(enum sesslog_end cause);

#endif
