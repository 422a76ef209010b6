/* runtime.c - the app API (include/cessna.h) and a worker's event loop.
 *
 * A worker is a pure function of its events (DESIGN.md section 2): it reads ordered events
 * from the input ring, calls the app, and writes numbered outputs to the output ring. All
 * state that must survive a snapshot lives in the arena: the app's allocations and the
 * runtime's own struct rt_state (the first allocation in the arena). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cessna.h"
#include "appcfg.h"
#include "arena.h"
#include "determ.h"
#include "log.h"
#include "bell.h"
#include "runtime.h"
#include "proctitle.h"
#include "sandbox.h"
#include "shm.h"
#include "snap.h"
#include "wsnap.h"

#define RT_MAX_TIMERS   4096
#define RT_FLUSH_EVERY  32     /* ring the supervisor at least this often under load */

struct rt_timer {
    uint64_t id;
    uint64_t due_ms;         /* event time it was armed at + its delay */
    void (*fn)(void *arg);
    void *arg;
};

struct rt_cache_obj {
    char *name;
    void *data;
    size_t len;
};

/* The runtime state that snapshots must capture: it lives in the arena. */
struct rt_state {
    uint64_t session_id;
    uint64_t pos;            /* the event being processed */
    uint64_t now_ms;         /* its time */
    uint64_t out_no[2];      /* outputs numbered so far, to the client [0] and server [1] */
    uint64_t seq[2];         /* last message consumed from the client [0] and server [1] */
    uint64_t next_timer_id;
    uint64_t prng;
    uint64_t libc_rand;      /* rand()/random()/drand48() state (determ.c); srand() sets it */
    struct rt_timer *timers;
    uint32_t ntimers, timer_cap;
    struct rt_cache_obj *cache;
    uint32_t ncache, cache_cap;
    int shut_down;
    char *app_cfg;           /* the session's [app] values (appcfg.h), from its start event */
    uint32_t app_cfg_len;
    int closing;             /* cessna_close_session was called: the event ends the session */
    int64_t close_code;
    char close_text[SHM_CLOSE_TEXT_MAX + 1];
    uint64_t log_no;         /* cessna_log lines so far (shm.h: OUT_LOG) */
};

/* Process-local: rebuilt on every start, never snapshotted. */
static struct {
    const struct cessna_app *app;
    struct rt_state *st;
    struct ring in, out;
    struct ring_asm in_asm;  /* an event arriving in pieces, put back together here, outside
                              * the arena: snapshots never see it */
    struct shm_ctl *ctl;
    int doorbell_out;       /* -1: the futex word alone (bell.h) */
    uint32_t max_message;
    int cache_dirfd;
    int session_dirfd;      /* STATE_DIR/SESSION_ID: snapshots are written under it */
    unsigned unflushed;
    const char *state_dir;
    int report_fd;
    uint64_t snap_req_done; /* the id of the last snapshot request acted on */
} L = { .cache_dirfd = -1, .session_dirfd = -1, .state_dir = "." };

_Static_assert(sizeof(struct rt_state) <= RT_STATE_SPACE, "runtime state fits its page");

/* ---- zygote side ---- */

/* Re-exec once, if needed, with ADDR_NO_RANDOMIZE (the same layout in every zygote) and
 * LD_BIND_NOW (the dynamic linker resolves every symbol of every library here, once: with
 * lazy binding each forked worker resolved the functions it called first itself, and wrote
 * the answers into copies of the GOT pages; 7% of the machine while sessions opened). */
void rt_reexec_for_workers(char **argv)
{
    int pers = personality(0xffffffff);
    int again = 0;

    if (pers != -1 && !(pers & ADDR_NO_RANDOMIZE) &&
        personality((unsigned long)pers | ADDR_NO_RANDOMIZE) != -1)
        again = 1;
    /* Not for a secure-execution program: its loader may drop LD_ variables, and the
     * re-exec would find it unset again, every time. */
    if (!getauxval(AT_SECURE) && !getenv("LD_BIND_NOW") && setenv("LD_BIND_NOW", "1", 1) == 0)
        again = 1;
    if (!again)
        return;
    execv("/proc/self/exe", argv);
    LOG(LOG_WARN, "msg=\"cannot re-exec without ASLR and with LD_BIND_NOW\" error=\"%s\"",
        strerror(errno));
}


