/* log.h - one logging macro with levels; lines are key=value.
 *
 *   LOG(LOG_INFO, "session=%llu msg=\"worker started\" pid=%d", id, pid);
 *
 * writes, as one write(2) to stderr,
 *
 *   ts=2026-12-01T00:40:12.123Z prog=cessna-supervisor pid=812 level=info session=... msg=...
 *
 * (RFC 3339, UTC, milliseconds). The level is info unless CESSNA_LOG (error, warn, info,
 * debug) says otherwise; a program with a configured level applies it with log_set_level(),
 * which CESSNA_LOG still overrides. The macro tests the level before evaluating its
 * arguments. log_safe() is the async-signal-safe variant (no formatting). */
#ifndef CESSNA_LOG_H
#define CESSNA_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* The level in force. It is read through a pointer so that one page can hold it for the
 * whole node: the supervisor's log_share() and the zygote's log_follow(). */
extern volatile int *log_threshold_p;
#define log_threshold (*log_threshold_p)

void log_init(const char *prog);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A whole line whose msg is "a" followed by "b" (b may be NULL); async-signal-safe. */
void log_safe(int level, const char *a, const char *b);

/* A whole line whose fields after the level are `body` (already key=value, quoted and
 * escaped by the caller), cut to the line's size; no formatting, async-signal-safe. */
void log_raw(int level, const char *body);

/* For a quoted value (key="..."): len bytes of src into dst with " and \ escaped,
 * newline, CR and tab as \n \r \t and other control bytes as \\xHH, so text from a peer
 * or an app cannot end the value, add a field or start a line; NUL-terminated, at most
 * cap - 1 bytes. Returns 1 when src did not fit whole (cut), else 0. */
int log_escape(char *dst, size_t cap, const char *src, size_t len);

/* "error" .. "debug" to LOG_ERROR .. LOG_DEBUG, or -1. */
int log_level_parse(const char *name);
const char *log_level_name(int level);
/* The level from a configuration (at start and on reload): applied unless CESSNA_LOG was
 * set when log_init ran, which wins. Returns the level in force afterwards. Children
 * started later inherit it (it is exported as CESSNA_LOG). */
int log_set_level(int level);
/* 1 when CESSNA_LOG set the level (log_set_level() then changes nothing). */
int log_level_from_env(void);

/* A node-wide level, so that a reload reaches the workers already running: log_share()
 * moves this process's level into a sealed shared page and returns a descriptor of it
 * (close-on-exec; the supervisor hands a copy to the zygote), or -1; log_follow(fd) maps that
 * page read-only (no writable mapping can be made of it afterwards) and closes fd: the
 * process and every child it forks then log at the level the supervisor sets. */
int log_share(void);
int log_follow(int fd);

/* The time as RFC 3339 in UTC with milliseconds ("2026-12-01T00:40:12.123Z", 24 chars):
 * writes at most len bytes including the NUL; async-signal-safe. Returns the length. */
size_t log_format_ts(char *buf, size_t len, long long sec, long nsec);

#define LOG(level, ...)                                                        \
    do {                                                                       \
        if ((level) <= log_threshold)                                          \
            log_write((level), __VA_ARGS__);                                   \
    } while (0)

#endif
