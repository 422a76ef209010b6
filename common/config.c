/* config.c - parse the INI file with inih: [edge] for the edge, [app] for the app; every
 * error names file and line. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "addr.h"
#include "config.h"
#include "log.h"
#include "shm.h"

struct parse_state {
    struct config *c;
    const char *path;
    FILE *f;
    int line;          /* the line the reader handed to inih last */
    int fail_line;     /* the line of the first error our handler found */
    uint64_t seen;     /* bit per key, to refuse duplicates and find missing ones */
    char *err;
    size_t errlen;
    int failed;
    int cont;          /* the line starts with blanks: inih hands it over as a continuation */
};

enum key_kind { K_STRING, K_ADDR, K_U64, K_U32, K_POW2, K_STANDBY, K_BUSY_POLL, K_ONOFF, K_LOGLEVEL };

struct key {
    const char *name;
    enum key_kind kind;
    size_t offset;
    size_t size;       /* strings: buffer size */
    uint64_t min, max; /* numbers */
    int required;
};

#define STR(field, kind, req) { #field, kind, offsetof(struct config, field), \
                                sizeof(((struct config *)0)->field), 0, 0, req }
static const struct key keys[] = {
    STR(listen, K_ADDR, 1),
    STR(server, K_ADDR, 1),
    STR(app, K_STRING, 1),
    STR(state_dir, K_STRING, 0),
    STR(control, K_STRING, 0),
    STR(cache_dir, K_STRING, 0),
    STR(metrics_listen, K_ADDR, 0),
    { "snapshot_interval_ms", K_U64, offsetof(struct config, snapshot_interval_ms), 0, 0, 86400000, 0 },
    { "standby", K_STANDBY, offsetof(struct config, standby), 0, 0, 0, 0 },
    { "max_sessions", K_U32, offsetof(struct config, max_sessions), 0, 0, 65536, 0 },
    { "max_fds", K_U32, offsetof(struct config, max_fds), 0, 0, 1u << 24, 0 },
    { "max_message_bytes", K_U32, offsetof(struct config, max_message_bytes), 0, 1, 64u << 20, 0 },
    { "max_session_memory", K_U64, offsetof(struct config, max_session_memory), 0, 1u << 20, 4095ull << 20, 0 },
    { "ring_bytes", K_POW2, offsetof(struct config, ring_bytes), 0, 64u << 10, 64u << 20, 0 },
    { "busy_poll", K_BUSY_POLL, offsetof(struct config, busy_poll), 0, 0, 0, 0 },
    { "snapshot_timeout_ms", K_U64, offsetof(struct config, snapshot_timeout_ms), 0, 100, 3600000, 0 },
    { "max_event_ms", K_U64, offsetof(struct config, max_event_ms), 0, 0, 86400000, 0 },
    { "max_held_bytes", K_U64, offsetof(struct config, max_held_bytes), 0, 0, 1ull << 40, 0 },
    { "snapshot_max_events", K_U64, offsetof(struct config, snapshot_max_events), 0, 0, 1ull << 40, 0 },
    { "snapshot_min_events", K_U64, offsetof(struct config, snapshot_min_events), 0, 1, 1ull << 40, 0 },
    { "snapshot_full_pages", K_U64, offsetof(struct config, snapshot_full_pages), 0, 0, 1u << 20, 0 },
    { "snapshot_sync_gap_ms", K_U32, offsetof(struct config, snapshot_sync_gap_ms), 0, 0, 10000, 0 },
    { "snapshot_max_bytes", K_U64, offsetof(struct config, snapshot_max_bytes), 0, 0, 1ull << 40, 0 },
    { "hello_timeout_ms", K_U32, offsetof(struct config, hello_timeout_ms), 0, 0, 3600000, 0 },
    { "connect_timeout_ms", K_U32, offsetof(struct config, connect_timeout_ms), 0, 0, 3600000, 0 },
    { "idle_timeout_ms", K_U32, offsetof(struct config, idle_timeout_ms), 0, 0, 604800000, 0 },
    { "close_wait_ms", K_U32, offsetof(struct config, close_wait_ms), 0, 1, 3600000, 0 },
    { "control_timeout_ms", K_U32, offsetof(struct config, control_timeout_ms), 0, 1, 3600000, 0 },
    { "zygote_ready_timeout_ms", K_U32, offsetof(struct config, zygote_ready_timeout_ms), 0, 1, 3600000, 0 },
    { "zygote_answer_timeout_ms", K_U32, offsetof(struct config, zygote_answer_timeout_ms), 0, 1, 3600000, 0 },
    { "zygote_backoff_max_ms", K_U32, offsetof(struct config, zygote_backoff_max_ms), 0, 100, 3600000, 0 },
    { "hibernate_after_ms", K_U64, offsetof(struct config, hibernate_after_ms), 0, 0, 604800000, 0 },
    { "failed_sessions_keep", K_U32, offsetof(struct config, failed_sessions_keep), 0, 0, 1000000, 0 },
    { "session_dirs_ahead", K_U32, offsetof(struct config, session_dirs_ahead), 0, 0, 65536, 0 },
    STR(worker_user, K_STRING, 0),
    { "sandbox", K_ONOFF, offsetof(struct config, sandbox), 0, 0, 0, 0 },
    STR(edge_secret_file, K_STRING, 0),
    { "drain_timeout_ms", K_U64, offsetof(struct config, drain_timeout_ms), 0, 0, 86400000, 0 },
    { "ship_snapshots", K_ONOFF, offsetof(struct config, ship_snapshots), 0, 0, 0, 0 },
    { "log_level", K_LOGLEVEL, offsetof(struct config, log_level), 0, 0, 0, 0 },
    { "heartbeat_interval_ms", K_U32, offsetof(struct config, heartbeat_interval_ms), 0, 0, 3600000, 0 },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/cessna");
    c->snapshot_interval_ms = 1000;
    c->standby = STANDBY_COLD;
    c->max_sessions = 0;   /* derived from the descriptor limit at start (loop.c) */
    c->heartbeat_interval_ms = 1000;
    c->drain_timeout_ms = 30000;
    c->log_level = LOG_INFO;
    c->ship_snapshots = 1;
    c->max_message_bytes = 1u << 20;
    c->max_session_memory = 256ull << 20;
    c->ring_bytes = SHM_RING_BYTES;
    c->busy_poll = 1;
    c->snapshot_timeout_ms = 10000;
    c->max_held_bytes = 64ull << 20;
    c->snapshot_max_events = 50000;
    c->snapshot_min_events = 4;
    c->snapshot_sync_gap_ms = 20;
    c->snapshot_full_pages = 16;
    c->snapshot_max_bytes = 8ull << 20;
    c->max_event_ms = 5000;
    c->hello_timeout_ms = 5000;
    c->connect_timeout_ms = 5000;
    c->idle_timeout_ms = 0;
    c->close_wait_ms = 3000;
    c->control_timeout_ms = 1000;
    c->zygote_ready_timeout_ms = 10000;
    c->zygote_answer_timeout_ms = 5000;
    c->zygote_backoff_max_ms = 10000;
    c->hibernate_after_ms = 30000;
    c->failed_sessions_keep = 100;
    snprintf(c->worker_user, sizeof(c->worker_user), "nobody");
    c->sandbox = 1;
}

