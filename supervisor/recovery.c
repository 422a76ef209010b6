/* recovery.c - snapshots and local recovery (DESIGN.md sections 3 and 5).
 *
 * Every snapshot_interval_ms (or sooner, when the events held pass snapshot_max_events or
 * snapshot_max_bytes, or half of max_held_bytes; never when the session has not moved) the
 * supervisor asks a session's worker for a snapshot of its state right after the newest
 * ordered event P. The worker forks and reports the child's birth with its pidfd
 * (SNAP_STARTED): from then on the child is watched, and reaped whatever becomes of it. The
 * frozen child writes the file, without fsync, and reports (SNAP_DONE). A written snapshot
 * becomes durable once the sync of its batch is done (snapsync.c: one syncfs for every file
 * written meanwhile) and no output of an event <= P waits in the worker's ring (those outputs are
 * handed to their connections first; recovery starts after P and would never make them
 * again). Durable: the events up to P are dropped and both endpoints hear SNAP_DURABLE.
 * In hot standby mode the child stays, waiting on an eventfd only the supervisor holds.
 *
 * A request that gets no answer within snapshot_timeout_ms, a child that dies before it
 * reports, and a failed write are counted as failures and retried at the next interval.
 *
 * When a worker dies, a new one takes over from the newest durable snapshot: the hot
 * standby (woken through its eventfd) or a fresh worker from the zygote that loads the
 * snapshot from disk (cold); it replays the stored events after P, and the outputs the
 * endpoints already have are dropped as they come again.
 *
 * The worker is not trusted: the supervisor acts only on pidfds, checks that a pidfd's
 * process holds this session's report socket (kcmp) before it signals it, and never acts on
 * a pid a report names. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <poll.h>
#include <pwd.h>
#include <unistd.h>

#include "cachelog.h"
#include "log.h"
#include "metrics.h"
#include "notice.h"
#include "snap.h"
#include "spawn.h"
#include "remote.h"
#include "snapsync.h"
#include "sup.h"

#define FULL_EVERY 8   /* a full snapshot after this many deltas */

#define QUIET_INTERVALS 10   /* a session below snapshot_min_events waits at most this many */

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

/* A state of at most snapshot_full_pages is snapshotted full every time: a full of a few
 * pages costs what a delta does, and it retires the previous file at once (a spare for the
 * next), where a chain of deltas makes a new file, a new inode, for each of its first
 * FULL_EVERY + 1 snapshots. Allocating inodes among recently freed ones was a third of the
 * workers' CPU with 10,000 sessions snapshotting (perf: ext4 find_inode_bit,
 * recently_deleted). */
static int small_state(const struct session *s)
{
    return s->state_pages && s->state_pages <= S.cfg.snapshot_full_pages;
}

#define LAZY_WAIT_MIN_MS 500   /* a periodic request waits at least this long for an event */
#define PRUNES_BY_NAME_MAX 64   /* make_durable reads a session's directory at least this often */
#define REUSE_MAX_BYTES (64u << 10)   /* a larger full is retired (emptied), not handed on */
#define STRAY_SWEEP_MS 5000     /* recovery_reap_strays at least this often */

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- processes: pidfds only ---- */

/* The pid behind a pidfd, or -1 when fd is not a pidfd (a /proc directory, an eventfd...). */
static pid_t pidfd_pid(int fd)
{
    char path[64], line[128];
    pid_t pid = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Pid: %d", &pid) == 1)
            break;
    fclose(f);
    return pid;
}

/* 1 when process pid has, as its descriptor their_fd, the same open file as our our_fd. */
static int holds_file(pid_t pid, int our_fd, int their_fd)
{
    if (pid <= 0 || their_fd < 0)
        return 0;
    return syscall(SYS_kcmp, getpid(), pid, KCMP_FILE, our_fd, their_fd) == 0;
}

/* 1 when process pid has, as its descriptor their_fd, the worker's end of s's report
 * socket (we closed our copy of it: its inode names it). */
static int holds_report_end(const struct session *s, pid_t pid, int their_fd)
{
    char path[64];
    struct stat st;

    if (pid <= 0 || their_fd < 0 || !s->report_worker_ino)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, their_fd);
    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == s->report_worker_dev &&
           st.st_ino == s->report_worker_ino;
}

/* 1 when the process behind pidfd is our child and has exited (not reaped yet). */
static int exited_child(int pidfd)
{
    siginfo_t si;

    memset(&si, 0, sizeof(si));
    return waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0 &&
           si.si_pid != 0;
}

static void signal_pidfd(int pidfd, int sig)
{
    if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == -1 &&
        errno != ESRCH)
        LOG(LOG_WARN, "msg=\"pidfd_send_signal\" signal=%d error=\"%s\"", sig, strerror(errno));
}

/* Reap the process behind pidfd when it exits; the completion closes the pidfd. */
static void watch_exit(struct session *s, int pidfd)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_poll_add(sqe, pidfd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_REAP, s->slot, pidfd));
}

static struct snapchild *kid_find(struct session *s, int pidfd)
{
    for (int i = 0; i < SNAP_KIDS; i++)
        if (s->kids[i].pidfd == pidfd && pidfd >= 0)
            return &s->kids[i];
    return NULL;
}

static struct snapchild *kid_by_req(struct session *s, uint64_t req)
{
    for (int i = 0; i < SNAP_KIDS; i++)
        if (s->kids[i].pidfd >= 0 && s->kids[i].req == req)
            return &s->kids[i];
    return NULL;
}

/* Kill a snapshot child (a standby nobody needs, a stale or stuck child); its exit watch
 * reaps it and closes the pidfd. Never blocks. */
static void kill_kid(struct snapchild *k)
{
    if (k && k->pidfd >= 0)
        signal_pidfd(k->pidfd, SIGKILL);
}

void recovery_init(struct session *s)
{
    for (int i = 0; i < SNAP_KIDS; i++)
        s->kids[i].pidfd = -1;
    s->report_fd = s->report_worker_fd = -1;
    s->standby_pidfd = s->standby_wake_fd = s->promoted_fd = -1;
    s->pend.standby_pidfd = s->pend.wake_fd = -1;
}

static int read_reports(struct session *s);

/* The poll's argument is the socket it watches: a report socket replaced for a new worker
 * (new_report_pair) is closed when its cancelled poll completes. */
static void arm_report(struct session *s)
{
    if (s->report_armed || s->report_fd < 0)
        return;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, s->report_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_REPORT, s->slot, s->report_fd));
    s->report_armed = 1;
    s->inflight++;
}

/* The user a sandboxed worker runs as, when we are root (docs/sandbox.md): it owns its
 * session directory, to write snapshots there. 0 and *uid, or -1 for none. */
