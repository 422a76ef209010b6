/* client_proxy.c - cessna-client-proxy: lets unmodified TCP clients use CESSNA.
 *
 * One process, one event loop (ploop.c) for every client. Each accepted plain connection
 * opens a session at the first edge of --edge that answers (connect, HELLO, WELCOME, each
 * step within the handshake timeout), is found by the session id from WELCOME, and relays
 * (relay.h): every chunk read from the client becomes one DATA frame; every new OUT payload
 * is written to the client.
 *
 * When the edge is lost (the connection ends without CLOSE or ERROR, nothing arrives for
 * --heartbeat-ms, or the edge says MOVE) the client's connection stays open and the session
 * resumes at the next edges of the list (docs/protocol.md, "Losing the edge"): RESUME, the
 * kept order and messages, RESUME_END; then WELCOME with a higher epoch. Full passes over the
 * list back off from RESUME_BACKOFF_MIN_MS to --resume-backoff-max-ms; after
 * --resume-timeout-ms the client is reset.
 *
 * Choosing an edge: an edge that failed (connect refused or timed out, no WELCOME, ERROR
 * UNAVAILABLE or INCOMPATIBLE, lost while holding a session) is remembered for
 * --edge-retry-ms and skipped while an edge of the list that has not failed is left to try;
 * when every edge left failed recently they are tried anyway, in list order, rather than
 * refusing the client. So a dead edge that accepts and never answers costs one handshake
 * timeout per retry interval, not one per connection. An edge that answers WELCOME is
 * forgotten as failed at once. */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "framing.h"
#include "log.h"
#include "ploop.h"

#define EDGES_MAX 64           /* psess.tried is a bit mask of them */
#define RESUME_BACKOFF_MIN_MS 50

enum { OPT_HEARTBEAT = 256, OPT_RESUME_TIMEOUT, OPT_EDGE_RETRY, OPT_BACKOFF_MAX };

static const char *opt_edges;
static size_t opt_max_msg = 1u << 20;
static int opt_edge_retry_ms = 10000;   /* 0: never skip an edge */
static int opt_backoff_max_ms = 1000;

/* The --edge list, resolved once at start (a name that does not resolve then is tried
 * again for each connection). */
static struct edge {
    char name[256];
    struct sockaddr_storage ss;
    socklen_t len;
    int resolved;
    int64_t last_try;
    int64_t failed_ms;      /* when it last failed to take a session; 0: not since it answered */
} edges[EDGES_MAX];
static int nedges;

static int client_init(void)
{
    char *list = strdup(opt_edges), err[256];
    char *save = NULL;

    if (!list) {
        LOG(LOG_ERROR, "msg=\"out of memory\"");
        return 1;
    }
    if (!ploop_framing)
        ploop_framing = FRAMING_RAW;   /* said in every HELLO: the server proxy must agree */
    for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        if (nedges == EDGES_MAX || strlen(e) >= sizeof(edges[0].name)) {
            fprintf(stderr, "cessna-client-proxy: bad --edge: %s\n", nedges == EDGES_MAX ?
                    "more than 64 edges" : "an address longer than 255 characters");
            free(list);
            return 2;
        }
        struct edge *d = &edges[nedges++];
        snprintf(d->name, sizeof(d->name), "%s", e);
        d->resolved = ploop_resolve(e, &d->ss, &d->len, &d->last_try, err, sizeof(err)) == 0;
        if (!d->resolved)
            LOG(LOG_WARN, "msg=\"edge address does not resolve (yet)\" edge=%s error=\"%s\"", e, err);
    }
    free(list);
    if (!nedges) {
        fprintf(stderr, "cessna-client-proxy: bad --edge: no address in '%s'\n", opt_edges);
        return 2;
    }
    return 0;
}

/* ---- which edge next ---- */

static bool failed_recently(const struct edge *e, int64_t now)
{
    return opt_edge_retry_ms && e->failed_ms && now - e->failed_ms < opt_edge_retry_ms;
}

