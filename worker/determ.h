/* determ.h - ordinary libc stays deterministic inside a worker (DESIGN.md section 6,
 * docs/determinism.md).
 *
 * determ.c defines malloc and friends, the clocks and the libc random generators in the
 * worker executable. The worker is linked -rdynamic, so these definitions come first in
 * symbol lookup: the dlopen()ed app and every library it uses (zlib, ...) call them instead
 * of libc's. While the app runs (between determ_enter() and determ_leave(), i.e. inside one
 * event) they answer from the session: the heap is the arena, every clock reads the event's
 * time, random numbers come from the session's PRNG. Outside (zygote, runtime, snapshot
 * children) they are libc's own, so the runtime keeps its real clock and its own heap.
 * free() and realloc() route by address: a pointer inside the arena goes to the arena. */
#ifndef CESSNA_DETERM_H
#define CESSNA_DETERM_H

void determ_enter(void);   /* the app is about to run for the current event */
void determ_leave(void);   /* back in the runtime */
void determ_resolve_libc(void);   /* once, before forking workers: libc's clocks looked up */

#endif
