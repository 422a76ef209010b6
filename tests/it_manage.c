/* it_manage.c - what an operator meets managing an edge (issue 9, item 3): SIGTERM drains
 * (sessions that can move move, the others get CLOSE after their last outputs, then exit 0),
 * a second SIGTERM or SIGINT stops at once, SIGHUP reloads the run-time keys without
 * dropping a session, --check loads the app and checks the directories, and relative paths
 * in the file resolve against its directory. Real signals to real supervisors, real
 * sessions on loopback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "t_world.h"

TestSuite(manage, .timeout = 60);

/* ---- helpers ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0, "write %s", path);
}

/* One message there and back. */
static void echo_once(struct cessna_ep *ep, const char *msg)
{
    const void *data;

    cr_assert_eq(cessna_ep_send(ep, msg, strlen(msg)), 0, "send: %s", cessna_ep_error(ep));
    long n = cessna_ep_recv(ep, &data);
    cr_assert_eq(n, (long)strlen(msg), "echo of '%s': %ld (%s)", msg, n, cessna_ep_error(ep));
    cr_assert(memcmp(data, msg, strlen(msg)) == 0, "echo of '%s' differs", msg);
}

/* Run the supervisor with args in cwd; its exit status, stdout+stderr into out. */
static int run_sup(const char *cwd, const char *cfg, int check, char *out, size_t len)
{
    char outfile[300];
    int status;

    snprintf(outfile, sizeof(outfile), "%s/run.out", t_tmpdir());
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork");
    if (pid == 0) {
        int fd = open(outfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        if (chdir(cwd) == -1)
            _exit(126);
        execl(t_bin("cessna-supervisor"), "cessna-supervisor", "-c", cfg,
              check ? "--check" : NULL, (char *)NULL);
        _exit(127);
    }
    status = t_wait(pid, 20000);
    cr_assert_neq(status, -1, "cessna-supervisor did not finish");
    FILE *f = fopen(outfile, "r");
    size_t n = f ? fread(out, 1, len - 1, f) : 0;
    out[n] = 0;
    if (f)
        fclose(f);
    return status;
}

/* A config in a fresh directory: "[edge]" + listen/server + extra. */
static const char *config_in(char *dir, size_t dlen, const char *extra)
{
    static char cfg[600];
    char text[2048];

    snprintf(dir, dlen, "%s", t_tmpdir());
    snprintf(cfg, sizeof(cfg), "%s/edge.ini", dir);
    snprintf(text, sizeof(text), "[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\n%s", extra);
    write_file(cfg, text);
    return cfg;
}

static void expect_check_fails(const char *extra, const char *want1, const char *want2)
{
    char dir[256], out[4096];
    const char *cfg = config_in(dir, sizeof(dir), extra);
    int st = run_sup("/", cfg, 1, out, sizeof(out));

    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2, "--check of [%s] exited %#x: %s", extra,
              st, out);
    cr_expect(!strstr(out, ": ok"), "--check said ok for [%s]", extra);
    cr_expect(strstr(out, want1), "--check of [%s] should name '%s': %s", extra, want1, out);
    cr_expect(strstr(out, want2), "--check of [%s] should say '%s': %s", extra, want2, out);
}

/* ---- SIGTERM ---- */

Test(manage, sigterm_without_sessions_exits_at_once)
{
    struct t_echo_ep srv;
    struct t_edge e;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    long t0 = t_now_ms();
    kill(e.sup.pid, SIGTERM);
    int st = t_wait(e.sup.pid, 1500);
    long ms = t_now_ms() - t0;
    cr_assert_neq(st, -1, "an idle supervisor did not exit on SIGTERM");
    e.sup.pid = 0;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
    cr_expect_lt(ms, 500, "an empty drain took %ld ms", ms);
    cr_expect(file_count(e.sup.log, "msg=\"drained: no session left, stopping\" moved=0 "
                         "closed=0") == 1, "the log says what the drain did (%s)", e.sup.log);
}

/* Sessions whose client has no other edge get CLOSE once every output is out: the echoes
 * in flight when the signal arrives all reach the client, then the session ends cleanly
 * at both endpoints, and the supervisor exits 0 saying how many it closed. */
