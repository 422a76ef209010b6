/* recovery.c - snapshots and local recovery (DESIGN.md sections 3 and 5).
 *
 * Every snapshot_interval_ms the supervisor asks a session's worker for a snapshot of its
 * state right after the newest ordered event P. The worker forks; the frozen child writes
 * the snapshot file and reports here. Once the report says durable, the events up to P are
 * dropped and both endpoints hear SNAP_DURABLE. In hot standby mode the child stays,
 * stopped, until a newer one replaces it.
 *
 * When a worker dies, a new one takes over from the newest durable snapshot: the hot
 * standby (continued with SIGCONT) or a fresh worker from the zygote that loads the
 * snapshot from disk (cold); it replays the stored events after P, and the outputs the
 * endpoints already have are dropped as they come again. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <poll.h>
#include <unistd.h>

#include "log.h"
#include "snap.h"
#include "sup.h"

#define FULL_EVERY 8   /* a full snapshot after this many deltas */

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void arm_report(struct session *s)
{
    if (s->report_armed || s->report_fd < 0)
        return;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_recv(sqe, s->report_fd, &s->report, sizeof(s->report), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_REPORT, s->slot, 0));
    s->report_armed = 1;
    s->inflight++;
}

/* The session's snapshot directory and its report socket. */
int recovery_setup(struct session *s, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    int sv[2];

    snprintf(dir, sizeof(dir), "%s/%llu", S.cfg.state_dir, ull(s->id));
    if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "snapshot directory %s: %s", dir, strerror(errno));
        return -errno;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -errno;
    }
    s->report_fd = sv[0];
    s->report_worker_fd = sv[1];
    arm_report(s);
    return 0;
}

/* Kill and reap the standby now (a stopped process dies at once), so its pidfd can go
 * before a newer standby takes the field; its armed watch then only releases. */
static void drop_standby(struct session *s)
{
    siginfo_t si;

    if (s->standby_pid <= 0)
        return;
    kill(s->standby_pid, SIGKILL);
    if (s->standby_pidfd >= 0) {
        waitid(P_PIDFD, (id_t)s->standby_pidfd, &si, WEXITED | __WALL);
        close(s->standby_pidfd);
        s->standby_pidfd = -1;
    }
    s->standby_pid = 0;
}

int recovery_request_snapshot(struct session *s, char *msg, size_t len)
{
    uint64_t one = 1;

    if (s->state != S_LIVE || s->pid <= 0 || s->worker_reaped) {
        snprintf(msg, len, "error: session %llu has no live worker\n", ull(s->id));
        return -ESRCH;
    }
    if (s->snap_inflight) {
        snprintf(msg, len, "error: session %llu is taking a snapshot already\n", ull(s->id));
        return -EBUSY;
    }
    uint64_t p = s->next_pos - 1;
    int full = s->need_full || !s->snap_pos || s->deltas_since_full >= FULL_EVERY;
    s->ctl->snap_base = full ? 0 : s->snap_pos;
    s->ctl->snap_gen = s->gen;
    s->ctl->snap_hot = S.cfg.standby == STANDBY_HOT;
    atomic_store_explicit(&s->ctl->snap_pos, p, memory_order_release);
    s->snap_inflight = 1;
    s->snap_requested_ms = sess_now_ms();
    if (write(s->doorbell_in, &one, sizeof(one)) == -1)
        LOG(LOG_WARN, "session=%llu msg=\"doorbell\" error=\"%s\"", ull(s->id), strerror(errno));
    snprintf(msg, len, "ok snapshot of session %llu at position %llu (%s) requested\n",
             ull(s->id), ull(p), full ? "full" : "delta");
    return 0;
}

void recovery_tick_arm(void)
{
    static struct __kernel_timespec ts;
    uint64_t ms = S.cfg.snapshot_interval_ms < 50 ? S.cfg.snapshot_interval_ms : 50;

    if (!S.cfg.snapshot_interval_ms || S.stopping)
        return;
    ts.tv_sec = (long long)(ms / 1000);
    ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

/* Periodic snapshots of the sessions that moved since their last one. */
void recovery_on_tick(void)
{
    uint64_t now = sess_now_ms();
    char msg[128];

    for (uint32_t i = 0; i < S.cfg.max_sessions; i++) {
        struct session *s = &S.sessions[i];
        if (s->state != S_LIVE || s->snap_inflight || s->next_pos - 1 <= s->snap_pos ||
            now - s->snap_requested_ms < S.cfg.snapshot_interval_ms)
            continue;
        recovery_request_snapshot(s, msg, sizeof(msg));
    }
    recovery_tick_arm();
}

static void watch_standby(struct session *s)
{
    int fd = (int)syscall(SYS_pidfd_open, s->standby_pid, 0);

    if (fd < 0) {
        LOG(LOG_WARN, "session=%llu msg=\"pidfd_open of the standby\" error=\"%s\"", ull(s->id),
            strerror(errno));
        kill(s->standby_pid, SIGKILL);
        s->standby_pid = 0;
        return;
    }
    s->standby_pidfd = fd;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_STANDBY, s->slot, 0));
    s->inflight++;
}

/* A snapshot child that reported and exits (or was killed) is our child (CLONE_PARENT):
 * reap it when it is gone. The pidfd rides in the operation's argument. */
static void reap_when_gone(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    if (fd < 0 || fd > 0xffffff) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_REAP, 0, fd));
}

void recovery_on_reap(int pidfd)
{
    siginfo_t si;

    waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | __WALL);
    close(pidfd);
}