/* Edge i did not take a session: skip it for a while (logged once per failure streak). */
static void edge_failed(int i)
{
    int64_t now = relay_now_ms();

    if (i < 0 || i >= nedges || !opt_edge_retry_ms)
        return;
    if (!failed_recently(&edges[i], now))
        LOG(LOG_INFO, "msg=\"edge failed; others are tried first\" edge=%s retry_ms=%d",
            edges[i].name, opt_edge_retry_ms);
    edges[i].failed_ms = now ? now : 1;
}

static void edge_answered(int i)
{
    edges[i].failed_ms = 0;
}

/* The next edge to try, going round the list from `from`: the first not in tried that has
 * not failed recently, else the first not in tried; -1 when every edge is in tried. */
static int pick_edge(uint64_t tried, int from)
{
    int64_t now = relay_now_ms();
    int fallback = -1;

    for (int k = 0; k < nedges; k++) {
        int i = (from + k) % nedges;
        if (tried & (1ull << i))
            continue;
        if (!failed_recently(&edges[i], now))
            return i;
        if (fallback < 0)
            fallback = i;
    }
    return fallback;
}

/* Tell an edge that answered HELLO with nonsense why we hang up (best effort). */
static void refuse(struct psess *s, uint32_t code, const char *why)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    size_t n = wire_put_error(frame, sizeof(frame), code, "%s", why);

    if (send(s->fd[PS_EDGE], frame, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n)
        LOG(LOG_DEBUG, "msg=\"ERROR not delivered\"");
    shutdown(s->fd[PS_EDGE], SHUT_WR);
}

/* The edge being tried (if any) failed: try the next one; with none left, close the
 * client. */
static void next_edge(struct psess *s)
{
    char err[256];
    int i;

    edge_failed(s->attempt);
    ploop_drop(s, PS_EDGE);
    s->r.in.off = s->r.in.len = 0;
    while ((i = pick_edge(s->tried, 0)) >= 0) {
        struct edge *e = &edges[i];
        s->tried |= 1ull << i;
        s->attempt = i;
        if (!e->resolved &&
            ploop_resolve(e->name, &e->ss, &e->len, &e->last_try, err, sizeof(err)) < 0) {
            LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s error=\"%s\"", e->name, err);
            edge_failed(i);
            continue;
        }
        e->resolved = 1;
        int fd = socket(e->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd == -1) {
            LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s error=\"socket: %s\"", e->name,
                strerror(errno));
            continue;
        }
        memcpy(&s->addr, &e->ss, e->len);
        s->addrlen = e->len;
        ploop_connect(s, PS_EDGE, fd);
        return;
    }
    LOG(LOG_WARN, "msg=\"no edge opened the session; client closed\"");
    ploop_end(s);
}

/* ---- resuming a detached session ---- */

/* The attempt under way (if any) failed: try the next edge after the lost one (those that
 * did not fail recently first); after each full pass over the list, wait first. */
static void resume_next(struct psess *s)
{
    struct relay *r = &s->r;
    char err[256];

    if (s->attempt >= 0 && (s->tried & (1ull << s->attempt)))
        edge_failed(s->attempt);
    ploop_drop(s, PS_EDGE);
    r->in.off = r->in.len = 0;
    outq_clear(&r->to_edge);
    s->state = P_DETACHED;
    for (;;) {
        int i = pick_edge(s->tried, s->lost + 1);
        if (i < 0) {   /* a full pass: wait, then go round again */
            s->tried = 0;
            s->retry_at = relay_now_ms() + s->backoff_ms;
            if ((s->backoff_ms *= 2) > opt_backoff_max_ms)
                s->backoff_ms = opt_backoff_max_ms;
            return;
        }
        s->tried |= 1ull << i;
        s->tries++;
        s->attempt = i;
        struct edge *e = &edges[i];
        if (!e->resolved &&
            ploop_resolve(e->name, &e->ss, &e->len, &e->last_try, err, sizeof(err)) < 0) {
            LOG(LOG_WARN, "session=%llu msg=\"resume attempt failed\" edge=%s error=\"%s\"",
                (unsigned long long)r->session_id, e->name, err);
            edge_failed(i);
            continue;
        }
        e->resolved = 1;
        int fd = socket(e->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd == -1) {
            LOG(LOG_WARN, "session=%llu msg=\"resume attempt failed\" edge=%s error=\"socket: %s\"",
                (unsigned long long)r->session_id, e->name, strerror(errno));
            continue;
        }
        LOG(LOG_INFO, "session=%llu msg=\"resume attempt\" edge=%s attempt=%d epoch=%llu",
            (unsigned long long)r->session_id, e->name, s->tries,
            (unsigned long long)r->keep.epoch);
        memcpy(&s->addr, &e->ss, e->len);
        s->addrlen = e->len;
        ploop_connect(s, PS_EDGE, fd);
        return;
    }
}

