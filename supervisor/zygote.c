/* zygote.c - start the app's zygotes and ask them for session workers (DESIGN.md section 6).
 *
 * Usually one zygote runs. A reload that names another module starts a second one
 * (zygote_change_app); once it is ready, new sessions are bound to it, and the sessions
 * bound to the old one keep getting their workers there (a cold recovery, a wake) until the
 * last of them is freed, which stops the old zygote. A third module is refused while the
 * old one still has sessions. Each zygote has its own restart backoff and its own queue of
 * spawn requests; completions name the zygote by generation in the slot of their
 * user_data. */
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
#define ZYGOTES                  3       /* the current module, the old one, a new one starting */

/* Spawn requests waiting for the zygote's reply, oldest first: the zygote answers in the
 * order it was asked, so the head is the one the next reply is for. The loop never waits
 * for the zygote: the reply arrives as a completion. */
struct pending_spawn {
    uint32_t slot;
    uint64_t session_id, gen, sent_ms;
};

enum zrole {
    Z_FREE = 0,
    Z_CURRENT,      /* new sessions are bound to it */
    Z_OLD,          /* the module before a reload: only the sessions that started with it */
    Z_NEW,          /* a reload's module, starting: current once it reports ready */
};

struct zygote {
    enum zrole role;
    uint32_t gen;                    /* 1, 2, ...: sessions name their zygote by it */
    char app[PATH_MAX];
    int sock, pidfd;                 /* the running zygote; sock -1 while it is restarted */
    pid_t pid;
    int st_sock, st_pidfd;           /* a zygote starting, not ready yet */
    pid_t st_pid;
    uint8_t fingerprint[32];         /* the layout of its workers (spawn_ready) */
    uint32_t sessions;               /* sessions bound to it */
    uint64_t ready_ms;               /* when the running zygote became ready */
    uint64_t backoff_ms, restarts;
    struct __kernel_timespec ts, ready_ts;
    struct pending_spawn *q;         /* spawn requests not answered yet */
    uint32_t head, count, cap;
    uint64_t answered_ms;            /* its last answer (tmo_now_ms) */
    int armed;                       /* a poll for replies is armed */
};

static struct {
    struct zygote z[ZYGOTES];
    uint32_t next_gen;
    const char *cache_dir, *state_dir;
} Z;

static void fail_pending(struct zygote *z, const char *why);

static struct zygote *by_gen(uint32_t gen)
{
    for (int i = 0; i < ZYGOTES; i++)
        if (Z.z[i].role != Z_FREE && Z.z[i].gen == gen)
            return &Z.z[i];
    return NULL;
}

static struct zygote *by_role(enum zrole role)
{
    for (int i = 0; i < ZYGOTES; i++)
        if (Z.z[i].role == role)
            return &Z.z[i];
    return NULL;
}

static struct zygote *new_entry(const char *app, enum zrole role)
{
    struct zygote *z = by_role(Z_FREE);

    if (!z)
        return NULL;
    memset(z, 0, sizeof(*z));
    z->role = role;
    z->gen = ++Z.next_gen;
    snprintf(z->app, sizeof(z->app), "%s", app);
    z->sock = z->pidfd = z->st_sock = z->st_pidfd = -1;
    return z;
}

static void free_entry(struct zygote *z)
{
    free(z->q);
    memset(z, 0, sizeof(*z));
    z->sock = z->pidfd = z->st_sock = z->st_pidfd = -1;
    z->role = Z_FREE;
}

static const char *role_name(const struct zygote *z)
{
    return z->role == Z_OLD ? "old " : z->role == Z_NEW ? "new " : "";
}


/* Fork and exec a zygote for z's app; it reports ready on *sock. */
static int launch(const struct zygote *z, int *sock, pid_t *pidp, int *pidfdp, char *err,
                  size_t errlen)
{
    const char *app = z->app, *cache_dir = Z.cache_dir, *state_dir = Z.state_dir;
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

/* The zygote's ready report, readable now on sock: its layout fingerprint into fp. */
static int read_ready(int sock, uint8_t fp[32], char *err, size_t errlen)
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
    memcpy(fp, ready.fingerprint, 32);
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

static void adopt(struct zygote *z, int sock, pid_t pid, int pidfd)
{
    fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);   /* replies come as completions */
    z->sock = sock;
    z->pid = pid;
    z->pidfd = pidfd;
    z->ready_ms = tmo_now_ms();
}

