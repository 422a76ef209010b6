/* loop.c - cessna-supervisor: one io_uring loop for every socket, worker doorbell, worker
 * death and timer of every session (DESIGN.md section 7). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <limits.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_version.h"
#include "check.h"
#include "connfd.h"
#include "cred.h"
#include "drain.h"
#include "log.h"
#include "metrics.h"
#include "proc.h"
#include "reload.h"
#include "snapsync.h"
#include "sup.h"

struct sup S;

struct io_uring_sqe *sup_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&S.ring);

    while (!sqe) {
        io_uring_submit(&S.ring);
        sqe = io_uring_get_sqe(&S.ring);
    }
    return sqe;
}

void sup_arm_recv(struct session *s, struct conn *c)
{
    if (c->recv_armed || c->fd < 0 || c->eof)
        return;
    if (sess_rbuf(c) < 0) {
        LOG(LOG_ERROR, "session=%llu msg=\"out of memory for a receive buffer\"",
            (unsigned long long)s->id);
        return;
    }
    if (c->rlen == c->rcap)
        return;   /* full of frames waiting for the worker */
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    connfd_prep(sqe);
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, s->slot, c->side));
    c->recv_armed = 1;
    s->inflight++;
}

/* Start sending whatever is queued, if no send is in flight. */
void sup_flush(struct session *s, struct conn *c)
{
    if (S.flush_held || c->send_armed || c->fd < 0 || !c->up || c->dead || c->connect_armed)
        return;
    if (!c->sending.len && c->pending.len) {
        struct outbuf t = c->sending;
        c->sending = c->pending;
        c->pending = t;
        c->sent = 0;
    }
    if (!c->sending.len)
        return;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_send(sqe, c->fd, c->sending.data + c->sent, c->sending.len - c->sent, MSG_NOSIGNAL);
    connfd_prep(sqe);
    io_uring_sqe_set_data64(sqe, UD(OP_SEND, s->slot, c->side));
    c->send_armed = 1;
    s->inflight++;
}

/* The two listeners. Accepting pauses for ACCEPT_PAUSE_MS when the process or the system
 * is out of file descriptors (EMFILE, ENFILE; ENOBUFS, ENOMEM): re-arming at once would
 * spin on the same error. */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_MS   1000   /* one log line per this at most about it */

struct listener {
    int fd;
    enum op op;
    int paused;
    uint64_t errors, logged_errors, logged_ms;
    struct __kernel_timespec ts;
};
static struct listener listeners[2];

static void arm_accept(struct listener *l)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(l->op, 0, 0));
}

static struct signalfd_siginfo sig_info;

static void arm_signal(void)
{
    struct signalfd_siginfo *si = &sig_info;
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_read(sqe, S.signal_fd, si, sizeof(*si), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_SIGNAL, 0, 0));
}

static void pause_accepting(struct listener *l, struct io_uring_cqe *cqe)
{
    uint64_t now = tmo_now_ms();

    S.stats.accept_fd_limit++;
    l->errors++;
    if (!l->logged_ms || now - l->logged_ms >= ACCEPT_LOG_MS) {
        LOG(LOG_WARN, "msg=\"accept: out of file descriptors; accepting paused\" error=\"%s\" "
            "listener=%s pause_ms=%d errors_since_last_line=%llu sessions=%u",
            strerror(-cqe->res), l->op == OP_ACCEPT ? "sessions" : "control", ACCEPT_PAUSE_MS,
            (unsigned long long)(l->errors - l->logged_errors), S.nsessions);
        l->logged_ms = now;
        l->logged_errors = l->errors;
    }
    if (l->paused)
        return;
    l->paused = 1;
    S.stats.accept_paused++;
    if (cqe->flags & IORING_CQE_F_MORE) {   /* the multishot accept goes on: stop it */
        struct io_uring_sqe *sqe = sup_sqe();
        io_uring_prep_cancel64(sqe, UD(l->op, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
    }
    l->ts.tv_sec = 0;
    l->ts.tv_nsec = ACCEPT_PAUSE_MS * 1000000ll;
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &l->ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT_RESUME, 0, l == &listeners[1]));
}

static void resume_accepting(uint32_t which)
{
    struct listener *l = &listeners[which & 1];

    l->paused = 0;
    if (!S.stopping)
        arm_accept(l);
}