int recovery_worker_owner(uid_t *uid, gid_t *gid)
{
    static int known = -2;
    static uid_t u;
    static gid_t g;

    if (known == -2) {
        struct passwd *pw = NULL;
        known = -1;
        if (S.cfg.sandbox && geteuid() == 0 && strcmp(S.cfg.worker_user, "root") != 0)
            pw = getpwnam(S.cfg.worker_user);
        if (pw && pw->pw_uid != 0) {
            u = pw->pw_uid;
            g = pw->pw_gid;
            known = 0;
        }
    }
    *uid = u;
    *gid = g;
    return known;
}

/* Our ends of report sockets whose close waits for the submission queue to empty. */
static struct {
    int *fds;
    size_t n, cap;
} late;

/* Our end of a report socket, closed: the loop's queued submissions go first, so that a
 * ring's byte (sess_ring_worker) queued for this descriptor cannot reach the next file to
 * take its number. If the kernel did not take them all (its completion queue full, say),
 * the close waits until a submission did (recovery_close_late). */
void recovery_close_report(int fd)
{
    io_uring_submit(&S.ring);
    if (!io_uring_sq_ready(&S.ring)) {
        close(fd);
        return;
    }
    if (late.n == late.cap) {
        size_t cap = late.cap ? 2 * late.cap : 16;
        int *p = realloc(late.fds, cap * sizeof(*p));
        if (!p) {   /* the descriptor stays open for good rather than risk the byte */
            LOG(LOG_ERROR, "msg=\"out of memory: a report socket is left open\" fd=%d", fd);
            return;
        }
        late.fds = p;
        late.cap = cap;
    }
    late.fds[late.n++] = fd;
}

/* After each submission of the loop: the closes that waited, once nothing is queued. */
void recovery_close_late(void)
{
    if (!late.n || io_uring_sq_ready(&S.ring))
        return;
    for (size_t i = 0; i < late.n; i++)
        close(late.fds[i]);
    late.n = 0;
}

/* A new report socketpair. We keep our end; the worker's end goes to the zygote with the
 * spawn request and is closed here once sent (recovery_worker_end_sent): one descriptor per
 * session, not two. What identifies the worker's end afterwards is its inode, which no
 * other open file shares (holds_report_end). A pair already in use (the worker that had it
 * died) is replaced: its reports are read first, its poll cancelled, and its socket closed
 * when that completes (recovery_on_report). */
static int new_report_pair(struct session *s, char *err, size_t errlen)
{
    struct stat st;
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -errno;
    }
    if (fstat(sv[1], &st) == -1) {
        snprintf(err, errlen, "fstat of a report socket: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -EIO;
    }
    if (s->report_fd >= 0) {
        int old = s->report_fd;
        read_reports(s);   /* the dead worker's children are watched (and killed) now */
        if (s->report_armed) {
            struct io_uring_sqe *sqe = sup_sqe();
            io_uring_prep_cancel64(sqe, UD(OP_REPORT, s->slot, old), 0);
            io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
            s->report_armed = 0;   /* the cancelled poll closes `old` (recovery_on_report) */
        } else {
            recovery_close_report(old);
        }
    }
    /* Our end never blocks the loop; the worker's end stays blocking. */
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    s->report_fd = sv[0];
    s->report_worker_fd = sv[1];
    s->report_worker_dev = st.st_dev;
    s->report_worker_ino = st.st_ino;
    arm_report(s);
    return 0;
}

/* The worker's end of the report socket, for a spawn request: -1 with err on failure. */
int recovery_worker_end(struct session *s, char *err, size_t errlen)
{
    if (s->report_worker_fd < 0 && new_report_pair(s, err, errlen) < 0)
        return -1;
    return s->report_worker_fd;
}

void recovery_worker_end_sent(struct session *s)
{
    if (s->report_worker_fd >= 0)
        close(s->report_worker_fd);
    s->report_worker_fd = -1;
}

/* The session's snapshot directory: a free one of an ended session (statedir.c, only empty
 * spares in it) or a new one. Owned by the worker's user either way (worker_user may have
 * changed since). (The report socket is made with the first worker.) */
int recovery_setup(struct session *s, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    uid_t uid;
    gid_t gid;

    snprintf(dir, sizeof(dir), "%s/%llu", S.cfg.state_dir, ull(s->id));
    uint32_t spares;
    int rc = sdir_take(s->id, &spares);   /* -EEXIST: it has one (a wake, a resume) */
    if (rc == 0)
        s->spares = spares;   /* its snapshots take those first (snap_set_spares) */
    if (rc != 0 && rc != -EEXIST && mkdir(dir, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "snapshot directory %s: %s", dir, strerror(errno));
        return -errno;
    }
    if (recovery_worker_owner(&uid, &gid) == 0 && chown(dir, uid, gid) == -1) {
        snprintf(err, errlen, "snapshot directory %s: chown: %s", dir, strerror(errno));
        return -errno;
    }
    return 0;
}

/* ---- the hot standby ---- */

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Kill the standby; its exit watch reaps it. Never blocks the loop. */
static void drop_standby(struct session *s)
{
    if (s->standby_pidfd >= 0)
        kill_kid(kid_find(s, s->standby_pidfd));
    s->standby_pid = 0;
    s->standby_pidfd = -1;
    close_fd(&s->standby_wake_fd);
}

static void drop_pending(struct session *s)
{
    if (!s->pend.valid)
        return;
    if (s->pend.standby_pidfd >= 0)
        kill_kid(kid_find(s, s->pend.standby_pidfd));
    close_fd(&s->pend.wake_fd);
    s->pend.standby_pidfd = -1;
    s->pend.valid = 0;
}

/* ---- requests ---- */

/* Wake the worker for its request, and wait on its bell: a snapshot it writes itself is
 * reported in its output ring (OUT_SNAP_DONE), seen only when its bell is waited on. */
static void ring_for_snapshot(struct session *s)
{
    sess_ring_worker(s);
    sess_expect_worker(s);
}

/* A request in flight that was not rung (lazy): ring now. */
static void ring_lazy_request(struct session *s)
{
    if (!s->snap_inflight || !s->snap_lazy)
        return;
    s->snap_lazy = 0;
    s->snap_requested_ms = tmo_now_ms();   /* snapshot_timeout_ms counts from here */
    ring_for_snapshot(s);
}