Test(manage, sigterm_closes_sessions_after_their_last_outputs)
{
    struct t_echo_ep srv;
    struct t_edge e;
    enum { MSGS = 50 };
    char msg[64];
    const void *data;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    struct cessna_ep *busy = t_ep_connect(&e), *idle = t_ep_connect(&e);
    echo_once(idle, "hello");
    for (int i = 0; i < MSGS; i++) {
        snprintf(msg, sizeof(msg), "message %03d", i);
        cr_assert_eq(cessna_ep_send(busy, msg, strlen(msg)), 0, "send %d", i);
    }
    long t0 = t_now_ms();
    kill(e.sup.pid, SIGTERM);   /* with the echoes on their way */
    for (int i = 0; i < MSGS; i++) {
        snprintf(msg, sizeof(msg), "message %03d", i);
        long n = cessna_ep_recv(busy, &data);
        cr_assert_eq(n, (long)strlen(msg), "echo %d after SIGTERM: %ld (%s)", i, n,
                     cessna_ep_error(busy));
        cr_assert(memcmp(data, msg, (size_t)n) == 0, "echo %d differs", i);
    }
    cr_expect_eq(cessna_ep_recv(busy, &data), CESSNA_EP_CLOSED, "then CLOSE (%s)",
                 cessna_ep_error(busy));
    cr_expect_eq(cessna_ep_recv(idle, &data), CESSNA_EP_CLOSED, "the idle one gets CLOSE (%s)",
                 cessna_ep_error(idle));
    int st = t_wait(e.sup.pid, 5000);
    long ms = t_now_ms() - t0;
    cr_assert_neq(st, -1, "the supervisor did not exit after its sessions closed");
    e.sup.pid = 0;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
    cr_expect_lt(ms, 2000, "draining two quiet sessions took %ld ms", ms);
    for (long t1 = t_now_ms(); srv.closes < 2 && t_now_ms() - t1 < 3000; usleep(10000))
        ;
    cr_expect_eq(srv.closes, 2, "the server endpoint saw both sessions end with CLOSE");
    cr_expect_eq(file_count(e.sup.log, "msg=\"draining: closed\" why=\"its client has no "
                            "other edge\""), 2, "log: %s", e.sup.log);
    cr_expect_eq(file_count(e.sup.log, "moved=0 closed=2 "), 1, "the last line counts them");
    cessna_ep_free(busy);
    cessna_ep_free(idle);
}

struct chatter {
    struct cessna_ep *ep;
    volatile int stop, echoes;
};

static void *chat(void *arg)
{
    struct chatter *c = arg;
    const void *data;

    while (!c->stop) {
        if (cessna_ep_send(c->ep, "tick", 4) < 0 || cessna_ep_recv(c->ep, &data) != 4)
            break;
        c->echoes++;
        usleep(40000);
    }
    return NULL;
}

/* A session that never goes quiet holds a drain up to drain_timeout_ms; a second SIGTERM
 * (or SIGINT) ends the wait at once. */
static void second_signal_stops(int second)
{
    struct t_echo_ep srv;
    struct t_edge e;
    struct chatter c = { 0 };
    pthread_t th;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    c.ep = t_ep_connect(&e);
    /* Once the edge is gone the chatter's last round trip looks for another edge; with one
     * edge only, a short search lets the thread end (60 s by default: the test's timeout). */
    cessna_ep_set_resume_timeout(c.ep, 2000);
    pthread_create(&th, NULL, chat, &c);
    while (c.echoes < 3)
        usleep(10000);
    kill(e.sup.pid, SIGTERM);
    cr_expect_eq(t_wait(e.sup.pid, 800), -1, "a drain stopped while its session was busy");
    int before = c.echoes;
    cr_expect_gt(before, 3, "the busy session goes on while the drain waits");
    long t0 = t_now_ms();
    kill(e.sup.pid, second);
    int st = t_wait(e.sup.pid, 1500);
    cr_assert_neq(st, -1, "the second signal did not stop the supervisor");
    e.sup.pid = 0;
    cr_expect_lt(t_now_ms() - t0, 1000, "stopping took %ld ms", t_now_ms() - t0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
    cr_expect_eq(file_count(e.sup.log, "msg=\"stopping on signal\""), 1, "log: %s", e.sup.log);
    c.stop = 1;
    pthread_join(th, NULL);
    cessna_ep_free(c.ep);
}

Test(manage, second_sigterm_stops_at_once) { second_signal_stops(SIGTERM); }
Test(manage, sigint_during_a_drain_stops_at_once) { second_signal_stops(SIGINT); }

Test(manage, sigint_stops_at_once)
{
    struct t_echo_ep srv;
    struct t_edge e;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, NULL);
    struct cessna_ep *ep = t_ep_connect(&e);
    echo_once(ep, "x");
    kill(e.sup.pid, SIGINT);
    int st = t_wait(e.sup.pid, 1000);
    cr_assert_neq(st, -1, "SIGINT did not stop the supervisor at once");
    e.sup.pid = 0;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
    cr_expect_eq(file_count(e.sup.log, "draining"), 0, "SIGINT does not drain");
    cessna_ep_free(ep);
}