static void on_accept(struct io_uring_cqe *cqe, struct listener *l)
{
    int res = cqe->res;

    if (res >= 0) {
        int one = 1;
        if (l->op == OP_ACCEPT) {
            setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            sess_accept(res);
        } else {
            ctl_accept(res);
        }
    } else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        pause_accepting(l, cqe);
    } else if (res != -EINTR && res != -ECANCELED) {
        LOG(LOG_WARN, "msg=\"accept\" error=\"%s\"", strerror(-res));
    }
    if (!(cqe->flags & IORING_CQE_F_MORE) && !S.stopping && !l->paused)
        arm_accept(l);
}

static void dispatch(struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int op = UD_OP(ud);
    uint32_t slot = UD_SLOT(ud), arg = UD_ARG(ud);
    struct session *s = NULL;

    switch (op) {
    case OP_ACCEPT:     return on_accept(cqe, &listeners[0]);
    case OP_CTL_ACCEPT: return on_accept(cqe, &listeners[1]);
    case OP_ACCEPT_RESUME: return resume_accepting(arg);
    case OP_CTL_RECV:   return ctl_on_recv(slot, cqe->res);
    case OP_CTL_SEND:   return ctl_on_send(slot, cqe->res);
    case OP_SIGNAL:
        if (cqe->res < 0) {
            LOG(LOG_ERROR, "msg=\"signalfd read\" error=\"%s\"", strerror(-cqe->res));
            S.exit_code = 1;
        } else if (sig_info.ssi_signo == SIGHUP) {
            LOG(LOG_INFO, "msg=\"SIGHUP: reloading the configuration\"");
            reload_config();
            arm_signal();
            return;
        } else if (sig_info.ssi_signo == SIGTERM && !S.draining) {
            /* SIGTERM drains (drain.c): sessions move or close, then we stop; a second
             * SIGTERM (or SIGINT) stops now. */
            drain_start("SIGTERM");
            arm_signal();
            return;
        } else {
            LOG(LOG_INFO, "msg=\"stopping on signal\" signal=%u", sig_info.ssi_signo);
        }
        S.stopping = 1;
        return;
    case OP_REAP:
        recovery_on_reap(slot, (int)arg, cqe->res);
        if (slot < S.slots && S.sessions[slot].state != S_FREE)
            hib_after_op(&S.sessions[slot]);   /* the last child gone: asleep now */
        return;
    case OP_TICK:       return recovery_on_tick();
    case OP_SWEEP:      return tmo_on_sweep();
    case OP_ZYGOTE:     return zygote_on_death(slot);
    case OP_ZYGOTE_RESTART: return zygote_on_restart_timer(slot);
    case OP_ZYGOTE_READY:   return zygote_on_ready(slot, cqe->res);
    case OP_IGNORE:     return;
    case OP_WAKE:       return sess_wake_failed(slot, cqe->res);
    case OP_ZYGOTE_REPLY: return zygote_on_reply(slot, cqe->res);
    case OP_SNAPSYNC:   return snapsync_on_done(cqe->res);
    case OP_SNAPSYNC_GAP: return snapsync_on_gap();
    case OP_METRICS_ACCEPT: return metrics_on_accept(cqe->res, cqe->flags);
    case OP_METRICS_RECV:   return metrics_on_recv(slot, cqe->res);
    case OP_METRICS_SEND:   return metrics_on_send(slot, cqe->res);
    }
    if (slot >= S.slots)
        return;
    s = &S.sessions[slot];
    if (s->state == S_FREE)
        return;   /* cannot happen: a slot is freed only with nothing in flight */
    switch (op) {
    case OP_RECV:    sess_on_recv(s, (enum side)arg, cqe->res); break;
    case OP_SEND:    sess_on_send(s, (enum side)arg, cqe->res); break;
    case OP_CONNECT: sess_on_connect(s, cqe->res); break;
    case OP_DOORBELL: sess_on_doorbell(s, cqe->res); break;
    case OP_WORKER_EXIT: sess_on_worker_exit(s, cqe->res); break;
    case OP_TIMER:   sess_on_timer(s, arg, cqe->res); break;
    case OP_TIMER_CANCEL: sess_release_op(s); break;
    case OP_REPORT:  recovery_on_report(s, (int)arg, cqe->res); break;
    case OP_SOCK_CTL: sess_on_sock_ctl(s, (enum side)arg, cqe->res); break;
    case OP_SOCK_CLOSE: connfd_close_done(s, (int)arg, cqe->res); break;
    }
    if (s->state != S_FREE) {
        hib_after_op(s);   /* hibernate.c: finish going to sleep, or wake */
        sess_maybe_free(s);
    }
}

