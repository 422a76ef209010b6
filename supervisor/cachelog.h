/* cachelog.h - cache reads checked on replay (DESIGN.md section 2, invariant 1).
 *
 * A worker reports every cessna_cache_read() as (event position, name, xxh3 of the content
 * or 0 for a miss). For the events after a session's newest durable snapshot (the ones a
 * recovery replays) the supervisor keeps these; when a replaying worker reports a read the
 * log already holds for that position and name, the hashes must agree, else the session
 * fails: "cache object NAME changed since event P: replay would diverge". Records live in a
 * table indexed by session slot, tagged with the session id, so a slot's next session starts
 * empty without any hook in the session's life cycle.
 *
 * Not yet: the piggybacked order to the endpoints does not carry cache reads, so a remote
 * recovery (DESIGN.md section 4) cannot check them. */
#ifndef CESSNA_CACHELOG_H
#define CESSNA_CACHELOG_H

#include <stddef.h>
#include <stdint.h>

struct session;

/* A cache read the worker reported (name as bytes, not NUL-terminated, from untrusted
 * memory). Records it, or checks it against the record for the same position and name;
 * a mismatch (or a malformed record) fails the session. 0 (also when out of memory: logged,
 * not recorded), or -ESTALE / -EINVAL after failing the session. */
int  cachelog_read(struct session *s, uint64_t pos, const void *name, size_t nlen,
                   uint64_t hash);
/* A snapshot at pos is durable: events <= pos are never replayed again. */
void cachelog_drop_through(struct session *s, uint64_t pos);

#endif