int rt_load_app(const char *path, char *err, size_t errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    const struct cessna_app *app;

    if (!h) {
        snprintf(err, errlen, "app module %s: %s", path, dlerror());
        return -ENOENT;
    }
    app = dlsym(h, "cessna_app");
    if (!app) {
        snprintf(err, errlen, "app module %s: no symbol 'cessna_app' (define "
                 "const struct cessna_app cessna_app = {...})", path);
        return -EINVAL;
    }
    if (app->abi_version != CESSNA_ABI_VERSION) {
        snprintf(err, errlen, "app module %s: abi_version %u, this runtime speaks %u",
                 path, app->abi_version, CESSNA_ABI_VERSION);
        return -EINVAL;
    }
    if (!app->recv_client_msg || !app->recv_server_msg) {
        snprintf(err, errlen, "app module %s: recv_client_msg and recv_server_msg are required",
                 path);
        return -EINVAL;
    }
    L.app = app;
    return 0;
}

int rt_reserve_arena(char *err, size_t errlen)
{
    void *p = mmap(RT_ARENA_BASE, RT_ARENA_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);

    if (p == MAP_FAILED || p != RT_ARENA_BASE) {
        snprintf(err, errlen, "cannot map the arena at %p: %s", RT_ARENA_BASE,
                 p == MAP_FAILED ? strerror(errno) : "address taken");
        return -ENOMEM;
    }
    return 0;
}

void rt_set_cache_dir(int dirfd)
{
    L.cache_dirfd = dirfd;
}

void rt_set_state_dir(const char *dir)
{
    L.state_dir = dir;
}

/* ---- doorbells and rings ---- */

/* Wake the supervisor. Async-signal-safe. */
static void ring_out_bell(void)
{
    uint64_t one = 1;

    bell_add(&L.ctl->bell_out);
    if (L.doorbell_out < 0) {
        bell_wake(&L.ctl->bell_out);
        return;
    }
    while (write(L.doorbell_out, &one, sizeof(one)) == -1 && errno == EINTR)
        ;
}

__attribute__((noreturn, format(printf, 1, 2)))
static void rt_fail(const char *fmt, ...);

/* Sleep until the supervisor rings, unless it rang since `seen` was read: in read() on the
 * report socket, out of the kernel's futex hash (bell.h). */
static void wait_bell(uint32_t seen)
{
    int rc = bell_sleep(&L.ctl->bell_in, &L.ctl->in_asleep, seen, L.report_fd);

    if (rc < 0)   /* the supervisor's end is gone, or the app took the descriptor */
        rt_fail("the report socket (fd %d), where the supervisor wakes this worker: %s",
                L.report_fd, strerror(-rc));
}

/* Tell the supervisor about outputs, if it is waiting for them. */
static void flush_outputs(void)
{
    L.unflushed = 0;
    if (ring_wants_wakeup(&L.out))
        ring_out_bell();
}