/* lazy: the periodic snapshot of a session that moves: the request waits in the control
 * page without waking the worker, which takes it before the next event it is woken for
 * (the snapshot is at the same position: the worker acts when it has finished event P);
 * the tick rings it (lazy_rings) if none came within two intervals (snapshot_interval_ms,
 * at least LAZY_WAIT_MIN_MS): a session that moves once an interval then carries its
 * requests itself (with 500 ms at a message a second, half of them were rung), and still
 * does when a loaded node answers it late (with one interval, 40% were rung at 10,000
 * sessions, the echoes a second late, and the rings loaded the node more). A sleeping
 * worker woken only to write a snapshot costs two context switches and a wake. */
static int request_snapshot(struct session *s, char *msg, size_t len, int lazy)
{
    if (hib_holds(s)) {   /* hibernate.c: its snapshot at the last event is durable */
        snprintf(msg, len, "error: session %llu is hibernated (snapshot %llu is durable)\n",
                 ull(s->id), ull(s->snap_pos));
        return -ESRCH;
    }
    if (s->state != S_LIVE || s->pid <= 0 || s->worker_reaped) {
        snprintf(msg, len, "error: session %llu has no live worker\n", ull(s->id));
        return -ESRCH;
    }
    if (s->snap_inflight) {
        ring_lazy_request(s);   /* asked for now: not after the lazy wait */
        snprintf(msg, len, "error: session %llu is taking a snapshot already\n", ull(s->id));
        return -EBUSY;
    }
    uint64_t p = s->next_pos - 1;
    if (p == s->snap_pos && !s->pend.valid) {
        snprintf(msg, len, "ok snapshot of session %llu at position %llu is durable already\n",
                 ull(s->id), ull(p));
        return 0;
    }
    if (p == s->snap_written) {
        snprintf(msg, len, "ok snapshot of session %llu at position %llu is written; durable "
                 "once synced and its outputs reach the endpoints\n", ull(s->id), ull(p));
        return 0;
    }
    if (p == 0) {
        snprintf(msg, len, "error: session %llu has no event yet\n", ull(s->id));
        return -EAGAIN;
    }
    /* A newer snapshot would replace the one waiting for its sync, and be a delta on a file
     * that never became durable (nor was shipped): the chain stored off the node would have a
     * hole. The sync is short; ask again after it. */
    if (s->pend.valid && s->pend.ticket) {
        snprintf(msg, len, "error: session %llu has a snapshot at position %llu waiting for "
                 "its sync\n", ull(s->id), ull(s->pend.pos));
        return -EBUSY;
    }
    int full = s->need_full || !s->snap_written || s->deltas_since_full >= FULL_EVERY ||
               small_state(s);
    /* What the snapshot covers of each side's messages, for SNAP_DURABLE: known here, not
     * read back from the file the worker wrote. */
    s->snap_req_seq[SIDE_CLIENT] = s->pushed_seq[SIDE_CLIENT];
    s->snap_req_seq[SIDE_SERVER] = s->pushed_seq[SIDE_SERVER];
    s->snap_req_pos = p;
    s->ctl->snap_base = full ? 0 : s->snap_written;
    s->snap_req_full = full;
    s->ctl->snap_gen = s->gen;
    s->ctl->snap_hot = S.cfg.standby == STANDBY_HOT;
    s->ctl->snap_spares = s->spares;
    s->ctl->snap_reuse = s->reuse_full;
    if (s->reuse_full)
        s->reuse_full = 0;   /* the writer takes that file (a failure reads the dir) */
    else
        s->spares -= s->spares > 0;   /* the writer takes one */
    atomic_store_explicit(&s->ctl->snap_pos, p, memory_order_release);
    atomic_store_explicit(&s->ctl->snap_req, ++s->snap_req_id, memory_order_release);
    s->snap_inflight = 1;
    s->snap_lazy = lazy;
    s->snap_requested_ms = tmo_now_ms();
    if (!lazy)
        ring_for_snapshot(s);
    snprintf(msg, len, "ok snapshot of session %llu at position %llu (%s) requested\n",
             ull(s->id), ull(p), full ? "full" : "delta");
    return 0;
}

int recovery_request_snapshot(struct session *s, char *msg, size_t len)
{
    return request_snapshot(s, msg, len, 0);
}

