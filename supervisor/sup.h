/* sup.h - the supervisor's types: the io_uring loop, connections, sessions. */
#ifndef CESSNA_SUP_H
#define CESSNA_SUP_H

#include <liburing.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "evstore.h"
#include "hibernate.h"
#include "ring.h"
#include "sesslog.h"
#include "shm.h"
#include "statedir.h"
#include "timeouts.h"
#include "timers.h"
#include "wire.h"
#include "zygote.h"

/* user_data of every io_uring operation: {operation, session slot, argument}. */
enum op {
    OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_CONNECT, OP_DOORBELL, OP_WORKER_EXIT,
    OP_TIMER, OP_TIMER_CANCEL, OP_CTL_ACCEPT, OP_SIGNAL, OP_ZYGOTE,
    OP_REPORT, OP_TICK, OP_REAP,
    OP_SWEEP,          /* the periodic sweep (timeouts.c) */
    OP_ACCEPT_RESUME,  /* accepting paused after EMFILE/ENFILE resumes */
    OP_CTL_RECV, OP_CTL_SEND,   /* control connections (control.c); slot = connection */
    OP_ZYGOTE_RESTART, OP_ZYGOTE_READY,   /* a zygote being restarted (zygote.c) */
    OP_IGNORE,         /* completions of cancels: nothing to do */
    OP_ZYGOTE_REPLY,   /* the zygote answered spawn requests */
    /* (the OP_ZYGOTE* operations carry the zygote's generation in the slot) */
    OP_SNAPSYNC,       /* the snapshot sync thread finished a batch (snapsync.c) */
    OP_METRICS_ACCEPT, OP_METRICS_RECV, OP_METRICS_SEND,   /* metrics.c; slot = connection */
    OP_SOCK_CTL, OP_SOCK_CLOSE,   /* a direct socket's shutdown or setsockopt, its close
                                   * (connfd.c); arg = side */
    OP_WAKE,           /* a worker's wake-up byte: completes if it failed (doorbell.c) */
    OP_SNAPSYNC_GAP,   /* the gap before the next snapshot sync is over (snapsync.c) */
};
#define UD(op, slot, arg) (((uint64_t)(op) << 56) | ((uint64_t)(slot) << 24) | ((uint64_t)(arg) & 0xffffff))
#define UD_OP(ud)   ((int)((ud) >> 56))
#define UD_SLOT(ud) ((uint32_t)(((ud) >> 24) & 0xffffffff))
#define UD_ARG(ud)  ((uint32_t)((ud) & 0xffffff))

enum side { SIDE_CLIENT = 0, SIDE_SERVER = 1 };

/* Outgoing bytes: one buffer being sent (immutable while the kernel reads it) and one
 * collecting what comes next; they swap when the send completes. */
struct outbuf {
    uint8_t *data;
    size_t len, cap;
};

struct conn {
    int fd;                 /* the socket: its index in the ring's file table when S.direct
                             * (connfd.c), else its descriptor; -1: none */
    enum side side;
    uint8_t *rbuf;          /* received bytes not yet parsed */
    size_t rlen, rcap;
    struct outbuf sending, pending;
    size_t sent;            /* bytes of `sending` already written */
    unsigned recv_armed : 1, send_armed : 1, connect_armed : 1;
    unsigned stalled : 1;   /* frames wait for room in the worker's input ring */
    unsigned up : 1;        /* connected and greeted; sending allowed */
    unsigned draining : 1;  /* closing: flush, shut down writes, discard input until EOF */
    unsigned eof : 1;       /* nothing more to read: the peer's EOF, CLOSE or an error */
    unsigned dead : 1;      /* nothing can be written: connect or send failed, reset */
    unsigned reset : 1;     /* close with a reset, never a FIN (the session moves on) */
    unsigned closed : 1;    /* the endpoint said CLOSE (or ERROR) */
    unsigned shut : 2;      /* shut down so far: 1 reads, 2 writes (connfd.c) */
    unsigned notice_owed : 1; /* a SNAP_DURABLE waits for the next frames (notice.c) */
    uint16_t ctl_ops;       /* its shutdowns and setsockopts in flight (connfd.c) */
    uint64_t next_seq;      /* DATA sequence number expected next */
    uint64_t last_tx_ms;    /* when something was last queued (HEARTBEAT when quiet) */
    uint64_t order_sent;    /* event position up to which this endpoint has the order */
    uint64_t notice_seq;    /* next_seq when a SNAP_DURABLE became owed to it (notice.c) */
};

