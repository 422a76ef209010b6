/* it_badinput.c - integration: bad frames, bad config, bad apps. Each gets a clear error,
 * and every other session keeps working. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(badinput, .timeout = 60);

static uint8_t frame[1 << 17];

/* Read the next frame and check it is an ERROR with code and a text containing `text`,
 * followed by the end of the connection. */
static void expect_error_then_close(int fd, uint32_t code, const char *text)
{
    long n = t_read_frame(fd, frame, sizeof(frame), 5000);
    struct wire_frame f;

    cr_assert(n > 0, "expected an ERROR frame, got %s", n == 0 ? "EOF" : strerror((int)-n));
    cr_assert_eq(wire_next(frame, (size_t)n, sizeof(frame), &f), n);
    cr_assert_eq(f.type, WIRE_ERROR, "got a %s frame", wire_type_name(f.type));
    char msg[WIRE_ERROR_MAX + 1];
    snprintf(msg, sizeof(msg), "%.*s", (int)f.u.error.text_len, f.u.error.text);
    cr_assert_eq(f.u.error.code, code, "code %u, text: %s", f.u.error.code, msg);
    cr_assert(strstr(msg, text), "error text '%s' should mention '%s'", msg, text);
    /* then the connection ends */
    t_expect_eof(fd, 5000, "connection closed after ERROR");
}

static int hello(const char *addr)
{
    uint8_t buf[WIRE_RESUME_MAX];
    int fd = t_connect(addr);

    t_write_all(fd, buf, wire_put_hello(buf, WIRE_ROLE_CLIENT, 0, NULL));
    long n = t_read_frame(fd, frame, sizeof(frame), 5000);
    cr_assert(n > 0 && frame[3] == WIRE_WELCOME, "WELCOME expected");
    return fd;
}

static void check_healthy(struct cessna_ep *ep)
{
    const void *got;
    cr_assert_eq(cessna_ep_send(ep, "ping", 4), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), 4, "the healthy session still echoes (%s)",
                 cessna_ep_error(ep));
}

Test(badinput, supervisor_refuses_bad_frames_and_serves_others)
{
    struct t_echo_ep srv;
    struct t_edge e;
    char err[256];
    uint8_t buf[512];
    int fd;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "max_message_bytes = 65536\n");
    struct cessna_ep *good = cessna_ep_connect(e.sup.addr, err, sizeof(err));
    cr_assert(good, "%s", err);
    check_healthy(good);

    /* random bytes instead of HELLO */
    fd = t_connect(e.sup.addr);
    t_fill(buf, 64, 1);
    t_write_all(fd, buf, 64);
    expect_error_then_close(fd, WIRE_ERR_PROTO, "malformed");
    close(fd);

    /* an oversized frame, refused from its header alone */
    fd = hello(e.sup.addr);
    wire_put_hdr(buf, WIRE_DATA, 65536 + WIRE_MAX_OVERHEAD + 1);
    t_write_all(fd, buf, WIRE_HDR_LEN);
    expect_error_then_close(fd, WIRE_ERR_TOO_BIG, "exceeds");
    close(fd);

    /* a message over max_message_bytes inside a frame the limit allows */
    fd = hello(e.sup.addr);
    size_t n = wire_put_data_hdr(frame, 1, 65537);
    memset(frame + n, 'x', 65537);
    t_write_all(fd, frame, n + 65537);
    expect_error_then_close(fd, WIRE_ERR_TOO_BIG, "max_message_bytes");
    close(fd);

    /* a truncated frame: half a DATA frame, then the client stops sending */
    fd = hello(e.sup.addr);
    n = wire_put_data_hdr(buf, 1, 100);
    t_write_all(fd, buf, n + 10);
    shutdown(fd, SHUT_WR);
    expect_error_then_close(fd, WIRE_ERR_PROTO, "truncated");
    close(fd);

    /* a body too short for its type, mid-session */
    fd = hello(e.sup.addr);
    wire_put_hdr(buf, WIRE_DATA, 3);
    t_write_all(fd, buf, WIRE_HDR_LEN + 3);
    expect_error_then_close(fd, WIRE_ERR_PROTO, "malformed");
    close(fd);

    /* a sequence number out of order */
    fd = hello(e.sup.addr);
    n = wire_put_data_hdr(buf, 5, 1);
    buf[n] = 'z';
    t_write_all(fd, buf, n + 1);
    expect_error_then_close(fd, WIRE_ERR_PROTO, "expected 1");
    close(fd);

    /* a frame that makes no sense at this point */
    fd = hello(e.sup.addr);
    t_write_all(fd, buf, wire_put_welcome(buf, 1, buf + 100, 1));
    expect_error_then_close(fd, WIRE_ERR_UNEXPECTED, "WELCOME");
    close(fd);

    /* 200 random garbage connections, some after a valid HELLO */
    for (int i = 0; i < 200; i++) {
        fd = i % 2 ? hello(e.sup.addr) : t_connect(e.sup.addr);
        size_t len = 1 + (size_t)(i * 37 % 300);
        t_fill(buf, len, (uint64_t)i + 100);
        t_write_all(fd, buf, len);
        shutdown(fd, SHUT_WR);
        long r = t_read_frame(fd, frame, sizeof(frame), 5000);
        cr_assert(r > 0 && frame[3] == WIRE_ERROR, "garbage %d answered with ERROR", i);
        close(fd);
    }

    check_healthy(good);
    char out[1024];
    t_ctl(&e, "stats", out, sizeof(out));
    cr_assert(t_field(out, "bad_frames") >= 200, "%s", out);
    cessna_ep_close(good, 5000);
    cessna_ep_free(good);
    t_edge_stop(&e);
}