static int run_loop(void)
{
    while (!S.stopping) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        int rc;

        if (S.dirty)
            sess_ring_doorbells();   /* the before-sleep hook: one doorbell per worker per batch */
        snapsync_kick();   /* written snapshot files: one sync for all of them */
        sdir_step();   /* a few files of ended sessions; while some remain, do not sleep */
        rc = io_uring_submit_and_wait(&S.ring, sdir_busy() ? 0 : 1);
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            LOG(LOG_ERROR, "msg=\"io_uring_submit_and_wait\" error=\"%s\"", strerror(-rc));
            return 1;
        }
        recovery_close_late();   /* report sockets whose close waited for the queue */
        io_uring_for_each_cqe(&S.ring, head, cqe) {
            dispatch(cqe);
            n++;
        }
        io_uring_cq_advance(&S.ring, n);
        drain_check_done();   /* a drain whose last session is gone stops the loop */
    }
    return S.exit_code;
}

static int setup_ring(void)
{
    struct io_uring_params p;

    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
              IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(4096, &S.ring, &p) == 0)
        return 0;
    memset(&p, 0, sizeof(p));   /* older kernels: plain ring */
    return io_uring_queue_init_params(4096, &S.ring, &p);
}

/* Each session holds this many descriptors: its two sockets and our end of its snapshot
 * report socket; a hot standby's pidfd and wake fd more; on kernels without io_uring futex
 * waits an eventfd doorbell, without io_uring waitid the worker's pidfd. A snapshot child's
 * pidfd is held while it runs: timed snapshots in flight are capped node-wide
 * (SNAPSHOTS_IN_FLIGHT, recovery.c), and those descriptors are reserved with the node's own
 * few dozen. */
#define FDS_PER_SESSION 3
#define FDS_RESERVED    64

/* The node's own descriptors: the few dozen, the snapshot children's, and the metrics
 * endpoint's when it is on. */
static uint64_t fds_reserved(void)
{
    return FDS_RESERVED + SNAPSHOTS_IN_FLIGHT + (S.cfg.metrics_listen[0] ? METRICS_FDS : 0);
}

static uint64_t fds_per_session(void)
{
    return FDS_PER_SESSION + (S.cfg.standby == STANDBY_HOT ? 2 : 0) + (S.futex_bells ? 0 : 1) +
           (S.waitid_watch ? 0 : 1) -
           (S.direct ? 2 : 0);   /* its two sockets are in the ring's file table (connfd.c) */
}

/* The descriptor limit, as HAProxy sets it for maxconn: max_fds if given, else what
 * max_sessions needs, else the hard limit; the hard limit is raised too when we may (root,
 * up to fs.nr_open). max_sessions = 0 is derived from the limit we got. What cannot be
 * reached is said at start, with the numbers, not found out at the session that hits it. */
