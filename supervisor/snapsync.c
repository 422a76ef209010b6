/* snapsync.c - group durability of snapshot files (issue 8, "snapshots that scale").
 *
 * A snapshot child writes its file, closes and renames it, and reports: it no longer
 * fsyncs the file and the directory itself (two journal commits per file, each waited for
 * by a process that then has to exit). The supervisor makes every file written so far
 * durable with one syncfs(2) of state_dir's filesystem, run by a thread of its own (the
 * loop never blocks), and only then does recovery.c count those snapshots as on disk.
 *
 * Batches: a file whose report arrives gets the number of the next batch to start (its
 * ticket). A batch starts, in the loop's before-sleep hook, as soon as no other is in
 * flight; what arrives meanwhile waits for the next one. So a lone snapshot waits for one
 * sync, and under load one sync covers everything written during the previous one: the
 * latency stays about two syncs, the cost one sync per batch, whatever the number of files.
 * And at most one batch starts per snapshot_sync_gap_ms (default 20): at a few hundred
 * snapshots a second a sync in flight covered one or two files, and each syncfs walks the
 * filesystem's inodes and commits ext4's journal with a device flush. Waiting up to the gap
 * lets a batch gather: the edge's CPU per snapshot fell from 933-1,040 to 768-828 us at
 * 1,000 paced sessions (cessna-bench, alternating runs). A lone snapshot after a quiet
 * spell does not wait.
 *
 * A failed sync (EIO, ENOSPC found at writeback) fails, loudly, every snapshot written and
 * not yet synced, not only the batch's: after a writeback error the kernel may have dropped
 * pages of any of them, and later deltas build on earlier files. recovery_synced() takes
 * them away; their events stay held and the next snapshot of each session is full.
 *
 * Test hook: with CESSNA_FAULT_SNAPSYNC=PATH in the environment, a sync reads PATH first:
 * "hold" makes the sync wait while it says so, "fail" makes the sync fail with EIO. Without
 * the variable (production) nothing is read. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "snapsync.h"
#include "sup.h"

struct waiter {
    uint32_t slot;
    uint64_t id, ticket;
};

static struct {
    /* shared with the sync thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t want;          /* the batch the thread is asked to sync */
    uint64_t done;          /* the last batch it finished */
    int result;             /* 0 or -errno of batch `done` */
    uint64_t took_ns;       /* how long that sync took */

    /* the loop's own */
    int dirfd, efd;
    uint64_t next;          /* the batch a file reported now joins (starts at 1) */
    uint64_t running;       /* the batch in flight, 0 = none */
    uint64_t efd_buf;       /* the eventfd read lands here */
    uint64_t started_ns;    /* when the last batch started */
    int gap_armed;          /* a timeout ends the gap before the next batch */
    struct __kernel_timespec gap_ts;
    struct waiter *w;       /* written files waiting for a sync, in ticket order */
    size_t nw, cap;
    const char *fault;
    struct snapsync_stats st;
} Y = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .dirfd = -1,
        .efd = -1, .next = 1 };

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The test hook's word: 'h' (hold), 'f' (fail) or 0. */
static int fault_word(void)
{
    char buf[8] = "";
    int fd = open(Y.fault, O_RDONLY | O_CLOEXEC);

    if (fd == -1)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n >= 4 && memcmp(buf, "hold", 4) == 0)
        return 'h';
    if (n >= 4 && memcmp(buf, "fail", 4) == 0)
        return 'f';
    return 0;
}

static int sync_now(void)
{
    if (Y.fault) {
        int f;
        while ((f = fault_word()) == 'h')
            usleep(5000);
        if (f == 'f')
            return -EIO;
    }
    return syncfs(Y.dirfd) == -1 ? -errno : 0;
}

static void *sync_thread(void *arg)
{
    uint64_t one = 1;

    (void)arg;
    pthread_mutex_lock(&Y.mu);
    for (;;) {
        while (Y.want == Y.done)
            pthread_cond_wait(&Y.cv, &Y.mu);
        uint64_t b = Y.want;
        pthread_mutex_unlock(&Y.mu);
        uint64_t t0 = mono_ns();
        int rc = sync_now();
        uint64_t took = mono_ns() - t0;
        pthread_mutex_lock(&Y.mu);
        Y.done = b;
        Y.result = rc;
        Y.took_ns = took;
        /* The loop reads the eventfd; a failed write here would stall every snapshot. */
        while (write(Y.efd, &one, sizeof(one)) == -1 && errno == EINTR)
            ;
    }
    return NULL;
}

static void arm_read(void)
{
    struct io_uring_sqe *sqe = sup_sqe();

    io_uring_prep_read(sqe, Y.efd, &Y.efd_buf, sizeof(Y.efd_buf), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_SNAPSYNC, 0, 0));
}

