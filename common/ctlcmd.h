/* ctlcmd.h - the control socket's commands: one line, parsed here for the supervisor
 * (control.c) and checked here by cessna-ctl before it sends one. */
#ifndef CESSNA_CTLCMD_H
#define CESSNA_CTLCMD_H

#include <stddef.h>
#include <stdint.h>

#define CTL_LINE_MAX 256   /* a command line, newline included */

enum ctl_verb { CTL_SESSIONS = 1, CTL_STATS, CTL_KILL_WORKER, CTL_SNAPSHOT, CTL_MOVE, CTL_DRAIN,
                CTL_LOG };

struct ctl_cmd {
    enum ctl_verb verb;
    uint64_t id;           /* CTL_KILL_WORKER, CTL_SNAPSHOT, CTL_MOVE, CTL_LOG: the session id */
};

/* Parse one command: `len` bytes, an optional "\n" or "\r\n" at the end. No I/O, no state.
 * 0, or -EINVAL with a one-line reason (starting "error: ", ending in "\n") in err. */
int ctl_parse(const char *line, size_t len, struct ctl_cmd *cmd, char *err, size_t errlen);

#endif
