/* test_log.c - the log line format (common/log.c): RFC 3339 timestamps, levels, the line
 * a signal handler writes. Lines are captured by pointing stderr at a file. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Run fn with stderr going to a temporary file; the file's text in out. */
static void capture(void (*fn)(void), char *out, size_t cap)
{
    char path[] = "/tmp/cessna-test-log.XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);

    cr_assert(fd >= 0 && saved >= 0, "mkstemp/dup: %s", strerror(errno));
    unlink(path);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, out, cap - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = 0;
}

Test(log, timestamps_match_gmtime)
{
    /* Around the epoch, leap days, centuries, 2000 (a leap century), far ahead. */
    long long secs[] = { 0, 59, 86399, 86400, 951782400 /* 2000-02-29 */, 951868799,
                         4107542399 /* 2100-02-28T23:59:59 */, 4107542400, 1764549612,
                         253402300799 /* 9999-12-31T23:59:59 */ };
    unsigned seed = 12345;

    for (int i = 0; i < 10 + 100000; i++) {
        long long s = i < 10 ? secs[i] : (long long)(rand_r(&seed) % 2000000) * 2000 + i;
        long ns = (long)(i * 7919L % 1000000000L);
        time_t t = (time_t)s;
        struct tm tm;
        char want[64], got[64];

        gmtime_r(&t, &tm);
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ns / 1000000);
        size_t n = log_format_ts(got, sizeof(got), s, ns);
        cr_assert_str_eq(got, want, "second %lld", s);
        cr_assert_eq(n, strlen(want));
    }
    char small[8];
    log_format_ts(small, sizeof(small), 0, 0);
    cr_assert_str_eq(small, "1970-01", "truncated to the buffer, NUL-terminated");
}

static void write_lines(void)
{
    log_init("cessna-test");
    log_threshold = LOG_INFO;
    LOG(LOG_INFO, "session=7 msg=\"hello\"");
    LOG(LOG_DEBUG, "msg=\"not shown\"");
    log_safe(LOG_ERROR, "from a ", "signal handler");
}

Test(log, line_format)
{
    char text[4096], ts[64];
    const char *saved = getenv("CESSNA_LOG");

    unsetenv("CESSNA_LOG");
    capture(write_lines, text, sizeof(text));
    if (saved)
        setenv("CESSNA_LOG", saved, 1);
    long long now = (long long)time(NULL);

    /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ, then prog, pid, level, the caller's fields. */
    char *l1 = text, *l2 = strchr(text, '\n');
    cr_assert(l2, "two lines: %s", text);
    *l2++ = 0;
    cr_assert(strchr(l2, '\n') && strchr(l2, '\n')[1] == 0, "exactly two lines: %s", l2);
    cr_assert_eq(strncmp(l1, "ts=", 3), 0, "%s", l1);
    memcpy(ts, l1 + 3, 24);
    ts[24] = 0;
    struct tm tm = { 0 };
    char *end = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
    cr_assert(end && *end == '.' && ts[23] == 'Z', "RFC 3339 with ms: %s", ts);
    long long t = (long long)timegm(&tm);
    cr_assert(t >= now - 5 && t <= now + 1, "the time now: %s", ts);
    char rest[256];
    snprintf(rest, sizeof(rest), " prog=cessna-test pid=%d level=info session=7 msg=\"hello\"",
             (int)getpid());
    cr_assert_str_eq(l1 + 27, rest);
    snprintf(rest, sizeof(rest), " prog=cessna-test pid=%d level=error msg=\"from a signal handler\"\n",
             (int)getpid());
    cr_assert_eq(strncmp(l2, "ts=", 3), 0, "%s", l2);
    cr_assert_str_eq(l2 + 27, rest);
}

Test(log, config_level_and_environment)
{
    const char *saved = getenv("CESSNA_LOG");

    unsetenv("CESSNA_LOG");
    log_init("cessna-test");
    cr_assert_eq(log_level_from_env(), 0);
    cr_assert_eq(log_set_level(LOG_DEBUG), LOG_DEBUG, "the configured level applies");
    cr_assert_str_eq(getenv("CESSNA_LOG"), "debug", "children inherit it");
    cr_assert_eq(log_set_level(LOG_WARN), LOG_WARN, "and changes at run time");
    cr_assert_eq(log_set_level(9), LOG_WARN, "a bad level changes nothing");

    setenv("CESSNA_LOG", "error", 1);
    log_init("cessna-test");
    cr_assert_eq(log_level_from_env(), 1);
    cr_assert_eq(log_threshold, LOG_ERROR);
    cr_assert_eq(log_set_level(LOG_DEBUG), LOG_ERROR, "CESSNA_LOG wins over the config");
    cr_assert_eq(log_level_parse("warn"), LOG_WARN);
    cr_assert_eq(log_level_parse("WARN"), -1);
    cr_assert_eq(log_level_parse(NULL), -1);
    cr_assert_str_eq(log_level_name(LOG_DEBUG), "debug");

    if (saved)
        setenv("CESSNA_LOG", saved, 1);
    else
        unsetenv("CESSNA_LOG");
    log_init("cessna-tests");
    log_threshold = log_level_parse(saved) >= 0 ? log_level_parse(saved) : LOG_INFO;
}

/* The node-wide level page: a child that follows it sees each level the parent sets (as a
 * running worker sees a reload), and cannot make the page writable (an app in a worker must
 * not change the node's level). Criterion runs each test in a process of its own. */
Test(log, shared_level_page_is_followed_and_read_only)
{
    unsetenv("CESSNA_LOG");
    log_init("test");
    log_set_level(LOG_INFO);
    int fd = log_share();
    cr_assert(fd >= 0, "log_share: %s", strerror(errno));
    int go[2], back[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(back), 0);

    pid_t pid = fork();
    if (pid == 0) {
        char c, seen[3];
        if (log_follow(dup(fd)) < 0)
            _exit(10);
        seen[0] = (char)('0' + log_threshold);
        /* Writable again? Neither mprotect nor a new writable mapping may succeed. */
        void *page = (void *)log_threshold_p;
        if (mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0)
            _exit(11);
        if (mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED)
            _exit(12);
        log_set_level(LOG_ERROR);   /* a follower's own call changes nothing */
        seen[1] = (char)('0' + log_threshold);
        if (write(back[1], seen, 2) != 2 || read(go[0], &c, 1) != 1)
            _exit(13);
        seen[2] = (char)('0' + log_threshold);
        _exit(write(back[1], seen + 2, 1) == 1 ? 0 : 14);
    }
    char got[3];
    cr_assert_eq(read(back[0], got, 2), 2);
    cr_expect_eq(got[0], '0' + LOG_INFO);
    cr_expect_eq(got[1], '0' + LOG_INFO);
    log_set_level(LOG_DEBUG);   /* the "reload" */
    cr_assert_eq(write(go[1], "x", 1), 1);
    cr_assert_eq(read(back[0], got + 2, 1), 1);
    cr_expect_eq(got[2], '0' + LOG_DEBUG, "the follower saw level %c", got[2]);
    int st = 0;
    waitpid(pid, &st, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the follower: status %d", st);
}
