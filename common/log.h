/* log.h - one logging macro with levels; lines are key=value.
 *
 *   LOG(LOG_INFO, "session=%llu msg=\"worker started\" pid=%d", id, pid);
 *
 * The level is read from CESSNA_LOG (error, warn, info, debug; default info) by log_init().
 * The macro tests the level before evaluating its arguments. log_safe() is the
 * async-signal-safe variant (no formatting). */
#ifndef CESSNA_LOG_H
#define CESSNA_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern int log_threshold;

void log_init(const char *prog);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_safe(const char *msg);

#define LOG(level, ...)                                                        \
    do {                                                                       \
        if ((level) <= log_threshold)                                          \
            log_write((level), __VA_ARGS__);                                   \
    } while (0)

#endif