void recovery_on_report(struct session *s, int res)
{
    struct snap_report *r = &s->report;

    s->report_armed = 0;
    sess_release_op(s);
    if (res <= 0)
        return;   /* the session is ending (the socket was shut down) */
    if (res != (int)sizeof(*r) || r->version != SNAP_REPORT_VERSION) {
        LOG(LOG_WARN, "session=%llu msg=\"bad snapshot report\" bytes=%d", ull(s->id), res);
        arm_report(s);
        return;
    }
    int keep = r->hot && r->gen == s->gen && r->status == 0 && s->state < S_DEAD;
    if (r->pid > 0 && !keep) {
        if (r->hot)
            kill(r->pid, SIGKILL);   /* a standby nobody needs */
        reap_when_gone(r->pid);
    }
    if (s->state >= S_DEAD)
        return;
    if (r->gen != s->gen) {
        /* from a worker that died meanwhile: its file is valid, but we moved on */
    } else if (r->status != 0) {
        s->snap_inflight = 0;
        S.stats.snapshot_failures++;
        r->text[sizeof(r->text) - 1] = 0;
        LOG(LOG_WARN, "session=%llu msg=\"snapshot failed\" position=%llu error=\"%s\"",
            ull(s->id), ull(r->position), r->text);
    } else {
        uint8_t frame[WIRE_HDR_LEN + 8];
        s->snap_inflight = 0;
        if (s->ctl->snap_base == 0) {
            char dir[PATH_MAX];
            s->deltas_since_full = 0;
            s->need_full = 0;
            snprintf(dir, sizeof(dir), "%s/%llu", S.cfg.state_dir, ull(s->id));
            snap_prune(dir, r->position);   /* older chains are no longer needed */
        } else {
            s->deltas_since_full++;
        }
        s->snap_pos = r->position;
        s->snapshots++;
        s->snap_bytes = r->bytes;
        s->snap_write_ns = r->write_ns;
        s->snap_fork_ns = r->fork_ns;
        S.stats.snapshots++;
        evstore_drop_through(&s->ev, r->position);
        olog_durable(s, r->position);
        if (r->hot) {
            drop_standby(s);
            s->standby_pid = r->pid;
            watch_standby(s);
        }
        sess_send_all(s, frame, wire_put_u64(frame, WIRE_SNAP_DURABLE, r->position));
        LOG(LOG_DEBUG, "session=%llu msg=\"snapshot durable\" position=%llu bytes=%llu "
            "pages=%llu/%llu write_us=%llu fork_us=%llu", ull(s->id), ull(r->position),
            ull(r->bytes), ull(r->pages_written), ull(r->pages_total), ull(r->write_ns / 1000),
            ull(s->snap_fork_ns / 1000));
    }
    arm_report(s);
}

void recovery_on_standby(struct session *s, int res)
{
    siginfo_t si;

    (void)res;
    sess_release_op(s);
    if (s->standby_pidfd < 0)
        return;   /* promoted: its death is watched as the worker's */
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)s->standby_pidfd, &si, WEXITED | WNOHANG | __WALL) == -1 ||
        si.si_pid == 0)
        return;   /* the watch of an earlier standby, since promoted: this one lives */
    if (si.si_pid == s->standby_pid)
        s->standby_pid = 0;
    close(s->standby_pidfd);
    s->standby_pidfd = -1;
}

/* The hot standby becomes the worker: the rings start empty, it continues after its
 * position, and the stored events after it are fed again. */
static int promote_standby(struct session *s, char *err, size_t errlen)
{
    pid_t pid = s->standby_pid;
    int pidfd = s->standby_pidfd;

    if (pid <= 0 || pidfd < 0)
        return -ESRCH;
    if (sess_reset_worker(s, s->snap_pos, err, errlen) < 0)
        return -ENOENT;
    s->standby_pid = 0;
    s->standby_pidfd = -1;   /* its armed watch now only releases; a new one watches the worker */
    sess_watch_worker(s, pid, pidfd);
    if (kill(pid, SIGCONT) == -1) {
        snprintf(err, errlen, "SIGCONT to the standby %d: %s", (int)pid, strerror(errno));
        return -errno;
    }
    sess_feed(s);
    return 0;
}

/* A worker died in the middle of a session. A worker that crashes by its own fault (not
 * SIGKILL, which comes from outside) twice at the same event has a deterministic bug: the
 * session fails instead of looping, and its snapshots stay in state_dir. */
void recovery_start(struct session *s, const char *how, int own_fault)
{
    uint64_t consumed = atomic_load(&s->ctl->consumed);
    int busy = own_fault && consumed + 1 < s->next_pos;   /* crashed on a waiting event */
    pid_t old = s->pid;
    const char *mode = "fresh";
    char err[256] = "";
    int rc = -1;

    S.stats.worker_deaths++;
    s->died_ns = mono_ns();
    s->ctl->replay_until = s->next_pos - 1;
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
    if (s->snap_pos && s->standby_pid > 0) {
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
    s->recoveries++;
    s->recovery_mode = mode;
    S.stats.recoveries++;
    LOG(LOG_WARN, "session=%llu msg=\"worker died, recovering\" old=%d status=\"%s\" "
        "at_event=%llu new=%d mode=%s snapshot=%llu replay=%llu", ull(s->id), (int)old, how,
        ull(consumed + 1), (int)s->pid, mode, ull(s->snap_pos), ull(s->next_pos - 1 - s->snap_pos));
}

void recovery_end(struct session *s)
{
    drop_standby(s);
    if (s->report_fd >= 0)
        shutdown(s->report_fd, SHUT_RDWR);   /* completes the pending report read */
}
