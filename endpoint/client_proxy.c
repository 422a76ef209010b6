/* client_proxy.c - cessna-client-proxy: lets unmodified TCP clients use CESSNA.
 *
 * One process, one event loop (ploop.c) for every client. Each accepted plain connection
 * opens a session at the first edge of --edge that answers (connect, HELLO, WELCOME, each
 * step within the handshake timeout), is found by the session id from WELCOME, and relays
 * (relay.h): every chunk read from the client becomes one DATA frame; every new OUT payload
 * is written to the client. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "ploop.h"

#define EDGES_MAX 64

static const char *opt_edges;
static size_t opt_max_msg = 1u << 20;

/* The --edge list, resolved once at start (a name that does not resolve then is tried
 * again for each connection). */
static struct edge {
    char name[256];
    struct sockaddr_storage ss;
    socklen_t len;
    int resolved;
    int64_t last_try;
} edges[EDGES_MAX];
static int nedges;

static int client_init(void)
{
    char list[EDGES_MAX * 64], err[256];
    char *save = NULL;

    snprintf(list, sizeof(list), "%s", opt_edges);
    for (char *e = strtok_r(list, ",", &save); e && nedges < EDGES_MAX;
         e = strtok_r(NULL, ",", &save)) {
        struct edge *d = &edges[nedges++];
        snprintf(d->name, sizeof(d->name), "%s", e);
        d->resolved = ploop_resolve(e, &d->ss, &d->len, &d->last_try, err, sizeof(err)) == 0;
        if (!d->resolved)
            LOG(LOG_WARN, "msg=\"edge address does not resolve (yet)\" edge=%s err=\"%s\"", e, err);
    }
    return 0;
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

/* Try the next edge of the list; with none left, close the client. */
static void next_edge(struct psess *s)
{
    char err[256];

    ploop_drop(s, PS_EDGE);
    s->r.in.off = s->r.in.len = 0;
    while (++s->attempt < nedges) {
        struct edge *e = &edges[s->attempt];
        if (!e->resolved &&
            ploop_resolve(e->name, &e->ss, &e->len, &e->last_try, err, sizeof(err)) < 0) {
            LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s err=\"%s\"", e->name, err);
            continue;
        }
        e->resolved = 1;
        int fd = socket(e->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd == -1) {
            LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s err=\"socket: %s\"", e->name,
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

static void client_accepted(struct psess *s, int fd)
{
    s->fd[PS_PLAIN] = fd;
    s->attempt = -1;
    next_edge(s);
}

static void client_connected(struct psess *s, enum pside side, int res)
{
    const char *edge = edges[s->attempt].name;
    uint8_t hello[WIRE_HDR_LEN + 32];
    size_t len = wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL);

    if (res < 0) {
        LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s err=\"connect to %s: %s\"", edge, edge,
            strerror(-res));
        next_edge(s);
        return;
    }
    /* A fresh socket: its send buffer takes the 44 bytes at once. */
    if (send(s->fd[PS_EDGE], hello, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) {
        LOG(LOG_WARN, "msg=\"send HELLO failed\" edge=%s err=\"%s\"", edge, strerror(errno));
        next_edge(s);
        return;
    }
    if (ploop_hs_recv(s) < 0)
        next_edge(s);
}

static void client_hs_input(struct psess *s, long res)
{
    const char *edge = edges[s->attempt].name;
    struct relay *r = &s->r;
    struct wire_hdr h;
    struct wire_frame f;
    int rc;

    if (res <= 0) {
        LOG(LOG_WARN, "msg=\"no WELCOME\" edge=%s err=\"%s\"", edge,
            res == 0 ? "connection closed" : strerror((int)-res));
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
        LOG(LOG_WARN, "msg=\"no WELCOME\" edge=%s err=\"%s\"", edge, strerror(-rc));
        next_edge(s);
        return;
    }
    if (f.type == WIRE_ERROR) {
        LOG(LOG_WARN, "msg=\"edge refused the session\" edge=%s code=%u text=\"%.*s\"", edge,
            f.u.error.code, (int)f.u.error.text_len, f.u.error.text);
        ploop_end(s);   /* a refusal is an answer: no other edge is tried */
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
    LOG(LOG_INFO, "session=%llu msg=\"session open\" edge=%s",
        (unsigned long long)r->session_id, edge);
    ploop_live(s);
}

static const char usage[] =
    "usage: cessna-client-proxy --listen HOST:PORT --edge HOST:PORT[,HOST:PORT...]\n"
    "                           [--max-message-bytes N] [--handshake-timeout-ms N]\n"
    "Lets unmodified TCP clients use CESSNA: each connection to --listen opens a\n"
    "session at the first edge that answers; every chunk read from the client is one\n"
    "message, every message from the edge is written back. One process serves every\n"
    "client. Prints 'ready listen=ADDR'.\n"
    "  --max-message-bytes N     largest message (default 1048576)\n"
    "  --handshake-timeout-ms N  for each edge: connect, then WELCOME (default 10000)\n";

int main(int argc, char **argv)
{
    static const struct proxy_spec spec = {
        .name = "cessna-client-proxy", .peer_opt = "edge", .usage = usage,
        .peer = &opt_edges, .max_msg = &opt_max_msg, .init = client_init,
        .accepted = client_accepted, .hs_input = client_hs_input,
        .connected = client_connected,
    };

    return ploop_main(argc, argv, &spec);
}
