/* cessna_endpoint.h - libcessna-endpoint: speak CESSNA to an edge from a native program.
 *
 * Client side:  ep = cessna_ep_connect("127.0.0.1:7000,127.0.0.1:7001", err, sizeof err);
 * Server side:  lfd = cessna_ep_listen("127.0.0.1:9000", err, sizeof err);
 *               ep = cessna_ep_accept(lfd, err, sizeof err);   (one per session)
 * Then cessna_ep_send() and cessna_ep_recv() messages; cessna_ep_close() ends the session.
 *
 * Messages keep their boundaries. Outputs from the edge are numbered; a duplicate (a number
 * already received) is dropped. The event order piggybacked on every output is kept
 * (cessna_ep_order) for recovery at another edge.
 *
 * One thread may send while another receives on the same endpoint; two threads must not
 * both send (or both receive).
 */
#ifndef CESSNA_ENDPOINT_H
#define CESSNA_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cessna_ep;

#define CESSNA_EP_CLOSED (-1000L) /* cessna_ep_recv: the session ended with CLOSE */

/* Client: connect to the first edge of a comma-separated HOST:PORT list that answers,
 * and open a new session (HELLO / WELCOME). NULL with a reason in err. */
struct cessna_ep *cessna_ep_connect(const char *edges, char *err, size_t errlen);

/* Server: a listening socket for edges (fd >= 0), or -errno with a reason in err. */
int cessna_ep_listen(const char *addr, char *err, size_t errlen);

/* Server: accept one edge connection and complete its HELLO / WELCOME. NULL with a reason
 * in err (a bad handshake is answered with ERROR and closed; call again for the next). */
struct cessna_ep *cessna_ep_accept(int listen_fd, char *err, size_t errlen);

/* Send one message (a DATA frame). 0, or -errno. Blocks until written to the socket. */
int cessna_ep_send(struct cessna_ep *ep, const void *data, size_t len);

/* Receive the next message: its length (>= 0) with *data pointing into the endpoint's
 * buffer, valid until the next cessna_ep_recv. CESSNA_EP_CLOSED when the edge closed the
 * session; -errno on failure (an ERROR frame from the edge gives -ECONNABORTED, and its
 * text is in cessna_ep_error). Blocks, unless nonblocking is set: then -EAGAIN when no
 * whole message is buffered and the socket has nothing more. */
long cessna_ep_recv(struct cessna_ep *ep, const void **data);

/* Nonblocking receive (for poll()-driven programs); sends stay blocking. */
void cessna_ep_set_nonblocking(struct cessna_ep *ep, int on);

/* The largest message sent or received (default 1 MiB): set it to the edge's
 * max_message_bytes when that is raised. Call before the first send or receive. */
void cessna_ep_set_max_message(struct cessna_ep *ep, size_t bytes);

/* Send CLOSE, then wait (up to timeout_ms) for the edge's CLOSE, discarding messages that
 * arrive meanwhile; closes the socket. 0, or -errno. Use cessna_ep_free afterwards. */
int cessna_ep_close(struct cessna_ep *ep, int timeout_ms);

void cessna_ep_free(struct cessna_ep *ep);

int         cessna_ep_fd(const struct cessna_ep *ep);
uint64_t    cessna_ep_session_id(const struct cessna_ep *ep);
const char *cessna_ep_error(const struct cessna_ep *ep);   /* last error text, "" if none */
uint64_t    cessna_ep_last_out(const struct cessna_ep *ep); /* number of the last output received */
/* The event order received so far, encoded as in common/order.h. */
const uint8_t *cessna_ep_order(const struct cessna_ep *ep, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