static void set_fd_limit(void)
{
    struct rlimit rl;
    uint64_t per = fds_per_session(), want;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return;
    if (S.cfg.max_fds)
        want = S.cfg.max_fds;
    else if (S.cfg.max_sessions)
        want = S.cfg.max_sessions * per + fds_reserved();
    else
        want = rl.rlim_max;
    if (S.direct && !S.cfg.max_fds && want < 2ull * S.cfg.max_sessions)
        want = 2ull * S.cfg.max_sessions;   /* a file table may not exceed the limit */
    if (want > rl.rlim_max) {
        struct rlimit up = { want, want };
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
        else
            want = rl.rlim_max;
    }
    if (want != rl.rlim_cur) {
        struct rlimit set = { want, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &set) == 0)
            rl.rlim_cur = want;
    }
    uint64_t can = rl.rlim_cur > fds_reserved() ? (rl.rlim_cur - fds_reserved()) / per : 0;
    if (rl.rlim_cur == RLIM_INFINITY || can > 65536)
        can = 65536;
    if (S.direct && can > rl.rlim_cur / 2)
        can = rl.rlim_cur / 2;   /* two table entries a session, at most RLIMIT_NOFILE of them */
    if (!S.cfg.max_sessions) {
        S.cfg.max_sessions = can ? (uint32_t)can : 1;
        LOG(LOG_INFO, "msg=\"max_sessions derived from the descriptor limit\" max_sessions=%u "
            "fd_limit=%llu fds_per_session=%llu", S.cfg.max_sessions,
            (unsigned long long)rl.rlim_cur, (unsigned long long)per);
    } else if (can < S.cfg.max_sessions) {
        /* Capped, as HAProxy caps maxconn: past it, sessions already open would fail on
         * EMFILE (a snapshot, a recovery), and one session must never hurt another. */
        LOG(LOG_WARN, "msg=\"max_sessions lowered: the descriptor limit (ulimit -n, max_fds) "
            "holds no more; sessions past it are refused as edge full\" max_sessions=%u "
            "lowered_to=%llu fd_limit=%llu fds_per_session=%llu", S.cfg.max_sessions,
            (unsigned long long)(can ? can : 1), (unsigned long long)rl.rlim_cur,
            (unsigned long long)per);
        S.cfg.max_sessions = can ? (uint32_t)can : 1;
    }
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cessna-supervisor -c FILE [--check]\n"
        "\n"
        "Runs a CESSNA edge node: accepts client endpoints on [edge] listen, connects each\n"
        "session to the server endpoint, and runs the app module in one worker process per\n"
        "session. Prints 'ready listen=HOST:PORT' on stdout once it accepts sessions.\n"
        "\n"
        "  -c, --config FILE   the INI configuration (section [edge]; see cessna.ini(5))\n"
        "  -t, --check         check the configuration, the directories it names and that\n"
        "                      the app loads as a CESSNA app, then exit (0: ok)\n"
        "  -h, --help          this text\n"
        "  -V, --version       print the version and exit\n"
        "\n"
        "Signals: SIGTERM drains (sessions move to another edge or close once quiet, then\n"
        "exit 0; a second SIGTERM stops at once), SIGINT stops at once, SIGHUP reloads the\n"
        "run-time keys of the configuration file.\n"
        "Relative paths in the configuration are relative to the file's directory.\n"
        "\n"
        "Logs go to stderr as key=value lines; the level is [edge] log_level (default info),\n"
        "overridden by the environment: CESSNA_LOG=error|warn|info|debug.\n");
}

/* An error that stops the supervisor at start (or fails --check), as a log line like any
 * other (the reason keeps its "FILE:LINE: reason" form inside). */