static void snapshot_failed(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void snapshot_failed(struct session *s, const char *fmt, ...)
{
    char text[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    s->snap_inflight = 0;
    s->lone_full = 0;   /* a writer that failed may have left a temp file: read the dir */
    /* A request given up on may still be written late, its report then ignored: the
     * worker's page hashes would describe that file, not snap_written, and a delta on
     * snap_written would miss pages. The next snapshot is full. */
    s->need_full = 1;
    s->snap_failures++;
    S.stats.snapshot_failures++;
    LOG(LOG_WARN, "session=%llu msg=\"snapshot failed\" request=%llu error=\"%s\"", ull(s->id),
        ull(s->snap_req_id), text);
}

void recovery_tick_arm(void)
{
    static struct __kernel_timespec ts;

    if (S.stopping)
        return;
    ts.tv_sec = 0;
    ts.tv_nsec = 50 * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

/* Held events past half of max_held_bytes ask for a snapshot now, whatever the interval
 * (and even with periodic snapshots off): it is what lets them go. */
static int held_too_much(const struct session *s)
{
    return S.cfg.max_held_bytes && evstore_bytes(&s->ev) > S.cfg.max_held_bytes / 2;
}

/* Events ordered after the newest snapshot written. */
static uint64_t events_past_written(const struct session *s)
{
    return s->next_pos - 1 > s->snap_written ? s->next_pos - 1 - s->snap_written : 0;
}

/* What the session holds asks for a snapshot now, however recent the last one (periodic
 * snapshots must be on: snapshot_interval_ms = 0 still means "only when asked", apart
 * from held_too_much's safety valve): snapshot_max_events events after its newest written
 * snapshot, or snapshot_max_bytes of events held since its last durable one (counted only
 * when no written snapshot is on its way to durable: that one will let them go). A busy
 * session is snapshotted by how much it would replay, a quiet one by time. */
static int held_past_threshold(const struct session *s)
{
    uint64_t events = events_past_written(s);

    if (!S.cfg.snapshot_interval_ms)
        return 0;
    return (S.cfg.snapshot_max_events && events >= S.cfg.snapshot_max_events) ||
           (S.cfg.snapshot_max_bytes && !s->pend.valid &&
            evstore_bytes(&s->ev) >= S.cfg.snapshot_max_bytes);
}

/* The interval's snapshot is due: snapshot_interval_ms since the last request, and either
 * snapshot_min_events events since the newest written snapshot or QUIET_INTERVALS intervals.
 * A session that moves a little (a message a second: two events) is snapshotted every few
 * seconds, not every second: replaying a few events costs less than a snapshot (at 10,000
 * such sessions the snapshots were half of the node's work). */
static int interval_due(const struct session *s, uint64_t now)
{
    uint64_t iv = S.cfg.snapshot_interval_ms, since = now - s->snap_requested_ms;

    if (!iv || since < iv)
        return 0;
    return events_past_written(s) >= S.cfg.snapshot_min_events || since >= iv * QUIET_INTERVALS;
}

/* The event watchdog: a worker that spends more than max_event_ms on one event (not
 * waiting for its outputs to be taken) is killed; recovery replays the event, and a second
 * time at the same event is a crash loop (recovery_start). */
static void watchdog(struct session *s, uint64_t now)
{
    if (!S.cfg.max_event_ms || s->pid <= 0 || s->worker_reaped ||
        (s->state != S_LIVE && s->state != S_CLOSING))
        return;
    uint64_t c = atomic_load(&s->ctl->consumed);
    if (!s->wd_since_ms || c != s->wd_pos || s->out_stalled || c + 1 >= s->next_pos ||
        s->wd_killed) {
        s->wd_pos = c;
        s->wd_since_ms = now;
        return;
    }
    if (now - s->wd_since_ms < S.cfg.max_event_ms)
        return;
    LOG(LOG_WARN, "session=%llu msg=\"watchdog: event running too long\" event=%llu "
        "max_event_ms=%llu worker=%d", ull(s->id), ull(c + 1), ull(S.cfg.max_event_ms),
        (int)s->pid);
    s->wd_killed = 1;
    sess_signal_worker(s, SIGKILL);
}

static uint64_t oom_seen;   /* oom_kills() at the last worker death (or at start) */

/* The value of "key N" in a small text file, or -1. */
static long long read_counter(const char *path, const char *key)
{
    char line[256];
    size_t klen = strlen(key);
    long long n = -1;
    FILE *f = fopen(path, "re");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            n = atoll(line + klen + 1);
            break;
        }
    fclose(f);
    return n;
}

/* How many of the node's processes the OOM killer took: the count of our memory cgroup
 * (v1 memory.oom_control or v2 memory.events, read anew each time: an operator may move
 * us), else the kernel's count for the whole machine. A worker's SIGKILL while this moved
 * was the OOM killer's, not an operator's. */
static uint64_t oom_kills(void)
{
    char line[512], path[PATH_MAX];
    long long n = -1;
    FILE *f = fopen("/proc/self/cgroup", "re");

    while (f && n < 0 && fgets(line, sizeof(line), f)) {
        char *nl = strchr(line, '\n'), *ctl = strchr(line, ':'), *cg;
        if (nl)
            *nl = 0;
        if (!ctl || !(cg = strchr(ctl + 1, ':')))
            continue;
        *cg++ = 0;
        if (strcmp(ctl + 1, "memory") == 0) {
            snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.oom_control", cg);
            n = read_counter(path, "oom_kill");
        } else if (ctl[1] == 0 && line[0] == '0') {
            snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.events", cg);
            n = read_counter(path, "oom_kill");
        }
    }
    if (f)
        fclose(f);
    if (n < 0)
        n = read_counter("/proc/vmstat", "oom_kill");
    return n < 0 ? 0 : (uint64_t)n;
}

/* Periodic snapshots of the sessions that moved since their last one, the watchdog of
 * requests in flight, and the event watchdog. */
/* A recovery is over when its worker has replayed every event it was given: the worker
 * stamps replayed_ns then; its duration goes into the metrics once. */
static void recovery_timed(struct session *s)
{
    if (!s->recovery_untimed || s->state == S_FREE || !s->ctl)
        return;
    uint64_t done = atomic_load(&s->ctl->replayed_ns);
    if (!done || done < s->died_ns)
        return;
    metrics_observe_recovery(s->recovery_mode, done - s->died_ns);
    s->recovery_untimed = 0;
}

void recovery_on_tick(void)
{
    static int started;
    uint64_t now = tmo_now_ms();
    char msg[128];

    if (!started++)
        oom_seen = oom_kills();   /* OOM kills from before we ran are not ours */
    static unsigned ticks;
    int thorough = ++ticks % 20 == 0;   /* every second */
    uint32_t in_flight = 0;
    uint64_t lazy_wait = 2 * S.cfg.snapshot_interval_ms > LAZY_WAIT_MIN_MS ?
                         2 * S.cfg.snapshot_interval_ms : LAZY_WAIT_MIN_MS;
    for (uint32_t i = 0; i < S.slot_high; i++)
        in_flight += S.sessions[i].state != S_FREE && S.sessions[i].snap_inflight &&
                     !S.sessions[i].snap_lazy;
    for (uint32_t i = 0; i < S.slot_high; i++) {
        struct session *s = &S.sessions[i];
        watchdog(s, now);
        recovery_timed(s);
        sess_bell_check(s, thorough);
        if (s->state == S_LIVE || s->state == S_CLOSING)
            notice_tick(s, now);
        if (s->state != S_LIVE)
            continue;
        if (s->snap_inflight && s->snap_lazy) {
            if (now - s->snap_requested_ms >= lazy_wait) {
                S.stats.lazy_rings++;
                ring_lazy_request(s);
            }
            continue;
        }
        if (s->snap_inflight) {
            if (s->out_stalled)
                s->snap_requested_ms = now;   /* blocked by a slow reader, not stuck */
            if (now - s->snap_requested_ms < S.cfg.snapshot_timeout_ms)
                continue;
            struct snapchild *k = kid_by_req(s, s->snap_req_id);
            kill_kid(k);   /* stuck: its exit watch reaps it */
            snapshot_failed(s, "no report within snapshot_timeout_ms=%llu (%s)",
                            ull(S.cfg.snapshot_timeout_ms),
                            k ? "the child was killed" : "the worker never forked");
            continue;
        }
        /* Nothing moved since the newest snapshot written (durable, or on its way: synced
         * and its outputs out): nothing to take, whatever is held. */
        if (!events_past_written(s))
            continue;
        int urgent = held_too_much(s) || held_past_threshold(s);
        if (!urgent && !interval_due(s, now))
            continue;
        if (in_flight >= SNAPSHOTS_IN_FLIGHT)
            continue;   /* the next tick */
        /* Lazy only when the worker writes it itself (up to half the inline limit, so a
         * state that grew since still does): a forked child holds descriptors that
         * SNAPSHOTS_IN_FLIGHT reserves, so those requests are rung and counted. */
        int lazy = !urgent && S.cfg.standby != STANDBY_HOT && s->state_pages &&
                   s->state_pages <= SNAP_INLINE_PAGES / 2;
        in_flight += request_snapshot(s, msg, sizeof(msg), lazy) == 0 && s->snap_inflight &&
                     !lazy;
    }
    hib_tick(now);   /* hibernate.c: idle sessions sleep, waiting wakes retry */
    /* The sweep walks every child of ours in the kernel (waitid P_ALL, 10,000 workers):
     * only after a worker ended, and every few seconds all the same. */
    static uint64_t swept_ms;
    if (S.strays_possible || now - swept_ms >= STRAY_SWEEP_MS) {
        S.strays_possible = 0;
        swept_ms = now;
        recovery_reap_strays();
    }
    sess_retry_spawns();
    zygote_check_spawns();
    recovery_tick_arm();
}

/* ---- reports ---- */

/* A snapshot at r->position is durable now: drop what it covers. */
static void make_durable(struct session *s, const struct snap_pending *p)
{
    const struct snap_report *r = &p->rep;
    char dir[PATH_MAX];

    snprintf(dir, sizeof(dir), "%s/%llu", S.cfg.state_dir, ull(s->id));
    /* Chains older than this one's full are not needed: only a new full leaves any (a delta
     * on the same full has nothing to prune, and reading the directory would cost the loop
     * a getdents per snapshot). When the chain before was one full, and no writer failed or
     * died since, that file is all there is to retire: by its name (a small state, written
     * full every time, is this case), and when small it is not even renamed here: the next
     * snapshot request hands it to its writer, which writes over it (reuse_full). The
     * directory is read now and then all the same. A file still being shipped (remote.c
     * reads it piece by piece) is left alone: the next durable snapshot prunes. */
    if (p->full != s->pruned_full && !(s->ship.active && s->ship.pos < p->full)) {
        int pruned;
        if (s->lone_full && s->lone_full == s->pruned_full &&
            s->prunes_by_name < PRUNES_BY_NAME_MAX) {
            /* snap_bytes is still lone_full's size here: set for this one below */
            if (!s->reuse_full && s->snap_bytes <= REUSE_MAX_BYTES) {
                s->reuse_full = s->lone_full;   /* the next writer takes it: no rename here */
                pruned = 0;
            } else {
                pruned = snap_retire_one(dir, s->lone_full, SNAP_FULL, (int)s->spares);
                pruned = pruned < 0 ? pruned : 1;
            }
            s->prunes_by_name++;
        } else {
            pruned = snap_prune(dir, p->full);
            s->prunes_by_name = 0;
            s->reuse_full = 0;   /* retired by the prune if it was there: a spare now */
        }
        if (pruned >= 0)
            s->pruned_full = p->full;
        if (pruned > 0)   /* kept as spares, up to 12 (an estimate: writers take them) */
            s->spares = s->spares + (uint32_t)pruned > 12 ? 12 : s->spares + (uint32_t)pruned;
    }
    s->lone_full = p->pos == p->full ? p->full : 0;
    s->snap_pos = p->pos;
    s->snapshots++;
    s->snap_bytes = r->bytes;
    s->snap_write_ns = r->write_ns;
    s->snap_fork_ns = r->fork_ns;
    S.stats.snapshots++;
    metrics_observe_snapshot(r->fork_ns + r->write_ns);
    size_t held = evstore_bytes(&s->ev);
    evstore_drop_through(&s->ev, p->pos);
    cachelog_drop_through(s, p->pos);
    if (p->standby_pidfd >= 0) {
        drop_standby(s);
        s->standby_pidfd = p->standby_pidfd;
        s->standby_pid = p->standby_pid;
        s->standby_wake_fd = p->wake_fd;
    }
    if (S.cfg.ship_snapshots && s->server_stores) {
        /* The ORDER and RECEIPT frames for an endpoint go in one send. */
        S.flush_held = 1;
        sess_order_durable(s, p->pos);
        remote_snapshot_durable(s, p->pos, p->full);
        S.flush_held = 0;
    } else {
        /* Nowhere to store it: the endpoints may free what they keep for a new edge,
         * with the next frames that go to them (notice.c). */
        notice_durable(s, p->pos, p->seq, held - evstore_bytes(&s->ev));
    }
    sup_flush(s, &s->c[SIDE_CLIENT]);
    sup_flush(s, &s->c[SIDE_SERVER]);
    sess_resume_input(s);
    LOG(LOG_DEBUG, "session=%llu msg=\"snapshot durable\" position=%llu bytes=%llu "
        "pages=%llu/%llu write_us=%llu fork_us=%llu", ull(s->id), ull(p->pos), ull(r->bytes),
        ull(r->pages_written), ull(r->pages_total), ull(r->write_ns / 1000),
        ull(r->fork_ns / 1000));
}

/* 1 when no output of an event <= pos waits in the worker's output ring. Outputs are
 * written in event order, so the oldest record tells. */
static int outputs_past(struct session *s, uint64_t pos)
{
    uint16_t type;
    uint32_t len;
    const void *rec;
    struct shm_rec r;

    if (!s->shm)
        return 0;
    /* An output arriving in pieces is still in the ring: its event decides. */
    if ((rec = ring_asm_partial(&s->out_asm, &len))) {
        if (len < sizeof(r))
            return 0;
        memcpy(&r, rec, sizeof(r));
        return r.pos > pos;
    }
    rec = ring_peek(&s->out, &type, &len);
    if (!rec)
        return !s->out.broken;
    if (s->out.peeked_flags & RING_F_FIRST) {   /* the first piece of a long record */
        if (len < RING_PIECE_HDR)
            return 0;
        rec = (const uint8_t *)rec + RING_PIECE_HDR;
        len -= RING_PIECE_HDR;
    }
    if (len < sizeof(r) || (s->out.peeked_flags & RING_F_CONT))
        return 0;
    memcpy(&r, rec, sizeof(r));
    return r.pos > pos;
}

void recovery_outputs_drained(struct session *s)
{
    if (s->pend.valid && !s->pend.ticket && s->state == S_LIVE &&
        outputs_past(s, s->pend.pos)) {
        struct snap_pending p = s->pend;
        s->pend.valid = 0;
        s->pend.standby_pidfd = s->pend.wake_fd = -1;
        make_durable(s, &p);
    }
}

/* Remove the file of a snapshot that will never be durable, so that nothing builds on it. */
static void unlink_snapshot(struct session *s, uint64_t pos, uint32_t kind)
{
    char path[PATH_MAX], name[64];

    snap_name(name, sizeof(name), pos, kind);
    snprintf(path, sizeof(path), "%s/%llu/%s", S.cfg.state_dir, ull(s->id), name);
    if (unlink(path) == -1 && errno != ENOENT)
        LOG(LOG_WARN, "session=%llu msg=\"unlink of a snapshot that is not durable\" "
            "path=%s error=\"%s\"", ull(s->id), path, strerror(errno));
}

/* The chain written since the last durable snapshot is lost: the next snapshot is full
 * (the page hashes the children moved on describe files that are gone). */
static void chain_lost(struct session *s)
{
    s->lone_full = 0;
    s->need_full = 1;
    s->snap_written = s->snap_pos;
}

void recovery_synced(struct session *s, uint64_t ticket, int rc)
{
    if (!s->pend.valid || s->pend.ticket != ticket)
        return;   /* replaced by a newer one (which has its own ticket), or dropped */
    if (rc == 0) {
        s->pend.ticket = 0;
        recovery_outputs_drained(s);
        return;
    }
    /* Not durable, and never will be: its events stay held. A request in flight may be a
     * delta on top of it: it goes too. */
    uint64_t pos = s->pend.pos;
    unlink_snapshot(s, pos, s->pend.kind);
    drop_pending(s);
    if (s->snap_inflight) {
        kill_kid(kid_by_req(s, s->snap_req_id));
        s->snap_inflight = 0;
    }
    chain_lost(s);
    s->snap_failures++;
    S.stats.snapshot_failures++;
    LOG(LOG_ERROR, "session=%llu msg=\"snapshot not durable: the sync of state_dir failed; "
        "its events stay held, the next snapshot is full\" position=%llu error=\"%s\"",
        ull(s->id), ull(pos), strerror(-rc));
}

/* A written snapshot: durable once the sync of its batch is done (snapsync.c) and its
 * outputs are out. k: its verified hot standby (with the eventfd that wakes it), or NULL. */
static void snapshot_written(struct session *s, const struct snap_report *r,
                             struct snapchild *k, int wake_fd)
{
    struct snap_pending p = { .valid = 1, .pos = r->position, .rep = *r,
                              .standby_pidfd = -1, .wake_fd = -1,
                              .kind = s->snap_req_full ? SNAP_FULL : SNAP_DELTA,
                              .seq = { s->snap_req_seq[0], s->snap_req_seq[1] } };

    p.ticket = snapsync_written(s, r->fork_ns == 0);   /* fork_ns 0: the worker wrote it */
    if (!p.ticket) {
        kill_kid(k);
        close_fd(&wake_fd);
        unlink_snapshot(s, p.pos, p.kind);
        drop_pending(s);
        chain_lost(s);
        snapshot_failed(s, "position %llu: no memory to track its sync", ull(p.pos));
        return;
    }
    if (s->snap_req_full) {   /* what we asked for, not what shared memory says now */
        s->deltas_since_full = 0;
        s->need_full = 0;
        s->snap_written_full = r->position;
    } else {
        s->deltas_since_full++;
    }
    s->snap_written = r->position;
    s->state_pages = r->pages_total;
    p.full = s->snap_written_full;
    if (k) {
        p.standby_pidfd = k->pidfd;
        p.standby_pid = k->pid;
        p.wake_fd = wake_fd;
    } else {
        close_fd(&wake_fd);
    }
    if (s->pend.valid)
        s->lone_full = 0;   /* the file it replaces stays: the next prune reads the dir */
    drop_pending(s);   /* a newer one covers it */
    s->pend = p;
    recovery_outputs_drained(s);
}

/* A hot child whose birth report never came (its worker died right after the fork): it is
 * ours if the process its report names provably holds the eventfd the report carried. */
static struct snapchild *adopt_sender(struct session *s, const struct snap_report *r,
                                      int wake_fd)
{
    struct snapchild *k = NULL;
    int pidfd;

    if (r->pid <= 0 || wake_fd < 0)
        return NULL;
    pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
    if (pidfd < 0)
        return NULL;
    if (!holds_file(r->pid, wake_fd, r->fd_no)) {   /* after pidfd_open: no pid reuse */
        close(pidfd);
        return NULL;
    }
    for (int i = 0; i < SNAP_KIDS && !k; i++)
        if (s->kids[i].pidfd < 0)
            k = &s->kids[i];
    watch_exit(s, pidfd);
    if (!k) {
        signal_pidfd(pidfd, SIGKILL);
        return NULL;
    }
    *k = (struct snapchild){ .pidfd = pidfd, .pid = r->pid, .req = r->req };
    return k;
}

/* SNAP_STARTED: the child's pidfd. Watch it from now on. */
static void on_started(struct session *s, const struct snap_report *r, int pidfd)
{
    pid_t pid = pidfd >= 0 ? pidfd_pid(pidfd) : -1;
    struct snapchild *k = NULL;

    if (pid <= 0) {
        LOG(LOG_WARN, "session=%llu msg=\"snapshot start report without a pidfd\"", ull(s->id));
        close_fd(&pidfd);
        return;
    }
    for (int i = 0; i < SNAP_KIDS; i++) {
        if (s->kids[i].pidfd >= 0 && s->kids[i].pid == pid) {
            close(pidfd);   /* adopted already, from its own report (adopt_sender) */
            return;
        }
        if (s->kids[i].pidfd < 0 && !k)
            k = &s->kids[i];
    }
    watch_exit(s, pidfd);   /* reaped whatever happens next; the watch closes the pidfd */
    /* A child that holds this session's report socket is ours. One that has exited
     * already (its files are gone, kcmp cannot tell) is tracked only if it is our own
     * child: signals to it change nothing then. Anything else is only watched. */
    if (!holds_report_end(s, pid, r->fd_no) && !exited_child(pidfd)) {
        LOG(LOG_DEBUG, "session=%llu msg=\"snapshot child not verified\" pid=%d",
            ull(s->id), (int)pid);
        return;
    }
    if (!k) {
        signal_pidfd(pidfd, SIGKILL);   /* too many children at once: this one goes */
        return;
    }
    *k = (struct snapchild){ .pidfd = pidfd, .pid = pid, .req = r->req };
    if (r->req != s->snap_req_id || r->gen != s->gen || s->state >= S_DEAD)
        kill_kid(k);   /* for a request nobody waits for any more */
}

/* SNAP_DONE from the child. */
static void on_done(struct session *s, struct snap_report *r, int wake_fd)
{
    int current = s->state < S_DEAD && s->snap_inflight && r->req == s->snap_req_id &&
                  r->gen == s->gen;
    struct snapchild *k = NULL;

    r->text[sizeof(r->text) - 1] = 0;
    if (r->hot && wake_fd >= 0) {
        k = kid_by_req(s, r->req);
        if (!k)
            k = adopt_sender(s, r, wake_fd);
        /* The standby must provably hold the eventfd it sent: only then is it ours. */
        if (k && !holds_file(k->pid, wake_fd, r->fd_no)) {
            LOG(LOG_WARN, "session=%llu msg=\"hot standby not verified; going without\"",
                ull(s->id));
            kill_kid(k);
            k = NULL;
        }
        if (!current || r->status != 0) {
            kill_kid(k);   /* a standby nobody needs */
            k = NULL;
        }
    }
    if (!current) {
        close_fd(&wake_fd);
        return;
    }
    if (r->status != 0) {
        close_fd(&wake_fd);
        snapshot_failed(s, "position %llu: %s", ull(r->position), r->text);
        return;
    }
    if (r->position != s->snap_req_pos) {
        /* Not what was asked for (a worker that read a newer request's position with this
         * one's id, or lies): SNAP_DURABLE's counts are the asked position's, and its file
         * moved the worker's page hashes on. Neither is used: the next snapshot is full. */
        kill_kid(k);
        close_fd(&wake_fd);
        unlink_snapshot(s, r->position, s->snap_req_full ? SNAP_FULL : SNAP_DELTA);
        chain_lost(s);
        snapshot_failed(s, "reported position %llu, asked for %llu", ull(r->position),
                        ull(s->snap_req_pos));
        return;
    }
    s->snap_inflight = 0;
    snapshot_written(s, r, k, wake_fd);
}

/* Every report waiting on the socket. 0, or -ECONNRESET once the socket is shut down. */
static int read_reports(struct session *s)
{
    for (;;) {
        struct snap_report r;
        int fds[1], nfds = 0;
        int rc = spawn_recv(s->report_fd, &r, sizeof(r), fds, 1, &nfds);
        int fd = nfds ? fds[0] : -1;

        if (rc == -EAGAIN || rc == -EWOULDBLOCK)
            return 0;
        if (rc < 0 && rc != -EPIPE) {
            close_fd(&fd);
            return -ECONNRESET;   /* shut down: the session is ending */
        }
        if (rc == -EPIPE || r.version != SNAP_REPORT_VERSION) {
            close_fd(&fd);
            LOG(LOG_WARN, "session=%llu msg=\"bad snapshot report\"", ull(s->id));
            continue;
        }
        if (r.kind == SNAP_STARTED)
            on_started(s, &r, fd);
        else if (r.kind == SNAP_DONE) {
            if (!r.status && !r.fork_ns && !r.hot)   /* the worker wrote it: ring full */
                S.stats.snap_reports_ring_full++;
            on_done(s, &r, fd);
        }
        else
            close_fd(&fd);
    }
}

int recovery_ring_report(struct session *s, const void *rep, size_t len)
{
    struct snap_report r;

    if (len != sizeof(r)) {
        sess_fail(s, WIRE_ERR_SESSION, "worker wrote a snapshot report of %zu bytes", len);
        return -EPROTO;
    }
    memcpy(&r, rep, sizeof(r));   /* shared memory: copied once, then checked */
    if (r.version != SNAP_REPORT_VERSION || r.kind != SNAP_DONE || r.hot || r.fork_ns) {
        sess_fail(s, WIRE_ERR_SESSION, "worker wrote a bad snapshot report (version %u, "
                  "kind %u)", r.version, r.kind);
        return -EPROTO;
    }
    on_done(s, &r, -1);
    return 0;
}

void recovery_on_report(struct session *s, int fd, int res)
{
    sess_release_op(s);
    if (fd != s->report_fd) {   /* replaced for a new worker (new_report_pair) */
        recovery_close_report(fd);
        return;
    }
    s->report_armed = 0;
    if (res >= 0 && read_reports(s) < 0)
        return;   /* shut down: the session is ending */
    if (s->state < S_DEAD)
        arm_report(s);
}

/* A watched child exited (or its watch ended): reap it and close its pidfd. */
void recovery_on_reap(uint32_t slot, int pidfd, int res)
{
    struct session *s = slot < S.slots ? &S.sessions[slot] : NULL;
    struct snapchild *k = NULL;
    siginfo_t si;
    char how[96] = "gone";

    if (s && s->state != S_FREE && pidfd == s->promoted_fd) {
        s->promoted_fd = -1;   /* the worker's own watch reaps it */
        close(pidfd);
        return;
    }
    memset(&si, 0, sizeof(si));
    int w = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | __WALL);
    if (w == 0 && si.si_pid == 0 && res > 0 && s) {
        watch_exit(s, pidfd);   /* not exited after all: keep watching */
        return;
    }
    if (w == 0 && si.si_code == CLD_EXITED)
        snprintf(how, sizeof(how), "exit status %d", si.si_status);
    else if (w == 0)
        snprintf(how, sizeof(how), "signal %d (%s)", si.si_status, strsignal(si.si_status));
    if (s && s->state != S_FREE)
        k = kid_find(s, pidfd);
    if (k) {
        /* Its report may be on the socket still: a child reports, then exits. */
        if (s->snap_inflight && k->req == s->snap_req_id && s->report_fd >= 0)
            read_reports(s);
        if (s->snap_inflight && k->req == s->snap_req_id && s->state < S_DEAD)
            snapshot_failed(s, "the snapshot child died before reporting: %s", how);
        if (pidfd == s->standby_pidfd) {
            LOG(LOG_INFO, "session=%llu msg=\"hot standby gone\" status=\"%s\"", ull(s->id), how);
            s->standby_pidfd = -1;
            s->standby_pid = 0;
            close_fd(&s->standby_wake_fd);
        }
        if (s->pend.valid && pidfd == s->pend.standby_pidfd) {
            s->pend.standby_pidfd = -1;
            close_fd(&s->pend.wake_fd);
        }
        k->pidfd = -1;
    }
    close(pidfd);
}

/* ---- taking over ---- */

/* The hot standby becomes the worker: the rings start empty, it continues after its
 * position, and the stored events after it are fed again. */
static int promote_standby(struct session *s, char *err, size_t errlen)
{
    struct snapchild *k = kid_find(s, s->standby_pidfd);
    uint64_t one = 1;
    int watch;

    if (!k || s->standby_wake_fd < 0)
        return -ESRCH;
    watch = fcntl(k->pidfd, F_DUPFD_CLOEXEC, 0);
    if (watch < 0) {
        snprintf(err, errlen, "dup of the standby's pidfd: %s", strerror(errno));
        return -errno;
    }
    if (sess_reset_worker(s, s->snap_pos, err, errlen) < 0) {
        close(watch);
        return -ENOENT;
    }
    s->promoted_fd = k->pidfd;   /* its exit watch now only closes; the worker watch reaps */
    k->pidfd = -1;
    s->standby_pidfd = -1;
    s->standby_pid = 0;
    sess_watch_worker(s, k->pid, watch);
    if (write(s->standby_wake_fd, &one, sizeof(one)) == -1) {
        snprintf(err, errlen, "waking the standby: %s", strerror(errno));
        close_fd(&s->standby_wake_fd);
        return -EIO;
    }
    close_fd(&s->standby_wake_fd);
    sess_signal_worker(s, SIGCONT);
    sess_feed(s);
    return 0;
}

/* A worker died in the middle of a session. A worker that crashes by its own fault (not
 * SIGKILL, which comes from outside) twice at the same event has a deterministic bug: the
 * session fails instead of looping, and its snapshots stay in state_dir. */
void recovery_start(struct session *s, const char *how, int own_fault)
{
    uint64_t consumed = atomic_load(&s->ctl->consumed), oom = oom_kills();
    char why[160];

    s->lone_full = 0;   /* it may have died writing a snapshot: the next prune reads the dir */
    /* A SIGKILL is from outside (an operator, a test), unless the watchdog or the OOM
     * killer sent it: those are the app's own doing, and count toward a crash loop. */
    if (s->wd_killed) {
        snprintf(why, sizeof(why), "killed by the watchdog: the event ran longer than "
                 "max_event_ms=%llu", ull(S.cfg.max_event_ms));
        how = why;
        own_fault = 1;
    } else if (!own_fault && oom != oom_seen) {
        snprintf(why, sizeof(why), "%s, by the OOM killer", how);
        how = why;
        own_fault = 1;
    }
    oom_seen = oom;
    s->wd_killed = 0;
    s->wd_since_ms = 0;   /* the new worker's clock starts when the watchdog next looks */
    int busy = own_fault && consumed + 1 < s->next_pos;   /* crashed on a waiting event */
    pid_t old = s->pid;
    const char *mode = "fresh";
    char err[256] = "";
    int rc = -1;

    S.stats.worker_deaths++;
    s->died_ns = mono_ns();
    s->ctl->replay_until = s->next_pos - 1;
    /* announce_timers_at stays until the announcement's end arrived: a worker killed during
     * a remote replay leaves the new one to announce the pending timers. */
    atomic_store(&s->ctl->started_ns, 0);
    atomic_store(&s->ctl->load_ns, 0);
    atomic_store(&s->ctl->replayed_ns, 0);
    if (busy && s->crash_pos == consumed + 1) {
        sess_fail(s, WIRE_ERR_SESSION, "worker pid %d died again at event %llu: %s; "
                  "the session is failed (replay it offline)", (int)old, ull(consumed + 1), how);
        return;
    }
    if (busy)
        s->crash_pos = consumed + 1;
    /* What was written but not durable yet is not used: recovery starts at snap_pos. */
    drop_pending(s);
    if (s->snap_inflight) {
        kill_kid(kid_by_req(s, s->snap_req_id));
        s->snap_inflight = 0;
    }
    if (s->snap_pos && s->standby_pidfd >= 0) {
        rc = promote_standby(s, err, sizeof(err));
        mode = "hot";
        if (rc == 0)
            S.stats.hot_takeovers++;
    }
    if (rc < 0) {
        if (err[0])
            LOG(LOG_WARN, "session=%llu msg=\"hot takeover failed, going cold\" error=\"%s\"",
                ull(s->id), err);
        drop_standby(s);
        rc = sess_spawn_worker(s, s->snap_pos, err, sizeof(err));
        mode = s->snap_pos ? "cold" : "fresh";
        if (rc == 0 && s->snap_pos)
            S.stats.cold_restores++;
    }
    if (rc < 0) {
        sess_fail(s, WIRE_ERR_SESSION, "worker pid %d died (%s) and no new one could start: %s",
                  (int)old, how, err);
        return;
    }
    /* The new worker's chain starts over with a full snapshot. */
    s->snap_written = s->snap_pos;
    s->recoveries++;
    s->recovery_mode = mode;
    s->recovery_untimed = 1;
    S.stats.recoveries++;
    LOG(LOG_WARN, "session=%llu msg=\"worker died, recovering\" old=%d status=\"%s\" "
        "at_event=%llu new=%d mode=%s snapshot=%llu replay=%llu", ull(s->id), (int)old, how,
        ull(consumed + 1), (int)s->pid, mode, ull(s->snap_pos), ull(s->next_pos - 1 - s->snap_pos));
}

/* The session is over: every snapshot child goes (their watches reap them). The report
 * socket is read to its end once the worker is gone, so that no child it forked goes
 * unwatched. */
void recovery_end(struct session *s)
{
    drop_pending(s);
    drop_standby(s);
    for (int i = 0; i < SNAP_KIDS; i++)
        kill_kid(&s->kids[i]);
    if (s->pid <= 0 || s->worker_reaped)
        recovery_worker_gone(s);
}

/* ---- hibernation (hibernate.c) ---- */

void recovery_hibernate(struct session *s)
{
    drop_pending(s);
    drop_standby(s);
    for (int i = 0; i < SNAP_KIDS; i++)
        kill_kid(&s->kids[i]);
}

int recovery_kids_reaped(const struct session *s)
{
    for (int i = 0; i < SNAP_KIDS; i++)
        if (s->kids[i].pidfd >= 0)
            return 0;
    return 1;
}

void recovery_close_reports(struct session *s)
{
    if (s->report_fd < 0)
        return;
    read_reports(s);   /* every child it forked is watched now */
    shutdown(s->report_fd, SHUT_RDWR);   /* completes the pending report poll */
}

void recovery_worker_gone(struct session *s)
{
    if (s->state < S_DEAD || s->report_fd < 0)
        return;
    read_reports(s);   /* every child it forked is watched (and killed) now */
    shutdown(s->report_fd, SHUT_RDWR);   /* completes the pending report poll */
}

/* 1 when pid is a process the supervisor watches by pidfd (it reaps those itself). */
static int tracked(pid_t pid)
{
    if (zygote_tracked(pid))
        return 1;
    for (uint32_t i = 0; i < S.slot_high; i++) {
        const struct session *s = &S.sessions[i];
        if (s->state == S_FREE)
            continue;
        if (s->pid == pid)
            return 1;
        for (int k = 0; k < SNAP_KIDS; k++)
            if (s->kids[k].pidfd >= 0 && s->kids[k].pid == pid)
                return 1;
    }
    return 0;
}

/* A snapshot child whose birth report never arrived (its worker died between the fork and
 * the report) is nobody's to watch: reap such strays. Only exited children that no pidfd
 * watch covers are touched, so no one else's exit status is taken. */
void recovery_reap_strays(void)
{
    for (int n = 0; n < 16; n++) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == -1 || !si.si_pid ||
            tracked(si.si_pid))
            return;
        pid_t pid = si.si_pid;
        memset(&si, 0, sizeof(si));
        waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | __WALL);
        LOG(LOG_DEBUG, "msg=\"reaped a stray child\" pid=%d", (int)pid);
    }
}
