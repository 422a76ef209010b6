/* reload.c - SIGHUP reloads the configuration file without dropping a session.
 *
 * What the loop reads at each use can change at run time: limits, timeouts, the snapshot
 * policy, hibernation, heartbeats, the log level. What was built from the configuration at
 * start cannot, and is named in the log as needing a restart: the sockets (listen, control),
 * the server address, the state directory and its lock, the descriptor limit, the layout of
 * every session's rings and arena (max_message_bytes, ring_bytes, max_session_memory), the
 * standby mode, the zygote's sandbox and user.
 *
 * The app is for new sessions: a session's snapshots restore only into the module that
 * wrote them, and a session that was running before the reload may need a worker again at
 * any time (a cold recovery, waking from hibernation), so a new module gets a zygote of its
 * own and the old zygote stays for the old sessions (zygote.c). The new module must load
 * first (its zygote reports ready, as in --check); a third module while the old one still
 * has sessions is refused.
 *
 * [app] changes apply to new sessions only: a session keeps the values it started with
 * (they travel in its start event, appcfg.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "reload.h"
#include "sup.h"

/* The keys applied at run time: each is read from S.cfg where it is used. */
static const char *const runtime_keys[] = {
    "max_sessions", "hello_timeout_ms", "connect_timeout_ms", "idle_timeout_ms",
    "snapshot_interval_ms", "snapshot_timeout_ms", "snapshot_max_events", "snapshot_min_events", "snapshot_full_pages",
    "snapshot_max_bytes", "snapshot_sync_gap_ms",
    "max_held_bytes", "max_event_ms", "hibernate_after_ms", "heartbeat_interval_ms",
    "drain_timeout_ms", "failed_sessions_keep", "session_dirs_ahead", "log_level",
};

static struct {
    char path[PATH_MAX];
    struct config file;     /* what the file says that is in effect (as read, not derived) */
} R;

static int runtime(const char *key)
{
    for (size_t i = 0; i < sizeof(runtime_keys) / sizeof(runtime_keys[0]); i++)
        if (strcmp(runtime_keys[i], key) == 0)
            return 1;
    return 0;
}

void reload_init(const char *path)
{
    if (!realpath(path, R.path))
        snprintf(R.path, sizeof(R.path), "%s", path);
    R.file = S.cfg;
}

static void add(char *list, size_t len, const char *key, const char *why)
{
    size_t n = strlen(list);

    snprintf(list + n, len - n, "%s%s%s%s%s", n ? "," : "", key, why ? " (" : "",
             why ? why : "", why ? ")" : "");
}

/* [app]: new sessions get the new values; running ones keep theirs. */
static void apply_app(const struct config *nc)
{
    if (nc->app_kv_len == R.file.app_kv_len &&
        memcmp(nc->app_kv, R.file.app_kv, nc->app_kv_len) == 0)
        return;
    memcpy(S.cfg.app_kv, nc->app_kv, nc->app_kv_len);
    S.cfg.app_kv_len = nc->app_kv_len;
    S.cfg.app_nkeys = nc->app_nkeys;
    memcpy(R.file.app_kv, nc->app_kv, nc->app_kv_len);
    R.file.app_kv_len = nc->app_kv_len;
    R.file.app_nkeys = nc->app_nkeys;
    LOG(LOG_INFO, "msg=\"reload: [app] changed; new sessions get the new values, running "
        "sessions keep the ones they started with\" keys=%u", nc->app_nkeys);
}

/* app: a zygote for the new module; new sessions run it once it is ready (zygote.c logs
 * that, or that it did not load). */
static void apply_module(const struct config *nc, char *applied, size_t len)
{
    char why[512];

    if (strcmp(nc->app, zygote_current_app()) == 0)
        return;
    if (zygote_change_app(nc->app, why, sizeof(why)) < 0) {
        LOG(LOG_WARN, "msg=\"reload: app not applied; new sessions keep running %s\" app=%s "
            "reason=\"%s\"", zygote_current_app(), nc->app, why);
        return;
    }
    add(applied, len, "app", "new sessions, once it loads");
}

/* max_sessions: 0 is "as many as the descriptor limit holds", which was worked out at start
 * as the number of slots; more slots than that need a restart. */
static int apply_max_sessions(const struct config *nc, char *why, size_t len)
{
    uint32_t want = nc->max_sessions ? nc->max_sessions : S.slots;

    if (want > S.slots) {
        snprintf(why, len, "%u is more than the %u slots made at start", want, S.slots);
        return -1;
    }
    S.cfg.max_sessions = want;
    return 0;
}

void reload_config(void)
{
    char err[512], applied[1024] = "", skipped[1024] = "", why[128];
    struct config nc;

    if (config_load(R.path, &nc, err, sizeof(err)) < 0) {
        LOG(LOG_ERROR, "msg=\"reload: the configuration has an error; the running one stays\" "
            "file=%s error=\"%s\"", R.path, err);
        return;
    }
    for (size_t i = 0; i < config_nkeys(); i++) {
        const char *key = config_key(i);
        if (!config_key_differs(&R.file, &nc, i))
            continue;
        if (strcmp(key, "app") == 0)
            continue;   /* apply_module */
        if (!runtime(key)) {
            add(skipped, sizeof(skipped), key, NULL);
            continue;
        }
        if (strcmp(key, "max_sessions") == 0 && apply_max_sessions(&nc, why, sizeof(why)) < 0) {
            add(skipped, sizeof(skipped), key, why);
            continue;
        }
        if (strcmp(key, "max_sessions") != 0)
            config_key_copy(&S.cfg, &nc, i);
        config_key_copy(&R.file, &nc, i);
        add(applied, sizeof(applied), key, NULL);
        if (strcmp(key, "log_level") == 0)   /* CESSNA_LOG, when set, still wins */
            log_set_level(S.cfg.log_level);
    }
    apply_app(&nc);
    apply_module(&nc, applied, sizeof(applied));
    LOG(LOG_INFO, "msg=\"configuration reloaded\" file=%s applied=\"%s\"", R.path,
        applied[0] ? applied : "none");
    LOG(skipped[0] ? LOG_WARN : LOG_INFO, "msg=\"reload: not applied, these need a restart\" "
        "keys=\"%s\"", skipped[0] ? skipped : "none");
}
