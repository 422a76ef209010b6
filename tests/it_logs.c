/* it_logs.c - integration: what an operator reads. The session_end line of sessions that
 * end in different ways (client close, idle timeout, a worker that fails for good, refused
 * at max_sessions, a connection that said nothing), log lines in one format with RFC 3339
 * timestamps, log_level in the config against CESSNA_LOG, startup errors as log lines, and
 * the worker process titles in /proc/PID/cmdline. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(logs, .timeout = 60);

/* The whole file as text (malloc'd). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t cap = 1 << 16, len = 0, n;
    char *buf = malloc(cap);

    cr_assert(f && buf, "open %s: %s", path, strerror(errno));
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 4096)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    fclose(f);
    return buf;
}

/* The first line of log holding every one of pat[] (NULL-terminated), waiting up to
 * timeout_ms for it to be written: 1 with it in line, else 0. */
static int find_line(const char *log, const char *const pat[], char *line, size_t cap,
                     int timeout_ms)
{
    long start = t_now_ms();

    do {
        char *text = slurp(log);
        for (char *l = text, *nl; *l; l = nl + 1) {
            nl = strchr(l, '\n');
            if (!nl)
                break;
            *nl = 0;
            int all = 1;
            for (int i = 0; pat[i] && all; i++)
                all = strstr(l, pat[i]) != NULL;
            if (all) {
                snprintf(line, cap, "%s", l);
                free(text);
                return 1;
            }
        }
        free(text);
        usleep(50000);
    } while (t_now_ms() - start < timeout_ms);
    return 0;
}

/* The session_end line of session id (waits for it). */
static void end_line(const struct t_edge *e, uint64_t id, char *line, size_t cap, int timeout_ms)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "event=session_end session=%llu ", (unsigned long long)id);
    const char *const pats[] = { pat, NULL };
    cr_assert(find_line(e->sup.log, pats, line, cap, timeout_ms),
              "no session_end line for session %llu in %s", (unsigned long long)id, e->sup.log);
}

/* The value of key=VALUE (unquoted, up to a space) or key="VALUE" in a line. */
static const char *str_field(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    const char *p = line;

    snprintf(pat, sizeof(pat), " %s=", key);
    out[0] = 0;
    if (!(p = strstr(line, pat)))
        return out;
    p += strlen(pat);
    const char *end = *p == '"' ? strchr(++p, '"') : strchr(p, ' ');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
    return out;
}

/* "ts=YYYY-MM-DDTHH:MM:SS.mmmZ prog=P pid=N level=L " at the start of a line, the time
 * within a minute of now. */
static void check_head(const char *line, const char *prog, const char *level)
{
    struct tm tm = { 0 };
    char want[96];

    cr_assert_eq(strncmp(line, "ts=", 3), 0, "%s", line);
    const char *end = strptime(line + 3, "%Y-%m-%dT%H:%M:%S", &tm);
    cr_assert(end && end[0] == '.' && end[4] == 'Z' && end[5] == ' ', "RFC 3339 with ms: %s", line);
    for (int i = 1; i <= 3; i++)
        cr_assert(end[i] >= '0' && end[i] <= '9', "%s", line);
    long long t = (long long)timegm(&tm), now = (long long)time(NULL);
    cr_assert(t > now - 60 && t <= now + 1, "the time is now: %s", line);
    snprintf(want, sizeof(want), " prog=%s pid=", prog);
    cr_assert_eq(strncmp(end + 5, want, strlen(want)), 0, "%s", line);
    snprintf(want, sizeof(want), " level=%s ", level);
    cr_assert(strstr(line, want), "%s", line);
}

static void round_trip(struct cessna_ep *ep, const void *msg, size_t len)
{
    const void *got;
    cr_assert_eq(cessna_ep_send(ep, msg, len), 0);
    long n = cessna_ep_recv(ep, &got);
    cr_assert_eq(n, (long)len, "echo: %ld (%s)", n, cessna_ep_error(ep));
    cr_assert(memcmp(got, msg, len) == 0);
}

/* "127.0.0.1:PORT" of a socket's own end. */
static void local_addr(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    addr_format((struct sockaddr *)&ss, out, cap);
}

