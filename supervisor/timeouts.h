/* timeouts.h - every timeout of the node (hello, connect, idle, ended sessions' peers,
 * control connections), applied by one periodic sweep in the io_uring loop. */
#ifndef CESSNA_TIMEOUTS_H
#define CESSNA_TIMEOUTS_H

#include <stdint.h>

/* What timeouts.c knows of a session; embedded in it, written only by timeouts.c. */
struct tmo {
    uint64_t active_ms;     /* monotonic ms of the accept, the HELLO, the last event */
    uint64_t state_ms;      /* when the sweep first saw the session in state_seen */
    int state_seen;
};

struct session;

uint64_t tmo_now_ms(void);               /* monotonic, coarse (cheap enough per event) */
uint64_t tmo_now_ns(void);               /* monotonic, precise (for timing what happened) */
void tmo_touch(struct session *s);       /* at the accept, the HELLO, each event */
void tmo_arm(void);                      /* the next sweep (OP_SWEEP) */
void tmo_on_sweep(void);

#endif