/* Frames may be queued to c: connected, greeted, not failed, not closing. */
static inline int conn_reachable(const struct conn *c)
{
    return c->fd >= 0 && c->up && !c->dead && !c->draining;
}

enum sess_state {
    S_FREE = 0,
    S_HELLO,       /* client accepted, waiting for its HELLO */
    S_CONNECTING,  /* worker spawned, server endpoint being reached */
    S_RESUMING,    /* a RESUME: gathering what both endpoints hold (resume.c) */
    S_LIVE,
    S_CLOSING,     /* CLOSE event handed to the worker, waiting for it to finish */
    S_DEAD,        /* ended: flushing, then freed once nothing is in flight */
};

/* Snapshots on their way to the server endpoint (remote.c). */
#define SHIP_QUEUE 16
#define PRELIVE_RESPAWNS_MAX 8   /* then a kill before WELCOME fails the session */
struct ship {
    struct { uint64_t pos; int full; } q[SHIP_QUEUE];   /* durable here, not shipped yet */
    int nq;
    int active;
    int fd;                 /* the file being shipped */
    uint64_t pos, base, total, off;
    uint64_t seq[2];        /* the last client / server message it covers */
};

struct resume;

/* A snapshot child the supervisor watches (its pidfd came with SNAP_STARTED). */
#define SNAP_KIDS 8
struct snapchild {
    int pidfd;              /* -1: free entry */
    pid_t pid;
    uint64_t req;
};

/* A snapshot written at pos that becomes durable once no output of an event <= pos waits in
 * the worker's ring any more (an output is never forgotten before its connection has it). */
struct snap_pending {
    int valid;
    uint64_t pos, full;     /* its position and the full its chain starts at */
    uint64_t ticket;        /* the sync batch that makes its file durable; 0 = synced */
    uint32_t kind;          /* SNAP_FULL or SNAP_DELTA: its file name */
    uint64_t seq[2];        /* the last client / server message it covers */
    int standby_pidfd, wake_fd;
    pid_t standby_pid;
    struct snap_report rep;
};

struct session {
    uint32_t slot;
    enum sess_state state;
    uint64_t id;
    uint8_t token[WIRE_TOKEN_LEN];  /* the client's credential */
    uint64_t epoch;                 /* 1 for a new session; each resume advances it */
    struct conn c[2];
    unsigned inflight;      /* io_uring operations not completed yet */

    /* the worker */
    pid_t pid;
    int pidfd;                  /* only on kernels without IORING_OP_WAITID (exitwatch.c) */
    int memfd;
    int doorbell_out;           /* an eventfd on kernels without io_uring futex waits, else -1 */
    void *shm;
    size_t shm_len;
    struct shm_ctl *ctl;
    struct ring in, out;
    struct ring_asm out_asm;    /* an output arriving in pieces (session.c drain_worker) */
    uint64_t doorbell_val;
    uint32_t bell_out_seen;     /* bell_out as the last drain found it (doorbell.c) */
    int wake_failed;            /* a wake-up byte was not sent: the tick rings again */
    uint32_t prelive_respawns;  /* workers killed before WELCOME, each replaced (session.c) */
    unsigned worker_done : 1, worker_reaped : 1, doorbell_armed : 1, exit_armed : 1;
    unsigned out_stalled : 1, in_dirty : 1;
    unsigned spawning : 1;      /* a worker was asked of the zygote; its reply is pending */
    unsigned spawn_retry : 1;   /* ... or will be: the zygote's socket was full (session.c) */
    uint64_t spawn_retry_pos, spawn_retry_since_ms;
    uint32_t zgen;              /* its zygote (module): every worker it gets comes from there
                                 * (zygote.c; 0 before its first worker) */
    unsigned failed : 1;    /* ended by sess_fail: its directory is kept for offline replay */
    unsigned dir_taken : 1; /* a newer copy of the session (a resume) uses its directory */
    struct tmo tmo;
    struct hib hib;         /* hibernation (hibernate.c) */
    struct sesslog log;     /* the session-end line (sesslog.c) */

