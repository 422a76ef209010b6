/* snapshot.c - the worker's side of snapshots (DESIGN.md section 5): which memory is the
 * session's state, the layout fingerprint, the frozen fork child that writes a snapshot,
 * and restoring one into a fresh worker. The file format is common/snap.c. */
#include <errno.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "arena.h"
#include "proc.h"
#include "runtime.h"
#include "sandbox.h"
#include "shm.h"
#include "snap.h"
#include "spawn.h"
#include "proctitle.h"
#include "wsnap.h"

#define MAX_MODULE_REGIONS (SNAP_MAX_REGIONS - 1)

static struct {
    const char *app_path;
    struct snap_region module[MAX_MODULE_REGIONS];  /* the app's writable segments */
    int nmodule;
    uint8_t fingerprint[32];
    struct snap_hashes hashes;                      /* shared with snapshot children */
} W;

static long long mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

struct scan {
    int found_module;
};

/* Writable PT_LOAD segments of the app module, minus its RELRO part (made read-only after
 * relocation, and identical wherever the layout is). */
static int scan_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct scan *sc = arg;
    uint64_t relro_lo = 0, relro_hi = 0;

    (void)size;
    if (strcmp(info->dlpi_name, W.app_path) != 0)
        return 0;
    sc->found_module = 1;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_GNU_RELRO) {   /* the pages the loader makes read-only */
            relro_lo = (info->dlpi_addr + ph->p_vaddr) & ~4095ull;
            relro_hi = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~4095ull;
        }
    }
    for (int i = 0; i < info->dlpi_phnum && W.nmodule < MAX_MODULE_REGIONS; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
            continue;
        uint64_t lo = (info->dlpi_addr + ph->p_vaddr) & ~4095ull;
        uint64_t hi = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + 4095) & ~4095ull;
        if (relro_hi > lo && relro_lo < hi) {   /* RELRO sits at the start of the segment */
            if (relro_lo > lo)
                hi = relro_lo;
            else
                lo = relro_hi;
        }
        if (hi > lo)
            W.module[W.nmodule++] = (struct snap_region){ lo, hi - lo };
    }
    return 0;
}

int wsnap_init(const char *app_path, char *err, size_t errlen)
{
    struct scan sc;
    uint64_t arena = (uint64_t)(uintptr_t)RT_ARENA_BASE;

    memset(&sc, 0, sizeof(sc));
    W.app_path = app_path;
    W.nmodule = 0;
    dl_iterate_phdr(scan_object, &sc);
    if (!sc.found_module) {
        snprintf(err, errlen, "app module %s is not loaded", app_path);
        return -ENOENT;
    }
    return snap_layout_fingerprint(arena, W.fingerprint, err, errlen);
}

int wsnap_setup(char *err, size_t errlen)
{
    /* One hash per page the regions can ever hold; untouched entries cost nothing. */
    for (int r = 0; r <= W.nmodule; r++) {
        uint64_t pages = r == 0 ? RT_ARENA_SIZE / SNAP_PAGE : W.module[r - 1].len / SNAP_PAGE;
        void *p = mmap(NULL, pages * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            snprintf(err, errlen, "page hash table %d (%llu pages): %s", r,
                     (unsigned long long)pages, strerror(errno));
            return -ENOMEM;
        }
        W.hashes.page[r] = p;
        W.hashes.npages[r] = pages;
    }
    return 0;
}

static void fill_meta(struct snap_meta *m, uint64_t session_id, uint64_t position,
                      uint64_t base, const uint64_t *seq, const uint64_t *out_no)
{
    memset(m, 0, sizeof(*m));
    m->session_id = session_id;
    m->position = position;
    m->base_position = base;
    m->kind = base ? SNAP_DELTA : SNAP_FULL;
    memcpy(m->seq, seq, sizeof(m->seq));
    memcpy(m->out_no, out_no, sizeof(m->out_no));
    memcpy(m->fingerprint, W.fingerprint, sizeof(m->fingerprint));
    /* region 0: the runtime state page and the arena up to its high-water mark */
    m->regions[0].addr = (uint64_t)(uintptr_t)RT_ARENA_BASE;
    m->regions[0].len = RT_STATE_SPACE + arena_extent();
    m->nregions = 1;
    for (int i = 0; i < W.nmodule; i++)
        m->regions[m->nregions++] = W.module[i];
}

