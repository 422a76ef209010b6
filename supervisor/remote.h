/* remote.h - shipping snapshots off the node, heartbeats, ending a copy of a session whose
 * endpoint went away, and resuming a session that another edge lost (remote.c, resume.c). */
#ifndef CESSNA_REMOTE_H
#define CESSNA_REMOTE_H

#include <stdint.h>

#include "wire.h"

struct session;
struct conn;
enum side;

void remote_init(struct session *s);
void remote_end(struct session *s);
/* A snapshot at pos (whose chain starts at the full at `full`) is durable on this node and
 * the server endpoint stores snapshots: RECEIPT, then ship it (SNAP_DURABLE after its
 * SNAP_ACK). Sessions whose server stores nothing tell their endpoints with notice.c. */
void remote_snapshot_durable(struct session *s, uint64_t pos, uint64_t full);
/* Ship more pieces while the server connection has room (after a send completed). */
void remote_pump(struct session *s);
/* RECEIPT, SNAP_ACK, HEARTBEAT from an endpoint of a live session: 0 handled, -ENOENT not
 * one of these. */
int  remote_on_frame(struct session *s, struct conn *c, const struct wire_frame *f);
/* HEARTBEAT on every connection quiet for heartbeat_interval_ms. */
void remote_sweep(uint64_t now_ms);
/* The endpoint on side went away without CLOSE: end this copy quietly, resetting the other
 * connection, so that endpoint waits for (or makes) a resume. */
void remote_lost(struct session *s, enum side side, const char *why);

/* Close c with a reset when the session ends (sess_end_quietly), never a FIN: the endpoint
 * must not take it for a clean end. */
void remote_reset_conn(struct session *s, struct conn *c);

/* resume.c: a client endpoint said RESUME (state S_HELLO). */
void resume_start(struct session *s, const struct wire_frame *f);
/* A frame on a resuming session (state S_RESUMING): 0 consumed, -EAGAIN wait until live,
 * -EPROTO the connection is done for. */
int  resume_on_frame(struct session *s, struct conn *c, const struct wire_frame *f);
/* The server endpoint's connect completed (state S_RESUMING). */
void resume_on_connect(struct session *s, int res);
void resume_free(struct session *s);

#endif
