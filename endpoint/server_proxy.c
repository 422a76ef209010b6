/* server_proxy.c - cessna-server-proxy: lets an unmodified TCP server use CESSNA.
 *
 * One process, one event loop (ploop.c) for every session. The edge connects once per
 * session and says HELLO (role EDGE, the session's id and token) within the handshake
 * timeout; the proxy connects to the target server, answers WELCOME and relays (relay.h):
 * every new OUT payload is written to the server; every chunk read from the server becomes
 * one DATA frame. A connection that ends or times out before its HELLO is closed and
 * forgotten.
 *
 * Remote recovery (docs/protocol.md): the edge ships snapshots in SNAP_PUT pieces, stored
 * per session (store.h) and answered with SNAP_ACK. An edge lost without CLOSE leaves the
 * session waiting --linger-ms for a RESUME on a new connection (the target's connection
 * stays open); RESUME is answered with RESUME_INFO, the stored chain, the kept order and
 * messages, RESUME_END. With --edge-secret-file, HELLO and RESUME must carry the secret;
 * every authentication failure gets the same ERROR AUTH text. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "cred.h"
#include "framing.h"
#include "log.h"
#include "ploop.h"
#include "store.h"

#define AUTH_FAILED "authentication failed"   /* the one text for every auth failure */

enum { OPT_LINGER = 256, OPT_STORE, OPT_SECRET, OPT_CLOSE_WAIT };

static int opt_close_wait_ms = 2000;    /* for the edge's CLOSE once the server is gone */

static const char *opt_store;
static const char *opt_secret_file;
static uint8_t edge_secret[WIRE_SECRET_MAX];
static size_t edge_secret_len;

static const char *opt_target;
static size_t opt_max_msg = 1u << 20;
static struct sockaddr_storage target_ss;
static socklen_t target_len;
static int target_resolved;
static int64_t target_last_try;

static int server_init(void)
{
    char err[512];

    if (cred_init() < 0) {
        LOG(LOG_ERROR, "msg=\"cannot initialise libsodium\"");
        return 1;
    }
    if (opt_secret_file) {
        if (cred_load_secret(opt_secret_file, edge_secret, &edge_secret_len, err,
                             sizeof(err)) < 0) {
            LOG(LOG_ERROR, "msg=\"cannot load the edge secret\" error=\"%s\"", err);
            return 1;
        }
    } else {
        LOG(LOG_WARN, "msg=\"no --edge-secret-file: any edge that reaches this port is "
            "accepted\"");
    }
    if (opt_store && mkdir(opt_store, 0700) == -1 && errno != EEXIST) {
        LOG(LOG_ERROR, "msg=\"cannot create the store directory\" store=%s error=\"%s\"",
            opt_store, strerror(errno));
        return 1;
    }

    target_resolved = ploop_resolve(opt_target, &target_ss, &target_len, &target_last_try, err,
                                    sizeof(err)) == 0;
    if (!target_resolved)
        LOG(LOG_WARN, "msg=\"target does not resolve (yet)\" target=%s error=\"%s\"", opt_target,
            err);
    return 0;
}

static void server_accepted(struct psess *s, int fd)
{
    s->fd[PS_EDGE] = fd;
    s->r.close_wait_ms = opt_close_wait_ms;
    if (ploop_hs_recv(s) < 0)
        ploop_end(s);
}

/* The handshake failed with ERROR queued to the edge: flush it, then end. */
static void server_refuse(struct psess *s)
{
    s->r.plain_eof = s->r.plain_dead = true;
    ploop_live(s);
}

/* An edge's secret, checked in constant time (any secret when none is configured). */
static bool secret_ok(const uint8_t *secret, size_t len)
{
    return !opt_secret_file || cred_equal(edge_secret, edge_secret_len, secret, len);
}

/* Every authentication failure: the reason goes to the log only. */
static void auth_fail(struct psess *s, uint64_t id, const char *why)
{
    LOG(LOG_WARN, "session=%llu msg=\"edge refused\" why=\"%s\"", (unsigned long long)id, why);
    relay_fail(&s->r, WIRE_ERR_AUTH, AUTH_FAILED);
    server_refuse(s);
}