/* Synchronous, before the loop runs. */
int zygote_start(const char *app, const char *cache_dir, const char *state_dir, char *err,
                 size_t errlen)
{
    struct zygote *z;
    struct pollfd pfd;
    int sock, pidfd, rc;
    pid_t pid;

    Z.cache_dir = cache_dir;
    Z.state_dir = state_dir;
    for (int i = 0; i < ZYGOTES; i++)
        if (Z.z[i].role == Z_FREE)
            free_entry(&Z.z[i]);
    if (!(z = new_entry(app, Z_CURRENT))) {
        snprintf(err, errlen, "a zygote runs already");
        return -EBUSY;
    }
    if ((rc = launch(z, &sock, &pid, &pidfd, err, errlen)) < 0)
        goto fail;
    pfd = (struct pollfd){ .fd = sock, .events = POLLIN };
    rc = poll(&pfd, 1, (int)S.cfg.zygote_ready_timeout_ms);
    if (rc <= 0) {
        snprintf(err, errlen, "zygote did not report ready within zygote_ready_timeout_ms=%u",
                 S.cfg.zygote_ready_timeout_ms);
        discard(sock, pid, pidfd, 1);
        rc = -EINVAL;
        goto fail;
    }
    if (read_ready(sock, z->fingerprint, err, errlen) < 0) {
        discard(sock, pid, pidfd, 1);
        rc = -EINVAL;
        goto fail;
    }
    adopt(z, sock, pid, pidfd);
    LOG(LOG_INFO, "msg=\"zygote ready\" pid=%d app=%s", (int)pid, app);
    return 0;
fail:
    free_entry(z);
    return rc;
}

static void watch(struct zygote *z)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_poll_add(sqe, z->pidfd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE, z->gen, 0));
}

void zygote_watch(void)
{
    for (int i = 0; i < ZYGOTES; i++)
        if (Z.z[i].role != Z_FREE && Z.z[i].sock >= 0)
            watch(&Z.z[i]);
}

static void restart_later(struct zygote *z)
{
    if (S.stopping)
        return;
    z->ts.tv_sec = (long long)(z->backoff_ms / 1000);
    z->ts.tv_nsec = (long long)(z->backoff_ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &z->ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE_RESTART, z->gen, 0));
}

static void next_backoff(struct zygote *z)
{
    z->backoff_ms = z->backoff_ms ? z->backoff_ms * 2 : ZYGOTE_BACKOFF_MIN_MS;
    if (z->backoff_ms > S.cfg.zygote_backoff_max_ms)
        z->backoff_ms = S.cfg.zygote_backoff_max_ms;
}

/* Launch z's zygote from the loop and wait for its ready report, at most
 * zygote_ready_timeout_ms (zygote_on_ready). */
static int launch_async(struct zygote *z, char *err, size_t errlen)
{
    if (launch(z, &z->st_sock, &z->st_pid, &z->st_pidfd, err, errlen) < 0) {
        z->st_sock = -1;
        return -EINVAL;
    }
    z->ready_ts.tv_sec = S.cfg.zygote_ready_timeout_ms / 1000;
    z->ready_ts.tv_nsec = (long long)(S.cfg.zygote_ready_timeout_ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, z->st_sock, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE_READY, z->gen, 0));
    sqe->flags |= IOSQE_IO_LINK;
    sqe = sup_sqe();
    io_uring_prep_link_timeout(sqe, &z->ready_ts, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
    return 0;
}

/* An old zygote with no session left goes: closing its socket ends it, and it is reaped
 * from the loop (OP_REAP). */