int snapsync_init(char *err, size_t errlen)
{
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int rc;

    Y.dirfd = open(S.cfg.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (Y.dirfd == -1) {
        snprintf(err, errlen, "snapshot sync: open %s: %s", S.cfg.state_dir, strerror(errno));
        return -errno;
    }
    Y.efd = eventfd(0, EFD_CLOEXEC);
    if (Y.efd == -1) {
        rc = -errno;
        snprintf(err, errlen, "snapshot sync: eventfd: %s", strerror(errno));
        goto fail;
    }
    proc_close_in_child(Y.dirfd);
    proc_close_in_child(Y.efd);
    Y.fault = getenv("CESSNA_FAULT_SNAPSYNC");
    if (Y.fault && !Y.fault[0])
        Y.fault = NULL;
    /* The thread takes no signal: the loop's signalfd gets them all. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 << 10);
    rc = -pthread_create(&t, &attr, sync_thread, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        snprintf(err, errlen, "snapshot sync: pthread_create: %s", strerror(-rc));
        goto fail;
    }
    arm_read();
    return 0;

fail:
    if (Y.efd >= 0)
        close(Y.efd);
    close(Y.dirfd);
    Y.efd = Y.dirfd = -1;
    return rc;
}

uint64_t snapsync_written(struct session *s, int inline_write)
{
    if (Y.nw == Y.cap) {
        size_t cap = Y.cap ? 2 * Y.cap : 64;
        struct waiter *w = realloc(Y.w, cap * sizeof(*w));
        if (!w)
            return 0;   /* the caller fails the snapshot: never durable unsynced */
        Y.w = w;
        Y.cap = cap;
    }
    Y.w[Y.nw++] = (struct waiter){ .slot = s->slot, .id = s->id, .ticket = Y.next };
    Y.st.files++;
    Y.st.inline_files += inline_write != 0;
    return Y.next;
}

/* Files wait while the gap since the last batch's start runs: a timeout wakes the loop at
 * its end, whose before-sleep hook then starts the batch. */
static void gap_wait(uint64_t ns)
{
    if (Y.gap_armed || S.stopping)
        return;
    Y.gap_ts.tv_sec = (long long)(ns / 1000000000);
    Y.gap_ts.tv_nsec = (long long)(ns % 1000000000);
    struct io_uring_sqe *sqe = sup_sqe();
    io_uring_prep_timeout(sqe, &Y.gap_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_SNAPSYNC_GAP, 0, 0));
    Y.gap_armed = 1;
}

void snapsync_on_gap(void)
{
    Y.gap_armed = 0;   /* the before-sleep hook starts the batch */
}

void snapsync_kick(void)
{
    if (Y.running || !Y.nw || Y.w[Y.nw - 1].ticket != Y.next || Y.efd < 0)
        return;
    uint64_t now = mono_ns(), gap = (uint64_t)S.cfg.snapshot_sync_gap_ms * 1000000;
    if (Y.started_ns && now - Y.started_ns < gap) {
        gap_wait(gap - (now - Y.started_ns));
        return;
    }
    Y.started_ns = now;
    Y.running = Y.next++;
    pthread_mutex_lock(&Y.mu);
    Y.want = Y.running;
    pthread_cond_signal(&Y.cv);
    pthread_mutex_unlock(&Y.mu);
}

/* The waiter's session, if it is still the one that wrote the file. */
static struct session *waiter_session(const struct waiter *w)
{
    struct session *s = w->slot < S.slots ? &S.sessions[w->slot] : NULL;

    return s && s->state != S_FREE && s->id == w->id ? s : NULL;
}

void snapsync_on_done(int res)
{
    uint64_t b, took;
    int rc;
    size_t i, keep = 0;

    if (res < 0 && res != -EINTR && res != -EAGAIN)
        LOG(LOG_ERROR, "msg=\"snapshot sync: eventfd read\" error=\"%s\"", strerror(-res));
    if (!S.stopping)
        arm_read();
    pthread_mutex_lock(&Y.mu);
    b = Y.done;
    rc = Y.result;
    took = Y.took_ns;
    pthread_mutex_unlock(&Y.mu);
    if (!Y.running || b != Y.running)
        return;
    Y.running = 0;
    Y.st.syncs++;
    Y.st.sync_ns_total += took;
    if (took > Y.st.sync_ns_max)
        Y.st.sync_ns_max = took;
    if (rc < 0) {
        Y.st.failures++;
        LOG(LOG_ERROR, "msg=\"snapshot sync failed: the snapshots written since the last "
            "good sync are not durable; their events stay held, the next ones are full\" "
            "state_dir=%s error=\"%s\" batch=%llu files=%zu", S.cfg.state_dir, strerror(-rc),
            (unsigned long long)b, Y.nw);
    }
    /* A failure takes every file written and not synced; success those of batches <= b. */
    for (i = 0; i < Y.nw; i++) {
        struct waiter w = Y.w[i];
        if (rc == 0 && w.ticket > b) {
            Y.w[keep++] = w;
            continue;
        }
        struct session *s = waiter_session(&w);
        if (s)
            recovery_synced(s, w.ticket, rc);
    }
    Y.nw = keep;
    snapsync_kick();
}

const struct snapsync_stats *snapsync_stats(void)
{
    Y.st.waiting = Y.nw;
    Y.st.running = Y.running != 0;
    return &Y.st;
}