    /* events since the last durable snapshot, and local recovery */
    struct evstore ev;
    uint64_t crash_pos;         /* the event a worker last died at (0: none) */
    uint64_t max_timer_id;      /* timers armed so far: a replayed arm is not armed twice */
    uint32_t recoveries;

    /* snapshots (recovery.c) */
    int report_fd, report_worker_fd;    /* snapshot reports arrive on this socketpair; the
                                         * worker's end is ours only until it is sent */
    dev_t report_worker_dev;            /* ... and is known by its inode after that */
    ino_t report_worker_ino;
    unsigned report_armed : 1, snap_inflight : 1, need_full : 1;
    unsigned snap_lazy : 1;             /* the request in flight was not rung: the worker
                                         * takes it when it next wakes (recovery.c) */
    unsigned snap_req_full : 1;         /* the request in flight is for a full snapshot */
    uint64_t gen;                       /* worker generation: stale reports are ignored */
    uint64_t snap_req_id;               /* id of the newest snapshot request */
    uint64_t snap_pos;                  /* newest durable snapshot, 0 = none */
    uint64_t notice_pos, notice_seq[2]; /* the SNAP_DURABLE owed to the endpoints (notice.c) */
    uint64_t notice_since_ms;           /* owed since (0: none owed) */
    uint64_t notice_bytes;              /* held bytes freed since a notice last went */
    uint64_t snap_written;              /* newest snapshot file written (a delta's base) */
    uint64_t snap_written_full;         /* the full that the written chain starts at */
    uint64_t snap_requested_ms;
    uint32_t deltas_since_full;
    uint64_t state_pages;               /* the state's pages at the newest snapshot written */
    uint32_t spares;                    /* spare files believed in its directory (snap.c) */
    uint64_t pruned_full;               /* the full the last prune kept (older chains gone) */
    uint64_t lone_full;                 /* the durable chain is this full alone, and nothing
                                         * else went wrong since: the next prune retires it
                                         * by name (0: read the directory) */
    uint32_t prunes_by_name;            /* since the directory was last read */
    uint64_t reuse_full;                /* a full no longer needed whose file the next
                                         * snapshot request hands its writer (shm_ctl
                                         * snap_reuse) instead of retiring it here: one
                                         * rename fewer per snapshot; 0 = none */
    struct snapchild kids[SNAP_KIDS];   /* snapshot children alive, watched by pidfd */
    struct snap_pending pend;           /* written, durable once its outputs are handed over */
    pid_t standby_pid;                  /* the hot standby, 0 = none */
    int standby_pidfd, standby_wake_fd;
    int promoted_fd;                    /* a promoted standby's watch: its worker watch reaps */
    uint64_t snapshots, snap_bytes, snap_write_ns, snap_fork_ns, snap_failures;
    uint64_t died_ns;                   /* when the last worker death was noticed */
    uint64_t wd_pos, wd_since_ms;       /* watchdog: the worker's position, and since when */
    unsigned wd_killed : 1;             /* the watchdog killed the worker */

    const char *recovery_mode;          /* of the last recovery: fresh, cold or hot */
    unsigned recovery_untimed : 1;      /* its duration is not in the metrics yet */

    /* event order */
    uint64_t next_pos;          /* position of the next event */
    uint64_t pushed_seq[2];     /* the last client / server message given a position */
    uint64_t snap_req_seq[2];   /* pushed_seq when the snapshot in flight was asked for */
    uint64_t snap_req_pos;      /* the position it was asked for (its seqs are of that one) */
    uint64_t last_time;
    uint8_t *order;             /* encoded entries from position order_base on */
    size_t order_len, order_cap;
    size_t *order_end;          /* order_end[p - order_base]: end of entry p in `order` */
    size_t order_end_cap;
    uint64_t order_base;        /* first position held in `order` */
    uint64_t order_prev_time;   /* time of the last entry encoded */

