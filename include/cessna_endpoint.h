/* cessna_endpoint.h - libcessna-endpoint: speak CESSNA to an edge from a native program.
 *
 * Client side:  ep = cessna_ep_connect("127.0.0.1:7000,127.0.0.1:7001", err, sizeof err);
 * Server side:  lfd = cessna_ep_listen("127.0.0.1:9000", err, sizeof err);
 *               srv = cessna_ep_server_new(lfd, "/var/lib/app/store", "/etc/app/edge.secret",
 *                                          err, sizeof err);
 *               ep = cessna_ep_server_accept(srv, err, sizeof err);  (one per new session,
 *               in a loop on a thread of its own: it also handles the edges' RESUMEs)
 *               (or ep = cessna_ep_accept(lfd, ...): sessions that cannot move)
 * Then cessna_ep_send() and cessna_ep_recv() messages; cessna_ep_close() ends the session.
 * Link with -lcessna-endpoint -lsodium -lxxhash -lzstd -lpthread (installed:
 * $(pkg-config --cflags --libs cessna-endpoint)).
 *
 * Messages keep their boundaries. Outputs from the edge are numbered; a duplicate (a number
 * already received) is dropped. The event order piggybacked on every output is kept
 * (cessna_ep_order) for recovery at another edge.
 *
 * Surviving the edge (docs/protocol.md): a client endpoint keeps every message it sent until
 * the edge says a snapshot covering it is stored off the node (SNAP_DURABLE), the event order
 * since that snapshot, the last output number and the session's epoch. When its edge is lost
 * (the connection ends without CLOSE, the edge says MOVE, or nothing arrives for the
 * heartbeat timeout) it resumes transparently inside cessna_ep_recv or cessna_ep_send: it
 * tries the other edges of its list (starting with the next one, backing off after each
 * full pass) for up to the resume timeout, sends them what it kept, and goes on where it
 * was; every message is delivered exactly once and in order on both sides. A resume blocks
 * the calling thread, also in nonblocking mode. It fails the session with -ECONNABORTED
 * when an edge answers ERROR AUTH (the text in cessna_ep_error), with -ETIMEDOUT after the
 * resume timeout. cessna_ep_fd() changes with each resume.
 *
 * A server endpoint from cessna_ep_server_accept stores the snapshots edges ship and keeps
 * what it sent the same way; when an edge resumes one of its sessions it attaches the new
 * connection to the same struct cessna_ep: a thread blocked in cessna_ep_recv or
 * cessna_ep_send on the old edge goes on with the new one. A session whose edge is lost
 * waits for that RESUME up to its resume timeout, then fails with -ECONNRESET.
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

/* Client: connect to the first edge of a comma-separated HOST:PORT list (at most 64) that
 * answers, and open a new session (HELLO / WELCOME). NULL with a reason in err. An edge
 * that failed (connect refused or timed out, no WELCOME in time, lost while holding a
 * session) is remembered by the process for edge_retry_ms and skipped, here and when a
 * session resumes, as long as an edge of the list that has not failed recently is left;
 * when all of them failed recently they are tried anyway, in list order. */
struct cessna_ep *cessna_ep_connect(const char *edges, char *err, size_t errlen);

/* Client options; a zeroed struct (or NULL) means every default. */
struct cessna_ep_options {
    int handshake_timeout_ms;  /* per edge: the TCP connect, then the WELCOME (or the answer
                                * to a RESUME): default 10000 */
    int heartbeat_ms;          /* as cessna_ep_set_heartbeat: default 3000; -1: never */
    int resume_timeout_ms;     /* as cessna_ep_set_resume_timeout: default 60000 */
    int edge_retry_ms;         /* how long a failed edge is skipped: default 10000; -1: never
                                * skip */
};
struct cessna_ep *cessna_ep_connect_opts(const char *edges, const struct cessna_ep_options *o,
                                         char *err, size_t errlen);

/* Server: a listening socket for edges (fd >= 0), or -errno with a reason in err. */
int cessna_ep_listen(const char *addr, char *err, size_t errlen);

/* Server: accept one edge connection and complete its HELLO / WELCOME. NULL with a reason
 * in err (a bad handshake is answered with ERROR and closed; call again for the next). */
struct cessna_ep *cessna_ep_accept(int listen_fd, char *err, size_t errlen);