static void client_detached(struct psess *s)
{
    s->lost = s->attempt;
    /* New sessions go elsewhere while it may be down; an edge that sent MOVE is not down
     * (one `cessna-ctl move`), and a draining one refuses new sessions itself. */
    if (!s->r.moved)
        edge_failed(s->lost);
    s->tries = 0;
    s->tried = 0;
    s->backoff_ms = RESUME_BACKOFF_MIN_MS < opt_backoff_max_ms ? RESUME_BACKOFF_MIN_MS
                                                               : opt_backoff_max_ms;
    resume_next(s);
}

/* Connected to an edge for a resume: queue RESUME, the kept order and messages,
 * RESUME_END (and CLOSE if the client already ended), then wait for WELCOME. */
static void resume_send(struct psess *s)
{
    struct relay *r = &s->r;
    uint8_t frame[WIRE_RESUME_MAX];
    size_t n = wire_put_resume(frame, r->session_id, s->token, r->keep.epoch, r->last_out,
                               r->seq + 1, r->keep.order_base, NULL, 0);
    if (nedges > 1)
        wire_set_flags(frame, WIRE_F_ROAMS);   /* a drain may move it rather than close it */
    int rc = outq_put(&r->to_edge, frame, n);

    if (rc == 0)
        rc = relay_put_kept(r, true, 0);
    if (rc == 0)
        rc = outq_put(&r->to_edge, frame, wire_put_empty(frame, WIRE_RESUME_END));
    if (rc == 0 && r->plain_eof)
        rc = outq_put(&r->to_edge, frame, wire_put_close(frame));
    if (rc < 0) {
        LOG(LOG_ERROR, "session=%llu msg=\"out of memory for a RESUME; client reset\"",
            (unsigned long long)r->session_id);
        ploop_end(s);
        return;
    }
    r->close_sent = r->plain_eof;
    s->material_seq = r->seq;
    if (ploop_hs_recv(s) < 0)
        resume_next(s);
}