static long long mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* The session fails with the reason in L.ctl->error: an OUT_FAIL record, the bell, exit.
 * Async-signal-safe (the sandbox's SIGSYS handler ends here through fail_text). */
__attribute__((noreturn))
static void fail_out(void)
{
    struct shm_rec *r;

    r = ring_reserve(&L.out, OUT_FAIL, sizeof(*r));
    /* A full ring (it failed while waiting for room): the supervisor drains it once rung.
     * Wait a little for room, with nothing the sandbox refuses, so the reason gets out. */
    for (long long until = mono_ns() + 1000000000LL; !r && mono_ns() < until;) {
        ring_out_bell();
        sched_yield();
        r = ring_reserve(&L.out, OUT_FAIL, sizeof(*r));
    }
    if (r) {
        memset(r, 0, sizeof(*r));
        r->pos = L.st ? L.st->pos : 0;
        ring_commit(&L.out);
    }
    ring_out_bell();
    _exit(1);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void rt_fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(L.ctl->error, sizeof(L.ctl->error), fmt, ap);
    va_end(ap);
    fail_out();
}

/* A call the sandbox refused (worker/sandbox.c): the text names it. */
static void fail_text(const char *text)
{
    size_t i = 0;

    for (; text[i] && i < sizeof(L.ctl->error) - 1; i++)
        L.ctl->error[i] = text[i];
    L.ctl->error[i] = 0;
    fail_out();
}

/* Room for an output record; waits for the supervisor to drain when the ring is full. */
static struct shm_rec *out_reserve(uint16_t type, size_t len)
{
    for (;;) {
        struct shm_rec *r = ring_reserve(&L.out, type, (uint32_t)(sizeof(*r) + len));
        if (r) {
            memset(r, 0, sizeof(*r));
            r->pos = L.st->pos;
            return r;
        }
        uint32_t seen = bell_seen(&L.ctl->bell_in);
        ring_out_bell();
        if (ring_wait_prepare(&L.out, (uint32_t)(sizeof(*r) + len)))
            wait_bell(seen);
    }
}

static void out_commit(void)
{
    ring_commit(&L.out);
    if (++L.unflushed >= RT_FLUSH_EVERY)
        flush_outputs();
}

/* ---- the app API ---- */

/* A message larger than a ring record goes in pieces (ring_put); the supervisor sends it
 * as one OUT frame. */
static int send_msg(int dest, const void *data, size_t len)
{
    uint16_t type = dest == 0 ? OUT_CLIENT : OUT_SERVER;
    struct shm_rec r;
    uint32_t done = 0;

    if (!L.st)
        return -EINVAL;
    if (len > L.max_message)
        return -EMSGSIZE;
    memset(&r, 0, sizeof(r));
    r.pos = L.st->pos;
    r.a = ++L.st->out_no[dest];
    while (!ring_put(&L.out, type, &r, sizeof(r), data, (uint32_t)len, &done)) {
        uint32_t seen = bell_seen(&L.ctl->bell_in);
        ring_out_bell();
        if (ring_wait_prepare(&L.out, ring_put_need(&L.out, sizeof(r) + len, done)))
            wait_bell(seen);
    }
    if (++L.unflushed >= RT_FLUSH_EVERY)
        flush_outputs();
    return 0;
}

int cessna_send_msg_to_client(const void *data, size_t len)
{
    return send_msg(0, data, len);
}

int cessna_send_msg_to_server(const void *data, size_t len)
{
    return send_msg(1, data, len);
}

uint64_t cessna_now_ms(void)
{
    return L.st ? L.st->now_ms : 0;
}

uint64_t cessna_session_id(void)
{
    return L.st ? L.st->session_id : 0;
}

/* splitmix64: small, fast, and its whole state is one word in the arena. */
uint64_t cessna_random(void)
{
    uint64_t z = (L.st->prng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t *rt_rand_state(void)
{
    return &L.st->libc_rand;
}

void *cessna_malloc(size_t n) { return arena_malloc(n); }
void *cessna_calloc(size_t k, size_t n) { return arena_calloc(k, n); }
void *cessna_realloc(void *p, size_t n) { return arena_realloc(p, n); }
void cessna_free(void *p) { arena_free(p); }

uint64_t cessna_set_timeout(void (*fn)(void *arg), void *arg, uint64_t delay_ms)
{
    struct rt_state *st = L.st;
    struct shm_rec *r;

    if (!st || !fn || st->ntimers >= RT_MAX_TIMERS)
        return 0;
    if (st->ntimers == st->timer_cap) {
        uint32_t cap = st->timer_cap ? st->timer_cap * 2 : 16;
        struct rt_timer *t = arena_realloc(st->timers, cap * sizeof(*t));
        if (!t)
            return 0;
        st->timers = t;
        st->timer_cap = cap;
    }
    st->timers[st->ntimers++] =
        (struct rt_timer){ ++st->next_timer_id, st->now_ms + delay_ms, fn, arg };
    r = out_reserve(OUT_TIMER_ARM, 0);
    r->a = st->next_timer_id;
    r->b = delay_ms;
    out_commit();
    return st->next_timer_id;
}

/* Removes the timer from the table; returns its callback, or NULL if it is not armed. */
static struct rt_timer take_timer(uint64_t id)
{
    struct rt_state *st = L.st;
    struct rt_timer none = { 0, 0, NULL, NULL };

    for (uint32_t i = 0; i < st->ntimers; i++) {
        if (st->timers[i].id == id) {
            struct rt_timer t = st->timers[i];
            /* keep the table in arming order: deterministic and simple */
            memmove(&st->timers[i], &st->timers[i + 1], (st->ntimers - i - 1) * sizeof(t));
            st->ntimers--;
            return t;
        }
    }
    return none;
}

int cessna_cancel_timeout(uint64_t id)
{
    struct shm_rec *r;

    if (!L.st || !take_timer(id).fn)
        return -ENOENT;
    r = out_reserve(OUT_TIMER_CANCEL, 0);
    r->a = id;
    out_commit();
    return 0;
}

static int cache_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 200 || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Reads cache_dir/NAME into the arena; NULL when absent or unreadable. */
static struct rt_cache_obj *cache_load(const char *name)
{
    struct rt_state *st = L.st;
    struct rt_cache_obj *o;
    struct stat sb;
    char *data = NULL;
    size_t got = 0;
    int fd;

    if (L.cache_dirfd < 0)
        return NULL;
    fd = openat(L.cache_dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return NULL;
    if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode) || sb.st_size > (off_t)L.max_message)
        goto fail;
    data = arena_malloc((size_t)sb.st_size + 1);
    if (!data)
        goto fail;
    while (got < (size_t)sb.st_size) {
        ssize_t n = read(fd, data + got, (size_t)sb.st_size - got);
        if (n <= 0)
            goto fail;
        got += (size_t)n;
    }
    data[got] = 0;
    if (st->ncache == st->cache_cap) {
        uint32_t cap = st->cache_cap ? st->cache_cap * 2 : 8;
        struct rt_cache_obj *c = arena_realloc(st->cache, cap * sizeof(*c));
        if (!c)
            goto fail;
        st->cache = c;
        st->cache_cap = cap;
    }
    o = &st->cache[st->ncache];
    o->name = arena_malloc(strlen(name) + 1);
    if (!o->name)
        goto fail;
    strcpy(o->name, name);
    o->data = data;
    o->len = got;
    st->ncache++;
    close(fd);
    return o;
fail:
    arena_free(data);
    close(fd);
    return NULL;
}

const void *cessna_cache_read(const char *name, size_t *len)
{
    struct rt_state *st = L.st;
    struct rt_cache_obj *o = NULL;
    struct shm_rec *r;
    size_t nlen;

    if (!st || !name || !cache_name_ok(name))
        return NULL;
    for (uint32_t i = 0; i < st->ncache && !o; i++)
        if (strcmp(st->cache[i].name, name) == 0)
            o = &st->cache[i];
    if (!o)
        o = cache_load(name);
    /* Record what came back, so replay can check it gets the same. */
    nlen = strlen(name);
    r = out_reserve(OUT_CACHE_READ, nlen);
    r->a = o ? XXH3_64bits(o->data, o->len) | 1 : 0;
    r->b = o ? o->len : 0;
    memcpy(r + 1, name, nlen);
    out_commit();
    if (!o)
        return NULL;
    if (len)
        *len = o->len;
    return o->data;
}

/* ---- ending the session, [app] values, log lines ---- */

int cessna_close_session(int code, const char *text)
{
    struct rt_state *st = L.st;

    if (!st)
        return -EINVAL;
    if (st->closing || st->shut_down)
        return -EALREADY;
    st->closing = 1;   /* handle_event ends the session once the app returns */
    st->close_code = code;
    snprintf(st->close_text, sizeof(st->close_text), "%s", text ? text : "");
    return 0;
}

const char *cessna_config(const char *key)
{
    if (!L.st || !key || !L.st->app_cfg)
        return NULL;
    return appcfg_get(L.st->app_cfg, L.st->app_cfg_len, key);
}

long long cessna_config_int(const char *key, long long dflt)
{
    const char *v = cessna_config(key);
    char *end;
    long long x;
    int saved = errno;

    if (!v || !*v)
        return dflt;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (*end || errno) {
        errno = saved;
        return dflt;
    }
    errno = saved;
    return x;
}

#define RT_LOG_TEXT_MAX 1024   /* bytes of an app's line before escaping */
#define RT_LOG_MSG_MAX  600    /* bytes of the escaped msg="..." value in the log line */


/* Deterministic up to the hand-over: the text is formatted and numbered on every run (the
 * formatting may allocate from the arena); whether it is written depends on the node's log
 * level (log.h) and on what the supervisor already wrote (OUT_LOG, shm.h), never on the
 * app's state. */
void cessna_log(int level, const char *fmt, ...)
{
    char text[RT_LOG_TEXT_MAX], msg[RT_LOG_MSG_MAX], name[33], body[RT_LOG_MSG_MAX + 160];
    const char *app = L.app && L.app->name ? L.app->name : "?";
    struct rt_state *st = L.st;
    va_list ap;
    int cut, n;
    size_t i;

    if (!st || !fmt)
        return;
    va_start(ap, fmt);
    cut = vsnprintf(text, sizeof(text), fmt, ap) >= (int)sizeof(text);
    va_end(ap);
    uint64_t no = ++st->log_no;   /* every call, whatever the level: the same on replay */
    level = level < LOG_ERROR ? LOG_ERROR : level > LOG_DEBUG ? LOG_DEBUG : level;
    if (level > log_threshold)
        return;
    for (i = 0; app[i] && i < sizeof(name) - 1; i++)
        name[i] = strchr("\"\\= ", app[i]) || (unsigned char)app[i] < 0x21 ||
                  (unsigned char)app[i] > 0x7e ? '_' : app[i];
    name[i] = 0;
    cut |= log_escape(msg, sizeof(msg), text, strlen(text));
    if (L.ctl->log_offline) {   /* cessna-replay: straight to stderr, marked */
        snprintf(body, sizeof(body), "session=%llu app=%s msg=\"%s\"%s replay=1",
                 (unsigned long long)st->session_id, name, msg, cut ? " truncated=1" : "");
        log_raw(level, body);
        return;
    }
    /* To the supervisor, which writes it once (a replay's copy has the same number). */
    n = snprintf(body, sizeof(body), "app=%s msg=\"%s\"%s", name, msg, cut ? " truncated=1" : "");
    size_t len = (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1;
    if (len > SHM_LOG_MAX)
        len = SHM_LOG_MAX;
    struct shm_rec *r = out_reserve(OUT_LOG, len);
    r->a = no;
    r->b = (uint64_t)level;
    memcpy(r + 1, body, len);
    out_commit();
}

/* ---- the event loop ---- */

__attribute__((noreturn))
static void finish(void)
{
    struct rt_state *st = L.st;
    size_t tlen = strlen(st->close_text);
    struct shm_rec *r;

    if (!st->shut_down) {
        st->shut_down = 1;
        if (L.app->shutdown)
            L.app->shutdown();
    }
    /* After the outputs of this event and of shutdown(): the supervisor delivers them,
     * then CLOSE or ERROR (an app's close), or CLOSE (an endpoint's). */
    r = out_reserve(OUT_DONE, st->closing ? tlen : 0);
    if (st->closing) {
        r->a = 1;
        r->b = (uint64_t)st->close_code;
        memcpy(r + 1, st->close_text, tlen);
    }
    ring_commit(&L.out);
    atomic_store(&L.ctl->consumed, L.st->pos);
    ring_out_bell();
    _exit(0);
}

static void handle_event(uint16_t type, const struct shm_rec *ev, uint32_t len)
{
    struct rt_state *st = L.st;
    const void *msg = ev + 1;
    size_t mlen = len - sizeof(*ev);

    st->pos = ev->pos;
    st->now_ms = ev->time;
    if (st->closing)
        finish();   /* not reached: the event that closed ended the worker */
    switch (type) {
    case EV_START:
        /* The session's [app] values, kept in the arena: every snapshot has them. */
        if (mlen) {
            if (!(st->app_cfg = arena_malloc(mlen)))
                rt_fail("no arena memory for the %zu bytes of [app] values", mlen);
            memcpy(st->app_cfg, msg, mlen);
            st->app_cfg_len = (uint32_t)mlen;
        }
        if (L.app->init) {
            int rc = L.app->init();
            if (rc != 0)
                rt_fail("app %s: init() returned %d", L.app->name ? L.app->name : "?", rc);
        }
        if (L.app->accept_client_connection && !st->closing)
            L.app->accept_client_connection();
        break;
    case EV_CLIENT:
        st->seq[0] = ev->a;
        L.app->recv_client_msg(msg, mlen);
        break;
    case EV_SERVER:
        st->seq[1] = ev->a;
        L.app->recv_server_msg(msg, mlen);
        break;
    case EV_TIMER: {
        /* A timer cancelled after it fired but before this event is simply gone. */
        struct rt_timer t = take_timer(ev->a);
        if (t.fn)
            t.fn(t.arg);
        break;
    }
    case EV_CLOSE:
        finish();
    default:
        rt_fail("unknown event type %u at position %llu", type, (unsigned long long)ev->pos);
    }
    if (st->closing)
        finish();   /* cessna_close_session: no event after this one reaches the app */
}

/* A new edge rebuilt this session from a snapshot it fetched (remote recovery): once the
 * replay is done, tell it which timers are pending, and when they are due, so it arms them. */
static void announce_timers(uint64_t pos)
{
    if (!L.ctl->announce_timers_at || pos != L.ctl->announce_timers_at)
        return;
    for (uint32_t i = 0; i <= L.st->ntimers; i++) {   /* then one with id 0: the end */
        struct shm_rec *r = out_reserve(OUT_TIMER_PENDING, 0);
        r->pos = pos;
        r->a = i < L.st->ntimers ? L.st->timers[i].id : 0;
        r->b = i < L.st->ntimers ? L.st->timers[i].due_ms : 0;
        out_commit();
    }
    flush_outputs();
}

static long long mono_ns(void);

static void attach_rings(void)
{
    if (ring_attach(&L.in, shm_in_ring(L.ctl)) < 0 ||
        ring_attach(&L.out, shm_out_ring(L.ctl, L.ctl->ring_size)) < 0) {
        LOG(LOG_ERROR, "msg=\"bad session memory\"");
        _exit(1);
    }
}

/* A new snapshot request whose position we have reached (DESIGN.md 5). */
/* A recovery (or a resume) with nothing to replay is over once the state is back: that is
 * the end of its replay, which the supervisor's timing and metrics wait for. */
static void stamp_if_nothing_to_replay(void)
{
    uint64_t until = L.ctl->replay_until;

    if (until && L.st->pos >= until)
        atomic_store(&L.ctl->replayed_ns, (uint64_t)mono_ns());
}

static int snapshot_due(void)
{
    uint64_t req = atomic_load_explicit(&L.ctl->snap_req, memory_order_acquire);

    return req && req != L.snap_req_done && atomic_load(&L.ctl->snap_pos) <= L.st->pos;
}

static void report_snapshot_failure(const struct wsnap_request *rq, int rc, const char *what)
{
    struct snap_report rep = { .version = SNAP_REPORT_VERSION, .kind = SNAP_DONE, .status = rc,
                               .fd_no = -1, .req = rq->req, .position = rq->position,
                               .gen = rq->gen };

    snprintf(rep.text, sizeof(rep.text), "%s", what);
    if (send(L.report_fd, &rep, sizeof(rep), MSG_NOSIGNAL) == -1)
        LOG(LOG_WARN, "msg=\"snapshot report lost\"");
}

/* The SNAP_DONE of a snapshot the worker wrote itself goes behind the event's outputs in
 * the output ring, which the supervisor drains anyway (a send on the report socket costs a
 * wakeup, a poll completion and two receives there); on the socket when the ring has no
 * room (a slow reader). */
static void report_written(const struct snap_report *rep)
{
    struct shm_rec *r = ring_reserve(&L.out, OUT_SNAP_DONE, (uint32_t)(sizeof(*r) + sizeof(*rep)));

    if (r) {
        memset(r, 0, sizeof(*r));
        r->pos = L.st->pos;
        memcpy(r + 1, rep, sizeof(*rep));
        ring_commit(&L.out);
        flush_outputs();
    } else if (send(L.report_fd, rep, sizeof(*rep), MSG_NOSIGNAL) == -1) {
        LOG(LOG_WARN, "msg=\"snapshot report lost\"");
    }
}

static void take_snapshot(void)
{
    /* The request id first, then what it asks for: the supervisor writes them the other
     * way round, so these are never older than the id (a newer request's position with an
     * older id is refused by the supervisor, which checks the position it asked for). */
    uint64_t req = atomic_load_explicit(&L.ctl->snap_req, memory_order_acquire);
    struct wsnap_request rq = {
        .state_dir = L.state_dir, .dirfd = L.session_dirfd, .session_id = L.st->session_id,
        .position = atomic_load(&L.ctl->snap_pos), .base = L.ctl->snap_base,
        .gen = L.ctl->snap_gen, .hot = (int)L.ctl->snap_hot, .max_message = L.max_message,
        .spares = L.ctl->snap_spares, .reuse = L.ctl->snap_reuse,
    };
    struct snap_report rep;
    char why[96];
    int rc;

    rq.req = req;
    L.snap_req_done = rq.req;
    if (rq.position != L.st->pos) {
        snprintf(why, sizeof(why), "asked for position %llu, the worker is at %llu",
                 (unsigned long long)rq.position, (unsigned long long)L.st->pos);
        report_snapshot_failure(&rq, -ESTALE, why);
        return;
    }
    memcpy(rq.seq, L.st->seq, sizeof(rq.seq));
    memcpy(rq.out_no, L.st->out_no, sizeof(rq.out_no));
    flush_outputs();
    rc = wsnap_take(&rq, L.report_fd, &rep);
    if (rc == 2) {
        report_written(&rep);
        return;
    }
    if (rc == 1) {
        /* We are the hot standby, woken to take over: the supervisor has reset the rings
         * and feeds us the events after our position (whole: drop any partial one, whose
         * buffer was not inherited). */
        sandbox_resume_worker();
        ring_asm_forget(&L.in_asm);
        atomic_store(&L.ctl->started_ns, (uint64_t)mono_ns());
        attach_rings();
        log_init("cessna-worker");
        stamp_if_nothing_to_replay();
        proctitle_set("cessna-worker", "cessna-worker session=%llu",
                      (unsigned long long)L.st->session_id);
        return;
    }
    if (rc < 0) {
        snprintf(why, sizeof(why), "fork: %s", strerror(-rc));
        report_snapshot_failure(&rq, rc, why);
    }
}

/* Before the app's first event (its init runs at EV_START): the sandbox (sandbox.c). */
static void confine(uint64_t session_id)
{
    char dir[PATH_MAX], err[256];
    struct sandbox_fds fds;

    wsnap_dir(dir, sizeof(dir), L.state_dir, session_id);
    L.session_dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (L.session_dirfd == -1)
        rt_fail("session directory %s: %s", dir, strerror(errno));
    fds = (struct sandbox_fds){ .report = L.report_fd, .session_dir = L.session_dirfd,
                                .cache_dir = L.cache_dirfd };
    if (sandbox_enter(&fds, fail_text, err, sizeof(err)) < 0)
        rt_fail("%s", err);
    L.report_fd = fds.report;
    L.session_dirfd = fds.session_dir;
    L.cache_dirfd = fds.cache_dir;
}

/* With a core to spare (the supervisor says so in spin_ns), poll the input ring a little
 * before sleeping: an event that arrives meanwhile costs no wakeup. 1 if one arrived. */
static int spin_for_input(void)
{
    uint32_t budget = atomic_load_explicit(&L.ctl->spin_ns, memory_order_relaxed);
    long long deadline;

    if (!budget)
        return 0;
    deadline = mono_ns() + budget;
    do {
        for (int i = 0; i < 64; i++) {
            if (!ring_empty(&L.in) || snapshot_due())
                return 1;
            __builtin_ia32_pause();
        }
    } while (mono_ns() < deadline);
    return 0;
}

void rt_prepare_heap(void)
{
    /* Buffers of 32 KiB and more are mappings of their own, unmapped when freed, so an idle
     * worker keeps none of them resident (a fixed threshold also stops glibc from raising it
     * after the first free and serving them from the heap from then on). */
    mallopt(M_MMAP_THRESHOLD, 32 * 1024);
    /* Free chunks merged and the heap's top given back now, once: a worker that did this
     * itself (mallopt merges first) wrote to every free chunk the zygote's loading left,
     * copying each of those pages (14% of the machine while 10,000 sessions opened). It is
     * also the allocator's first call, which asks getrandom() for a key before any sandbox
     * refuses that. */
    malloc_trim(0);
}

void rt_run(const struct rt_session *s)
{
    size_t total = shm_total_size(s->ring_size);
    void *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, s->memfd, 0);
    char err[256];

    log_init("cessna-worker");
    snap_keep_buffers(1);   /* snapshots written here reuse the writer's buffers */
    if (base == MAP_FAILED) {
        LOG(LOG_ERROR, "session=%llu msg=\"cannot map session memory\" error=\"%s\"",
            (unsigned long long)s->session_id, strerror(errno));
        _exit(1);
    }
    close(s->memfd);
    L.ctl = base;
    L.doorbell_out = s->doorbell_out;
    L.report_fd = s->report_fd;
    L.max_message = s->max_message;
    attach_rings();
    if (wsnap_setup(err, sizeof(err)) < 0)
        rt_fail("%s", err);
    L.st = (struct rt_state *)RT_ARENA_BASE;
    atomic_store(&L.ctl->started_ns, (uint64_t)mono_ns());
    if (s->restore_pos) {
        struct snap_meta m;
        long long t0 = mono_ns();
        int rc = wsnap_restore(L.state_dir, s->session_id, s->restore_pos, &m, err, sizeof(err));
        if (rc < 0)
            rt_fail("cannot restore snapshot %llu: %s", (unsigned long long)s->restore_pos, err);
        if (m.max_message != s->max_message)
            rt_fail("snapshot %llu was taken with max_message_bytes=%u, this edge has %u: "
                    "replay could diverge (set it back)", (unsigned long long)s->restore_pos,
                    m.max_message, s->max_message);
        arena_attach((char *)RT_ARENA_BASE + RT_STATE_SPACE);
        if (L.st->session_id != s->session_id || L.st->pos != s->restore_pos)
            rt_fail("snapshot %llu holds session %llu at position %llu",
                    (unsigned long long)s->restore_pos, (unsigned long long)L.st->session_id,
                    (unsigned long long)L.st->pos);
        atomic_store(&L.ctl->load_ns, (uint64_t)(mono_ns() - t0));
    } else {
        /* The memory cap is the arena's size: it lives in the arena, so replay has it too. */
        uint64_t cap = s->max_memory ? s->max_memory : RT_ARENA_SIZE;
        if (cap > RT_ARENA_SIZE - RT_STATE_SPACE)
            cap = RT_ARENA_SIZE - RT_STATE_SPACE;
        if (arena_init((char *)RT_ARENA_BASE + RT_STATE_SPACE, (size_t)cap) < 0)
            rt_fail("cannot set up the arena");
        memset(L.st, 0, sizeof(*L.st));
        L.st->session_id = s->session_id;
        L.st->prng = s->session_id;
        L.st->libc_rand = s->session_id ^ 0x5deece66dull;
    }
    confine(s->session_id);
    announce_timers(L.st->pos);   /* nothing to replay after the snapshot */
    stamp_if_nothing_to_replay();

    for (;;) {
        uint16_t type;
        uint32_t len;
        const struct shm_rec *ev;
        uint32_t seen = bell_seen(&L.ctl->bell_in);   /* before looking for work */

        if (snapshot_due())
            take_snapshot();
        ev = ring_peek(&L.in, &type, &len);
        if (!ev) {
            flush_outputs();
            if (spin_for_input())
                continue;
            if (ring_sleep_prepare(&L.in))
                wait_bell(seen);
            ring_sleep_done(&L.in);
            continue;
        }
        const void *whole;
        int rc = ring_asm_take(&L.in_asm, type, L.in.peeked_flags, ev, len,
                               L.max_message + (uint32_t)sizeof(*ev), &whole, &len);
        if (rc < 0)
            rt_fail("bad event record in pieces: %s", L.in_asm.err ? L.in_asm.err : "?");
        if (rc == 0) {   /* a piece: the event is not complete yet */
            ring_pop(&L.in);
            if (ring_producer_waits_half(&L.in))
                ring_out_bell();
            continue;
        }
        ev = whole;
        if (len < sizeof(*ev))
            rt_fail("short event record (%u bytes)", len);
        uint64_t pos = ev->pos;
        determ_enter();
        handle_event(type, ev, len);
        determ_leave();
        ring_asm_reset(&L.in_asm);
        ring_pop(&L.in);
        atomic_store_explicit(&L.ctl->consumed, pos, memory_order_release);
        if (pos == L.ctl->replay_until)
            atomic_store(&L.ctl->replayed_ns, (uint64_t)mono_ns());
        announce_timers(pos);
        if (ring_producer_waits_half(&L.in))
            ring_out_bell();
    }
}