void wsnap_dir(char *buf, size_t len, const char *state_dir, uint64_t session_id)
{
    snprintf(buf, len, "%s/%llu", state_dir, (unsigned long long)session_id);
}

/* Write the snapshot file of rq and fill the SNAP_DONE report (in the frozen child, or in
 * the worker itself for a small state). */
static void write_file(const struct wsnap_request *rq, struct snap_report *rep,
                       long long fork_ns)
{
    struct snap_meta m;
    struct snap_stats st;
    char dir[PATH_MAX];
    long long t0 = mono_ns();

    memset(rep, 0, sizeof(*rep));
    rep->version = SNAP_REPORT_VERSION;
    rep->kind = SNAP_DONE;
    rep->fork_ns = (uint64_t)fork_ns;
    rep->pid = getpid();
    rep->req = rq->req;
    rep->position = rq->position;
    rep->gen = rq->gen;
    rep->fd_no = -1;
    wsnap_dir(dir, sizeof(dir), rq->state_dir, rq->session_id);
    fill_meta(&m, rq->session_id, rq->position, rq->base, rq->seq, rq->out_no);
    m.max_message = rq->max_message;
    /* No fsync here: the supervisor makes a whole batch of written files durable with one
     * sync of the filesystem (supervisor/snapsync.c) before it counts any of them. */
    snap_set_sync(0);
    snap_set_spares((int)rq->spares);
    snap_set_reuse(rq->reuse);
    rep->status = snap_write_at(rq->dirfd, dir, &m, &W.hashes, &st, rep->text,
                                sizeof(rep->text));
    rep->write_ns = (uint64_t)(mono_ns() - t0);
    if (rep->status == 0) {
        rep->bytes = st.bytes;
        rep->pages_written = st.pages_written;
        rep->pages_total = st.pages_total;
    }
}

/* In the frozen child: write, report, then leave (cold) or wait as the hot standby.
 * Returns only in a hot standby that the supervisor woke up to take over. */
static long long fork_started_ns;   /* set just before fork(): the child inherits it */

static void child_write(const struct wsnap_request *rq, int report_fd)
{
    struct snap_report rep;
    int wake = -1;
    uint64_t v;

    write_file(rq, &rep, mono_ns() - fork_started_ns);
    if (rq->hot && rep.status == 0) {
        /* The standby waits on an eventfd that only the supervisor holds. */
        wake = eventfd(0, EFD_CLOEXEC);
        rep.hot = wake >= 0;
        rep.fd_no = wake;
    }
    if (spawn_send(report_fd, &rep, sizeof(rep), &wake, rep.hot ? 1 : 0) < 0 || !rep.hot)
        _exit(rep.status == 0 ? 0 : 1);
    /* The hot standby: frozen at this position until the supervisor needs it. A SIGCONT
     * from anyone else only brings it back to the read. */
    proctitle_set("cessna-standby", "cessna-worker session=%llu standby",
                  (unsigned long long)rq->session_id);
    raise(SIGSTOP);
    while (read(wake, &v, sizeof(v)) != (ssize_t)sizeof(v))
        if (errno != EINTR && errno != EAGAIN)
            _exit(1);   /* the supervisor is gone */
    close(wake);
}

/* The child's request and report socket, for child_refused. */
static const struct wsnap_request *child_rq;
static int child_report_fd = -1;

/* The sandbox refused a call in the child (sandbox.c): report the snapshot failed, so the
 * supervisor does not wait for it. Async-signal-safe. */
static void child_refused(const char *text)
{
    struct snap_report rep;
    size_t i = 0;

    memset(&rep, 0, sizeof(rep));
    rep.version = SNAP_REPORT_VERSION;
    rep.kind = SNAP_DONE;
    rep.status = -EPERM;
    rep.pid = getpid();
    rep.fd_no = -1;
    rep.req = child_rq->req;
    rep.position = child_rq->position;
    rep.gen = child_rq->gen;
    for (; text[i] && i < sizeof(rep.text) - 1; i++)
        rep.text[i] = text[i];
    send(child_report_fd, &rep, sizeof(rep), MSG_NOSIGNAL);
}

/* Pages of the session's state now: the runtime page and the arena up to its high-water
 * mark, and the module's writable segments. */
