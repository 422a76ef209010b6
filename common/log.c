/* log.c - see log.h. Lines go to stderr: "ts=... prog=... level=... <key=value...>". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int log_threshold = LOG_INFO;
static char log_prog[32] = "cessna";

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_init(const char *prog)
{
    const char *env = getenv("CESSNA_LOG");

    snprintf(log_prog, sizeof(log_prog), "%s", prog);
    if (!env)
        return;
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (strcmp(env, level_names[i]) == 0)
            log_threshold = i;
}

void log_write(int level, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    va_list ap;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    n = snprintf(line, sizeof(line), "ts=%lld.%03ld prog=%s pid=%d level=%s ",
                 (long long)ts.tv_sec, ts.tv_nsec / 1000000, log_prog, (int)getpid(),
                 level_names[level < 0 ? 0 : level > LOG_DEBUG ? LOG_DEBUG : level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line, so lines of concurrent processes do not interleave. */
    if (write(STDERR_FILENO, line, (size_t)n) == -1)
        return;
}

void log_safe(const char *msg)
{
    if (write(STDERR_FILENO, msg, strlen(msg)) == -1)
        return;
}
