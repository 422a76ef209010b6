/* shm.h - the per-session shared memory between the supervisor and its worker, and the
 * records that cross it (DESIGN.md section 7).
 *
 * Layout of the session memfd:  [struct shm_ctl, one page] [input ring] [output ring]
 * input ring:  supervisor -> worker, the ordered events (EV_*)
 * output ring: worker -> supervisor, outputs and requests (OUT_*)
 * Every record's payload starts with struct shm_rec, then message bytes if any. A record
 * larger than ring_max_payload crosses in pieces (ring.h): the consumer sees it whole. */
#ifndef CESSNA_SHM_H
#define CESSNA_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ring.h"

#define SHM_MAGIC   0x43534d33u /* "CSM3": OUT_SNAP_DONE (before it, CSM2: snap_reuse) */
#define SHM_CTL_LEN 4096u

struct shm_ctl {
    uint32_t magic;
    uint32_t ring_size;
    uint64_t session_id;
    uint32_t max_message;
    uint32_t pad;
    _Atomic uint64_t consumed;  /* position of the last event the worker finished */
    _Atomic uint32_t spin_ns;   /* how long the worker may poll for input before sleeping */
    _Atomic uint32_t in_asleep; /* 1: the worker sleeps on its report socket (bell.h) */
    /* Doorbells (bell.h): counters, one per direction. */
    _Atomic uint32_t bell_in;   /* the supervisor rings it: events, room for outputs, a request */
    _Atomic uint32_t bell_out;  /* the worker rings it: outputs, room for events, its end */
    /* A snapshot request: the supervisor fills the fields, then snap_pos (release); the
     * worker forks when it has finished event snap_pos (DESIGN.md section 5). */
    uint64_t snap_base;         /* 0: full; else the durable snapshot a delta builds on */
    uint64_t snap_gen;          /* the worker generation the request is for */
    uint32_t snap_hot;          /* 1: the child stays, stopped, as the hot standby */
    uint32_t snap_spares;       /* spare files the supervisor believes are in the session's
                                 * directory (common/snap.c): where the writer looks first */
    uint64_t snap_reuse;        /* a full no longer needed (its position; 0: none): the
                                 * writer takes its file before any spare (snap_set_reuse) */
    _Atomic uint64_t snap_pos;
    /* Each request has a new id (written last, release): a worker acts once per id, so a
     * retry at a position it forked at before is still answered. */
    _Atomic uint64_t snap_req;
    /* Recovery timing (CLOCK_MONOTONIC ns): the supervisor sets replay_until, the worker
     * stamps when it started running, how long loading the snapshot took, and when it
     * finished event replay_until. */
    uint64_t replay_until;
    _Atomic uint64_t started_ns, load_ns, replayed_ns;
    /* Remote recovery: after finishing this event (or right after restoring a snapshot at
     * it), the worker reports each pending timer (OUT_TIMER_PENDING), then an end record;
     * the supervisor sets it to 0 at the end record. 0 = never. */
    uint64_t announce_timers_at;
    char error[256];            /* the worker's reason when it gives up (NUL-terminated) */
    uint32_t log_offline;       /* cessna-replay: cessna_log lines go to stderr, replay=1 */
};

/* Input records (supervisor -> worker). a and b per type. */
enum shm_ev {
    EV_START = 1,   /* session start: init(), accept_client_connection() */
    EV_CLIENT,      /* a = seq; message bytes follow */
    EV_SERVER,      /* a = seq; message bytes follow */
    EV_TIMER,       /* a = timer id */
    EV_CLOSE,       /* a = 1 client closed, 2 server closed: shutdown(), then exit */
};

#define SHM_CLOSE_TEXT_MAX 200   /* cessna_close_session's text (cessna.h) */