static void retire(struct zygote *z)
{
    LOG(LOG_INFO, "msg=\"old zygote stopped: no session runs its module any more\" pid=%d "
        "gen=%u app=%s", (int)z->pid, z->gen, z->app);
    z->count = 0;   /* requests of sessions already gone: nobody waits for them */
    if (z->sock >= 0)
        close(z->sock);
    if (z->pidfd >= 0) {   /* running, or dead and not restarted yet */
        kill(z->pid, SIGKILL);
        if (z->pidfd <= 0xffffff) {
            struct io_uring_sqe *sqe = sup_sqe();   /* reaped from the loop (recovery.c) */
            io_uring_prep_poll_add(sqe, z->pidfd, POLLIN);
            io_uring_sqe_set_data64(sqe, UD(OP_REAP, 0, z->pidfd));
        } else {
            close(z->pidfd);
        }
    }
    if (z->st_sock >= 0)
        discard(z->st_sock, z->st_pid, z->st_pidfd, 0);
    free_entry(z);   /* its death watch and timers complete for a generation gone */
}

/* The zygote died. Live sessions go on (they need it only at their next cold recovery);
 * new sessions are refused until a new one is ready. A zygote that dies soon after it
 * started is restarted after a growing delay. */
void zygote_on_death(uint32_t gen)
{
    struct zygote *z = by_gen(gen);
    siginfo_t si;
    char how[96] = "unknown";

    if (!z || z->pidfd < 0)
        return;   /* a zygote stopped since */
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)z->pidfd, &si, WEXITED | WNOHANG | __WALL) == 0 && si.si_pid) {
        if (si.si_code == CLD_EXITED)
            snprintf(how, sizeof(how), "exit status %d", si.si_status);
        else
            snprintf(how, sizeof(how), "signal %d (%s)", si.si_status, strsignal(si.si_status));
    }
    close(z->pidfd);
    if (z->sock >= 0)
        close(z->sock);
    z->sock = z->pidfd = -1;
    z->armed = 0;   /* its poll completes with the socket's close */
    fail_pending(z, "the zygote died before it answered");
    if (by_gen(gen) != z)
        return;   /* that ended the last session of an old zygote: it is stopped */
    if (tmo_now_ms() - z->ready_ms < ZYGOTE_STABLE_MS)
        next_backoff(z);
    else
        z->backoff_ms = ZYGOTE_BACKOFF_MIN_MS;
    LOG(LOG_ERROR, "msg=\"the %szygote died; restarting it; %s meanwhile, live sessions go "
        "on\" pid=%d gen=%u status=\"%s\" restart_in_ms=%llu", role_name(z),
        z->role == Z_CURRENT ? "new sessions are refused" : "its sessions cannot get a worker",
        (int)z->pid, z->gen, how, (unsigned long long)z->backoff_ms);
    z->pid = 0;
    restart_later(z);
}

void zygote_on_restart_timer(uint32_t gen)
{
    struct zygote *z = by_gen(gen);
    char err[256];

    if (!z || S.stopping || z->sock >= 0 || z->st_sock >= 0)
        return;
    if (launch_async(z, err, sizeof(err)) < 0) {
        next_backoff(z);
        LOG(LOG_ERROR, "msg=\"zygote restart failed\" gen=%u error=\"%s\" retry_in_ms=%llu",
            z->gen, err, (unsigned long long)z->backoff_ms);
        restart_later(z);
    }
}

/* The reload's module is ready: new sessions are bound to it from now on. */
static void promote(struct zygote *z)
{
    struct zygote *cur = by_role(Z_CURRENT);

    z->role = Z_CURRENT;
    if (!cur) {
        LOG(LOG_INFO, "msg=\"app: new sessions run %s\" gen=%u pid=%d", z->app, z->gen,
            (int)z->pid);
        return;
    }
    cur->role = Z_OLD;
    LOG(LOG_INFO, "msg=\"app: new sessions run %s; older sessions keep %s\" old_sessions=%u "
        "gen=%u pid=%d old_gen=%u old_pid=%d", z->app, cur->app, cur->sessions, z->gen,
        (int)z->pid, cur->gen, (int)cur->pid);
    if (!cur->sessions)
        retire(cur);
}