/* The test plays the edge toward a real server proxy. */
Test(badinput, server_proxy_refuses_bad_frames)
{
    struct t_echo_tcp target;
    struct t_proc sp;
    const char *dir = t_tmpdir();
    uint8_t buf[256];
    int fd;

    t_echo_tcp_start(&target);
    char *argv[] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0", "--target",
                     target.addr, "--max-message-bytes", "65536", NULL };
    t_start(&sp, dir, "server-proxy", argv);

    fd = t_connect(sp.addr);
    t_fill(buf, 100, 7);
    t_write_all(fd, buf, 100);
    expect_error_then_close(fd, WIRE_ERR_PROTO, "");
    close(fd);

    fd = t_connect(sp.addr);
    t_write_all(fd, buf, wire_put_hello_edge(buf, 42, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0));
    cr_assert(t_read_frame(fd, frame, sizeof(frame), 5000) > 0 && frame[3] == WIRE_WELCOME);
    wire_put_hdr(buf, WIRE_OUT, 65536 + WIRE_MAX_OVERHEAD + 1);
    t_write_all(fd, buf, WIRE_HDR_LEN);
    expect_error_then_close(fd, WIRE_ERR_TOO_BIG, "");
    close(fd);

    fd = t_connect(sp.addr);
    t_write_all(fd, buf, wire_put_hello_edge(buf, 43, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0));
    cr_assert(t_read_frame(fd, frame, sizeof(frame), 5000) > 0 && frame[3] == WIRE_WELCOME);
    size_t n = wire_put_out_hdr(buf, 1, NULL, 0, 50);
    t_write_all(fd, buf, n + 5);
    shutdown(fd, SHUT_WR);
    /* A live session's edge that ends mid-frame is lost like a killed one: no ERROR to a
     * peer that hung up; the session waits for a resume. */
    t_expect_eof(fd, 5000, "an edge that ended mid-frame is closed");
    close(fd);
    long r;

    /* and a proper session still works: OUT to the target, its echo back as DATA */
    fd = t_connect(sp.addr);
    t_write_all(fd, buf, wire_put_hello_edge(buf, 44, 1, (const uint8_t[WIRE_VERIFIER_LEN]){0}, NULL, 0));
    cr_assert(t_read_frame(fd, frame, sizeof(frame), 5000) > 0 && frame[3] == WIRE_WELCOME);
    n = wire_put_out_hdr(buf, 1, NULL, 0, 5);
    memcpy(buf + n, "hello", 5);
    t_write_all(fd, buf, n + 5);
    r = t_read_frame(fd, frame, sizeof(frame), 5000);
    struct wire_frame f;
    cr_assert(r > 0 && wire_next(frame, (size_t)r, sizeof(frame), &f) == r);
    cr_assert_eq(f.type, WIRE_DATA);
    cr_assert_eq(f.u.data.seq, 1);
    cr_assert_eq(f.u.data.len, 5);
    cr_assert(memcmp(f.u.data.payload, "hello", 5) == 0);
    close(fd);
    t_stop(&sp);
}

/* The test plays the edge toward a real client proxy. */
Test(badinput, client_proxy_refuses_bad_frames)
{
    struct t_proc cp;
    const char *dir = t_tmpdir();
    char err[256], edge_addr[64];
    int lfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    uint8_t buf[256], token[16] = { 9 };

    cr_assert(lfd >= 0, "%s", err);
    snprintf(edge_addr, sizeof(edge_addr), "127.0.0.1:%d", addr_local_port(lfd));
    char *argv[] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0", "--edge",
                     edge_addr, NULL };
    t_start(&cp, dir, "client-proxy", argv);

    for (int round = 0; round < 3; round++) {
        int client = t_connect(cp.addr);
        int edge = accept(lfd, NULL, NULL);
        cr_assert(edge >= 0);
        long r = t_read_frame(edge, frame, sizeof(frame), 5000);
        cr_assert(r > 0 && frame[3] == WIRE_HELLO, "the proxy opens with HELLO");
        if (round == 0) {           /* garbage instead of WELCOME */
            t_fill(buf, 80, 3);
            t_write_all(edge, buf, 80);
            expect_error_then_close(edge, WIRE_ERR_PROTO, "");
        } else if (round == 1) {    /* an oversized OUT after WELCOME */
            t_write_all(edge, buf, wire_put_welcome(buf, 5, token, 1));
            wire_put_hdr(buf, WIRE_OUT, (1u << 20) + WIRE_MAX_OVERHEAD + 1);
            t_write_all(edge, buf, WIRE_HDR_LEN);
            expect_error_then_close(edge, WIRE_ERR_TOO_BIG, "");
        } else {                    /* a good session: the OUT payload reaches the client */
            t_write_all(edge, buf, wire_put_welcome(buf, 6, token, 1));
            size_t n = wire_put_out_hdr(buf, 1, NULL, 0, 3);
            memcpy(buf + n, "abc", 3);
            t_write_all(edge, buf, n + 3);
            char got[3];
            cr_assert_eq(t_read_n(client, got, 3, 5000), 3);
            cr_assert(memcmp(got, "abc", 3) == 0);
            close(client);
            close(edge);
            break;
        }
        /* the plain client of a refused session is closed */
        t_expect_eof(client, 5000, "plain client closed");
        close(client);
        close(edge);
    }
    close(lfd);
    t_stop(&cp);
}

