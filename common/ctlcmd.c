/* ctlcmd.c - see ctlcmd.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlcmd.h"

#define CTL_USAGE "(sessions, stats, kill-worker ID, snapshot ID, log ID, move ID, drain)"

/* A session id: decimal digits only, no sign, no spaces, fits 64 bits. */
static int parse_id(const char *s, size_t len, uint64_t *id)
{
    uint64_t v = 0;

    if (!len || len > 20)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *id = v;
    return 0;
}

int ctl_parse(const char *line, size_t len, struct ctl_cmd *cmd, char *err, size_t errlen)
{
    static const struct { const char *name; enum ctl_verb verb; int takes_id; } verbs[] = {
        { "sessions", CTL_SESSIONS, 0 }, { "stats", CTL_STATS, 0 },
        { "kill-worker", CTL_KILL_WORKER, 1 }, { "snapshot", CTL_SNAPSHOT, 1 },
        { "move", CTL_MOVE, 1 }, { "drain", CTL_DRAIN, 0 }, { "log", CTL_LOG, 1 },
    };

    memset(cmd, 0, sizeof(*cmd));
    if (len && line[len - 1] == '\n')
        len--;
    if (len && line[len - 1] == '\r')
        len--;
    if (len >= CTL_LINE_MAX || memchr(line, '\0', len) || memchr(line, '\n', len)) {
        snprintf(err, errlen, "error: not a command line %s\n", CTL_USAGE);
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        size_t n = strlen(verbs[i].name);
        if (len < n || memcmp(line, verbs[i].name, n) != 0)
            continue;
        if (!verbs[i].takes_id) {
            if (len != n)
                break;
        } else {
            if (len == n || line[n] != ' ')
                break;
            if (parse_id(line + n + 1, len - n - 1, &cmd->id) < 0) {
                snprintf(err, errlen, "error: bad session id '%.*s' (want a decimal number)\n",
                         (int)(len - n - 1), line + n + 1);
                return -EINVAL;
            }
        }
        cmd->verb = verbs[i].verb;
        return 0;
    }
    snprintf(err, errlen, "error: unknown command '%.*s' %s\n", (int)len, line, CTL_USAGE);
    return -EINVAL;
}
