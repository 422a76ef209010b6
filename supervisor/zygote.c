/* zygote.c - start the app's zygote and ask it for session workers (DESIGN.md section 6). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "spawn.h"
#include "sup.h"

/* Timeouts from the config: zygote_ready_timeout_ms (a starting zygote reports ready),
 * zygote_answer_timeout_ms (a spawn request unanswered this long fails and the zygote is
 * killed), zygote_backoff_max_ms (restarts of a zygote that keeps dying). */
#define ZYGOTE_BACKOFF_MIN_MS    100
#define ZYGOTE_STABLE_MS         10000   /* a zygote that lived this long: backoff resets */

/* What zygote_start() was given, for restarts; and the restart's progress. */
static struct {
    const char *app, *cache_dir, *state_dir;
    int sock, pidfd;                 /* a zygote starting, not ready yet */
    pid_t pid;
    uint64_t ready_ms;               /* when the running zygote became ready */
    uint64_t backoff_ms;
    struct __kernel_timespec ts, ready_ts;
} Z = { .sock = -1, .pidfd = -1 };

/* Spawn requests waiting for the zygote's reply, oldest first: the zygote answers in the
 * order it was asked, so the head is the one the next reply is for. The loop never waits
 * for the zygote: the reply arrives as a completion. */
struct pending_spawn {
    uint32_t slot;
    uint64_t session_id, gen, sent_ms;
};

static struct {
    struct pending_spawn *q;
    uint32_t head, count, cap;
    int armed;
} P;

static void fail_pending(const char *why);


/* Fork and exec a zygote; it reports ready on *sock. */
static int launch(int *sock, pid_t *pidp, int *pidfdp, char *err, size_t errlen)
{
    const char *app = Z.app, *cache_dir = Z.cache_dir, *state_dir = Z.state_dir;
    char dir[PATH_MAX], exe[PATH_MAX + 32], fdarg[16], logfdarg[16] = "-1";
    struct timeval tv = { (time_t)(S.cfg.zygote_answer_timeout_ms / 1000),
                          (suseconds_t)(S.cfg.zygote_answer_timeout_ms % 1000) * 1000 };
    int sv[2], pidfd = -1;
    pid_t pid;

    if (proc_exe_dir(dir, sizeof(dir)) < 0) {
        snprintf(err, errlen, "cannot find the directory of this executable");
        return -ENOENT;
    }
    snprintf(exe, sizeof(exe), "%s/cessna-worker", dir);
    if (access(exe, X_OK) == -1) {
        snprintf(err, errlen, "worker binary %s: %s", exe, strerror(errno));
        return -ENOENT;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -errno;
    }
    pid = proc_fork(0, &pidfd);
    if (pid < 0) {
        snprintf(err, errlen, "fork of the zygote: %s", strerror(-pid));
        close(sv[0]);
        close(sv[1]);
        return pid;
    }
    if (pid == 0) {
        char *argv[] = { exe, "--zygote", "--app", (char *)app, "--fd", fdarg,
                         "--cache-dir", (char *)(cache_dir ? cache_dir : ""),
                         "--state-dir", (char *)state_dir,
                         "--sandbox", S.cfg.sandbox ? "on" : "off",
                         "--worker-user", S.cfg.worker_user, "--log-fd", logfdarg, NULL };
        int fd = dup(sv[1]);   /* without CLOEXEC: it crosses the exec */
        snprintf(fdarg, sizeof(fdarg), "%d", fd);
        if (S.log_level_fd >= 0)
            snprintf(logfdarg, sizeof(logfdarg), "%d", dup(S.log_level_fd));
        personality(ADDR_NO_RANDOMIZE);
        execv(exe, argv);
        _exit(127);
    }
    close(sv[1]);
    /* A zygote that stops answering must not hang the loop for ever (zygote_spawn). */
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    *sock = sv[0];
    *pidp = pid;
    *pidfdp = pidfd;
    return 0;
}

