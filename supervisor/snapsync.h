/* snapsync.h - group durability of snapshot files (see snapsync.c). */
#ifndef CESSNA_SNAPSYNC_H
#define CESSNA_SNAPSYNC_H

#include <stddef.h>
#include <stdint.h>

struct session;

struct snapsync_stats {
    uint64_t syncs, failures, files;     /* syncs done, failed; files handed to a sync */
    uint64_t inline_files;               /* of which the worker wrote itself, without a fork */
    uint64_t sync_ns_total, sync_ns_max;
    uint64_t waiting;                    /* files waiting for a sync now */
    int running;                         /* a sync is in flight */
};

/* Open state_dir, start the sync thread, arm its completion (after the ring is set up). 0,
 * or -errno with a reason in err. */
int  snapsync_init(char *err, size_t errlen);
/* Session s reported a written (not synced) snapshot file (by its worker itself when
 * inline_write, else by a snapshot child): its ticket, the batch that will
 * make it durable (recovery_synced(s, ticket, rc) says when), or 0 when it cannot be
 * tracked (out of memory): the snapshot must then be treated as failed. */
uint64_t snapsync_written(struct session *s, int inline_write);
/* The before-sleep hook: start a sync when files wait and none is in flight. */
void snapsync_kick(void);
/* The gap between two batches' starts is over (OP_SNAPSYNC_GAP). */
void snapsync_on_gap(void);
/* The sync thread finished a batch (OP_SNAPSYNC). */
void snapsync_on_done(int res);
const struct snapsync_stats *snapsync_stats(void);

#endif