Test(logs, session_end_lines, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char line[2048], v[256], client[64];
    uint8_t frame[512];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_test_app("crashy"), srv.addr,
                 "idle_timeout_ms = 1500\nmax_sessions = 2\nhibernate_after_ms = 0\n"
                 "snapshot_interval_ms = 100\n");

    /* A: twenty messages of 1..20 bytes each way, then the client closes. */
    struct cessna_ep *a = t_ep_connect(&e);
    uint64_t a_id = cessna_ep_session_id(a);
    local_addr(cessna_ep_fd(a), client, sizeof(client));
    long a_start = t_now_ms();
    for (int i = 1; i <= 20; i++) {
        char msg[32];
        memset(msg, 'a' + i, (size_t)i);
        round_trip(a, msg, (size_t)i);
    }
    usleep(300000);
    cr_assert_eq(cessna_ep_close(a, 5000), 0);
    long a_ms = t_now_ms() - a_start;
    cessna_ep_free(a);
    end_line(&e, a_id, line, sizeof(line), 5000);
    cr_log_info("%s", line);
    check_head(line, "cessna-supervisor", "info");
    cr_assert_str_eq(str_field(line, "client", v, sizeof(v)), client);
    cr_assert_str_eq(str_field(line, "server", v, sizeof(v)), srv.addr);
    cr_assert_str_eq(str_field(line, "end", v, sizeof(v)), "client_close");
    cr_assert_eq(t_field(line, "bytes_in"), 210, "%s", line);
    cr_assert_eq(t_field(line, "bytes_out"), 210, "%s", line);
    cr_assert_eq(t_field(line, "server_bytes_in"), 210, "%s", line);
    cr_assert_eq(t_field(line, "server_bytes_out"), 210, "%s", line);
    cr_assert_geq(t_field(line, "events"), 42, "START, 40 messages, CLOSE: %s", line);
    cr_assert_eq(t_field(line, "recoveries"), 0, "%s", line);
    cr_assert_eq(t_field(line, "hibernations"), 0, "%s", line);
    cr_assert(t_field(line, "duration_ms") >= 300 && (long)t_field(line, "duration_ms") <= a_ms + 50,
              "duration %ld ms measured by the client: %s", a_ms, line);
    cr_assert(!strstr(line, "reason="), "%s", line);

    /* B: a worker that crashes at the same event again after its recovery: failed. */
    struct cessna_ep *b = t_ep_connect(&e);
    uint64_t b_id = cessna_ep_session_id(b);
    round_trip(b, "ok", 2);
    cr_assert_eq(cessna_ep_send(b, "CRASH", 5), 0);
    const void *got;
    long n = cessna_ep_recv(b, &got);
    cr_assert_eq(n, -ECONNABORTED, "the session fails: %ld", n);
    cessna_ep_free(b);
    end_line(&e, b_id, line, sizeof(line), 10000);
    cr_log_info("%s", line);
    cr_assert_str_eq(str_field(line, "end", v, sizeof(v)), "failed", "%s", line);
    check_head(line, "cessna-supervisor", "warn");
    cr_assert(strstr(str_field(line, "reason", v, sizeof(v)), "died again"), "%s", line);
    cr_assert_geq(t_field(line, "recoveries"), 1, "%s", line);
    cr_assert_eq(t_field(line, "bytes_in"), 7, "'ok' and 'CRASH': %s", line);

    /* A connection that says nothing: no line at info (HAProxy's dontlognull). */
    int quiet = t_connect(e.sup.addr);
    char quiet_addr[64], pat[96];
    local_addr(quiet, quiet_addr, sizeof(quiet_addr));
    close(quiet);

    /* C and D fill max_sessions = 2: a third connection is refused at accept. A and B hold
     * their slots until their workers are reaped, a little after their end lines. */
    char stats[4096];
    cr_assert_eq(t_wait_sessions(&e, 0, 5000, stats, sizeof(stats)), 0, "%s", stats);
    struct cessna_ep *c = t_ep_connect(&e), *d = t_ep_connect(&e);
    uint64_t c_id = cessna_ep_session_id(c), d_id = cessna_ep_session_id(d);
    long c_start = t_now_ms();
    round_trip(c, "c", 1);
    round_trip(d, "d", 1);
    int r = t_connect(e.sup.addr);
    local_addr(r, client, sizeof(client));
    long fl = t_read_frame(r, frame, sizeof(frame), 5000);
    cr_assert(fl > 0 && frame[3] == WIRE_ERROR, "refused with an ERROR (%ld)", fl);
    close(r);
    snprintf(pat, sizeof(pat), "client=%s ", client);
    const char *const refused[] = { "event=session_end session=0 ", pat, NULL };
    cr_assert(find_line(e.sup.log, refused, line, sizeof(line), 3000), "no refused line for %s",
              client);
    cr_log_info("%s", line);
    check_head(line, "cessna-supervisor", "info");
    cr_assert_str_eq(str_field(line, "end", v, sizeof(v)), "refused", "%s", line);
    cr_assert_str_eq(str_field(line, "reason", v, sizeof(v)), "edge full", "%s", line);

    /* C and D say nothing more: idle_timeout_ms ends them. */
    end_line(&e, c_id, line, sizeof(line), 10000);
    cr_log_info("%s", line);
    cr_assert_str_eq(str_field(line, "end", v, sizeof(v)), "idle_timeout", "%s", line);
    cr_assert(t_field(line, "duration_ms") >= 1500 &&
              (long)t_field(line, "duration_ms") <= t_now_ms() - c_start + 50, "%s", line);
    cr_assert_eq(t_field(line, "bytes_in"), 1, "%s", line);
    end_line(&e, d_id, line, sizeof(line), 5000);
    cr_assert_str_eq(str_field(line, "end", v, sizeof(v)), "idle_timeout", "%s", line);
    cessna_ep_free(c);
    cessna_ep_free(d);

    snprintf(pat, sizeof(pat), "client=%s ", quiet_addr);
    const char *const silent[] = { "event=session_end", pat, NULL };
    cr_assert_not(find_line(e.sup.log, silent, line, sizeof(line), 0), "%s", line);
    t_edge_stop(&e);
}

