/* drain.h - moving sessions off this edge on purpose (drain.c). */
#ifndef CESSNA_DRAIN_H
#define CESSNA_DRAIN_H

#include <stddef.h>
#include <stdint.h>

struct session;

/* Move one live session (cessna-ctl move ID): the reply line goes into msg. 0 or -errno. */
int  drain_move(struct session *s, char *msg, size_t len);
/* Move or close every session, refuse new ones, stop when none is left (cessna-ctl drain,
 * SIGTERM). */
void drain_start(const char *why);
/* A snapshot of s is stored at the server endpoint now. */
void drain_remote_durable(struct session *s);
/* From the periodic sweep: moves that timed out, sessions still to move or to close. */
void drain_sweep(uint64_t now_ms);
/* After each batch of completions: a drain with no session left (every last frame sent and
 * every connection closed) stops the supervisor. */
void drain_check_done(void);

#endif
