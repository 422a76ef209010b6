/* notice.h - SNAP_DURABLE for sessions whose server stores nothing, sent with the next
 * frames to each endpoint rather than on its own (notice.c). */
#ifndef CESSNA_NOTICE_H
#define CESSNA_NOTICE_H

#include <stddef.h>
#include <stdint.h>

struct session;

/* A snapshot at pos (the client's and the server's messages up to seq[0] and seq[1]) is
 * durable on this node; `freed` bytes of held events went with it. */
void notice_durable(struct session *s, uint64_t pos, const uint64_t seq[2], size_t freed);
/* Frames are queued for s's endpoints: an owed notice goes after them. */
void notice_ride(struct session *s);
/* From the tick: a notice that waited long enough goes now. */
void notice_tick(struct session *s, uint64_t now_ms);

#endif
