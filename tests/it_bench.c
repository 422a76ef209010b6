/* it_bench.c - cessna-bench run as a user runs it: the sessions section on a small N, the
 * edge only (no HAProxy needed), with its JSON, once with the session directories made
 * ahead (the default) and once without; the shares of the machine that went elsewhere.
 * Real processes on loopback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t_helpers.h"

TestSuite(bench, .timeout = 180);

#define N "40"

/* All of a descriptor until EOF, NUL-terminated, in buf. */
static void read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;
    ssize_t n;

    while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert(n > 0, "read: %s", strerror(errno));
        got += (size_t)n;
    }
    buf[got] = 0;
    close(fd);
}

/* Run the sessions section; its table (stdout) in out, its stderr in err, its JSON in json. */
static void run_sessions(const char *ahead, char *out, size_t outlen, char *err, size_t errlen,
                         char *json, size_t jsonlen)
{
    const char *tmp = t_tmpdir();
    char json_path[600], log[600], name[32];
    int fd;

    snprintf(name, sizeof(name), "bench-%s", ahead);
    snprintf(json_path, sizeof(json_path), "%s/%s.json", tmp, name);
    char *argv[] = { (char *)t_bin("cessna-bench"), "--quick", "--paths", "sessions",
                     "--sessions", N, "--sessions-stacks", "edge", "--sessions-seconds", "1",
                     "--dirs-ahead", (char *)ahead, "--json", json_path, NULL };
    pid_t pid = t_start_raw(tmp, name, argv, &fd);
    read_all(fd, out, outlen);
    int st = t_wait(pid, 150000);
    snprintf(log, sizeof(log), "%s/%s.log", tmp, name);
    t_read_file(log, err, errlen);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "cessna-bench --dirs-ahead %s: status %d\n%s", ahead, st, err);
    t_read_file(json_path, json, jsonlen);
}

Test(bench, sessions_section_with_and_without_directories_made_ahead)
{
    static char out[65536], err[65536], json[65536];

    run_sessions("on", out, sizeof(out), err, sizeof(err), json, sizeof(json));
    cr_assert(strstr(out, "| " N " | edge-native | " N " | "), "all " N " opened:\n%s", out);
    cr_assert(strstr(out, "session_dirs_ahead = N"), "the table says how it was run:\n%s", out);
    cr_assert(strstr(err, "edge-native: " N " session directories made ahead in "),
              "the wait for them is reported:\n%s", err);
    cr_assert(strstr(json, "\"dirs_ahead\":1") && strstr(json, "\"dirs_ahead_s\":"),
              "and in the JSON:\n%.2000s", json);
    /* The machine's time that went elsewhere, over the run and per paced run. */
    cr_assert(strstr(out, "Time other work took over the run: "), "%s", out);
    cr_assert(strstr(json, "\"others_pct\":") && strstr(json, "\"others_paced_pct\":"),
              "%.2000s", json);
    /* The machine's own costs, each measured (a failed one would be -1). */
    const char *costs = strstr(json, "\"machine_costs_us\":{");
    double sc = -1, wake = -1, fk = -1, pf = -1;
    cr_assert(costs && sscanf(costs, "\"machine_costs_us\":{\"syscall\":%lf,\"wake_round_trip\":"
                              "%lf,\"fork\":%lf,\"page_fault\":%lf", &sc, &wake, &fk, &pf) == 4,
              "%.2000s", json);
    cr_assert(sc > 0 && wake > 0 && fk > 0 && pf > 0, "%g %g %g %g", sc, wake, fk, pf);
    cr_assert(strstr(out, "This machine's own costs, measured now"), "%.2000s", out);

    run_sessions("off", out, sizeof(out), err, sizeof(err), json, sizeof(json));
    cr_assert(strstr(out, "| " N " | edge-native | " N " | "), "all " N " opened:\n%s", out);
    cr_assert(strstr(out, "(--dirs-ahead off)"), "the table says how it was run:\n%s", out);
    cr_assert_null(strstr(err, "made ahead"), "nothing made ahead:\n%s", err);
    cr_assert(strstr(json, "\"dirs_ahead\":0"), "the JSON says so:\n%.2000s", json);
}