void zygote_on_ready(uint32_t gen, int res)
{
    struct zygote *z = by_gen(gen);
    char err[256];

    if (!z || z->st_sock < 0)
        return;
    if (res < 0 || S.stopping) {
        snprintf(err, sizeof(err), "zygote did not report ready within "
                 "zygote_ready_timeout_ms=%u", S.cfg.zygote_ready_timeout_ms);
    } else if (read_ready(z->st_sock, z->fingerprint, err, sizeof(err)) == 0) {
        adopt(z, z->st_sock, z->st_pid, z->st_pidfd);
        z->st_sock = z->st_pidfd = -1;
        watch(z);
        if (z->role == Z_NEW) {
            LOG(LOG_INFO, "msg=\"zygote ready\" pid=%d gen=%u app=%s", (int)z->pid, z->gen,
                z->app);
            promote(z);
            return;
        }
        z->restarts++;
        S.stats.zygote_restarts++;
        LOG(LOG_WARN, "msg=\"zygote restarted\" pid=%d gen=%u restarts=%llu", (int)z->pid,
            z->gen, (unsigned long long)S.stats.zygote_restarts);
        return;
    }
    discard(z->st_sock, z->st_pid, z->st_pidfd, 0);
    z->st_sock = z->st_pidfd = -1;
    if (z->role == Z_NEW) {
        char quoted[4 * sizeof(err) + 1];   /* the zygote's words (the loader's, the app's) */
        log_escape(quoted, sizeof(quoted), err, strlen(err));
        LOG(LOG_ERROR, "msg=\"reload: app not applied: the new module does not load; new "
            "sessions keep running %s\" app=%s error=\"%s\"", by_role(Z_CURRENT) ?
            by_role(Z_CURRENT)->app : "-", z->app, quoted);
        free_entry(z);
        return;
    }
    next_backoff(z);
    LOG(LOG_ERROR, "msg=\"zygote restart failed\" gen=%u error=\"%s\" retry_in_ms=%llu", z->gen,
        err, (unsigned long long)z->backoff_ms);
    restart_later(z);
}

const char *zygote_current_app(void)
{
    struct zygote *z = by_role(Z_NEW);

    if (!z)
        z = by_role(Z_CURRENT);
    return z ? z->app : "";
}

int zygote_change_app(const char *app, char *why, size_t whylen)
{
    struct zygote *old = by_role(Z_OLD), *z;
    char err[256];

    if (by_role(Z_NEW)) {
        snprintf(why, whylen, "the zygote of %s is still starting", by_role(Z_NEW)->app);
        return -EBUSY;
    }
    if (old) {
        snprintf(why, whylen, "sessions still run the old module %s (old_sessions=%u; at "
                 "most two modules at once)", old->app, old->sessions);
        return -EBUSY;
    }
    if (!(z = new_entry(app, Z_NEW))) {
        snprintf(why, whylen, "no room for another zygote");
        return -EBUSY;
    }
    if (launch_async(z, err, sizeof(err)) < 0) {
        snprintf(why, whylen, "%s", err);
        free_entry(z);
        return -EINVAL;
    }
    LOG(LOG_INFO, "msg=\"reload: app changed; starting its zygote\" app=%s gen=%u pid=%d", app,
        z->gen, (int)z->st_pid);
    return 0;
}

void zygote_stop(int wait)
{
    for (int i = 0; i < ZYGOTES; i++) {
        struct zygote *z = &Z.z[i];
        if (z->role == Z_FREE)
            continue;
        if (z->sock >= 0)
            close(z->sock);   /* it exits when its socket closes */
        if (z->pid > 0)
            kill(z->pid, SIGKILL);
        if (z->st_sock >= 0) {
            close(z->st_sock);
            kill(z->st_pid, SIGKILL);
        }
        if (wait && z->pid > 0) {
            while (waitpid(z->pid, NULL, 0) == -1 && errno == EINTR)
                ;
            close(z->pidfd);
        }
        free_entry(z);
    }
}

void zygote_bind(struct session *s, uint32_t gen)
{
    struct zygote *z = gen ? by_gen(gen) : by_role(Z_CURRENT);

    if (z && z->gen == s->zgen)
        return;
    if (z)
        z->sessions++;   /* first: unbinding may stop the zygote it was bound to */
    zygote_unbind(s);
    if (z)
        s->zgen = z->gen;
}