/* A SNAP_PUT piece: store it; the last piece of a file gets SNAP_ACK once it is durable. */
static void server_snap_put(struct relay *r, const struct wire_frame *f)
{
    struct psess *s = r->owner;
    uint8_t frame[WIRE_HDR_LEN + 8];
    char err[512];
    int rc = store_put(s->priv, f, err, sizeof(err));

    if (rc < 0) {
        relay_fail(r, rc == -EPROTO ? WIRE_ERR_PROTO : WIRE_ERR_SESSION, "%s", err);
        return;
    }
    if (rc == 1) {
        LOG(LOG_INFO, "session=%llu msg=\"snapshot stored\" position=%llu base=%llu bytes=%llu "
            "where=%s", (unsigned long long)r->session_id,
            (unsigned long long)f->u.snap_put.position, (unsigned long long)f->u.snap_put.base,
            (unsigned long long)f->u.snap_put.total, opt_store ? opt_store : "memory");
        relay_to_edge(r, frame, wire_put_u64(frame, WIRE_SNAP_ACK, f->u.snap_put.position));
    }
}

static void server_ended(struct psess *s)
{
    if (!s->priv)
        return;
    store_remove(s->priv);
    free(s->priv);
    s->priv = NULL;
}

static void server_detached(struct psess *s)
{
    (void)s;   /* the target stays open; a RESUME finds the session, or the linger ends it */
}

static int put_piece(void *arg, const uint8_t *hdr, size_t hlen, const uint8_t *p, size_t len)
{
    struct relay *r = arg;

    if (outq_put(&r->to_edge, hdr, hlen) < 0 || outq_put(&r->to_edge, p, len) < 0)
        return -ENOMEM;
    return 0;
}

/* RESUME on a new connection s: check it, move the connection into the session, answer
 * RESUME_INFO + the stored chain + the kept order and messages + RESUME_END. */
static void server_resume(struct psess *s, const struct wire_hdr *h, const struct wire_frame *f)
{
    uint64_t id = f->u.resume.session_id;
    struct psess *old;
    uint8_t frame[WIRE_HDR_LEN + 32];
    char err[512];

    if (!secret_ok(f->u.resume.secret, f->u.resume.secret_len))
        return auth_fail(s, id, "RESUME with a wrong edge secret");
    old = ploop_find(id);
    if (!old || old == s || (old->state != P_LIVE && old->state != P_DETACHED) || old->r.done)
        return auth_fail(s, id, "RESUME of an unknown session");
    if (!cred_check(f->u.resume.token, old->verifier))
        return auth_fail(s, id, "RESUME with a wrong client credential");
    struct relay *r = &old->r;
    uint64_t epoch = f->u.resume.epoch > r->keep.epoch ? f->u.resume.epoch : r->keep.epoch + 1;
    bool fenced = old->fd[PS_EDGE] >= 0;
    int64_t lost_ms = old->state == P_DETACHED ? relay_now_ms() - old->detach_start : 0;

    s->r.in.off += WIRE_HDR_LEN + h->len;
    s->r.in.len -= WIRE_HDR_LEN + h->len;
    ploop_adopt_edge(old, s);
    ploop_end(s);
    r->keep.epoch = epoch;
    int rc = outq_put(&r->to_edge, frame, wire_put_resume_info(frame, epoch, r->last_out,
                                                               r->seq + 1, r->keep.order_base));
    if (rc == 0 && (rc = store_frames(old->priv, put_piece, r, err, sizeof(err))) < 0)
        LOG(LOG_ERROR, "session=%llu msg=\"cannot send the stored chain\" error=\"%s\"",
            (unsigned long long)id, err);
    if (rc == 0)
        rc = relay_put_kept(r, true, 0);
    if (rc == 0)
        rc = outq_put(&r->to_edge, frame, wire_put_empty(frame, WIRE_RESUME_END));
    if (rc == 0 && r->plain_eof) {
        rc = outq_put(&r->to_edge, frame, wire_put_close(frame));
        r->close_sent = true;
    }
    if (rc < 0) {
        relay_fail(r, WIRE_ERR_SESSION, "resume failed at the server endpoint");
        ploop_live(old);
        return;
    }
    LOG(LOG_INFO, "session=%llu msg=\"session resumed\" epoch=%llu last_out=%llu next_seq=%llu "
        "order_base=%llu snapshot=%llu detached_ms=%lld%s", (unsigned long long)id,
        (unsigned long long)epoch, (unsigned long long)r->last_out,
        (unsigned long long)(r->seq + 1), (unsigned long long)r->keep.order_base,
        (unsigned long long)store_last(old->priv), (long long)lost_ms,
        fenced ? " fenced=old_edge" : "");
    ploop_live(old);
}

/* The session's framing: the client proxy's (passed on by the edge in HELLO); when it said
 * none (a native client), --framing or raw. A client proxy that cuts otherwise than an
 * explicit --framing here is refused. 0, or -1 with ERROR queued. */