/* The server endpoint closes first; a session that hibernated once counts it. */
Test(logs, session_end_after_hibernation, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char line[2048], v[64], out[4096];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "hibernate_after_ms = 200\n"
                 "snapshot_interval_ms = 50\n");
    struct cessna_ep *a = t_ep_connect(&e);
    uint64_t id = cessna_ep_session_id(a);
    round_trip(a, "before", 6);
    long start = t_now_ms();
    do {
        usleep(100000);
        t_ctl(&e, "sessions", out, sizeof(out));
    } while (!strstr(out, "state=hibernated") && t_now_ms() - start < 10000);
    cr_assert(strstr(out, "state=hibernated"), "%s", out);
    round_trip(a, "after", 5);
    cr_assert_eq(cessna_ep_close(a, 5000), 0);
    cessna_ep_free(a);
    end_line(&e, id, line, sizeof(line), 5000);
    cr_log_info("%s", line);
    cr_assert_eq(t_field(line, "hibernations"), 1, "%s", line);
    cr_assert_str_eq(str_field(line, "end", v, sizeof(v)), "client_close", "%s", line);
    cr_assert_eq(t_field(line, "bytes_in"), 11, "%s", line);
    cr_assert_eq(t_field(line, "bytes_out"), 11, "%s", line);
    t_edge_stop(&e);
}

/* log_level in the config; CESSNA_LOG overrides it. */
Test(logs, log_level_from_config_and_environment, .timeout = 30)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char line[2048];
    const char *const ready[] = { "msg=\"ready\"", NULL };
    const char *const debug[] = { "level=debug", NULL };

    t_echo_ep_start(&srv);
    unsetenv("CESSNA_LOG");
    t_edge_start(&e, t_app("passthrough"), srv.addr, "log_level = warn\n");
    struct cessna_ep *a = t_ep_connect(&e);
    round_trip(a, "x", 1);
    cessna_ep_close(a, 5000);
    cessna_ep_free(a);
    usleep(300000);
    cr_assert_not(find_line(e.sup.log, ready, line, sizeof(line), 0), "info at warn: %s", line);
    const char *const end[] = { "event=session_end", NULL };
    cr_assert_not(find_line(e.sup.log, end, line, sizeof(line), 0), "info at warn: %s", line);
    t_edge_stop(&e);

    /* debug: the supervisor's debug lines, and the zygote's and workers' (they inherit it). */
    t_edge_start(&e, t_app("passthrough"), srv.addr, "log_level = debug\n");
    a = t_ep_connect(&e);
    round_trip(a, "x", 1);
    cessna_ep_close(a, 5000);
    cessna_ep_free(a);
    cr_assert(find_line(e.sup.log, debug, line, sizeof(line), 3000), "no debug line");
    cr_assert(find_line(e.sup.log, ready, line, sizeof(line), 0));
    check_head(line, "cessna-supervisor", "info");
    t_edge_stop(&e);

    setenv("CESSNA_LOG", "info", 1);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "log_level = error\n");
    cr_assert(find_line(e.sup.log, ready, line, sizeof(line), 2000), "CESSNA_LOG=info wins");
    cr_assert_not(find_line(e.sup.log, debug, line, sizeof(line), 0), "%s", line);
    t_edge_stop(&e);
    unsetenv("CESSNA_LOG");
}

/* Errors that stop the supervisor at start are log lines, with FILE:LINE: inside. */
Test(logs, startup_errors_are_log_lines, .timeout = 30)
{
    const char *dir = t_tmpdir();
    char cfg[512], log[512], line[2048];
    int out;

    snprintf(cfg, sizeof(cfg), "%s/edge.ini", dir);
    FILE *f = fopen(cfg, "w");
    fputs("[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\nlog_level = loud\n", f);
    fclose(f);
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    pid_t pid = t_start_raw(dir, "supervisor", argv, &out);
    int status = t_wait(pid, 10000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "exits 2");
    close(out);
    snprintf(log, sizeof(log), "%s/supervisor.log", dir);
    char *text = slurp(log);
    cr_assert(text[0] && strchr(text, '\n') == strrchr(text, '\n'), "one line: %s", text);
    free(text);
    const char *const pats[] = { "edge.ini:4: bad value 'loud' for 'log_level'", NULL };
    cr_assert(find_line(log, pats, line, sizeof(line), 0), "in %s", log);
    check_head(line, "cessna-supervisor", "error");
    cr_assert(strstr(line, " msg=\"cannot start\" error=\""), "%s", line);
}