/* The answer to a RESUME. */
static void resume_answer(struct psess *s, const struct wire_hdr *h, const struct wire_frame *f)
{
    const char *edge = edges[s->attempt].name;
    char text[4 * WIRE_ERROR_MAX + 1];
    struct relay *r = &s->r;

    if (f->type == WIRE_ERROR && f->u.error.code == WIRE_ERR_AUTH) {
        LOG(LOG_WARN, "session=%llu msg=\"resume refused: authentication; client reset\" "
            "edge=%s text=\"%s\"", (unsigned long long)r->session_id, edge,
            relay_error_text(f, text, sizeof(text)));
        ploop_end(s);   /* r->edge_lost: a reset */
        return;
    }
    if (f->type == WIRE_ERROR) {
        LOG(LOG_WARN, "session=%llu msg=\"resume attempt failed\" edge=%s code=%u text=\"%s\"",
            (unsigned long long)r->session_id, edge, f->u.error.code,
            relay_error_text(f, text, sizeof(text)));
        resume_next(s);
        return;
    }
    if (f->type != WIRE_WELCOME || f->u.welcome.session_id != r->session_id ||
        f->u.welcome.epoch <= r->keep.epoch) {
        LOG(LOG_WARN, "session=%llu msg=\"resume attempt failed: bad answer\" edge=%s type=%s "
            "id=%llu epoch=%llu our_epoch=%llu", (unsigned long long)r->session_id, edge,
            wire_type_name(f->type),
            (unsigned long long)(f->type == WIRE_WELCOME ? f->u.welcome.session_id : 0),
            (unsigned long long)(f->type == WIRE_WELCOME ? f->u.welcome.epoch : 0),
            (unsigned long long)r->keep.epoch);
        refuse(s, WIRE_ERR_UNEXPECTED, "want WELCOME of this session with a higher epoch");
        resume_next(s);
        return;
    }
    r->in.off += WIRE_HDR_LEN + h->len;   /* anything after WELCOME is the session's */
    r->in.len -= WIRE_HDR_LEN + h->len;
    /* Messages read while the RESUME was on its way go now, as new DATA. */
    if (relay_put_kept(r, false, s->material_seq) < 0) {
        ploop_end(s);
        return;
    }
    if (r->plain_eof && !r->close_sent) {
        uint8_t frame[WIRE_HDR_LEN];
        if (outq_put(&r->to_edge, frame, wire_put_close(frame)) < 0) {
            ploop_end(s);
            return;
        }
        r->close_sent = true;
    }
    edge_answered(s->attempt);
    r->keep.epoch = f->u.welcome.epoch;
    r->detached = r->edge_dead = r->edge_lost = r->moved = false;
    r->last_edge_ms = relay_now_ms();
    LOG(LOG_INFO, "session=%llu msg=\"session resumed\" edge=%s epoch=%llu took_ms=%lld "
        "attempts=%d", (unsigned long long)r->session_id, edge,
        (unsigned long long)r->keep.epoch, (long long)(relay_now_ms() - s->detach_start),
        s->tries);
    ploop_live(s);
}

static void client_accepted(struct psess *s, int fd)
{
    s->fd[PS_PLAIN] = fd;
    s->attempt = -1;
    if (relay_set_framing(&s->r, ploop_framing) < 0) {
        LOG(LOG_ERROR, "msg=\"out of memory for a session; client closed\"");
        ploop_end(s);
        return;
    }
    next_edge(s);
}

static void client_connected(struct psess *s, enum pside side, int res)
{
    const char *edge = edges[s->attempt].name;
    uint8_t hello[WIRE_HDR_LEN + 32];
    size_t len = wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL);

    if (res < 0 && s->r.detached) {
        LOG(LOG_WARN, "session=%llu msg=\"resume attempt failed\" edge=%s error=\"connect: %s\"",
            (unsigned long long)s->r.session_id, edge, strerror(-res));
        resume_next(s);
        return;
    }
    if (s->r.detached) {
        resume_send(s);
        return;
    }
    if (nedges > 1)
        wire_set_flags(hello, WIRE_F_ROAMS);   /* a drain may move it rather than close it */
    wire_set_hello_framing(hello, (uint8_t)ploop_framing);   /* the server proxy cuts alike */
    if (res < 0) {
        LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s error=\"connect to %s: %s\"", edge, edge,
            strerror(-res));
        next_edge(s);
        return;
    }
    /* A fresh socket: its send buffer takes the 44 bytes at once. */
    if (send(s->fd[PS_EDGE], hello, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) {
        LOG(LOG_WARN, "msg=\"send HELLO failed\" edge=%s error=\"%s\"", edge, strerror(errno));
        next_edge(s);
        return;
    }
    if (ploop_hs_recv(s) < 0)
        next_edge(s);
}

