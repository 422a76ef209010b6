/* server_proxy.c - cessna-server-proxy: lets an unmodified TCP server use CESSNA.
 *
 * One process, one event loop (ploop.c) for every session. The edge connects once per
 * session and says HELLO (role EDGE, the session's id and token) within the handshake
 * timeout; the proxy connects to the target server, answers WELCOME and relays (relay.h):
 * every new OUT payload is written to the server; every chunk read from the server becomes
 * one DATA frame. A connection that ends or times out before its HELLO is closed and
 * forgotten. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "ploop.h"

#define SERVER_CLOSE_WAIT_MS 2000    /* for the edge's CLOSE once the server is gone */

static const char *opt_target;
static size_t opt_max_msg = 1u << 20;
static struct sockaddr_storage target_ss;
static socklen_t target_len;
static int target_resolved;
static int64_t target_last_try;

static int server_init(void)
{
    char err[256];

    target_resolved = ploop_resolve(opt_target, &target_ss, &target_len, &target_last_try, err,
                                    sizeof(err)) == 0;
    if (!target_resolved)
        LOG(LOG_WARN, "msg=\"target does not resolve (yet)\" target=%s err=\"%s\"", opt_target,
            err);
    return 0;
}

static void server_accepted(struct psess *s, int fd)
{
    s->fd[PS_EDGE] = fd;
    s->r.close_wait_ms = SERVER_CLOSE_WAIT_MS;
    if (ploop_hs_recv(s) < 0)
        ploop_end(s);
}

/* The handshake failed with ERROR queued to the edge: flush it, then end. */
static void server_refuse(struct psess *s)
{
    s->r.plain_eof = s->r.plain_dead = true;
    ploop_live(s);
}

static void server_hs_input(struct psess *s, long res)
{
    struct relay *r = &s->r;
    struct wire_hdr h;
    struct wire_frame f;
    char err[256];
    int rc;

    if (res <= 0) {
        LOG(LOG_WARN, "msg=\"no HELLO from the edge\" err=\"%s\"",
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
    if (f.type == WIRE_RESUME) {
        /* Hook for RESUME (issue 7 item 4): ploop_find(f.u.resume.session_id) gives the
         * session whose edge was lost; check the token, ploop_drop() its old edge, move this
         * connection in as its edge, answer RESUME_INFO and ploop_live() it. */
        relay_fail(r, WIRE_ERR_UNSUPPORTED, "RESUME not supported yet");
        return server_refuse(s);
    }
    if (f.type != WIRE_HELLO || f.u.hello.role != WIRE_ROLE_EDGE) {
        relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected %s frame, want HELLO role EDGE",
                   wire_type_name(f.type));
        return server_refuse(s);
    }
    r->in.off += WIRE_HDR_LEN + h.len;
    r->in.len -= WIRE_HDR_LEN + h.len;
    if (ploop_bind(s, f.u.hello.session_id) < 0) {
        relay_fail(r, WIRE_ERR_UNEXPECTED, "session %llu is already open",
                   (unsigned long long)f.u.hello.session_id);
        return server_refuse(s);
    }
    memcpy(s->token, f.u.hello.token, WIRE_TOKEN_LEN);
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
    if (outq_put(&s->r.to_edge, frame, wire_put_welcome(frame, s->r.session_id, NULL, 1)) < 0) {
        ploop_end(s);
        return;
    }
    LOG(LOG_INFO, "session=%llu msg=\"session open\" target=%s",
        (unsigned long long)s->r.session_id, opt_target);
    ploop_live(s);
}

static const char usage[] =
    "usage: cessna-server-proxy --listen HOST:PORT --target HOST:PORT\n"
    "                           [--max-message-bytes N] [--handshake-timeout-ms N]\n"
    "Lets an unmodified TCP server use CESSNA: each session the edge opens at --listen\n"
    "gets its own connection to --target; every message from the edge is written to\n"
    "it, every chunk read from it is one message. One process serves every session.\n"
    "Prints 'ready listen=ADDR'.\n"
    "  --max-message-bytes N     largest message (default 1048576)\n"
    "  --handshake-timeout-ms N  for the edge's HELLO, then for the target's connect\n"
    "                            (default 10000)\n";

int main(int argc, char **argv)
{
    static const struct proxy_spec spec = {
        .name = "cessna-server-proxy", .peer_opt = "target", .usage = usage,
        .peer = &opt_target, .max_msg = &opt_max_msg, .init = server_init,
        .accepted = server_accepted, .hs_input = server_hs_input,
        .connected = server_connected,
    };

    return ploop_main(argc, argv, &spec);
}