/* Clients with other edges, a server proxy that stores snapshots: SIGTERM moves every
 * session, and the clients' bytes are those of a run without it. */
Test(manage, sigterm_moves_sessions_whose_clients_have_other_edges, .timeout = 120)
{
    static struct world clean, w;
    static const struct w_opts o = { .edges = 2, .sessions = 3, .rounds = 200 };
    struct w_clients c;
    char log[512];

    world_start(&clean, &o);
    run_clients(&clean, &c);
    join_clients(&clean, &c);
    wait_server_transcripts(&clean);
    world_stop(&clean);

    world_start(&w, &o);
    run_clients(&w, &c);
    cr_assert_eq(wait_rounds(&w, 30, 30000), 0, "the clients did not get going");
    cr_assert_eq(edge_stat(&w, 0, "sessions"), 3, "every session opens at the first edge");
    kill(w.edge[0].pid, SIGTERM);
    int st = t_wait(w.edge[0].pid, 20000);
    cr_assert_neq(st, -1, "the edge did not exit after SIGTERM");
    w.edge[0].pid = 0;
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %#x", st);
    edge_log(&w, 0, log, sizeof(log));
    cr_expect_eq(file_count(log, "msg=\"moved off this edge\""), 3, "log: %s", log);
    cr_expect_eq(file_count(log, "moved=3 closed=0 "), 1, "the last line counts them: %s", log);
    join_clients(&w, &c);
    wait_server_transcripts(&w);
    world_stop(&w);
    compare(&clean, &w);
}

/* ---- SIGHUP ---- */

static void edge_config(const struct t_edge *e, const char *server, const char *app,
                        const char *extra)
{
    char cfg[600], text[2048];

    snprintf(cfg, sizeof(cfg), "%s/edge.ini", e->dir);
    snprintf(text, sizeof(text), "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = %s\n"
             "state_dir = %s/state\ncontrol = %s\n%s", server, app, e->dir, e->control, extra);
    write_file(cfg, text);
}

static void hup(struct t_edge *e, const char *needle, int n)
{
    kill(e->sup.pid, SIGHUP);
    cr_assert(file_wait_count(e->sup.log, needle, n, 3000), "no '%s' (#%d) after SIGHUP (log: %s)",
              needle, n, e->sup.log);
}

static int can_connect(const struct t_edge *e, char *err, size_t len)
{
    struct cessna_ep *ep = cessna_ep_connect(e->sup.addr, err, len);

    if (!ep)
        return 0;
    cessna_ep_close(ep, 1000);
    cessna_ep_free(ep);
    return 1;
}