static void run_expect_failure(const char *config_text, const char *expect)
{
    const char *dir = t_tmpdir();
    char cfg[512], log[512], text[4096] = "";
    int out;

    snprintf(cfg, sizeof(cfg), "%s/edge.ini", dir);
    FILE *f = fopen(cfg, "w");
    fputs(config_text, f);
    fclose(f);
    char *argv[] = { (char *)t_bin("cessna-supervisor"), "-c", cfg, NULL };
    pid_t pid = t_start_raw(dir, "supervisor", argv, &out);
    int status = t_wait(pid, 10000);
    cr_assert(status != -1, "the supervisor should exit");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "it exits nonzero");
    snprintf(log, sizeof(log), "%s/supervisor.log", dir);
    f = fopen(log, "r");
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = 0;
    fclose(f);
    close(out);
    cr_assert(strstr(text, expect), "stderr '%s' should contain '%s'", text, expect);
}

Test(badinput, bad_config_names_file_and_line)
{
    run_expect_failure("[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\nfrobnicate = 3\n",
                       "edge.ini:4: unknown key 'frobnicate'");
    run_expect_failure("[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\napp = x\n"
                       "standby = lukewarm\n", "edge.ini:5: bad value 'lukewarm'");
    run_expect_failure("[edge]\nlisten = 127.0.0.1:0\n", "missing key 'server'");
}

Test(badinput, missing_or_broken_app_module)
{
    char text[512];
    snprintf(text, sizeof(text), "[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\n"
             "app = /nonexistent/app.so\nstate_dir = %s\n", t_tmpdir());
    run_expect_failure(text, "/nonexistent/app.so");
    /* a file that is not a shared object */
    snprintf(text, sizeof(text), "[edge]\nlisten = 127.0.0.1:0\nserver = 127.0.0.1:1\n"
             "app = %s\nstate_dir = %s\ncontrol = %s/c.sock\n", t_bin("cessna-ctl"), t_tmpdir(),
             t_tmpdir());
    run_expect_failure(text, "app module");
}

Test(badinput, app_init_failure_and_crash_are_reported)
{
    struct t_echo_ep srv;
    struct t_edge e1, e2;
    char err[256];
    const void *got;

    t_echo_ep_start(&srv);
    t_edge_start(&e1, t_test_app("failinit"), srv.addr, NULL);
    struct cessna_ep *ep = cessna_ep_connect(e1.sup.addr, err, sizeof(err));
    if (ep) {   /* the failure may come right after WELCOME */
        long n = cessna_ep_recv(ep, &got);
        cr_assert_eq(n, -ECONNABORTED);
        snprintf(err, sizeof(err), "%s", cessna_ep_error(ep));
        cessna_ep_free(ep);
    }
    cr_assert(strstr(err, "init() returned 7"), "error: %s", err);
    t_edge_stop(&e1);

    t_edge_start(&e2, t_test_app("crashy"), srv.addr, NULL);
    struct cessna_ep *ok = cessna_ep_connect(e2.sup.addr, err, sizeof(err));
    ep = cessna_ep_connect(e2.sup.addr, err, sizeof(err));
    cr_assert(ep && ok);
    check_healthy(ep);
    cr_assert_eq(cessna_ep_send(ep, "CRASH", 5), 0);
    cr_assert_eq(cessna_ep_recv(ep, &got), -ECONNABORTED);
    /* It crashes, is recovered, crashes again at the same event: no crash loop. */
    cr_assert(strstr(cessna_ep_error(ep), "signal 11"), "%s", cessna_ep_error(ep));
    cr_assert(strstr(cessna_ep_error(ep), "again at event 4"), "names the event: %s",
              cessna_ep_error(ep));
    cessna_ep_free(ep);
    check_healthy(ok);
    cessna_ep_close(ok, 5000);
    cessna_ep_free(ok);
    t_edge_stop(&e2);
}
