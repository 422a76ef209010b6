/* config.h - the edge's INI configuration: section [edge], and [app] for the app
 * (README "Configuration"). */
#ifndef CESSNA_CONFIG_H
#define CESSNA_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "appcfg.h"

enum standby_mode { STANDBY_COLD = 0, STANDBY_HOT = 1 };

struct config {
    char     listen[256];          /* HOST:PORT for client endpoints (required) */
    char     server[256];          /* HOST:PORT of the server endpoint (required) */
    char     app[PATH_MAX];        /* path of the app module .so (required) */
    char     state_dir[PATH_MAX];  /* snapshots and ordering logs (default /var/lib/cessna) */
    char     control[PATH_MAX];    /* control socket (default STATE_DIR/control.sock) */
    char     cache_dir[PATH_MAX];  /* objects for cessna_cache_read ("" = no cache) */
    char     metrics_listen[256];  /* HOST:PORT of the Prometheus endpoint ("" = off) */
    uint64_t snapshot_interval_ms; /* 0 = no periodic snapshots (default 1000) */
    enum standby_mode standby;     /* cold | hot (default cold) */
    uint32_t max_sessions;         /* 0 (default): derived from the descriptor limit */
    uint32_t max_fds;              /* the descriptor limit to run with; 0: what max_sessions needs */
    uint32_t max_message_bytes;    /* default 1 MiB, at most 64 MiB */
    uint64_t max_session_memory;   /* a session's heap (arena) cap in bytes, default 256 MiB */
    uint32_t ring_bytes;           /* each shared-memory ring, a power of two (default 256 KiB) */
    int      busy_poll;            /* 1 = auto (poll briefly when cores are spare), 0 = off */
    uint64_t snapshot_timeout_ms;  /* a snapshot not reported by then failed (default 10000) */
    uint64_t max_event_ms;         /* an event running longer fails (default 5000, 0 = off) */
    uint64_t max_held_bytes;       /* held events per session: a snapshot is forced at half,
                                    * input stops at the limit (default 64 MiB, 0 = none) */
    uint64_t snapshot_max_events;  /* events held past the newest written snapshot that ask for
                                    * a snapshot now, however recent the last (default 50000, 0 = off;
                                    * not with snapshot_interval_ms = 0) */
    uint64_t snapshot_min_events;  /* the interval's snapshot waits for this many events past the
                                    * newest written snapshot, up to SNAP_QUIET_INTERVALS
                                    * intervals (default 4; 1 = every interval) */
    uint64_t snapshot_full_pages;  /* a state of at most this many pages is snapshotted full
                                    * every time (default 16, 0 = deltas at every size) */
    uint64_t snapshot_max_bytes;   /* the same in bytes of held events (default 8 MiB, 0 = off) */
    uint32_t snapshot_sync_gap_ms; /* at most one sync of state_dir's filesystem per this many ms;
                                    * snapshots written meanwhile share the next (default 20) */
    uint32_t hello_timeout_ms;     /* a connection without HELLO is closed (default 5000, 0 = off) */
    uint32_t connect_timeout_ms;   /* server endpoint connect + WELCOME (default 5000, 0 = off) */
    uint32_t idle_timeout_ms;      /* a live session with no event is ended (default 0 = off) */
    uint32_t close_wait_ms;        /* an ended session's peers that keep their connections
                                    * open this long are shut down (default 3000) */
    uint32_t control_timeout_ms;   /* a control connection must be done by then (default 1000) */
    uint32_t zygote_ready_timeout_ms;  /* a starting zygote reports ready by then (10000) */
    uint32_t zygote_answer_timeout_ms; /* a spawn request unanswered this long: the zygote is
                                        * killed and restarted (default 5000) */
    uint32_t zygote_backoff_max_ms;    /* a zygote that keeps dying is restarted after 100 ms,
                                        * doubling up to this (default 10000) */
    uint64_t hibernate_after_ms;   /* a live session with no event for this long gives up its
                                    * worker until its next event (default 30000, 0 = off) */
    uint32_t failed_sessions_keep; /* directories of failed sessions kept (default 100) */
    uint32_t session_dirs_ahead;   /* free session directories made ahead, in the loop's spare
                                    * turns, so that new sessions need no mkdir (default 0) */
    char     worker_user[64];      /* workers run as this user when the edge is root (nobody) */
    int      sandbox;              /* 1 = confine workers (default), 0 = off (docs/sandbox.md) */
    char     edge_secret_file[PATH_MAX]; /* the secret proved to the server endpoint ("" = none) */
    int      ship_snapshots;       /* 1 = ship durable snapshots to the server endpoint (default) */
    uint32_t heartbeat_interval_ms;
    int      log_level;            /* LOG_ERROR .. LOG_DEBUG (default info); CESSNA_LOG wins */
    uint64_t drain_timeout_ms;     /* a drain closes what is left after this (default 30000) */ /* HEARTBEAT on a connection quiet this long (default 1000, 0 = off) */
    /* [app]: any keys, for the app (cessna_config); "key\0value\0" pairs (appcfg.h) */
    char     app_kv[APPCFG_BYTES];
    uint32_t app_kv_len, app_nkeys;
};

/* Defaults, then the file. 0, or -EINVAL with "FILE:LINE: reason" (or "FILE: reason") in err.
 * Relative paths (app, state_dir, control, cache_dir, edge_secret_file) are made absolute
 * against the directory of the file. */
int config_load(const char *path, struct config *c, char *err, size_t errlen);

void config_defaults(struct config *c);

/* The keys one by one, for comparing two configurations (a reload, supervisor/reload.c):
 * key i's name, whether a and b differ in it, and copying its value. */
size_t      config_nkeys(void);
const char *config_key(size_t i);
int         config_key_differs(const struct config *a, const struct config *b, size_t i);
void        config_key_copy(struct config *dst, const struct config *src, size_t i);

#endif