/* The zygote's ready report, readable now on sock. */
static int read_ready(int sock, char *err, size_t errlen)
{
    struct spawn_ready ready;
    int nfds;

    if (spawn_recv(sock, &ready, sizeof(ready), NULL, 0, &nfds) < 0) {
        snprintf(err, errlen, "zygote exited before it was ready (see its log above)");
        return -EINVAL;
    }
    if (ready.version != SPAWN_VERSION || ready.status != 0) {
        ready.text[sizeof(ready.text) - 1] = 0;
        snprintf(err, errlen, "%s", ready.text);
        return -EINVAL;
    }
    memcpy(S.fingerprint, ready.fingerprint, sizeof(S.fingerprint));
    return 0;
}

static void discard(int sock, pid_t pid, int pidfd, int wait)
{
    kill(pid, SIGKILL);
    close(sock);
    if (wait) {
        while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
            ;
        close(pidfd);
    } else if (pidfd >= 0 && pidfd <= 0xffffff) {
        struct io_uring_sqe *sqe = sup_sqe();   /* reaped from the loop (recovery.c) */
        io_uring_prep_poll_add(sqe, pidfd, POLLIN);
        io_uring_sqe_set_data64(sqe, UD(OP_REAP, 0, pidfd));
    } else if (pidfd >= 0) {
        close(pidfd);
    }
}

static void adopt(int sock, pid_t pid, int pidfd)
{
    fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);   /* replies come as completions */
    S.zygote_sock = sock;
    S.zygote_pid = pid;
    S.zygote_pidfd = pidfd;
    Z.ready_ms = tmo_now_ms();
}

/* Synchronous, before the loop runs. */
int zygote_start(const char *app, const char *cache_dir, const char *state_dir, char *err,
                 size_t errlen)
{
    struct pollfd pfd;
    int sock, pidfd, rc;
    pid_t pid;

    Z.app = app;
    Z.cache_dir = cache_dir;
    Z.state_dir = state_dir;
    S.zygote_sock = S.zygote_pidfd = -1;
    if ((rc = launch(&sock, &pid, &pidfd, err, errlen)) < 0)
        return rc;
    pfd = (struct pollfd){ .fd = sock, .events = POLLIN };
    rc = poll(&pfd, 1, (int)S.cfg.zygote_ready_timeout_ms);
    if (rc <= 0) {
        snprintf(err, errlen, "zygote did not report ready within zygote_ready_timeout_ms=%u",
                 S.cfg.zygote_ready_timeout_ms);
        discard(sock, pid, pidfd, 1);
        return -EINVAL;
    }
    if (read_ready(sock, err, errlen) < 0) {
        discard(sock, pid, pidfd, 1);
        return -EINVAL;
    }
    adopt(sock, pid, pidfd);
    LOG(LOG_INFO, "msg=\"zygote ready\" pid=%d app=%s", (int)pid, app);
    return 0;
}

void zygote_watch(void)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_poll_add(sqe, S.zygote_pidfd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE, 0, 0));
}

static void restart_later(void)
{
    if (S.stopping)
        return;
    Z.ts.tv_sec = (long long)(Z.backoff_ms / 1000);
    Z.ts.tv_nsec = (long long)(Z.backoff_ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &Z.ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE_RESTART, 0, 0));
}

static void next_backoff(void)
{
    Z.backoff_ms = Z.backoff_ms ? Z.backoff_ms * 2 : ZYGOTE_BACKOFF_MIN_MS;
    if (Z.backoff_ms > S.cfg.zygote_backoff_max_ms)
        Z.backoff_ms = S.cfg.zygote_backoff_max_ms;
}

/* The zygote died. Live sessions go on (they need it only at their next cold recovery);
 * new sessions are refused until a new one is ready. A zygote that dies soon after it
 * started is restarted after a growing delay. */