    struct timers timers;

    /* remote durability and resume (remote.c, resume.c) */
    struct ship ship;
    uint64_t receipt;           /* the client confirmed every output up to this event */
    int server_stores;          /* the server endpoint stores snapshots (WIRE_F_STORES) */
    uint64_t remote_pos;        /* newest snapshot stored at the server endpoint */
    uint64_t log_done;          /* the app's log lines written (OUT_LOG numbers) */
    uint64_t replay_quiet_until;/* rebuilt events up to here: their timer arms are not
                                 * armed again (the worker reports what is pending) */
    struct resume *rs;          /* while S_RESUMING */
    uint64_t resume_ns[3];      /* monotonic: RESUME arrived, RESUME_INFO, the chain fetched */
    unsigned moving : 1;        /* a planned move (drain.c): MOVE once move_pos is stored */
    unsigned roams : 1;         /* its client endpoint has other edges (WIRE_F_ROAMS) */
    uint8_t framing;            /* its client endpoint's framing (HELLO), passed on to the server */
    uint64_t move_pos, move_deadline_ms;

    uint64_t outputs[2];        /* outputs sent to client / server */
    struct session *next_dirty;
};

struct sup_stats {
    uint64_t sessions_total, sessions_failed, worker_deaths, recoveries, bad_frames;
    uint64_t snapshots, snapshot_failures, hot_takeovers, cold_restores, log_failures;
    uint64_t lazy_rings;        /* periodic requests no event came to carry: rung (recovery.c) */
    uint64_t snap_reports_ring_full; /* a worker's own snapshot reported on its socket: its
                                      * output ring had no room for the record */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    uint64_t hello_timeouts, connect_timeouts, idle_timeouts, forced_closes;
    uint64_t accept_fd_limit, accept_paused;     /* EMFILE/ENFILE, and pauses it caused */
    uint64_t zygote_restarts, dirs_removed, ctl_timeouts;
    uint64_t dirs_reused;       /* session directories taken from the free pool (statedir.c) */
    uint64_t resumes, moves;                            /* sessions rebuilt here after another edge lost them */
    uint64_t events;            /* events ordered, every session */
    uint64_t sessions_ended;    /* sessions (with an id) whose slot was freed */
    uint64_t spawns_deferred;   /* spawns that found the zygote's socket full and waited */
};

struct sup {
    struct config cfg;
    struct io_uring ring;
    int listen_fd, ctl_fd, signal_fd;
    struct sockaddr_storage server_addr;
    socklen_t server_addrlen;
    size_t max_body;            /* largest frame body accepted */
    uint8_t edge_secret[WIRE_SECRET_MAX];   /* edge_secret_file's content, proved to the */
    size_t edge_secret_len;                 /* server endpoint (0: none configured) */
    uint32_t ring_size;
    /* How far a session's worker may fall behind before its input stops, and how much of
     * its output may wait to go out before it is no longer drained, beyond its rings: the
     * slack the old rings of 4 largest messages gave (a cycle such as client -> app ->
     * echo server -> app -> client needs it), kept in the supervisor's heap, which only
     * holds it while a side is slow, instead of in rings resident for every session. */
    size_t unfed_max, out_high_water;

    int futex_bells;            /* io_uring waits on futex words (doorbell.c) */
    int flush_held;             /* sup_flush only queues: the caller flushes once after */
    int strays_possible;        /* a worker ended since the last stray-child sweep */
    int spawn_backlog_full;     /* the zygote's socket was full this tick (session.c) */
    int waitid_watch;           /* io_uring waits for a worker's exit by pid (exitwatch.c) */
    int direct;                 /* session sockets are direct descriptors (connfd.c) */
    int lock_fd;                /* STATE_DIR/supervisor.lock, held (flock) while we run */
    int log_level_fd;           /* the node-wide log level page (log_share), or -1 */