Test(manage, sighup_reloads_limits_and_timeouts_without_dropping_sessions)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[512], line[2048];
    const void *data;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "max_sessions = 4\n");
    struct cessna_ep *a = t_ep_connect(&e);
    echo_once(a, "before");

    /* Lower max_sessions; also a key that needs a restart (an app change is it_reload_app's). */
    edge_config(&e, srv.addr, t_app("passthrough"), "max_sessions = 1\nstandby = hot\n");
    hup(&e, "msg=\"configuration reloaded\"", 1);
    file_last_line(e.sup.log, "msg=\"configuration reloaded\"", line, sizeof(line));
    cr_expect(strstr(line, "applied=\"max_sessions\""), "applied: %s", line);
    file_last_line(e.sup.log, "msg=\"reload: not applied", line, sizeof(line));
    cr_expect(strstr(line, "level=warn") && strstr(line, "standby") && !strstr(line, "app ("),
              "not applied: %s", line);
    cr_expect(!can_connect(&e, err, sizeof(err)), "max_sessions = 1 refuses a second session");
    cr_expect(strstr(err, "max_sessions=1"), "the refusal names the limit: %s", err);
    echo_once(a, "after the first reload");

    /* A broken file: logged, and the running configuration stays. */
    edge_config(&e, srv.addr, t_app("passthrough"), "max_sessions = lots\n");
    hup(&e, "the running one stays", 1);
    file_last_line(e.sup.log, "the running one stays", line, sizeof(line));
    cr_expect(strstr(line, "level=error") && strstr(line, "edge.ini:7: bad value 'lots'"),
              "the error names file, line and cause: %s", line);
    cr_expect(!can_connect(&e, err, sizeof(err)), "the old max_sessions = 1 still holds");
    echo_once(a, "after the broken file");

    /* Raise it again and turn idle_timeout_ms on: both apply to the live session too. */
    edge_config(&e, srv.addr, t_app("passthrough"), "max_sessions = 4\nidle_timeout_ms = 400\n");
    hup(&e, "msg=\"configuration reloaded\"", 2);
    file_last_line(e.sup.log, "msg=\"configuration reloaded\"", line, sizeof(line));
    cr_expect(strstr(line, "max_sessions") && strstr(line, "idle_timeout_ms"), "%s", line);
    struct cessna_ep *b = t_ep_connect(&e);
    echo_once(b, "a second session");
    echo_once(a, "the first one is still here");
    long n = cessna_ep_recv(a, &data);
    cr_expect_eq(n, -ECONNABORTED, "the idle session ended: %ld (%s)", n, cessna_ep_error(a));
    cr_expect(strstr(cessna_ep_error(a), "idle"), "with the idle error: %s", cessna_ep_error(a));

    /* More than the slots made at start is not applied, and says why. */
    edge_config(&e, srv.addr, t_app("passthrough"), "max_sessions = 1000\n");
    hup(&e, "msg=\"configuration reloaded\"", 3);
    file_last_line(e.sup.log, "msg=\"reload: not applied", line, sizeof(line));
    cr_expect(strstr(line, "max_sessions (1000 is more than the 4 slots"), "%s", line);
    cr_expect_eq(waitpid(e.sup.pid, NULL, WNOHANG), 0, "the supervisor runs on");
    cessna_ep_free(a);
    cessna_ep_free(b);
    t_edge_stop(&e);
}

/* ---- --check and relative paths ---- */

Test(manage, check_loads_the_app_and_checks_directories)
{
    char extra[2048], dir[256];
    const char *notelf = "/tmp/cessna-manage-notelf.so";

    /* ok: everything there */
    snprintf(dir, sizeof(dir), "%s", t_tmpdir());
    snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s/new/state\ncache_dir = %s\n",
             t_app("passthrough"), dir, dir);
    char cdir[256], out[4096];
    const char *cfg = config_in(cdir, sizeof(cdir), extra);
    int st = run_sup("/", cfg, 1, out, sizeof(out));
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, ": ok"), "ok config: %#x %s",
              st, out);

    /* an app that does not load, and a real library that is no CESSNA app */
    write_file(notelf, "not an ELF file\n");
    snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s\n", notelf, dir);
    expect_check_fails(extra, "app", notelf);
    static const char *const libs[] = { "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib/aarch64-linux-gnu/libz.so.1", "/lib64/libz.so.1" };
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
        if (access(libs[i], R_OK) == 0) {
            snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s\n", libs[i], dir);
            expect_check_fails(extra, "app", "cessna_app");
            break;
        }
    }

    /* state_dir: a file, and under a file */
    char file[300];
    snprintf(file, sizeof(file), "%s/afile", dir);
    write_file(file, "x\n");
    snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s\n", t_app("passthrough"), file);
    expect_check_fails(extra, "state_dir", "not a directory");
    snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s/state\n", t_app("passthrough"), file);
    expect_check_fails(extra, "state_dir", "cannot be created");

    /* cache_dir missing, edge_secret_file missing */
    snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s\ncache_dir = %s/nocache\n",
             t_app("passthrough"), dir, dir);
    expect_check_fails(extra, "cache_dir", "No such file or directory");
    snprintf(extra, sizeof(extra), "app = %s\nstate_dir = %s\nedge_secret_file = %s/nosecret\n",
             t_app("passthrough"), dir, dir);
    expect_check_fails(extra, "edge_secret_file", "No such file or directory");
    unlink(notelf);
}

