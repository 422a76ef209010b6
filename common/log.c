/* log.c - see log.h. Lines go to stderr: "ts=... prog=... pid=... level=... <key=value...>". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static volatile int level_here = LOG_INFO;
volatile int *log_threshold_p = &level_here;
static char log_prog[32] = "cessna";
static int env_level = -1;   /* CESSNA_LOG's level at log_init, or -1 */
static int following;        /* the level is the supervisor's page, read-only here */

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_level_parse(const char *name)
{
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (name && strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(int level)
{
    return level_names[level < 0 ? 0 : level > LOG_DEBUG ? LOG_DEBUG : level];
}

void log_init(const char *prog)
{
    snprintf(log_prog, sizeof(log_prog), "%s", prog);
    env_level = log_level_parse(getenv("CESSNA_LOG"));
    if (env_level >= 0 && !following)
        log_threshold = env_level;
}

int log_level_from_env(void)
{
    return env_level >= 0;
}

int log_set_level(int level)
{
    if (env_level < 0 && !following && level >= LOG_ERROR && level <= LOG_DEBUG) {
        log_threshold = level;
        setenv("CESSNA_LOG", level_names[level], 1);
    }
    return log_threshold;
}

int log_share(void)
{
    int fd = memfd_create("cessna-log-level", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    volatile int *page = NULL;
    if (ftruncate(fd, 4096) == 0) {
        page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (page == MAP_FAILED)
            page = NULL;
    }
    /* Sealed after our own mapping: readers cannot map it writable, nor resize it. */
    if (!page || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
                                            F_SEAL_SEAL) == -1) {
        if (page)
            munmap((void *)page, 4096);
        close(fd);
        return -1;
    }
    *page = *log_threshold_p;
    log_threshold_p = page;
    return fd;
}

int log_follow(int fd)
{
    void *page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);

    close(fd);
    if (page == MAP_FAILED)
        return -1;
    log_threshold_p = page;
    following = 1;
    return 0;
}

/* Civil date of a day count since 1970-01-01 (proleptic Gregorian), by 400-year eras of
 * 146097 days, with years starting in March so the leap day comes last. Pure arithmetic:
 * gmtime_r takes a lock, which a signal handler must not. */
static void civil_from_days(long long z, long long *y, unsigned *m, unsigned *d)
{
    z += 719468;   /* days from 0000-03-01 to 1970-01-01 */
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);                              /* [0, 146096] */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;     /* [0, 399] */
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                   /* [0, 365] */
    unsigned mp = (5 * doy + 2) / 153;                                        /* March = 0 */

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (long long)yoe + era * 400 + (*m <= 2);
}

static char *put_num(char *p, long long v, int width)
{
    char tmp[24];
    int n = 0;

    if (v < 0) {
        *p++ = '-';
        v = -v;
    }
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

size_t log_format_ts(char *buf, size_t len, long long sec, long nsec)
{
    char tmp[48], *p = tmp;
    long long days = sec / 86400, rem = sec % 86400, y;
    unsigned m, d;

    if (rem < 0) {
        rem += 86400;
        days--;
    }
    civil_from_days(days, &y, &m, &d);
    p = put_num(p, y, 4);
    *p++ = '-';
    p = put_num(p, m, 2);
    *p++ = '-';
    p = put_num(p, d, 2);
    *p++ = 'T';
    p = put_num(p, rem / 3600, 2);
    *p++ = ':';
    p = put_num(p, rem / 60 % 60, 2);
    *p++ = ':';
    p = put_num(p, rem % 60, 2);
    *p++ = '.';
    p = put_num(p, nsec / 1000000, 3);
    *p++ = 'Z';
    size_t n = (size_t)(p - tmp);
    if (!len)
        return n;
    if (n >= len)
        n = len - 1;
    memcpy(buf, tmp, n);
    buf[n] = 0;
    return n;
}

/* The wall clock from the kernel: in a worker, libc's clock_gettime is the event's time
 * (determ.c), and a log line wants the real one. */
static void now(struct timespec *ts)
{
    if (syscall(SYS_clock_gettime, CLOCK_REALTIME, ts) == -1)
        ts->tv_sec = ts->tv_nsec = 0;
}

static size_t line_head(char *line, size_t cap, int level)
{
    struct timespec ts;
    char *p = line, *end = line + cap;

    now(&ts);
    memcpy(p, "ts=", 3);
    p += 3;
    p += log_format_ts(p, (size_t)(end - p), (long long)ts.tv_sec, ts.tv_nsec);
    const char *parts[] = { " prog=", log_prog, " pid=", NULL, " level=", log_level_name(level), " " };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (!parts[i]) {
            p = put_num(p, (long long)getpid(), 1);
            continue;
        }
        size_t n = strlen(parts[i]);
        memcpy(p, parts[i], n);
        p += n;
    }
    return (size_t)(p - line);
}

void log_write(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n = (int)line_head(line, sizeof(line), level);

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

void log_safe(int level, const char *a, const char *b)
{
    char line[1024];
    size_t n = line_head(line, sizeof(line), level), room;
    const char *parts[] = { "msg=\"", a, b, "\"\n" };

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (!parts[i])
            continue;
        room = sizeof(line) - 2 - n;
        size_t k = strlen(parts[i]);
        if (k > room)
            k = room;
        memcpy(line + n, parts[i], k);
        n += k;
    }
    if (line[n - 1] != '\n')
        line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) == -1)
        return;
}

void log_raw(int level, const char *body)
{
    char line[1024];
    size_t n = line_head(line, sizeof(line), level), k = strlen(body);

    if (k > sizeof(line) - 1 - n)
        k = sizeof(line) - 1 - n;
    memcpy(line + n, body, k);
    n += k;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) == -1)
        return;
}

int log_escape(char *dst, size_t cap, const char *src, size_t len)
{
    const char *end = src + len;
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    for (; src < end; src++) {
        unsigned char c = (unsigned char)*src;
        char e[4];
        size_t k = 0;

        if (c == '"' || c == '\\') {
            e[k++] = '\\';
            e[k++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            e[k++] = '\\';
            e[k++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f) {
            e[k++] = '\\';
            e[k++] = 'x';
            e[k++] = hex[c >> 4];
            e[k++] = hex[c & 15];
        } else {
            e[k++] = (char)c;
        }
        if (n + k >= cap) {
            dst[n] = 0;
            return 1;
        }
        memcpy(dst + n, e, k);
        n += k;
    }
    dst[n] = 0;
    return 0;
}