    struct session *sessions;   /* `slots` slots (calloc: untouched ones cost no memory) */
    uint32_t slots;             /* max_sessions at start: a reload may lower the limit or
                                 * raise it back up to this, not past it */
    uint32_t nsessions;
    uint32_t slot_high;         /* slots below this have been used; the rest never were */
    uint32_t *free_slots, nfree;/* freed slots, taken again first */
    struct session *dirty;      /* sessions whose worker doorbell must ring before sleeping */
    struct sup_stats stats;
    uint32_t ncpu;              /* online cores */
    uint32_t spin_ns;           /* what workers may poll now (see update_spin_policy) */
    int stopping;
    int draining;               /* moving every session away, then stopping (drain.c) */
    uint64_t drain_deadline_ms;
    int exit_code;              /* non-zero when the supervisor stops because of an error */
};

extern struct sup S;

/* session.c: room for `more` bytes after b->len (grows by doubling). 0 or -ENOMEM. */
int outbuf_reserve(struct outbuf *b, size_t more);

/* loop.c */
struct io_uring_sqe *sup_sqe(void);
void sup_arm_recv(struct session *s, struct conn *c);
void sup_flush(struct session *s, struct conn *c);

/* recovery.c: snapshots, the hot standby, and bringing a session back after its worker died */
void recovery_tick_arm(void);
void recovery_on_tick(void);
void recovery_on_report(struct session *s, int fd, int res);
/* OUT_SNAP_DONE: the report of a snapshot the worker wrote itself, from its output ring.
 * 0, or -EPROTO when it makes no sense (the session is failed). */
int recovery_ring_report(struct session *s, const void *rep, size_t len);
void recovery_on_reap(uint32_t slot, int pidfd, int res);
/* After outputs were taken from the worker's ring: a pending snapshot may become durable. */
void recovery_outputs_drained(struct session *s);
/* The sync of batch `ticket` (snapsync.c) ended with rc: the pending snapshot of that
 * batch is on disk now (rc 0), or failed and is taken away (rc < 0). */
void recovery_synced(struct session *s, uint64_t ticket, int rc);
/* A fresh session: no snapshot state, no children (before recovery_setup). */
void recovery_init(struct session *s);
int  recovery_request_snapshot(struct session *s, char *msg, size_t len);
void recovery_start(struct session *s, const char *how, int own_fault);
void recovery_end(struct session *s);   /* the session is over: drop the standby */
void recovery_worker_gone(struct session *s);   /* an ended session's worker was reaped */
void recovery_reap_strays(void);
/* Hibernation (hibernate.c): the standby, a written snapshot and any snapshot child go;
 * once the worker is reaped, the report socket is read to its end and shut down. */
void recovery_hibernate(struct session *s);
void recovery_close_reports(struct session *s);
void recovery_close_report(int fd);        /* our end, after submitting what is queued */
void recovery_close_late(void);            /* the loop, after submitting: closes that waited */
int  recovery_kids_reaped(const struct session *s);   /* no standby or snapshot child left */
/* Timed snapshots in flight at once, node-wide: each holds a child's pidfd (and a fork's
 * CPU); the rest wait for the next tick. */
#define SNAPSHOTS_IN_FLIGHT 1024
int  recovery_setup(struct session *s, char *err, size_t errlen);
int  recovery_worker_end(struct session *s, char *err, size_t errlen);
void recovery_worker_end_sent(struct session *s);
/* The user sandboxed workers run as (0 and *uid, *gid), or -1: none (files stay ours). */
int  recovery_worker_owner(uid_t *uid, gid_t *gid);

/* olog.c: the ordering log file, written when the session fails or on request */
/* Write the held events to STATE_DIR/ID/events-FIRST.log (path set). 0 or -errno. */
int  olog_dump(struct session *s, char *path, size_t pathlen, char *err, size_t errlen);
void olog_on_failure(struct session *s);   /* the same, a warning when it cannot */

/* session.c */
/* Append to a connection's output (sup_flush sends it). 0 or -ENOMEM. */
int  sess_queue(struct conn *c, const void *a, size_t alen, const void *b, size_t blen);
/* Give the next event its position, keep it and feed it. time_ms 0: now, within the held
 * limits (-EAGAIN past them); else that time, rebuilding a session's events. */