static void client_hs_input(struct psess *s, long res)
{
    char text[4 * WIRE_ERROR_MAX + 1];
    const char *edge = edges[s->attempt].name;
    struct relay *r = &s->r;
    struct wire_hdr h;
    struct wire_frame f;
    int rc;

    if (res <= 0) {
        LOG(LOG_WARN, "session=%llu msg=\"no WELCOME\" edge=%s error=\"%s\"",
            (unsigned long long)r->session_id, edge,
            res == 0 ? "connection closed" : strerror((int)-res));
        if (r->detached)
            resume_next(s);
        else
            next_edge(s);
        return;
    }
    rc = wire_parse_hdr(r->in.p + r->in.off, r->in.len, HANDSHAKE_FRAME_MAX - WIRE_HDR_LEN, &h);
    if (rc == -EAGAIN || (rc == 0 && r->in.len < WIRE_HDR_LEN + h.len)) {
        if (ploop_hs_recv(s) == 0)
            return;
        rc = -EMSGSIZE;
    }
    if (rc == 0)
        rc = wire_decode(&h, r->in.p + r->in.off + WIRE_HDR_LEN, &f);
    if (rc < 0) {
        refuse(s, rc == -EMSGSIZE ? WIRE_ERR_TOO_BIG : WIRE_ERR_PROTO,
               rc == -EMSGSIZE ? "frame exceeds limit" : "bad frame instead of WELCOME");
        LOG(LOG_WARN, "msg=\"no WELCOME\" edge=%s error=\"%s\"", edge, strerror(-rc));
        if (r->detached)
            resume_next(s);
        else
            next_edge(s);
        return;
    }
    if (r->detached) {
        resume_answer(s, &h, &f);
        return;
    }
    if (f.type == WIRE_ERROR) {
        LOG(LOG_WARN, "msg=\"edge refused the session\" edge=%s code=%u text=\"%s\"", edge,
            f.u.error.code, relay_error_text(&f, text, sizeof(text)));
        /* UNAVAILABLE (draining, full, its server endpoint refused it) and INCOMPATIBLE are
         * about this edge: the next one may open it. Any other refusal is the answer. */
        if (f.u.error.code == WIRE_ERR_UNAVAILABLE || f.u.error.code == WIRE_ERR_INCOMPATIBLE)
            next_edge(s);
        else
            ploop_end(s);
        return;
    }
    if (f.type != WIRE_WELCOME) {
        LOG(LOG_WARN, "msg=\"unexpected frame, want WELCOME\" edge=%s type=%s", edge,
            wire_type_name(f.type));
        refuse(s, WIRE_ERR_UNEXPECTED, "unexpected frame instead of WELCOME");
        next_edge(s);
        return;
    }
    memcpy(s->token, f.u.welcome.token, WIRE_TOKEN_LEN);
    if (ploop_bind(s, f.u.welcome.session_id) < 0) {
        LOG(LOG_WARN, "session=%llu msg=\"session id already in use here\" edge=%s",
            (unsigned long long)f.u.welcome.session_id, edge);
        refuse(s, WIRE_ERR_SESSION, "session id already in use at the client endpoint");
        next_edge(s);
        return;
    }
    r->in.off += WIRE_HDR_LEN + h.len;   /* anything after WELCOME is the session's */
    r->in.len -= WIRE_HDR_LEN + h.len;
    edge_answered(s->attempt);
    r->keep.epoch = f.u.welcome.epoch;
    r->resumable = true;
    LOG(LOG_INFO, "session=%llu msg=\"session open\" edge=%s epoch=%llu framing=%s",
        (unsigned long long)r->session_id, edge, (unsigned long long)r->keep.epoch,
        framing_name(ploop_framing));
    ploop_live(s);
}

static int client_option(int val, const char *arg)
{
    unsigned long long v;

    switch (val) {
    case OPT_HEARTBEAT:
        if (ploop_parse_num("cessna-client-proxy", "heartbeat-ms", arg, 0, 3600000, &v) < 0)
            return 2;
        ploop_heartbeat_ms = (int)v;
        return 0;
    case OPT_RESUME_TIMEOUT:
        if (ploop_parse_num("cessna-client-proxy", "resume-timeout-ms", arg, 1, 86400000, &v) < 0)
            return 2;
        ploop_detach_ms = (int)v;
        return 0;
    case OPT_EDGE_RETRY:
        if (ploop_parse_num("cessna-client-proxy", "edge-retry-ms", arg, 0, 86400000, &v) < 0)
            return 2;
        opt_edge_retry_ms = (int)v;
        return 0;
    case OPT_BACKOFF_MAX:
        if (ploop_parse_num("cessna-client-proxy", "resume-backoff-max-ms", arg, 1, 3600000,
                            &v) < 0)
            return 2;
        opt_backoff_max_ms = (int)v;
        return 0;
    }
    return 2;
}

