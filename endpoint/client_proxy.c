/* client_proxy.c - cessna-client-proxy: lets an unmodified TCP client use CESSNA.
 *
 * Each accepted plain connection gets its own process, which opens a session at the first
 * edge that answers and relays: every chunk read from the client becomes one DATA frame;
 * every new OUT payload is written to the client. One poll() loop, nonblocking sockets and
 * a bounded buffer per direction: a side is not read while the buffer toward the other
 * side is over RELAY_LIMIT, so neither direction ever waits on the other. */
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

/* ---- the client side ---- */

static const char *opt_edges;
static size_t opt_max_msg = 1u << 20;

/* Tell an edge that answered HELLO with nonsense why we hang up (best effort). */
static void handshake_refuse(struct relay *r, uint32_t code, const char *why)
{
    uint8_t frame[WIRE_HDR_LEN + 4 + WIRE_ERROR_MAX];
    size_t n = wire_put_error(frame, sizeof(frame), code, "%s", why);

    if (send(r->efd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n)
        LOG(LOG_DEBUG, "msg=\"ERROR not delivered\"");
    shutdown(r->efd, SHUT_WR);
}

/* HELLO on a fresh edge connection. 0 after WELCOME; -ECONNABORTED when the edge
 * refused with ERROR; another -errno when it did not answer sensibly. */
static int client_hello(struct relay *r, const char *edge)
{
    uint8_t hello[WIRE_HDR_LEN + 32];
    struct wire_frame f;
    size_t len = wire_put_hello(hello, WIRE_ROLE_CLIENT, 0, NULL), flen = 0;
    int rc;

    if (send(r->efd, hello, len, MSG_NOSIGNAL) != (ssize_t)len) {
        LOG(LOG_WARN, "msg=\"send HELLO failed\" edge=%s err=\"%s\"", edge, strerror(errno));
        return -EIO;
    }
    rc = handshake_frame(r, &f, &flen);
    if (rc == -EPROTO || rc == -EMSGSIZE) {
        handshake_refuse(r, rc == -EPROTO ? WIRE_ERR_PROTO : WIRE_ERR_TOO_BIG,
                         rc == -EPROTO ? "bad frame instead of WELCOME" : "frame exceeds limit");
    }
    if (rc < 0) {
        LOG(LOG_WARN, "msg=\"no WELCOME\" edge=%s err=\"%s\"", edge, strerror(-rc));
        return rc;
    }
    if (f.type == WIRE_ERROR) {
        LOG(LOG_WARN, "msg=\"edge refused the session\" edge=%s code=%u text=\"%.*s\"", edge,
            f.u.error.code, (int)f.u.error.text_len, f.u.error.text);
        return -ECONNABORTED;
    }
    if (f.type != WIRE_WELCOME) {
        LOG(LOG_WARN, "msg=\"unexpected frame, want WELCOME\" edge=%s type=%s", edge,
            wire_type_name(f.type));
        handshake_refuse(r, WIRE_ERR_UNEXPECTED, "unexpected frame instead of WELCOME");
        return -EPROTO;
    }
    r->session_id = f.u.welcome.session_id;
    r->in.off = flen;   /* anything after WELCOME is the session's */
    r->in.len -= flen;
    return 0;
}

/* Open a session at the first edge that answers. The edge socket, or -errno. */
static int client_open(struct relay *r)
{
    char list[1024], err[256];
    char *save = NULL;

    snprintf(list, sizeof(list), "%s", opt_edges);
    for (char *edge = strtok_r(list, ",", &save); edge; edge = strtok_r(NULL, ",", &save)) {
        int fd = addr_connect(edge, err, sizeof(err));
        if (fd < 0) {
            LOG(LOG_WARN, "msg=\"edge unreachable\" edge=%s err=\"%s\"", edge, err);
            continue;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        r->efd = fd;
        r->in.off = r->in.len = 0;
        int rc = client_hello(r, edge);
        if (rc == 0) {
            LOG(LOG_INFO, "session=%llu msg=\"session open\" edge=%s",
                (unsigned long long)r->session_id, edge);
            return fd;
        }
        close(fd);
        r->efd = -1;
        if (rc == -ECONNABORTED)
            return rc;
    }
    return -EHOSTUNREACH;
}

/* The child: one plain client, one session. */
static void serve(int pfd)
{
    struct relay r;

    if (relay_init(&r, -1, pfd, opt_max_msg) < 0) {
        LOG(LOG_ERROR, "msg=\"out of memory for relay buffers\"");
        return;
    }
    if (client_open(&r) >= 0) {
        relay_run(&r);
        LOG(LOG_INFO, "session=%llu msg=\"session ended\" sent=%llu received=%llu",
            (unsigned long long)r.session_id, (unsigned long long)r.seq,
            (unsigned long long)r.last_out);
        close(r.efd);
    }
    close(pfd);
    relay_free(&r);
}

static const char usage[] =
    "usage: cessna-client-proxy --listen HOST:PORT --edge HOST:PORT[,HOST:PORT...]\n"
    "                           [--max-message-bytes N]\n"
    "Lets unmodified TCP clients use CESSNA: each connection to --listen opens a\n"
    "session at the first edge that answers; every chunk read from the client is one\n"
    "message, every message from the edge is written back. Prints 'ready listen=ADDR'.\n"
    "  --max-message-bytes N   largest message (default 1048576)\n";

int main(int argc, char **argv)
{
    static const struct proxy_spec spec = {
        .name = "cessna-client-proxy", .peer_opt = "edge", .usage = usage, .serve = serve,
        .peer = &opt_edges, .max_msg = &opt_max_msg,
    };

    return proxy_main(argc, argv, &spec);
}