static size_t key_size(const struct key *k)
{
    switch (k->kind) {
    case K_STRING:
    case K_ADDR:     return k->size;
    case K_U64:      return sizeof(uint64_t);
    case K_U32:
    case K_POW2:     return sizeof(uint32_t);
    case K_STANDBY:  return sizeof(enum standby_mode);
    case K_BUSY_POLL:
    case K_ONOFF:
    case K_LOGLEVEL: return sizeof(int);
    }
    return 0;
}

size_t config_nkeys(void)
{
    return NKEYS;
}

const char *config_key(size_t i)
{
    return i < NKEYS ? keys[i].name : NULL;
}

int config_key_differs(const struct config *a, const struct config *b, size_t i)
{
    const struct key *k = &keys[i];

    if (k->kind == K_STRING || k->kind == K_ADDR)
        return strcmp((const char *)a + k->offset, (const char *)b + k->offset) != 0;
    return memcmp((const char *)a + k->offset, (const char *)b + k->offset, key_size(k)) != 0;
}

void config_key_copy(struct config *dst, const struct config *src, size_t i)
{
    const struct key *k = &keys[i];

    memcpy((char *)dst + k->offset, (const char *)src + k->offset, key_size(k));
}

static int fail(struct parse_state *st, const char *fmt, const char *a, const char *b)
{
    if (!st->failed) {
        st->fail_line = st->line;
        int n = snprintf(st->err, st->errlen, "%s:%d: ", st->path, st->line);
        if (n >= 0 && (size_t)n < st->errlen)
            snprintf(st->err + n, st->errlen - (size_t)n, fmt, a, b);
        st->failed = 1;
    }
    return 0;
}