void zygote_on_death(void)
{
    siginfo_t si;
    char how[96] = "unknown";

    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)S.zygote_pidfd, &si, WEXITED | WNOHANG | __WALL) == 0 && si.si_pid) {
        if (si.si_code == CLD_EXITED)
            snprintf(how, sizeof(how), "exit status %d", si.si_status);
        else
            snprintf(how, sizeof(how), "signal %d (%s)", si.si_status, strsignal(si.si_status));
    }
    close(S.zygote_pidfd);
    if (S.zygote_sock >= 0)
        close(S.zygote_sock);
    S.zygote_sock = S.zygote_pidfd = -1;
    P.armed = 0;   /* its poll completes with the socket's close */
    fail_pending("the zygote died before it answered");
    if (tmo_now_ms() - Z.ready_ms < ZYGOTE_STABLE_MS)
        next_backoff();
    else
        Z.backoff_ms = ZYGOTE_BACKOFF_MIN_MS;
    LOG(LOG_ERROR, "msg=\"the zygote died; restarting it; new sessions are refused meanwhile, "
        "live sessions go on\" pid=%d status=\"%s\" restart_in_ms=%llu", (int)S.zygote_pid, how,
        (unsigned long long)Z.backoff_ms);
    S.zygote_pid = 0;
    restart_later();
}

void zygote_on_restart_timer(void)
{
    char err[256];

    if (S.stopping || S.zygote_sock >= 0 || Z.sock >= 0)
        return;
    if (launch(&Z.sock, &Z.pid, &Z.pidfd, err, sizeof(err)) < 0) {
        Z.sock = -1;
        next_backoff();
        LOG(LOG_ERROR, "msg=\"zygote restart failed\" error=\"%s\" retry_in_ms=%llu", err,
            (unsigned long long)Z.backoff_ms);
        return restart_later();
    }
    /* Wait for its ready report, at most zygote_ready_timeout_ms. */
    Z.ready_ts.tv_sec = S.cfg.zygote_ready_timeout_ms / 1000;
    Z.ready_ts.tv_nsec = (long long)(S.cfg.zygote_ready_timeout_ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, Z.sock, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE_READY, 0, 0));
    sqe->flags |= IOSQE_IO_LINK;
    sqe = sup_sqe();
    io_uring_prep_link_timeout(sqe, &Z.ready_ts, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
}

void zygote_on_ready(int res)
{
    char err[256];

    if (Z.sock < 0)
        return;
    if (res < 0 || S.stopping) {
        snprintf(err, sizeof(err), "zygote did not report ready within "
                 "zygote_ready_timeout_ms=%u", S.cfg.zygote_ready_timeout_ms);
    } else if (read_ready(Z.sock, err, sizeof(err)) == 0) {
        adopt(Z.sock, Z.pid, Z.pidfd);
        Z.sock = -1;
        S.stats.zygote_restarts++;
        zygote_watch();
        LOG(LOG_WARN, "msg=\"zygote restarted\" pid=%d restarts=%llu", (int)S.zygote_pid,
            (unsigned long long)S.stats.zygote_restarts);
        return;
    }
    discard(Z.sock, Z.pid, Z.pidfd, 0);
    Z.sock = -1;
    next_backoff();
    LOG(LOG_ERROR, "msg=\"zygote restart failed\" error=\"%s\" retry_in_ms=%llu", err,
        (unsigned long long)Z.backoff_ms);
    restart_later();
}

void zygote_stop(void)
{
    if (S.zygote_sock >= 0)
        close(S.zygote_sock);   /* it exits when its socket closes */
    if (S.zygote_pid > 0)
        kill(S.zygote_pid, SIGKILL);
    if (Z.sock >= 0) {
        close(Z.sock);
        kill(Z.pid, SIGKILL);
    }
}

static void arm_replies(void)
{
    if (P.armed || !P.count || S.zygote_sock < 0)
        return;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, S.zygote_sock, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE_REPLY, 0, 0));
    P.armed = 1;
}

