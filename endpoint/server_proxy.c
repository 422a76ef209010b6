/* server_proxy.c - cessna-server-proxy: lets an unmodified TCP server use CESSNA.
 *
 * The edge connects once per session and says HELLO (role EDGE, the session's id and
 * token); the proxy connects to the target server, answers WELCOME and relays in a
 * process of its own: every new OUT payload is written to the server; every chunk read
 * from the server becomes one DATA frame. One poll() loop, nonblocking sockets and a
 * bounded buffer per direction: a side is not read while the buffer toward the other side
 * is over RELAY_LIMIT, so neither direction ever waits on the other. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "addr.h"
#include "log.h"
#include "order.h"
#include "relay.h"
#include "wire.h"

#define SERVER_CLOSE_WAIT_MS 2000    /* for the edge's CLOSE once the server is gone */

/* ---- the server side ---- */

static const char *opt_target;
static size_t opt_max_msg = 1u << 20;

/* Check the edge's HELLO and reach the target. 0, or -errno after queueing ERROR. */
static int server_open(struct relay *r)
{
    uint8_t frame[WIRE_HDR_LEN + 24];
    struct wire_frame f;
    size_t flen = 0;
    char err[256];
    int rc = handshake_frame(r, &f, &flen);

    if (rc == -ETIMEDOUT || rc == -ECONNRESET || rc == -EIO) {
        LOG(LOG_WARN, "msg=\"no HELLO from the edge\" err=\"%s\"", strerror(-rc));
        r->edge_dead = true;
        return rc;
    }
    if (rc == -EMSGSIZE) {
        relay_fail(r, WIRE_ERR_TOO_BIG, "frame exceeds the handshake limit of %zu bytes",
                   r->in.cap);
        return rc;
    }
    if (rc < 0) {
        relay_fail(r, WIRE_ERR_PROTO, "bad frame: want HELLO (%s)", strerror(-rc));
        return rc;
    }
    if (f.type == WIRE_RESUME) {
        relay_fail(r, WIRE_ERR_UNSUPPORTED, "RESUME not supported yet");
        return -EPROTO;
    }
    if (f.type != WIRE_HELLO || f.u.hello.role != WIRE_ROLE_EDGE) {
        relay_fail(r, WIRE_ERR_UNEXPECTED, "unexpected %s frame, want HELLO role EDGE",
                   wire_type_name(f.type));
        return -EPROTO;
    }
    r->session_id = f.u.hello.session_id;
    r->in.off = flen;
    r->in.len -= flen;
    r->pfd = addr_connect(opt_target, err, sizeof(err));
    if (r->pfd < 0) {
        rc = r->pfd;
        relay_fail(r, WIRE_ERR_UNAVAILABLE, "server unreachable: %s", err);
        return rc;
    }
    fcntl(r->pfd, F_SETFL, O_NONBLOCK);
    buf_put(&r->to_edge, frame, wire_put_welcome(frame, r->session_id, f.u.hello.token));
    LOG(LOG_INFO, "session=%llu msg=\"session open\" target=%s",
        (unsigned long long)r->session_id, opt_target);
    return 0;
}

/* The child: one edge connection, one session. */
static void serve(int efd)
{
    struct relay r;

    if (relay_init(&r, efd, -1, opt_max_msg) < 0) {
        LOG(LOG_ERROR, "msg=\"out of memory for relay buffers\"");
        return;
    }
    r.close_wait_ms = SERVER_CLOSE_WAIT_MS;
    if (server_open(&r) < 0) {
        r.plain_eof = r.plain_dead = true;
        relay_run(&r); /* sends the ERROR, if any */
    } else {
        relay_run(&r);
        LOG(LOG_INFO, "session=%llu msg=\"session ended\" sent=%llu received=%llu",
            (unsigned long long)r.session_id, (unsigned long long)r.seq,
            (unsigned long long)r.last_out);
        close(r.pfd);
    }
    close(efd);
    relay_free(&r);
}

static const char usage[] =
    "usage: cessna-server-proxy --listen HOST:PORT --target HOST:PORT\n"
    "                           [--max-message-bytes N]\n"
    "Lets an unmodified TCP server use CESSNA: each session the edge opens at --listen\n"
    "gets its own connection to --target; every message from the edge is written to\n"
    "it, every chunk read from it is one message. Prints 'ready listen=ADDR'.\n"
    "  --max-message-bytes N   largest message (default 1048576)\n";

int main(int argc, char **argv)
{
    static const struct proxy_spec spec = {
        .name = "cessna-server-proxy", .peer_opt = "target", .usage = usage, .serve = serve,
        .peer = &opt_target, .max_msg = &opt_max_msg,
    };

    return proxy_main(argc, argv, &spec);
}