/* /proc/PID/cmdline up to its first NUL. */
static void cmdline(pid_t pid, char *out, size_t cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s: %s", path, strerror(errno));
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
}

static void comm(pid_t pid, char *out, size_t cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f && fgets(out, (int)cap, f), "%s", path);
    fclose(f);
    out[strcspn(out, "\n")] = 0;
}

/* The zygote, each worker and a hot standby have titles of their own (sandbox on), and a
 * standby that takes over is titled as the worker it became. */
Test(logs, worker_process_titles, .timeout = 60)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char out[4096], want[128], got[512], name[32];

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "standby = hot\nsnapshot_interval_ms = 50\n"
                 "hibernate_after_ms = 0\n");
    struct cessna_ep *a = t_ep_connect(&e), *b = t_ep_connect(&e);
    uint64_t ids[2] = { cessna_ep_session_id(a), cessna_ep_session_id(b) };
    round_trip(a, "a", 1);
    round_trip(b, "b", 1);

    t_ctl(&e, "stats", out, sizeof(out));
    pid_t zygote = (pid_t)t_field(out, "zygote_pid");
    cr_assert(zygote > 0, "%s", out);
    cmdline(zygote, got, sizeof(got));
    cr_assert_str_eq(got, "cessna-worker zygote app=passthrough");
    comm(zygote, name, sizeof(name));
    cr_assert_str_eq(name, "cessna-zygote");

    for (int i = 0; i < 2; i++) {
        char q[64], line[1024];
        long start = t_now_ms();
        pid_t worker, standby;
        snprintf(q, sizeof(q), "id=%llu ", (unsigned long long)ids[i]);
        do {   /* the standby comes with the first snapshot */
            usleep(50000);
            t_ctl(&e, "sessions", out, sizeof(out));
            const char *l = strstr(out, q);
            cr_assert(l, "%s", out);
            snprintf(line, sizeof(line), "%.*s", (int)strcspn(l, "\n"), l);
            worker = (pid_t)t_field(line, "worker");
            standby = (pid_t)t_field(line, "standby");
        } while (standby <= 0 && t_now_ms() - start < 10000);
        cr_assert(worker > 0 && standby > 0, "%s", line);
        snprintf(want, sizeof(want), "cessna-worker session=%llu", (unsigned long long)ids[i]);
        cmdline(worker, got, sizeof(got));
        cr_assert_str_eq(got, want);
        comm(worker, name, sizeof(name));
        cr_assert_str_eq(name, "cessna-worker");
        snprintf(want, sizeof(want), "cessna-worker session=%llu standby", (unsigned long long)ids[i]);
        cmdline(standby, got, sizeof(got));
        cr_assert_str_eq(got, want);
        comm(standby, name, sizeof(name));
        cr_assert_str_eq(name, "cessna-standby");
    }

    /* Kill a's worker: its standby takes over and is titled as a worker again. */
    char cmd[64], line[1024];
    snprintf(cmd, sizeof(cmd), "id=%llu ", (unsigned long long)ids[0]);
    t_ctl(&e, "sessions", out, sizeof(out));
    snprintf(line, sizeof(line), "%.*s", (int)strcspn(strstr(out, cmd), "\n"), strstr(out, cmd));
    pid_t standby = (pid_t)t_field(line, "standby");
    snprintf(cmd, sizeof(cmd), "kill-worker %llu", (unsigned long long)ids[0]);
    t_ctl(&e, cmd, out, sizeof(out));
    round_trip(a, "after", 5);
    snprintf(cmd, sizeof(cmd), "id=%llu ", (unsigned long long)ids[0]);
    t_ctl(&e, "sessions", out, sizeof(out));
    snprintf(line, sizeof(line), "%.*s", (int)strcspn(strstr(out, cmd), "\n"), strstr(out, cmd));
    cr_assert_eq((pid_t)t_field(line, "worker"), standby, "the standby took over: %s", line);
    snprintf(want, sizeof(want), "cessna-worker session=%llu", (unsigned long long)ids[0]);
    cmdline(standby, got, sizeof(got));
    cr_assert_str_eq(got, want);
    comm(standby, name, sizeof(name));
    cr_assert_str_eq(name, "cessna-worker");

    cessna_ep_close(a, 5000);
    cessna_ep_close(b, 5000);
    cessna_ep_free(a);
    cessna_ep_free(b);
    t_edge_stop(&e);
}
