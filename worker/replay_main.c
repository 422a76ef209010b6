/* replay_main.c - cessna-replay: re-run a session offline from its newest snapshot and its
 * ordering log (STATE_DIR/SESSION_ID/), with the same app module, and report where it
 * crashes. A worker is forked exactly as the edge runs one; this process plays the
 * supervisor: it feeds the logged events in order and reads the outputs.
 *
 * It is the cessna-worker binary itself (build/bin/cessna-replay is a link to it), so the
 * layout, and with it the snapshot's fingerprint, is the edge's. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bell.h"
#include "cessna_version.h"
#include "evlog.h"
#include "log.h"
#include "proc.h"
#include "runtime.h"
#include "sandbox.h"
#include "shm.h"
#include "snap.h"
#include "wsnap.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cessna-replay --app MODULE.so --state-dir DIR --session ID [--fresh]\n"
        "                     [--cache-dir DIR]\n"
        "\n"
        "Re-runs session ID offline: restores its newest snapshot from DIR/ID/ (or starts\n"
        "fresh with --fresh, which needs the log from event 1), feeds the logged events\n"
        "(DIR/ID/events-*.log) to the app in their order, and reports whether and where the\n"
        "app crashes. Use the same build and app module as the edge that ran the session.\n"
        "--cache-dir DIR is the edge's cache_dir: what the app read from it (cessna_cache_read)\n"
        "is read again (without it, every read finds nothing, and the replay says so).\n"
        "Exit status: 0 no crash, 3 the app crashed, 1 replay not possible, 2 usage.\n"
        "  -V, --version   print the version and exit\n");
}

struct replay {
    int has_cache, cache_warned;   /* --cache-dir given; its absence said once */
    struct shm_ctl *ctl;
    struct ring in, out;
    struct ring_asm out_asm;    /* outputs in pieces */
    uint32_t fed_part;          /* payload bytes of the event at the feed offset in the ring */
    int bell_out, pidfd;   /* bell_out: an eventfd the worker rings (bell.h) */
    int report;            /* our end of the worker's report socket: its wake-ups (bell.h) */
    pid_t pid;
    uint64_t outputs[2], last_pos;
    uint64_t closed_at;    /* the app ended the session at this event (0: it did not) */
};