static int session_framing(struct psess *s, uint8_t said)
{
    int f = said ? said : ploop_framing ? ploop_framing : FRAMING_RAW;

    if (said > FRAMING_MAX) {
        relay_fail(&s->r, WIRE_ERR_INCOMPATIBLE, "unknown framing %u in HELLO", said);
        return -1;
    }
    if (said && ploop_framing && said != ploop_framing) {
        relay_fail(&s->r, WIRE_ERR_INCOMPATIBLE, "framing mismatch: the client proxy cuts "
                   "messages by %s, this server proxy by %s (--framing)", framing_name(said),
                   framing_name(ploop_framing));
        return -1;
    }
    if (relay_set_framing(&s->r, f) < 0) {
        relay_fail(&s->r, WIRE_ERR_UNAVAILABLE, "server endpoint out of memory");
        return -1;
    }
    return 0;
}

static void server_hs_input(struct psess *s, long res)
{
    struct relay *r = &s->r;
    struct wire_hdr h;
    struct wire_frame f;
    char err[256];
    int rc;

    if (res <= 0) {
        LOG(LOG_WARN, "msg=\"no HELLO from the edge\" error=\"%s\"",
            res == 0 ? "connection closed" : strerror((int)-res));
        ploop_end(s);
        return;
    }
    rc = wire_parse_hdr(r->in.p + r->in.off, r->in.len, HANDSHAKE_FRAME_MAX - WIRE_HDR_LEN, &h);
    if (rc == -EAGAIN || (rc == 0 && r->in.len < WIRE_HDR_LEN + h.len)) {
        if ((rc = ploop_hs_recv(s)) == 0)
            return;
    }
    if (rc == -EMSGSIZE) {
        relay_fail(r, WIRE_ERR_TOO_BIG, "frame exceeds the handshake limit of %u bytes",
                   HANDSHAKE_FRAME_MAX);
        return server_refuse(s);
    }
    if (rc == 0 && wire_decode(&h, r->in.p + r->in.off + WIRE_HDR_LEN, &f) < 0)
        rc = -EPROTO;
    if (rc < 0) {
        relay_fail(r, WIRE_ERR_PROTO, "bad frame: want HELLO (%s)", strerror(-rc));
        return server_refuse(s);
    }
    if (f.type == WIRE_RESUME)
        return server_resume(s, &h, &f);
    if (f.type != WIRE_HELLO || f.u.hello.role != WIRE_ROLE_EDGE) {
        relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected %s frame, want HELLO role EDGE",
                   wire_type_name(f.type));
        return server_refuse(s);
    }
    if (!secret_ok(f.u.hello.secret, f.u.hello.secret_len))
        return auth_fail(s, f.u.hello.session_id, "HELLO with a wrong edge secret");
    r->in.off += WIRE_HDR_LEN + h.len;
    r->in.len -= WIRE_HDR_LEN + h.len;
    if (ploop_bind(s, f.u.hello.session_id) < 0) {
        relay_fail(r, WIRE_ERR_UNEXPECTED, "session %llu is already open",
                   (unsigned long long)f.u.hello.session_id);
        return server_refuse(s);
    }
    if (session_framing(s, f.u.hello.framing) < 0)
        return server_refuse(s);
    memcpy(s->token, f.u.hello.token, WIRE_TOKEN_LEN);
    memcpy(s->verifier, f.u.hello.verifier, WIRE_VERIFIER_LEN);
    r->keep.epoch = f.u.hello.epoch ? f.u.hello.epoch : 1;
    r->side = 1;
    r->owner = s;
    if (!(s->priv = malloc(sizeof(struct store)))) {
        relay_fail(r, WIRE_ERR_UNAVAILABLE, "server endpoint out of memory");
        return server_refuse(s);
    }
    store_init(s->priv, opt_store, f.u.hello.session_id);
    if (!target_resolved &&
        ploop_resolve(opt_target, &target_ss, &target_len, &target_last_try, err,
                      sizeof(err)) < 0) {
        relay_fail(r, WIRE_ERR_UNAVAILABLE, "server unreachable: %s", err);
        return server_refuse(s);
    }
    target_resolved = 1;
    int fd = socket(target_ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        relay_fail(r, WIRE_ERR_UNAVAILABLE, "server unreachable: socket: %s", strerror(errno));
        return server_refuse(s);
    }
    memcpy(&s->addr, &target_ss, target_len);
    s->addrlen = target_len;
    ploop_connect(s, PS_PLAIN, fd);
}