static int set_number(struct parse_state *st, const struct key *k, const char *value)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(value, &end, 10);
    if (!*value || *end || errno || value[0] == '-' || v < k->min || v > k->max) {
        char range[64];
        snprintf(range, sizeof(range), "%llu..%llu", (unsigned long long)k->min,
                 (unsigned long long)k->max);
        return fail(st, "bad value '%s' for this key (want a whole number in %s)", value, range);
    }
    if (k->kind == K_U64)
        *(uint64_t *)((char *)st->c + k->offset) = v;
    else
        *(uint32_t *)((char *)st->c + k->offset) = (uint32_t)v;
    return 1;
}

/* [app]: any key, bounded (appcfg.h), kept in file order. A value longer than a line goes
 * on indented continuation lines, joined with newlines (inih hands each one over under the
 * key of the line before). */
static int app_key(struct parse_state *st, const char *name, const char *value)
{
    struct config *c = st->c;
    size_t klen = strlen(name), vlen = strlen(value);
    char lim[16];

    if (st->cont && c->app_kv_len) {
        /* the last pair is the one continued: its value ends the blob */
        const char *last = c->app_kv + c->app_kv_len - 1;
        size_t have = 0;
        while (last > c->app_kv && last[-1]) {
            last--;
            have++;
        }
        if (have + 1 + vlen > APPCFG_VAL_MAX) {
            snprintf(lim, sizeof(lim), "%d", APPCFG_VAL_MAX);
            return fail(st, "[app] value of '%s' longer than %s bytes", name, lim);
        }
        c->app_kv[c->app_kv_len - 1] = '\n';
        memcpy(c->app_kv + c->app_kv_len, value, vlen + 1);
        c->app_kv_len += (uint32_t)vlen + 1;
        return 1;
    }
    if (klen == 0 || klen > APPCFG_KEY_MAX || strspn(name, "abcdefghijklmnopqrstuvwxyz"
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != klen) {
        snprintf(lim, sizeof(lim), "%d", APPCFG_KEY_MAX);
        return fail(st, "bad [app] key '%s' (want 1 to %s of A-Z a-z 0-9 _ . -)", name, lim);
    }
    if (vlen > APPCFG_VAL_MAX) {
        snprintf(lim, sizeof(lim), "%d", APPCFG_VAL_MAX);
        return fail(st, "[app] value of '%s' longer than %s bytes", name, lim);
    }
    if (appcfg_get(c->app_kv, c->app_kv_len, name))
        return fail(st, "key '%s' given twice in [app]%s", name, "");
    if (c->app_nkeys >= APPCFG_KEYS) {
        snprintf(lim, sizeof(lim), "%d", APPCFG_KEYS);
        return fail(st, "more than %s keys in [app] (at '%s')", lim, name);
    }
    memcpy(c->app_kv + c->app_kv_len, name, klen + 1);
    memcpy(c->app_kv + c->app_kv_len + klen + 1, value, vlen + 1);
    c->app_kv_len += (uint32_t)(klen + vlen + 2);
    c->app_nkeys++;
    return 1;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *st = user;

    if (strcmp(section, "app") == 0)
        return app_key(st, name, value);
    if (strcmp(section, "edge") != 0)
        return fail(st, "unknown section [%s] (the sections are [edge] and [app])%s", section, "");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (strcmp(k->name, name) != 0)
            continue;
        if (st->seen & (1ull << i))
            return fail(st, "key '%s' given twice%s", name, "");
        st->seen |= 1ull << i;
        switch (k->kind) {
        case K_ADDR: {
            char host[256], port[16], why[160];
            if (addr_split(value, host, sizeof(host), port, sizeof(port), why, sizeof(why)) < 0)
                return fail(st, "bad value '%s' for '%s' (want HOST:PORT)", value, name);
        }
            /* fall through */
        case K_STRING:
            if (strlen(value) >= k->size)
                return fail(st, "value of '%s' too long%s", name, "");
            memcpy((char *)st->c + k->offset, value, strlen(value) + 1);
            return 1;
        case K_U64:
        case K_U32:
            return set_number(st, k, value);
        case K_POW2: {
            uint32_t v;
            if (!set_number(st, k, value))
                return 0;
            v = *(uint32_t *)((char *)st->c + k->offset);
            if (v & (v - 1))
                return fail(st, "bad value '%s' for '%s' (want a power of two)", value, name);
            return 1;
        }
        case K_STANDBY:
            if (strcmp(value, "cold") == 0)
                st->c->standby = STANDBY_COLD;
            else if (strcmp(value, "hot") == 0)
                st->c->standby = STANDBY_HOT;
            else
                return fail(st, "bad value '%s' for 'standby' (want cold or hot)%s", value, "");
            return 1;
        case K_BUSY_POLL:
            if (strcmp(value, "auto") != 0 && strcmp(value, "off") != 0)
                return fail(st, "bad value '%s' for 'busy_poll' (want auto or off)%s", value, "");
            st->c->busy_poll = strcmp(value, "auto") == 0;
            return 1;
        case K_LOGLEVEL:
            if ((st->c->log_level = log_level_parse(value)) < 0)
                return fail(st, "bad value '%s' for 'log_level' (want error, warn, info or debug)%s",
                            value, "");
            return 1;
        case K_ONOFF:
            if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0)
                return fail(st, "bad value '%s' for '%s' (want on or off)", value, name);
            *(int *)((char *)st->c + k->offset) = strcmp(value, "on") == 0;
            return 1;
        }
    }
    return fail(st, "unknown key '%s'%s", name, "");
}