static const char *startup_what = "cannot start";
static void startup_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void startup_error(const char *fmt, ...)
{
    char text[768], quoted[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_escape(quoted, sizeof(quoted), text, strlen(text));
    log_write(LOG_ERROR, "msg=\"%s\" error=\"%s\"", startup_what, quoted);
}

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0700) == -1 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    if (mkdir(buf, 0700) == -1 && errno != EEXIST)
        return -errno;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check", no_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    const char *cfgpath = NULL;
    char err[512];
    int check = 0, c, rc;
    sigset_t mask;

    while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfgpath = optarg; break;
        case 't': check = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cessna-supervisor %s\n", CESSNA_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!cfgpath || optind != argc) {
        if (!cfgpath)
            fprintf(stderr, "cessna-supervisor: -c FILE is required\n");
        else
            fprintf(stderr, "cessna-supervisor: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    log_init("cessna-supervisor");
    if (check)
        startup_what = "check failed";
    if (config_load(cfgpath, &S.cfg, err, sizeof(err)) < 0 ||
        addr_parse(S.cfg.server, &S.server_addr, &S.server_addrlen, err, sizeof(err)) < 0) {
        startup_error("%s", err);
        return 2;
    }
    if (access(S.cfg.app, R_OK) == -1) {
        startup_error("%s: app module %s: %s", cfgpath, S.cfg.app, strerror(errno));
        return 2;
    }
    if (cred_init() < 0) {
        startup_error("libsodium failed to initialise");
        return 1;
    }
    if (S.cfg.edge_secret_file[0] &&
        cred_load_secret(S.cfg.edge_secret_file, S.edge_secret, &S.edge_secret_len, err,
                         sizeof(err)) < 0) {
        startup_error("%s: edge_secret_file: %s", cfgpath, err);
        return 2;
    }
    log_set_level(S.cfg.log_level);   /* CESSNA_LOG, when set, wins */
    S.log_level_fd = check ? -1 : log_share();   /* a reload's level reaches running workers */
    if (check) {
        if (check_dirs(&S.cfg, err, sizeof(err)) < 0 || check_app(err, sizeof(err)) < 0) {
            startup_error("%s: %s", cfgpath, err);
            return 2;
        }
        printf("%s: ok\n", cfgpath);
        return 0;
    }
    reload_init(cfgpath);
    S.max_body = wire_max_body(S.cfg.max_message_bytes);
    S.ncpu = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    S.ring_size = S.cfg.ring_bytes;
    sess_flow_limits();
    if ((rc = mkdir_p(S.cfg.state_dir)) < 0) {
        startup_error("state_dir %s: %s", S.cfg.state_dir, strerror(-rc));
        return 1;
    }
    S.lock_fd = -1;
    if (sdir_lock(err, sizeof(err)) < 0) {
        startup_error("%s", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    S.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (S.signal_fd == -1) {
        startup_error("signalfd: %s", strerror(errno));
        return 1;
    }

    if (zygote_start(S.cfg.app, S.cfg.cache_dir, S.cfg.state_dir, err, sizeof(err)) < 0) {
        startup_error("%s", err);
        return 1;
    }
    S.listen_fd = addr_listen(S.cfg.listen, err, sizeof(err));
    if (S.listen_fd < 0) {
        startup_error("%s", err);
        return 1;
    }
    S.ctl_fd = ctl_listen(S.cfg.control, err, sizeof(err));
    if (S.ctl_fd < 0) {
        startup_error("%s", err);
        return 1;
    }
    int metrics_fd = -1;
    if (S.cfg.metrics_listen[0] &&
        (metrics_fd = metrics_listen(S.cfg.metrics_listen, err, sizeof(err))) < 0) {
        startup_error("%s", err);
        return 1;
    }
    if ((rc = setup_ring()) < 0) {
        startup_error("io_uring: %s", strerror(-rc));
        return 1;
    }
    doorbell_probe();
    exitwatch_probe();
    connfd_probe();
    set_fd_limit();   /* after the probes: they decide the fds per session */
    if (connfd_register(S.cfg.max_sessions) < 0)
        set_fd_limit();   /* plain sockets after all: they count again */
    S.slots = S.cfg.max_sessions;
    S.sessions = calloc(S.slots, sizeof(*S.sessions));
    S.free_slots = calloc(S.slots, sizeof(*S.free_slots));
    if (!S.sessions || !S.free_slots) {
        startup_error("out of memory for %u sessions", S.cfg.max_sessions);
        return 1;
    }
    if (snapsync_init(err, sizeof(err)) < 0) {
        startup_error("%s", err);
        return 1;
    }
    proc_close_in_child(S.listen_fd);
    proc_close_in_child(S.ctl_fd);
    if (metrics_fd >= 0)
        proc_close_in_child(metrics_fd);
    proc_close_in_child(S.ring.ring_fd);
    proc_close_in_child(S.lock_fd);
    proc_close_in_child(S.signal_fd);
    sdir_init();
    listeners[0] = (struct listener){ .fd = S.listen_fd, .op = OP_ACCEPT };
    listeners[1] = (struct listener){ .fd = S.ctl_fd, .op = OP_CTL_ACCEPT };
    arm_accept(&listeners[0]);
    arm_accept(&listeners[1]);
    arm_signal();
    zygote_watch();
    recovery_tick_arm();
    tmo_arm();
    metrics_start();

    /* Report the real address (the config may say port 0). */
    char host[256];
    snprintf(host, sizeof(host), "%s", S.cfg.listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0;
    printf("ready listen=%s:%d\n", host, addr_local_port(S.listen_fd));
    fflush(stdout);
    LOG(LOG_INFO, "msg=\"ready\" listen=%s:%d server=%s app=%s control=%s", host,
        addr_local_port(S.listen_fd), S.cfg.server, S.cfg.app, S.cfg.control);
    if (metrics_fd >= 0)
        LOG(LOG_INFO, "msg=\"metrics endpoint ready\" metrics_listen=%s port=%d",
            S.cfg.metrics_listen, addr_local_port(metrics_fd));

    rc = run_loop();

    /* Free the listening ports now: the ring's accepts hold the sockets until the kernel
     * tears the ring down, after we exit, and a restart at once would find them bound. */
    shutdown(S.listen_fd, SHUT_RDWR);
    if (metrics_fd >= 0)
        shutdown(metrics_fd, SHUT_RDWR);
    io_uring_queue_exit(&S.ring);

    /* Stop: workers die with us (PDEATHSIG); close the zygote's socket so it exits too. */
    for (uint32_t i = 0; i < S.slot_high; i++)
        if (S.sessions[i].pid > 0 && !S.sessions[i].worker_reaped)
            kill(S.sessions[i].pid, SIGKILL);
    zygote_stop(0);
    unlink(S.cfg.control);
    LOG(LOG_INFO, "msg=\"stopped\" exit_status=%d", rc);
    return rc;
}