void zygote_unbind(struct session *s)
{
    struct zygote *z = s->zgen ? by_gen(s->zgen) : NULL;

    s->zgen = 0;
    if (!z || !z->sessions)
        return;
    if (--z->sessions == 0 && z->role == Z_OLD)
        retire(z);
}

uint32_t zygote_for_fingerprint(const uint8_t fp[32])
{
    const struct zygote *z = by_role(Z_CURRENT), *old = by_role(Z_OLD);

    if (z && memcmp(z->fingerprint, fp, 32) == 0)
        return z->gen;
    if (old && memcmp(old->fingerprint, fp, 32) == 0)
        return old->gen;
    return 0;
}

static void arm_replies(struct zygote *z)
{
    if (z->armed || !z->count || z->sock < 0)
        return;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_poll_add(sqe, z->sock, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_ZYGOTE_REPLY, z->gen, 0));
    z->armed = 1;
}

static int queue_push(struct zygote *z, const struct session *s)
{
    if (z->count == z->cap) {
        uint32_t cap = z->cap ? z->cap * 2 : 64;
        struct pending_spawn *q = malloc(cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        for (uint32_t i = 0; i < z->count; i++)
            q[i] = z->q[(z->head + i) % z->cap];
        free(z->q);
        z->q = q;
        z->cap = cap;
        z->head = 0;
    }
    z->q[(z->head + z->count++) % z->cap] = (struct pending_spawn){
        .slot = s->slot, .session_id = s->id, .gen = s->gen, .sent_ms = tmo_now_ms() };
    return 0;
}

/* The session a pending spawn is for, if it still waits for it. */
static struct session *queue_pop(struct zygote *z)
{
    struct pending_spawn e = z->q[z->head];
    struct session *s;

    z->head = (z->head + 1) % z->cap;
    z->count--;
    if (e.slot >= S.slots)
        return NULL;
    s = &S.sessions[e.slot];
    return s->state != S_FREE && s->id == e.session_id && s->gen == e.gen && s->spawning ? s
                                                                                         : NULL;
}

/* Every pending spawn fails (the zygote died or stopped answering). */
static void fail_pending(struct zygote *z, const char *why)
{
    while (z->count) {
        struct session *s = queue_pop(z);
        if (s)
            sess_spawn_failed(s, why);
    }
}

/* Ask the session's zygote for a worker; the reply comes later (zygote_on_reply). 0, or
 * -errno with a reason. */
int zygote_spawn(struct session *s, int memfd, int report_fd, uint64_t restore_pos, char *err,
                 size_t errlen)
{
    struct zygote *z = by_gen(s->zgen);
    struct spawn_request req;
    int fds[3] = { memfd, report_fd, s->doorbell_out };
    int rc;

    if (!z) {
        snprintf(err, errlen, "the zygote of the session's module (generation %u) is gone",
                 s->zgen);
        return -ENOENT;
    }
    if (z->sock < 0) {
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
    if (queue_push(z, s) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    rc = spawn_send(z->sock, &req, sizeof(req), fds, s->doorbell_out >= 0 ? 3 : 2);
    if (rc < 0) {
        z->count--;   /* the entry just pushed */
        snprintf(err, errlen, "zygote unreachable: %s", rc == -EAGAIN ?
                 "too many spawns waiting" : strerror(-rc));
        return rc == -EAGAIN ? -ENOBUFS : rc;   /* its socket is full: the caller may retry */
    }
    s->spawning = 1;
    arm_replies(z);
    return 0;
}

static uint64_t last_answer_ms;   /* zygote_last_answer_ms */

void zygote_on_reply(uint32_t gen, int res)
{
    struct zygote *z = by_gen(gen);

    if (!z)
        return;   /* a zygote stopped since */
    z->armed = 0;
    while (z->count && z->sock >= 0) {
        struct spawn_reply rep;
        int pidfd = -1, nfds = 0;
        int rc = spawn_recv(z->sock, &rep, sizeof(rep), &pidfd, 1, &nfds);

        if (rc == -EAGAIN || rc == -EWOULDBLOCK)
            break;
        struct session *s = queue_pop(z);
        last_answer_ms = z->answered_ms = tmo_now_ms();
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
    /* sess_spawn_failed may have freed the last session of an old zygote: z is gone then. */
    if (by_gen(gen) == z)
        arm_replies(z);
}

uint64_t zygote_last_answer_ms(void)
{
    return last_answer_ms;
}

uint32_t zygote_waiting(const struct session *s)
{
    const struct zygote *z = s->zgen ? by_gen(s->zgen) : by_role(Z_CURRENT);

    return z && z->sock >= 0 ? z->count : UINT32_MAX;
}

/* From the periodic tick: a zygote that answers nothing for too long while a request waits
 * is killed (its death watch restarts it, and the waiting spawns fail). The wait counts from
 * the oldest request's sending or the zygote's last answer, whichever came later: a burst
 * of spawns waits its turn, and a zygote that works through one slowly but steadily is not
 * hung (it was killed, with every spawn of the burst failed, when the head's wait counted
 * its time behind the others: 100 sessions waking at once under the sanitizers). */
void zygote_check_spawns(void)
{
    for (int i = 0; i < ZYGOTES; i++) {
        struct zygote *z = &Z.z[i];
        if (z->role == Z_FREE || !z->count || z->sock < 0)
            continue;
        uint64_t since = z->q[z->head].sent_ms > z->answered_ms ? z->q[z->head].sent_ms
                                                                : z->answered_ms;
        if (tmo_now_ms() - since < S.cfg.zygote_answer_timeout_ms)
            continue;
        LOG(LOG_ERROR, "msg=\"the %szygote did not answer; killing it\" pid=%d gen=%u "
            "zygote_answer_timeout_ms=%u", role_name(z), (int)z->pid, z->gen,
            S.cfg.zygote_answer_timeout_ms);
        close(z->sock);
        z->sock = -1;
        kill(z->pid, SIGKILL);   /* its death watch restarts it */
        fail_pending(z, "the zygote did not answer within zygote_answer_timeout_ms");
    }
}

int zygote_tracked(pid_t pid)
{
    for (int i = 0; i < ZYGOTES; i++)
        if (Z.z[i].role != Z_FREE && pid > 0 &&
            (Z.z[i].pid == pid || (Z.z[i].st_sock >= 0 && Z.z[i].st_pid == pid)))
            return 1;
    return 0;
}

/* len after appending n more characters to a buffer of cap (snprintf's return), capped. */
static size_t put(size_t cap, size_t len, int n)
{
    if (n < 0)
        return len;
    return len + (size_t)n >= cap ? cap - 1 : len + (size_t)n;
}

size_t zygote_stats(char *out, size_t cap)
{
    const struct zygote *z = by_role(Z_CURRENT), *old = by_role(Z_OLD), *nz = by_role(Z_NEW);
    size_t len = 0;

    if (!cap)
        return 0;
    out[0] = 0;
    if (z)
        len = put(cap, len, snprintf(out, cap, "zygote=%s zygote_pid=%d zygote_gen=%u "
                  "zygote_sessions=%u zygote_spawns_waiting=%u zygote_spawns_deferred=%llu "
                  "app=%s",
                  z->sock >= 0 ? "up" : "restarting", z->sock >= 0 ? (int)z->pid : 0, z->gen,
                  z->sessions, z->count, (unsigned long long)S.stats.spawns_deferred, z->app));
    if (old)
        len = put(cap, len, snprintf(out + len, cap - len, " old_zygote=%s "
                  "old_zygote_pid=%d old_zygote_gen=%u old_zygote_sessions=%u "
                  "old_zygote_restarts=%llu old_app=%s", old->sock >= 0 ? "up" : "restarting",
                  old->sock >= 0 ? (int)old->pid : 0, old->gen, old->sessions,
                  (unsigned long long)old->restarts, old->app));
    else
        len = put(cap, len, snprintf(out + len, cap - len, " old_zygote=none"));
    if (nz)
        len = put(cap, len, snprintf(out + len, cap - len, " new_zygote=starting "
                  "new_zygote_pid=%d new_zygote_gen=%u new_app=%s", (int)nz->st_pid, nz->gen,
                  nz->app));
    return len;
}