/* app = passthrough.so next to the file, state_dir = state: found from any working directory. */
Test(manage, relative_paths_resolve_against_the_config_file)
{
    char dir[256], cmd[1024], out[4096], so[300], cfg[300], text[1024];
    struct t_echo_ep srv;
    struct t_proc p;
    struct stat st;

    t_echo_ep_start(&srv);
    snprintf(dir, sizeof(dir), "%s", t_tmpdir());
    snprintf(so, sizeof(so), "%s/passthrough.so", dir);
    snprintf(cmd, sizeof(cmd), "cp %s %s", t_app("passthrough"), so);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    mkdir(strcat(strcpy(out, dir), "/cache"), 0755);
    snprintf(cfg, sizeof(cfg), "%s/edge.ini", dir);
    snprintf(text, sizeof(text), "[edge]\nlisten = 127.0.0.1:0\nserver = %s\napp = passthrough.so\n"
             "state_dir = state\ncache_dir = ./cache\n", srv.addr);
    write_file(cfg, text);

    int rc = run_sup("/", cfg, 1, out, sizeof(out));
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "--check from /: %#x %s", rc, out);

    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    t_start(&p, t_tmpdir(), "supervisor", argv);   /* from the tests' working directory */
    snprintf(out, sizeof(out), "%s/state", dir);
    cr_expect(stat(out, &st) == 0 && S_ISDIR(st.st_mode), "state_dir made at %s", out);
    snprintf(out, sizeof(out), "%s/state/control.sock", dir);
    cr_expect(stat(out, &st) == 0 && S_ISSOCK(st.st_mode), "the control socket at %s", out);
    struct t_edge e = { .sup = p };
    struct cessna_ep *ep = t_ep_connect(&e);
    echo_once(ep, "through the app next to the file");
    cessna_ep_free(ep);
    cr_expect(file_count(p.log, so) >= 1, "the log names the resolved app %s", so);
    t_stop(&p);
}

/* `systemctl restart`: an edge stopped by SIGTERM (or SIGINT) frees its port before it exits,
 * so the next one binds it at once (the ring's accept held the listener until the kernel
 * tore the ring down after the exit: every second restart failed with EADDRINUSE). */
Test(manage, a_stopped_edge_restarts_on_its_port_at_once)
{
    struct t_echo_ep srv;
    char dir[300], cfg[400], text[1024];
    int port = w_free_port();

    t_echo_ep_start(&srv);
    snprintf(dir, sizeof(dir), "%s", t_tmpdir());
    snprintf(cfg, sizeof(cfg), "%s/edge.ini", dir);
    snprintf(text, sizeof(text), "[edge]\nlisten = 127.0.0.1:%d\nserver = %s\napp = %s\n"
             "state_dir = %s/state\n", port, srv.addr, t_app("passthrough"), dir);
    write_file(cfg, text);
    for (int i = 0; i < 8; i++) {
        struct t_proc p;
        char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
        t_start(&p, dir, "supervisor", argv);   /* fails the test when it does not start */
        if (i % 4 == 0) {   /* with a session, and without */
            struct t_edge e = { .sup = p };
            struct cessna_ep *ep = t_ep_connect(&e);
            const void *got;
            cr_assert_eq(cessna_ep_send(ep, "x", 1), 0);
            cr_assert_eq(cessna_ep_recv(ep, &got), 1, "restart %d: %s", i, cessna_ep_error(ep));
            cessna_ep_free(ep);   /* the connection is still open when the edge stops */
        }
        kill(p.pid, i % 2 ? SIGINT : SIGTERM);
        int st = -1;   /* blocking: the next start follows the exit at once, as in a shell */
        cr_assert_eq(waitpid(p.pid, &st, 0), p.pid);
        cr_assert(WIFEXITED(st), "restart %d: the edge did not stop", i);
        p.pid = 0;
        close(p.out_fd);
    }
    /* The proxies too (they end by the signal's default action, after freeing the port). */
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", w_free_port());
    for (int i = 0; i < 6; i++) {
        struct t_proc p;
        char *argv[] = { (char *)t_bin(i % 2 ? "cessna-server-proxy" : "cessna-client-proxy"),
                         "--listen", listen, i % 2 ? "--target" : "--edge", "127.0.0.1:1", NULL };
        t_start(&p, dir, "proxy", argv);
        kill(p.pid, SIGTERM);
        int st = -1;
        cr_assert_eq(waitpid(p.pid, &st, 0), p.pid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "proxy %d: status %#x", i, st);
        close(p.out_fd);
    }
}