/* Output records (worker -> supervisor). */
enum shm_out {
    OUT_CLIENT = 16,  /* a = output number; message bytes follow */
    OUT_SERVER,       /* a = output number; message bytes follow */
    OUT_TIMER_ARM,    /* a = timer id, b = delay ms */
    OUT_TIMER_CANCEL, /* a = timer id */
    OUT_CACHE_READ,   /* a = xxh3-64 of the content (0 = miss), b = length; name follows */
    OUT_DONE,         /* the worker finished shutdown() and exits; a = 0: an endpoint closed,
                       * 1: the app closed (cessna_close_session) with code b (int64), its
                       * text (at most SHM_CLOSE_TEXT_MAX bytes) follows */
    OUT_FAIL,         /* the worker gives up (reason in shm_ctl.error) and exits */
    OUT_TIMER_PENDING,/* a = timer id, b = due time (event-time ms): see announce_timers_at;
                       * a = 0 ends the announcement */
    OUT_LOG,          /* a = the session's line number (1, 2, ...), b = level; the line's
                       * fields follow (app=NAME msg="..."), at most SHM_LOG_MAX bytes. The
                       * supervisor writes each number once: a replay's lines are dropped */
    OUT_SNAP_DONE,    /* a struct snap_report (SNAP_DONE) follows: a snapshot the worker
                       * wrote itself, reported behind the outputs of the events it holds
                       * (the report socket when the ring had no room) */
};

#define SHM_LOG_MAX 800

/* The session's report socket carries two fixed-size, versioned records per snapshot:
 *   SNAP_STARTED from the worker right after the fork, with the child's pidfd attached
 *                (SCM_RIGHTS): the supervisor watches every child from birth;
 *   SNAP_DONE    from the child once the file is written (or it failed), with, for a hot
 *                standby, an eventfd attached: the standby waits on it, and only the
 *                supervisor can release it (a stray SIGCONT cannot).
 * A snapshot the worker writes itself (a small state, no fork) has no SNAP_STARTED, and its
 * SNAP_DONE goes in the output ring (OUT_SNAP_DONE) unless the ring has no room.
 * `fd_no` is the number the attached descriptor has in the sender (checked with kcmp), so
 * the supervisor acts only on processes that provably belong to the session, never on a
 * pid a worker merely names. */
#define SNAP_REPORT_VERSION 2u
enum snap_report_kind { SNAP_STARTED = 1, SNAP_DONE = 2 };
struct snap_report {
    uint32_t version;
    uint32_t kind;
    int32_t  status;        /* 0, or -errno */
    int32_t  pid;           /* the child (informational: logged, never acted on) */
    uint32_t hot;           /* it now waits as the hot standby */
    int32_t  fd_no;         /* SNAP_STARTED: the report socket's number in the child;
                             * SNAP_DONE: the attached eventfd's number in the child */
    uint64_t req;           /* the request id (shm_ctl.snap_req) */
    uint64_t position;
    uint64_t gen;
    uint64_t bytes, pages_written, pages_total;
    uint64_t write_ns;
    uint64_t fork_ns;       /* from just before fork() to the child running */
    char     text[200];     /* the reason, when status != 0 */
};

struct shm_rec {
    uint64_t pos;   /* event position: of this event (input) or of the event that produced it */
    uint64_t time;  /* input: the event's time in ms; output: 0 */
    uint64_t a;
    uint64_t b;
};

static inline size_t shm_total_size(uint32_t ring_size)
{
    return SHM_CTL_LEN + 2 * ring_mem_size(ring_size);
}
static inline void *shm_in_ring(void *base)  { return (char *)base + SHM_CTL_LEN; }
static inline void *shm_out_ring(void *base, uint32_t ring_size)
{
    return (char *)base + SHM_CTL_LEN + ring_mem_size(ring_size);
}

/* Each ring's data bytes unless the config says otherwise (ring_bytes). The size does not
 * depend on max_message_bytes: a message larger than a ring record crosses in pieces
 * (ring.h, long records), so a session keeps two small rings resident, not four of its
 * largest messages per ring. */
#define SHM_RING_BYTES (256u << 10)

#endif