/* inih reads through this, so the handler knows the line it is looking at. inih takes
 * lines of at most INI_MAX_LINE - 1 characters; a longer one is an error here, instead of
 * being split in two. */
static char *reader(char *str, int num, void *stream)
{
    struct parse_state *st = stream;
    char *s = fgets(str, num, st->f);

    if (!s)
        return NULL;
    st->line++;
    st->cont = s[0] == ' ' || s[0] == '\t';
    if (!strchr(s, '\n') && !feof(st->f)) {
        char limit[16];
        snprintf(limit, sizeof(limit), "%d", num - 2);
        fail(st, "line longer than %s characters%s", limit, "");
        return NULL;
    }
    return s;
}

/* Relative paths in the file are relative to the file's directory, as nginx and HAProxy
 * read theirs, not to wherever the supervisor was started from. */
static int resolve_paths(const char *path, struct config *c, char *err, size_t errlen)
{
    static const struct { const char *name; size_t offset; } paths[] = {
        { "app", offsetof(struct config, app) },
        { "state_dir", offsetof(struct config, state_dir) },
        { "control", offsetof(struct config, control) },
        { "cache_dir", offsetof(struct config, cache_dir) },
        { "edge_secret_file", offsetof(struct config, edge_secret_file) },
    };
    char copy[PATH_MAX], dir[PATH_MAX];

    snprintf(copy, sizeof(copy), "%s", path);
    if (!realpath(dirname(copy), dir)) {
        snprintf(err, errlen, "%s: cannot resolve its directory: %s", path, strerror(errno));
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char *v = (char *)c + paths[i].offset, joined[PATH_MAX];
        if (!v[0] || v[0] == '/')
            continue;
        /* every one of these fields is PATH_MAX bytes (config.h) */
        if (snprintf(joined, sizeof(joined), "%s/%s", dir, v) >= (int)sizeof(joined)) {
            snprintf(err, errlen, "%s: '%s' is too long once resolved against %s", path,
                     paths[i].name, dir);
            return -EINVAL;
        }
        memcpy(v, joined, strlen(joined) + 1);
    }
    return 0;
}

int config_load(const char *path, struct config *c, char *err, size_t errlen)
{
    struct parse_state st = { .c = c, .path = path, .err = err, .errlen = errlen };
    int rc;

    config_defaults(c);
    st.f = fopen(path, "r");
    if (!st.f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -EINVAL;
    }
    rc = ini_parse_stream(reader, &st, handler, &st);
    fclose(st.f);
    if (rc != 0 && (!st.failed || rc < st.fail_line)) {
        st.failed = 0;   /* inih's syntax error comes first */
        snprintf(err, errlen, "%s:%d: syntax error (want 'key = value' or '[edge]')",
                     path, rc);
        return -EINVAL;
    }
    if (st.failed)
        return -EINVAL;
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].required && !(st.seen & (1ull << i))) {
            snprintf(err, errlen, "%s: missing key '%s' in [edge]", path, keys[i].name);
            return -EINVAL;
        }
    }
    /* it travels as the payload of the session's start event (appcfg.h) */
    if (c->app_kv_len > c->max_message_bytes) {
        snprintf(err, errlen, "%s: the [app] section takes %u bytes, more than "
                 "max_message_bytes=%u", path, c->app_kv_len, c->max_message_bytes);
        return -EINVAL;
    }
    if (resolve_paths(path, c, err, errlen) < 0)
        return -EINVAL;
    if (!c->control[0] &&
        snprintf(c->control, sizeof(c->control), "%s/control.sock", c->state_dir) >=
            (int)sizeof(c->control)) {
        snprintf(err, errlen, "%s: state_dir too long for the control socket path", path);
        return -EINVAL;
    }
    return 0;
}