/* Send one message (a DATA frame). 0, or -errno. Blocks until written to the socket (or,
 * when the edge is lost meanwhile, until a resume delivered it). While the kept messages
 * and order are at the keep cap (cessna_ep_set_keep_max) it blocks until a SNAP_DURABLE,
 * handled by a thread in cessna_ep_recv, frees room; in nonblocking mode it returns -EAGAIN
 * instead (a program that sends from the thread that receives should use nonblocking mode,
 * or receive before sending again). (A session whose server endpoint stores no snapshots
 * cannot move; its edge sends SNAP_DURABLE for each local snapshot, so it frees room too.) */
int cessna_ep_send(struct cessna_ep *ep, const void *data, size_t len);

/* Receive the next message: its length (>= 0) with *data pointing into the endpoint's
 * buffer, valid until the next cessna_ep_recv. CESSNA_EP_CLOSED when the edge closed the
 * session; -errno on failure (an ERROR frame from the edge gives -ECONNABORTED, and its
 * text is in cessna_ep_error). Blocks, unless nonblocking is set: then -EAGAIN when no
 * whole message is buffered and the socket has nothing more. */
long cessna_ep_recv(struct cessna_ep *ep, const void **data);

/* Nonblocking receive (for poll()-driven programs); sends stay blocking except at the keep
 * cap (-EAGAIN, see cessna_ep_send). A resume blocks in either mode. */
void cessna_ep_set_nonblocking(struct cessna_ep *ep, int on);

/* The largest message sent or received (default 1 MiB): set it to the edge's
 * max_message_bytes when that is raised. Call before the first send or receive. */
void cessna_ep_set_max_message(struct cessna_ep *ep, size_t bytes);

/* Send CLOSE, then wait (up to timeout_ms) for the edge's CLOSE, discarding messages that
 * arrive meanwhile; closes the socket. 0, or -errno. Use cessna_ep_free afterwards. */
int cessna_ep_close(struct cessna_ep *ep, int timeout_ms);

/* What is kept for a new edge (messages plus order entries) at most: default 64 MiB; 0
 * restores the default. Past it cessna_ep_send waits (see there). */
void cessna_ep_set_keep_max(struct cessna_ep *ep, size_t bytes);
/* Client: an edge that sent nothing for ms (edges send HEARTBEAT when quiet) is lost:
 * default 3000; 0 never. */
void cessna_ep_set_heartbeat(struct cessna_ep *ep, int ms);
/* Client: how long a resume tries the edges before the session fails (-ETIMEDOUT); server:
 * how long a session whose edge was lost waits for a RESUME (then -ECONNRESET). Default
 * 60000; 0 restores it. */
void cessna_ep_set_resume_timeout(struct cessna_ep *ep, int ms);

/* Server that holds its sessions across edges. listen_fd from cessna_ep_listen (not
 * owned); store_dir: where shipped snapshots are kept (DIR/<session id>/, fsynced; made if
 * missing), NULL: in memory; edge_secret_file: edges must prove this secret in HELLO and
 * RESUME (NULL: any edge that reaches the port is accepted). NULL with a reason in err. */
struct cessna_ep_server;
struct cessna_ep_server *cessna_ep_server_new(int listen_fd, const char *store_dir,
                                              const char *edge_secret_file, char *err,
                                              size_t errlen);
/* Block until an edge opens a new session: it is returned (its WELCOME says this endpoint
 * stores). RESUMEs of this server's sessions are handled inside (the session goes on over
 * the new edge) and do not return. NULL with a reason in err for a connection that failed
 * its handshake (wrong secret or credential: the edge got ERROR AUTH); call again. */
struct cessna_ep *cessna_ep_server_accept(struct cessna_ep_server *srv, char *err,
                                          size_t errlen);
/* After its sessions were freed (ones still open can no longer be resumed). */
void cessna_ep_server_free(struct cessna_ep_server *srv);

void cessna_ep_free(struct cessna_ep *ep);

int         cessna_ep_fd(const struct cessna_ep *ep);
uint64_t    cessna_ep_session_id(const struct cessna_ep *ep);
const char *cessna_ep_error(const struct cessna_ep *ep);   /* last error text, "" if none */
uint64_t    cessna_ep_last_out(const struct cessna_ep *ep); /* number of the last output received */
uint64_t    cessna_ep_epoch(const struct cessna_ep *ep);    /* grows with each resume */
/* The event order received so far, encoded as in common/order.h. */
const uint8_t *cessna_ep_order(const struct cessna_ep *ep, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
