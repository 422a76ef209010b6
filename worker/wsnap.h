/* wsnap.h - the worker's side of snapshots (see snapshot.c). */
#ifndef CESSNA_WSNAP_H
#define CESSNA_WSNAP_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "snap.h"

struct snap_report;

struct wsnap_request {
    const char *state_dir;
    int dirfd;              /* STATE_DIR/SESSION_ID, open: the file goes there */
    uint64_t session_id;
    uint64_t position;      /* the state right after this event */
    uint64_t base;          /* 0: a full snapshot; else the delta's base */
    uint64_t gen;           /* the worker generation, echoed in the report */
    uint64_t req;           /* the request id, echoed in the report */
    int hot;                /* the child stays as the hot standby */
    uint32_t spares;        /* spare files believed to be in the directory (snap_set_spares) */
    uint64_t reuse;         /* a full no longer needed, its file taken first (snap_set_reuse) */
    uint32_t max_message;   /* the edge's max_message_bytes, recorded in the header */
    uint64_t seq[2], out_no[2];
};

/* Zygote, after loading the app: find its writable segments, compute the fingerprint. */
int  wsnap_init(const char *app_path, char *err, size_t errlen);
/* Worker: the page-hash tables shared with its snapshot children. */
int  wsnap_setup(char *err, size_t errlen);
/* The layout fingerprint of this zygote's workers (after wsnap_init). */
const uint8_t *wsnap_fingerprint(void);

/* Write the snapshot: a small state in the worker itself (2: *rep is its SNAP_DONE, which
 * the caller delivers), else in a frozen child that reports on report_fd (with the fork's
 * duration), after the worker reported the child's birth with its pidfd (0 in the worker;
 * 1 in a hot standby the supervisor woke to take over). -errno if the fork (or that first
 * report) failed. */
int  wsnap_take(const struct wsnap_request *rq, int report_fd, struct snap_report *rep);
/* Fresh worker: restore the session's snapshot at `position` (its chain) into memory. */
int  wsnap_restore(const char *state_dir, uint64_t session_id, uint64_t position,
                   struct snap_meta *m, char *err, size_t errlen);
void wsnap_dir(char *buf, size_t len, const char *state_dir, uint64_t session_id);

#endif