static int queue_push(const struct session *s)
{
    if (P.count == P.cap) {
        uint32_t cap = P.cap ? P.cap * 2 : 64;
        struct pending_spawn *q = malloc(cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        for (uint32_t i = 0; i < P.count; i++)
            q[i] = P.q[(P.head + i) % P.cap];
        free(P.q);
        P.q = q;
        P.cap = cap;
        P.head = 0;
    }
    P.q[(P.head + P.count++) % P.cap] = (struct pending_spawn){
        .slot = s->slot, .session_id = s->id, .gen = s->gen, .sent_ms = tmo_now_ms() };
    return 0;
}

/* The session a pending spawn is for, if it still waits for it. */
static struct session *queue_pop(void)
{
    struct pending_spawn e = P.q[P.head];
    struct session *s;

    P.head = (P.head + 1) % P.cap;
    P.count--;
    if (e.slot >= S.slots)
        return NULL;
    s = &S.sessions[e.slot];
    return s->state != S_FREE && s->id == e.session_id && s->gen == e.gen && s->spawning ? s
                                                                                         : NULL;
}

/* Every pending spawn fails (the zygote died or stopped answering). */
static void fail_pending(const char *why)
{
    while (P.count) {
        struct session *s = queue_pop();
        if (s)
            sess_spawn_failed(s, why);
    }
}

/* Ask the zygote for a worker; the reply comes later (zygote_on_reply). 0, or -errno with a
 * reason. */
int zygote_spawn(struct session *s, int memfd, uint64_t restore_pos, char *err, size_t errlen)
{
    struct spawn_request req;
    int fds[3] = { memfd, s->report_worker_fd, s->doorbell_out };
    int rc;

    if (S.zygote_sock < 0) {
        snprintf(err, errlen, "the zygote died and is being restarted; try again shortly");
        return -EAGAIN;
    }
    memset(&req, 0, sizeof(req));
    req.version = SPAWN_VERSION;
    req.ring_size = S.ring_size;
    req.session_id = s->id;
    req.max_message = S.cfg.max_message_bytes;
    req.restore_pos = restore_pos;
    req.max_memory = S.cfg.max_session_memory;
    if (queue_push(s) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    rc = spawn_send(S.zygote_sock, &req, sizeof(req), fds, s->doorbell_out >= 0 ? 3 : 2);
    if (rc < 0) {
        P.count--;   /* the entry just pushed */
        snprintf(err, errlen, "zygote unreachable: %s", rc == -EAGAIN ?
                 "too many spawns waiting" : strerror(-rc));
        return rc;
    }
    s->spawning = 1;
    arm_replies();
    return 0;
}

void zygote_on_reply(int res)
{
    P.armed = 0;
    while (P.count && S.zygote_sock >= 0) {
        struct spawn_reply rep;
        int pidfd = -1, nfds = 0;
        int rc = spawn_recv(S.zygote_sock, &rep, sizeof(rep), &pidfd, 1, &nfds);

        if (rc == -EAGAIN || rc == -EWOULDBLOCK)
            break;
        struct session *s = queue_pop();
        if (rc < 0 || rep.version != SPAWN_VERSION || rep.status != 0 || nfds != 1) {
            char why[128];
            snprintf(why, sizeof(why), "zygote could not fork a worker: %s",
                     strerror(rc < 0 ? -rc : rep.status ? -rep.status : EPROTO));
            if (nfds == 1)
                close(pidfd);
            if (s)
                sess_spawn_failed(s, why);
            if (rc < 0 && rc != -EPIPE)
                break;   /* the socket is gone: the zygote's death watch takes it from here */
            continue;
        }
        if (s) {
            sess_worker_spawned(s, rep.pid, pidfd);
        } else {
            /* Its session ended meanwhile: the worker goes, and is reaped from the loop. */
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            struct io_uring_sqe *sqe = sup_sqe();
            io_uring_prep_poll_add(sqe, pidfd, POLLIN);
            io_uring_sqe_set_data64(sqe, UD(OP_REAP, 0, pidfd));
        }
    }
    (void)res;
    arm_replies();
}

uint32_t zygote_waiting(void)
{
    return P.count;
}

/* From the periodic tick: a zygote that leaves the oldest request unanswered too long is
 * killed (its death watch restarts it, and the waiting spawns fail). */
void zygote_check_spawns(void)
{
    if (!P.count || S.zygote_sock < 0 ||
        tmo_now_ms() - P.q[P.head].sent_ms < S.cfg.zygote_answer_timeout_ms)
        return;
    LOG(LOG_ERROR, "msg=\"the zygote did not answer; killing it\" pid=%d "
        "zygote_answer_timeout_ms=%u", (int)S.zygote_pid, S.cfg.zygote_answer_timeout_ms);
    fail_pending("the zygote did not answer within zygote_answer_timeout_ms");
    close(S.zygote_sock);
    S.zygote_sock = -1;
    kill(S.zygote_pid, SIGKILL);   /* its death watch restarts it */
}