static void server_connected(struct psess *s, enum pside side, int res)
{
    uint8_t frame[WIRE_HDR_LEN + 32];

    if (res < 0) {
        ploop_drop(s, PS_PLAIN);
        relay_fail(&s->r, WIRE_ERR_UNAVAILABLE, "server unreachable: connect to %s: %s",
                   opt_target, strerror(-res));
        return server_refuse(s);
    }
    size_t n = wire_put_welcome(frame, s->r.session_id, NULL, s->r.keep.epoch);
    wire_set_flags(frame, WIRE_F_STORES);   /* ship snapshots here: we store them */
    if (outq_put(&s->r.to_edge, frame, n) < 0) {
        ploop_end(s);
        return;
    }
    s->r.resumable = true;
    s->r.snap_put = server_snap_put;
    LOG(LOG_INFO, "session=%llu msg=\"session open\" target=%s epoch=%llu framing=%s",
        (unsigned long long)s->r.session_id, opt_target, (unsigned long long)s->r.keep.epoch,
        framing_name(s->r.framing));
    ploop_live(s);
}

static int server_option(int val, const char *arg)
{
    unsigned long long v;

    switch (val) {
    case OPT_LINGER:
        if (ploop_parse_num("cessna-server-proxy", "linger-ms", arg, 1, 86400000, &v) < 0)
            return 2;
        ploop_detach_ms = (int)v;
        return 0;
    case OPT_STORE:
        opt_store = arg;
        return 0;
    case OPT_SECRET:
        opt_secret_file = arg;
        return 0;
    case OPT_CLOSE_WAIT:
        if (ploop_parse_num("cessna-server-proxy", "close-wait-ms", arg, 1, 3600000, &v) < 0)
            return 2;
        opt_close_wait_ms = (int)v;
        return 0;
    }
    return 2;
}

static const char usage[] =
    "usage: cessna-server-proxy --listen HOST:PORT --target HOST:PORT\n"
    "                           [--max-message-bytes N] [--handshake-timeout-ms N]\n"
    "                           [--connect-timeout-ms N] [--linger-ms N] [--close-wait-ms N]\n"
    "                           [--store DIR] [--edge-secret-file PATH] [--keep-max-bytes N]\n"
    "                           [--framing raw|line|u32be|resp]\n"
    "Lets an unmodified TCP server use CESSNA: each session the edge opens at --listen\n"
    "gets its own connection to --target; every message from the edge is written to\n"
    "it, what it sends is cut into messages by the session's framing. One process\n"
    "serves every session. Prints 'ready listen=ADDR'.\n"
    "  --framing F               the framing of sessions whose client proxy says none (a\n"
    "                            native client); a client proxy that says another one is\n"
    "                            refused. Default: the client proxy's, else raw\n"
    "  --max-message-bytes N     largest message (default 1048576; keep it equal to the\n"
    "                            edge's max_message_bytes): a longer frame ends the session\n"
    "  --handshake-timeout-ms N  for the edge's HELLO (default 10000)\n"
    "  --connect-timeout-ms N    for the connect to --target (default: the handshake\n"
    "                            timeout)\n"
    "  --linger-ms N             an edge lost without CLOSE: keep the target's connection\n"
    "                            open this long for a RESUME, then reset it (default 60000)\n"
    "  --close-wait-ms N         once the target closed or failed, wait this long for the\n"
    "                            edge's CLOSE, then end the session (default 2000)\n"
    "  --store DIR               keep shipped snapshots in DIR/<session id>/ (fsynced);\n"
    "                            default: in memory, not verified\n"
    "  --edge-secret-file PATH   edges must send this file's secret in HELLO and RESUME\n"
    "                            (default: none; any edge is accepted, with a warning)\n"
    "  --keep-max-bytes N        messages and order kept for a resume; past it the target\n"
    "                            is not read until a snapshot is durable (default 67108864)\n"
    "  -h, --help                this text\n"
    "  -V, --version             print the version and exit\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "linger-ms", required_argument, NULL, OPT_LINGER },
        { "store", required_argument, NULL, OPT_STORE },
        { "edge-secret-file", required_argument, NULL, OPT_SECRET },
        { "close-wait-ms", required_argument, NULL, OPT_CLOSE_WAIT },
        { 0 },
    };
    static const struct proxy_spec spec = {
        .name = "cessna-server-proxy", .peer_opt = "target", .usage = usage,
        .peer = &opt_target, .max_msg = &opt_max_msg, .init = server_init,
        .accepted = server_accepted, .hs_input = server_hs_input,
        .connected = server_connected, .detached = server_detached, .ended = server_ended,
        .detach_expired = "linger expired; target connection reset", .opts = opts,
        .option = server_option,
    };

    return ploop_main(argc, argv, &spec);
}
