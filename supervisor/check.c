/* check.c - `cessna-supervisor --check`: a configuration that passes starts.
 *
 * Parsing is config.c's; here are the things a config can name that only fail at start: the
 * directories, and an app module that is not a CESSNA app (or does not load at all), which
 * the zygote finds out by loading it exactly as it does at startup. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "sup.h"

/* A directory we must write into: it exists and we may create files in it, or it does not
 * and its nearest existing ancestor lets us create it (mkdir -p at start). */
static int writable_dir(const char *key, const char *path, char *err, size_t errlen)
{
    char up[PATH_MAX];
    struct stat st;

    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s %s: not a directory", key, path);
            return -ENOTDIR;
        }
        if (access(path, W_OK | X_OK) == -1) {
            snprintf(err, errlen, "%s %s: not writable: %s", key, path, strerror(errno));
            return -errno;
        }
        return 0;
    }
    if (errno != ENOENT && errno != ENOTDIR) {
        snprintf(err, errlen, "%s %s: %s", key, path, strerror(errno));
        return -errno;
    }
    snprintf(up, sizeof(up), "%s", path);
    for (;;) {
        char *slash = strrchr(up, '/');
        if (!slash) {
            snprintf(up, sizeof(up), ".");
        } else if (slash == up) {
            up[1] = 0;
        } else {
            *slash = 0;
        }
        if (stat(up, &st) == 0)
            break;
        if ((errno != ENOENT && errno != ENOTDIR) || strcmp(up, "/") == 0 || strcmp(up, ".") == 0) {
            snprintf(err, errlen, "%s %s: %s: %s", key, path, up, strerror(errno));
            return -errno;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s %s: cannot be created: %s is not a directory", key, path, up);
        return -ENOTDIR;
    }
    if (access(up, W_OK | X_OK) == -1) {
        snprintf(err, errlen, "%s %s: does not exist and cannot be created in %s: %s", key,
                 path, up, strerror(errno));
        return -errno;
    }
    return 0;
}

int check_dirs(const struct config *c, char *err, size_t errlen)
{
    struct stat st;
    int rc;

    if ((rc = writable_dir("state_dir", c->state_dir, err, errlen)) < 0)
        return rc;
    if (!c->cache_dir[0])
        return 0;
    if (stat(c->cache_dir, &st) == -1) {
        snprintf(err, errlen, "cache_dir %s: %s", c->cache_dir, strerror(errno));
        return -errno;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cache_dir %s: not a directory", c->cache_dir);
        return -ENOTDIR;
    }
    if (access(c->cache_dir, R_OK | X_OK) == -1) {
        snprintf(err, errlen, "cache_dir %s: not readable: %s", c->cache_dir, strerror(errno));
        return -errno;
    }
    return 0;
}

int check_app(char *err, size_t errlen)
{
    char why[400];
    int level = log_threshold, rc;

    log_threshold = LOG_WARN;   /* no "zygote ready" line in a check's output */
    if (!log_level_from_env())
        setenv("CESSNA_LOG", "warn", 1);   /* nor the zygote's "sandbox on" (it reads this) */
    rc = zygote_start(S.cfg.app, S.cfg.cache_dir, S.cfg.state_dir, why, sizeof(why));
    log_threshold = level;
    if (rc < 0) {
        snprintf(err, errlen, "%s%s", strncmp(why, "app ", 4) ? "app: " : "", why);
        return -EINVAL;
    }
    zygote_stop(1);
    return 0;
}