int  sess_push_event_at(struct session *s, uint16_t type, uint8_t src, uint64_t a,
                        const void *data, size_t len, uint64_t time_ms);
/* Open the connection to the server endpoint with `first` (HELLO or RESUME) queued; the
 * connect completes in sess_on_connect. 0, or -errno with a reason in err. */
int  sess_connect_server(struct session *s, const void *first, size_t len, char *err,
                         size_t errlen);
/* Shared memory, doorbells and the directory for a session about to get its worker. */
int  sess_prepare(struct session *s, char *err, size_t errlen);
/* Fresh rings and the held events rewound to `position`, for a worker about to take over. */
int  sess_reset_worker(struct session *s, uint64_t position, char *err, size_t errlen);
/* The zygote's answer to sess_spawn_worker(). */
void sess_worker_spawned(struct session *s, pid_t pid, int pidfd);
void sess_retry_spawns(void);
void sess_spawn_failed(struct session *s, const char *why);
/* Watch a (new) worker process: its pidfd and its doorbell. */
void sess_watch_worker(struct session *s, pid_t pid, int pidfd);
/* A worker from the zygote: fresh (restore_pos 0) or from the snapshot at restore_pos. */
int  sess_spawn_worker(struct session *s, uint64_t restore_pos, char *err, size_t errlen);
void sess_feed(struct session *s);
void sess_flow_limits(void);
/* A durable snapshot at p: both endpoints get the order up to p; it is trimmed. */
void sess_order_durable(struct session *s, uint64_t p);
/* Input that waited (worker ring full, held events at their limit) goes on. */
void sess_resume_input(struct session *s);
void sess_fail(struct session *s, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* End this copy of the session without a word to anyone (it lives on elsewhere). */
void sess_end_quietly(struct session *s);
void sess_send_all(struct session *s, const void *frame, size_t len);
uint64_t sess_now_ms(void);
void sess_accept(int fd);
void sess_on_recv(struct session *s, enum side side, int res);
void sess_on_sock_ctl(struct session *s, enum side side, int res);
void sess_on_send(struct session *s, enum side side, int res);
void sess_on_connect(struct session *s, int res);
void sess_on_doorbell(struct session *s, int res);
void sess_on_worker_exit(struct session *s, int res);
void sess_on_timer(struct session *s, uint32_t arg, int res);
void sess_ring_doorbells(void);
void sess_release_op(struct session *s);
/* Free the slot of an ended session once nothing of it is in flight (safe to call often). */
void sess_maybe_free(struct session *s);
int  sess_rbuf(struct conn *c);
struct session *sess_find(uint64_t id);
int  sess_kill_worker(uint64_t id, char *msg, size_t len);

/* doorbell.c: the doorbells in each session's shared memory (common/bell.h) */
void doorbell_probe(void);                              /* sets S.futex_bells */
void exitwatch_probe(void);                             /* sets S.waitid_watch */
void sess_arm_exit_watch(struct session *s);
void sess_keep_pidfd(struct session *s, int pidfd);
int sess_signal_worker(struct session *s, int sig);
void sess_arm_doorbell(struct session *s, uint32_t seen);   /* wait for bell_out != seen */
void sess_ring_own_doorbell(struct session *s);         /* complete our own wait */
void sess_ring_worker(struct session *s);               /* wake the worker (bell_in) */
void sess_expect_worker(struct session *s);             /* wait for its bell, if not yet */
void sess_bell_check(struct session *s, int thorough);  /* the tick's look at an idle one */
void sess_wake_failed(uint32_t slot, int res);         /* OP_WAKE: a byte was not sent */
int  sess_worker_owes_nothing(const struct session *s);

/* control.c: control connections are served through io_uring, never blocking the loop */
int  ctl_listen(const char *path, char *err, size_t errlen);
void ctl_accept(int fd);
void ctl_on_recv(uint32_t idx, int res);
void ctl_on_send(uint32_t idx, int res);
void ctl_sweep(uint64_t now_ms);         /* close control connections that take too long */
/* The state cessna-ctl sessions shows: live, hibernated, ending, ... */
const char *ctl_state_name(const struct session *s);


#endif