static uint64_t state_pages(void)
{
    uint64_t n = (RT_STATE_SPACE + arena_extent() + SNAP_PAGE - 1) / SNAP_PAGE;

    for (int i = 0; i < W.nmodule; i++)
        n += W.module[i].len / SNAP_PAGE;
    return n;
}

int wsnap_take(const struct wsnap_request *rq, int report_fd, struct snap_report *rep)
{
    struct snap_report started;
    int pidfd = -1, rc;

    /* A small state needs no fork: the worker is at an event boundary, so it writes the
     * file itself (hashing every page and compressing the changed ones of at most
     * SNAP_INLINE_PAGES pages costs less than a fork and a child's exit), with libc's heap
     * (outside an event nothing reaches the arena). A hot standby needs the frozen child. */
    if (!rq->hot && state_pages() <= SNAP_INLINE_PAGES) {
        /* The writer keeps its buffers for the next file (snap_keep_buffers, set in
         * rt_run): sized to this file, only the pages it touched stay resident. Giving them
         * back every time (malloc_trim: four madvise calls, their TLB flushes and the page
         * faults of the next snapshot) was a sixth of a worker's CPU at 1,000 sessions. */
        write_file(rq, rep, 0);   /* fork_ns 0: written without a fork */
        return 2;
    }
    fork_started_ns = mono_ns();
    pid_t pid = proc_fork(PROC_SIBLING, &pidfd);

    if (pid < 0)
        return pid;
    if (pid == 0) {
        child_rq = rq;
        child_report_fd = report_fd;
        sandbox_snapshot_child(child_refused);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* our parent is the supervisor (CLONE_PARENT) */
        proctitle_set("cessna-snapshot", "cessna-worker session=%llu snapshot",
                      (unsigned long long)rq->session_id);
        child_write(rq, report_fd);
        return 1;   /* a hot standby taking over */
    }
    /* The supervisor watches the child from now on, whatever becomes of it. */
    memset(&started, 0, sizeof(started));
    started.version = SNAP_REPORT_VERSION;
    started.kind = SNAP_STARTED;
    started.pid = pid;
    started.fd_no = report_fd;
    started.req = rq->req;
    started.position = rq->position;
    started.gen = rq->gen;
    rc = spawn_send(report_fd, &started, sizeof(started), &pidfd, 1);
    close(pidfd);
    return rc < 0 ? rc : 0;
}

/* The chain that ends at `position`, found by following base links back to a full (a
 * newer chain, written by a worker that died meanwhile, may sit beside it). */
const uint8_t *wsnap_fingerprint(void)
{
    return W.fingerprint;
}

int wsnap_restore(const char *state_dir, uint64_t session_id, uint64_t position,
                  struct snap_meta *m, char *err, size_t errlen)
{
    uint64_t chain[256];
    char dir[PATH_MAX], path[PATH_MAX + 64], name[64];
    int n = 0, rc;

    wsnap_dir(dir, sizeof(dir), state_dir, session_id);
    for (uint64_t p = position; n < 256;) {
        struct snap_meta mm;
        /* The full at p, else the delta. A file of another session is passed over: the
         * directory may have served an ended session before (supervisor/statedir.c). */
        for (int k = 0; k < 2; k++) {
            snap_name(name, sizeof(name), p, k ? SNAP_DELTA : SNAP_FULL);
            snprintf(path, sizeof(path), "%s/%s", dir, name);
            if (!k && access(path, R_OK) == -1)
                continue;
            rc = snap_read(path, W.fingerprint, 0, &mm, err, errlen);
            if (rc < 0)
                return rc;
            if (mm.session_id == session_id)
                break;
            snprintf(err, errlen, "%s holds session %llu", path,
                     (unsigned long long)mm.session_id);
            rc = -ESTALE;
        }
        if (rc < 0)
            return rc;
        chain[n++] = p;
        if (mm.kind == SNAP_FULL)
            break;
        p = mm.base_position;
    }
    if (n == 256) {
        snprintf(err, errlen, "snapshot chain of %s too long", dir);
        return -ELOOP;
    }
    for (int i = 0; i < n / 2; i++) {   /* oldest first */
        uint64_t t = chain[i];
        chain[i] = chain[n - 1 - i];
        chain[n - 1 - i] = t;
    }
    return snap_restore_chain(dir, chain, n, W.fingerprint, m, err, errlen);
}