static const char usage[] =
    "usage: cessna-client-proxy --listen HOST:PORT --edge HOST:PORT[,HOST:PORT...]\n"
    "                           [--max-message-bytes N] [--handshake-timeout-ms N]\n"
    "                           [--connect-timeout-ms N] [--edge-retry-ms N]\n"
    "                           [--heartbeat-ms N] [--resume-timeout-ms N]\n"
    "                           [--resume-backoff-max-ms N] [--keep-max-bytes N]\n"
    "                           [--framing raw|line|u32be|resp]\n"
    "Lets unmodified TCP clients use CESSNA: each connection to --listen opens a\n"
    "session at the first edge of the list that answers (skipping edges that failed\n"
    "recently); what the client sends is cut into messages by --framing, every message\n"
    "from the edge is written back. One process serves every client. Prints\n"
    "'ready listen=ADDR'.\n"
    "  --framing F               raw: every chunk read is a message (default); line: each\n"
    "                            line, its \\n included; u32be: a 4-byte big-endian length\n"
    "                            and that many bytes (the message is the payload; messages\n"
    "                            to the client get the prefix); resp: each Redis command.\n"
    "                            The session's server proxy cuts the same way.\n"
    "  --max-message-bytes N     largest message (default 1048576; keep it equal to the\n"
    "                            edge's max_message_bytes): a longer frame ends the session\n"
    "  --handshake-timeout-ms N  for each edge: the wait for its WELCOME (or its answer to\n"
    "                            a RESUME) after connecting (default 10000)\n"
    "  --connect-timeout-ms N    for each edge: the TCP connect (default: the handshake\n"
    "                            timeout)\n"
    "  --edge-retry-ms N         an edge that failed (refused, timed out, no WELCOME, lost)\n"
    "                            is skipped this long while another edge is left to try;\n"
    "                            when all failed recently they are tried anyway; 0 = never\n"
    "                            skip (default 10000)\n"
    "  --heartbeat-ms N          an edge silent this long is lost; 0 = never (default 3000)\n"
    "  --resume-timeout-ms N     after losing the edge, try the other edges this long, then\n"
    "                            reset the client (default 60000)\n"
    "  --resume-backoff-max-ms N between passes over the edge list while resuming, wait\n"
    "                            50 ms, doubling up to this (default 1000)\n"
    "  --keep-max-bytes N        messages and order kept for a resume; past it the client\n"
    "                            is not read until a snapshot is durable (default 67108864)\n"
    "  -h, --help                this text\n"
    "  -V, --version             print the version and exit\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT },
        { "resume-timeout-ms", required_argument, NULL, OPT_RESUME_TIMEOUT },
        { "edge-retry-ms", required_argument, NULL, OPT_EDGE_RETRY },
        { "resume-backoff-max-ms", required_argument, NULL, OPT_BACKOFF_MAX },
        { 0 },
    };
    static const struct proxy_spec spec = {
        .name = "cessna-client-proxy", .peer_opt = "edge", .usage = usage,
        .peer = &opt_edges, .max_msg = &opt_max_msg, .init = client_init,
        .accepted = client_accepted, .hs_input = client_hs_input,
        .connected = client_connected, .detached = client_detached, .retry = resume_next,
        .detach_expired = "resume timed out; client reset", .opts = opts,
        .option = client_option,
    };

    ploop_heartbeat_ms = 3000;
    ploop_detach_ms = 60000;
    return ploop_main(argc, argv, &spec);
}