/* Wake the worker, as the supervisor does (bell.h). */
static void ring_worker(struct replay *r)
{
    static const char byte;

    bell_add(&r->ctl->bell_in);
    if (bell_claim_sleeper(&r->ctl->in_asleep))
        (void)!send(r->report, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Drain the worker's outputs; returns 1 when it said DONE or FAIL. */
static int drain(struct replay *r)
{
    uint16_t type;
    uint32_t len;
    const struct shm_rec *rec;
    int done = 0;

    while ((rec = ring_peek(&r->out, &type, &len))) {
        const void *whole;
        int rc = ring_asm_take(&r->out_asm, type, r->out.peeked_flags, rec, len,
                               r->ctl->max_message + (uint32_t)sizeof(*rec), &whole, &len);
        if (rc < 0) {
            fprintf(stderr, "cessna-replay: the worker wrote a bad long record: %s\n",
                    r->out_asm.err);
            return 1;
        }
        if (rc == 1) {
            struct shm_rec h = { 0 };
            if (len >= sizeof(h))
                memcpy(&h, whole, sizeof(h));
            if (type == OUT_CACHE_READ && !r->has_cache && !r->cache_warned) {
                int nlen = (int)(len - sizeof(h));
                printf("note: the app read '%.*s' from its cache, which this replay does not "
                       "have (--cache-dir): the read found nothing\n",
                       nlen > 200 ? 200 : nlen, (const char *)whole + sizeof(h));
                r->cache_warned = 1;
            }
            if (type == OUT_CLIENT || type == OUT_SERVER)
                r->outputs[type == OUT_SERVER]++;
            else if (type == OUT_DONE || type == OUT_FAIL)
                done = 1;
            if (type == OUT_DONE && h.a && len >= sizeof(h)) {
                int tlen = (int)(len - sizeof(h));
                r->closed_at = h.pos;
                printf("the app closed the session at event %llu: code %lld%s%.*s\n",
                       (unsigned long long)h.pos, (long long)(int64_t)h.b, tlen ? ", " : "",
                       tlen > SHM_CLOSE_TEXT_MAX ? SHM_CLOSE_TEXT_MAX : tlen,
                       (const char *)whole + sizeof(h));
            }
            ring_asm_reset(&r->out_asm);
        }
        ring_pop(&r->out);
    }
    if (ring_producer_waits(&r->out)) {
        ring_worker(r);
    }
    return done;
}

/* Feed records from *off while the ring has room; rings the worker's doorbell. */
static void feed(struct replay *r, const struct evlog_reader *ev, size_t *off)
{
    int fed = 0;

    while (*off < ev->len) {
        uint32_t len;
        uint16_t type;
        memcpy(&len, ev->buf + *off, 4);
        memcpy(&type, ev->buf + *off + 4, 2);
        uint32_t before = r->fed_part;
        int whole = ring_put(&r->in, type, ev->buf + *off + 8, len, NULL, 0, &r->fed_part);
        fed |= whole || r->fed_part != before;
        /* full: the worker rings bell_out once it made room */
        if (!whole && ring_wait_prepare(&r->in, ring_put_need(&r->in, len, r->fed_part)))
            break;
        if (!whole)
            continue;
        *off += (8 + (size_t)len + 7) & ~(size_t)7;
    }
    if (fed && ring_wants_wakeup(&r->in))
        ring_worker(r);
}

/* Say how the replay ended: 0 no crash, 3 the app crashed, 1 the worker stopped. */
static int report(struct replay *r, uint64_t from, uint64_t last)
{
    uint64_t consumed = atomic_load(&r->ctl->consumed);
    siginfo_t si;

    if (r->closed_at && consumed == r->closed_at && !r->ctl->error[0]) {
        /* later logged events never reach an app that closed (cessna_close_session) */
        printf("replayed events %llu..%llu without a crash, where the app closed the session; "
               "outputs: to_client=%llu to_server=%llu\n", (unsigned long long)(from + 1),
               (unsigned long long)consumed, (unsigned long long)r->outputs[0],
               (unsigned long long)r->outputs[1]);
        return 0;
    }
    if (consumed >= last && !r->ctl->error[0]) {
        printf("replayed events %llu..%llu without a crash; outputs: to_client=%llu "
               "to_server=%llu\n", (unsigned long long)(from + 1), (unsigned long long)last,
               (unsigned long long)r->outputs[0], (unsigned long long)r->outputs[1]);
        return 0;
    }
    memset(&si, 0, sizeof(si));
    waitid(P_PIDFD, (id_t)r->pidfd, &si, WEXITED);
    r->ctl->error[sizeof(r->ctl->error) - 1] = 0;
    if (si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED) {
        printf("CRASH at event %llu: signal %d (%s)\n", (unsigned long long)(consumed + 1),
               si.si_status, strsignal(si.si_status));
        return 3;
    }
    printf("the worker stopped at event %llu: %s\n", (unsigned long long)consumed,
           r->ctl->error[0] ? r->ctl->error : "exited");
    return 1;
}

static int start_worker(struct replay *r, uint64_t session_id, uint64_t restore_pos,
                        uint32_t max_message)
{
    uint32_t ring_size = SHM_RING_BYTES;
    size_t total = shm_total_size(ring_size);
    int memfd = memfd_create("cessna-replay", MFD_CLOEXEC), sv[2];
    void *base;

    if (memfd == -1 || ftruncate(memfd, (off_t)total) == -1 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
        return -errno;
    base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (base == MAP_FAILED)
        return -errno;
    r->ctl = base;
    r->report = sv[0];
    r->ctl->magic = SHM_MAGIC;
    r->ctl->ring_size = ring_size;
    r->ctl->session_id = session_id;
    r->ctl->max_message = max_message;
    atomic_store(&r->ctl->consumed, restore_pos);
    r->ctl->log_offline = 1;   /* cessna_log lines go to stderr, marked replay=1 */
    ring_format(shm_in_ring(base), ring_size);
    ring_format(shm_out_ring(base, ring_size), ring_size);
    ring_attach(&r->in, shm_in_ring(base));
    ring_attach(&r->out, shm_out_ring(base, ring_size));
    ring_sleep_prepare(&r->out);
    r->bell_out = eventfd(0, EFD_CLOEXEC);
    r->pid = proc_fork(0, &r->pidfd);
    if (r->pid < 0)
        return r->pid;
    if (r->pid == 0) {
        struct rt_session s = {
            .session_id = session_id, .ring_size = ring_size, .max_message = max_message,
            .memfd = memfd, .doorbell_out = r->bell_out,
            .report_fd = sv[1], .restore_pos = restore_pos,
            .max_memory = 256ull << 20,   /* the default; a snapshot's arena holds its own */
        };
        rt_prepare_heap();
        rt_run(&s);
    }
    close(memfd);
    return 0;
}

int replay_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "app", required_argument, NULL, 'a' },
        { "state-dir", required_argument, NULL, 'd' },
        { "session", required_argument, NULL, 's' },
        { "fresh", no_argument, NULL, 'f' },
        { "cache-dir", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    const char *app = NULL, *state_dir = NULL, *cache_dir = NULL;
    unsigned long long session_id = 0;
    int fresh = 0, c;
    char err[512], dir[PATH_MAX];

    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case 'a': app = optarg; break;
        case 'd': state_dir = optarg; break;
        case 's': session_id = strtoull(optarg, NULL, 0); break;
        case 'f': fresh = 1; break;
        case 'c': cache_dir = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cessna-replay %s\n", CESSNA_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!app || !state_dir || !session_id) {
        usage(stderr);
        return 2;
    }
    log_init("cessna-replay");
    rt_reexec_for_workers(argv);
    signal(SIGPIPE, SIG_IGN);
    rt_set_state_dir(state_dir);
    /* A module named without a directory is a file here, not a library on the search path. */
    char app_path[PATH_MAX];
    if (!strchr(app, '/') && realpath(app, app_path))
        app = app_path;
    if (cache_dir) {
        int dfd = open(cache_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd == -1) {
            fprintf(stderr, "cessna-replay: --cache-dir %s: %s\n", cache_dir, strerror(errno));
            return 1;
        }
        rt_set_cache_dir(dfd);
    }
    if (rt_load_app(app, err, sizeof(err)) < 0 || rt_reserve_arena(err, sizeof(err)) < 0 ||
        wsnap_init(app, err, sizeof(err)) < 0 ||
        /* the edge's sandbox (as this user): a refused call fails the same way here */
        sandbox_init(1, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-replay: %s\n", err);
        return 1;
    }

    /* Where to start: the newest snapshot chain, unless --fresh. */
    uint64_t chain[256], from = 0;
    uint32_t max_message = 64u << 20;   /* unknown without a snapshot: the largest */
    int n = 0;
    wsnap_dir(dir, sizeof(dir), state_dir, session_id);
    if (!fresh) {
        char why[256] = "";
        if (snap_find_chain(dir, chain, 256, &n, why, sizeof(why)) == 0 && n > 0)
            from = chain[n - 1];
        else
            n = 0;
        if (n > 0) {   /* the app saw the edge's max_message_bytes: use the same */
            struct snap_meta m;
            char path[PATH_MAX + 64], name[64];
            snap_name(name, sizeof(name), from, n == 1 ? SNAP_FULL : SNAP_DELTA);
            snprintf(path, sizeof(path), "%s/%s", dir, name);
            if (snap_read(path, NULL, 0, &m, why, sizeof(why)) == 0)
                max_message = m.max_message;
        }
        if (n == 0)
            printf("no usable snapshot in %s (%s): replaying from the session start\n", dir, why);
    }
    struct evlog_reader ev;
    if (evlog_read_dir(dir, session_id, from, &ev, err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-replay: %s\n", err);
        return 1;
    }
    printf("session %llu: snapshot %llu, then %llu logged events\n", session_id,
           (unsigned long long)from, (unsigned long long)ev.count);
    fflush(stdout);

    struct replay r;
    memset(&r, 0, sizeof(r));
    r.has_cache = cache_dir != NULL;
    if (start_worker(&r, session_id, from, max_message) < 0) {
        fprintf(stderr, "cessna-replay: cannot start a worker: %s\n", strerror(errno));
        return 1;
    }
    uint64_t last = ev.count ? ev.first + ev.count - 1 : from;
    size_t off = 0;
    int done = 0;
    for (;;) {
        feed(&r, &ev, &off);
        done |= drain(&r);
        /* done when every event is consumed and the worker is up (the snapshot loaded) */
        if (done || (atomic_load(&r.ctl->consumed) >= last && atomic_load(&r.ctl->started_ns) &&
                     (!from || atomic_load(&r.ctl->load_ns))))
            break;
        struct pollfd p[2] = { { r.bell_out, POLLIN, 0 }, { r.pidfd, POLLIN, 0 } };
        poll(p, 2, 100);
        if (p[0].revents & POLLIN) {
            uint64_t v;
            if (read(r.bell_out, &v, sizeof(v)) == -1)
                break;
        }
        if (p[1].revents & POLLIN)
            break;
    }
    drain(&r);
    int rc = report(&r, from, last);
    kill(r.pid, SIGKILL);
    siginfo_t si;
    waitid(P_PIDFD, (id_t)r.pidfd, &si, WEXITED | WNOHANG);
    evlog_reader_free(&ev);
    return rc;
}
