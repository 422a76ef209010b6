/* it_remote_attack.c - integration: hostile or unlucky peers around remote recovery (a
 * client's RESUME at an edge). Raw frames on loopback against a real supervisor; the
 * "server endpoint" is a socket the test holds. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "cessna_endpoint.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(remote_attack, .timeout = 30);

#define SID 4242424242ull
static const uint8_t token[WIRE_TOKEN_LEN] = "client-cred-0001";
static const uint8_t wrong_token[WIRE_TOKEN_LEN] = "client-cred-XXXX";
static uint8_t fbuf[1 << 17];

static int listen_any(char *addr, size_t len)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 16), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    snprintf(addr, len, "127.0.0.1:%u", ntohs(sa.sin_port));
    return fd;
}

static int accept_within(int lfd, int timeout_ms)
{
    struct pollfd p = { .fd = lfd, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static int client_resume(const char *addr, uint64_t id, const uint8_t *tok, int end)
{
    uint8_t buf[WIRE_RESUME_MAX];
    int fd = t_connect(addr);

    t_write_all(fd, buf, wire_put_resume(buf, id, tok, 1, 0, 1, 0, NULL, 0));
    if (end)
        t_write_all(fd, buf, wire_put_empty(buf, WIRE_RESUME_END));
    return fd;
}

/* An attacker who knows only a session's id (it travels in the clear, the token is the
 * secret) sends a RESUME with a wrong token and holds it open. The owner's RESUME at the
 * same edge must not be refused with AUTH, which a client endpoint takes as final (it
 * resets its session): it goes on to the server endpoint, which checks the token. */
Test(remote_attack, unverified_resume_does_not_lock_the_owner_out)
{
    char saddr[64];
    struct t_edge e;
    struct wire_frame f;
    int lfd = listen_any(saddr, sizeof(saddr));

    t_edge_start(&e, t_app("passthrough"), saddr, "connect_timeout_ms = 20000\n");
    int evil = client_resume(e.sup.addr, SID, wrong_token, 0);
    usleep(200 * 1000);   /* the edge holds the attacker's resume, gathering */
    int owner = client_resume(e.sup.addr, SID, token, 1);

    /* The owner's RESUME reaches the server endpoint with the owner's token (the edge asks
     * at once for each RESUME, so the attacker's may come first: the server endpoint, which
     * knows the verifier, is the one that refuses it). */
    int found = 0, srv[2] = { -1, -1 };
    for (int k = 0; k < 2 && !found; k++) {
        srv[k] = accept_within(lfd, 3000);
        if (srv[k] < 0)
            break;
        long n = t_read_frame(srv[k], fbuf, sizeof(fbuf), 3000);
        cr_assert(n > 0 && wire_next(fbuf, (size_t)n, sizeof(fbuf), &f) == n);
        cr_assert_eq(f.type, WIRE_RESUME);
        cr_assert_eq(f.u.resume.session_id, SID);
        found = memcmp(f.u.resume.token, token, WIRE_TOKEN_LEN) == 0;
    }
    if (!found) {
        long n = t_read_frame(owner, fbuf, sizeof(fbuf), 1000);
        if (n > 0 && wire_next(fbuf, (size_t)n, sizeof(fbuf), &f) == n && f.type == WIRE_ERROR)
            cr_assert_fail("the owner was refused: code %u: %.*s", f.u.error.code,
                           (int)f.u.error.text_len, f.u.error.text);
        cr_assert_fail("the owner's RESUME never reached the server endpoint");
    }
    for (int k = 0; k < 2; k++)
        if (srv[k] >= 0)
            close(srv[k]);
    close(owner);
    close(evil);
    close(lfd);
    t_edge_stop(&e);
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Before anyone checked its token, a RESUME's kept messages must not be taken into the
 * edge's memory: the edge reads nothing more from that client until the server endpoint
 * answered RESUME_INFO (here it never answers), and even then at most
 * 2 x max_held_bytes + max_message_bytes per side. */
struct flood { int fd; volatile size_t sent; };

static void *flood_main(void *p)
{
    struct flood *fl = p;
    static uint8_t msg[WIRE_DATA_HDR_LEN + (60u << 10)];

    for (uint64_t seq = 1; seq <= 4096; seq++) {   /* 240 MiB of "kept" messages */
        wire_put_data_hdr(msg, seq, 60u << 10);
        if (send(fl->fd, msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg))
            break;
        fl->sent += sizeof(msg);
    }
    return NULL;
}

Test(remote_attack, unchecked_resume_memory_is_bounded)
{
    char saddr[64];
    struct t_edge e;
    int lfd = listen_any(saddr, sizeof(saddr));
    uint8_t buf[WIRE_RESUME_MAX];
    struct flood fl = { .fd = -1 };
    pthread_t th;

    /* The server endpoint never answers: the resume stays unchecked for 20 s. */
    t_edge_start(&e, t_app("passthrough"), saddr,
                 "connect_timeout_ms = 20000\nmax_message_bytes = 65536\nmax_held_bytes = 16777216\n");
    long before = rss_kb(e.sup.pid);
    fl.fd = t_connect(e.sup.addr);
    t_write_all(fl.fd, buf, wire_put_resume(buf, SID, wrong_token, 1, 0, 1ull << 40, 0, NULL, 0));
    pthread_create(&th, NULL, flood_main, &fl);
    sleep(2);   /* an edge that reads what it is sent has most of the 240 MiB by now */
    long after = rss_kb(e.sup.pid);
    cr_log_info("sent %zu MiB in 2 s; edge RSS %ld -> %ld KiB", (size_t)fl.sent >> 20, before,
                after);
    shutdown(fl.fd, SHUT_RDWR);   /* unblocks the sender */
    pthread_join(th, NULL);
    cr_expect_lt(after - before, 64 << 10, "edge RSS grew by %ld KiB for one unchecked resume",
                 after - before);
    close(fl.fd);
    close(lfd);
    t_edge_stop(&e);
}

static int nfds(pid_t pid)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int files_in(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        return 0;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void expect_error(int fd, uint32_t code)
{
    struct wire_frame f;
    long n = t_read_frame(fd, fbuf, sizeof(fbuf), 5000);

    cr_assert(n > 0, "an ERROR expected, got %s", n == 0 ? "EOF" : strerror((int)-n));
    cr_assert_eq(wire_next(fbuf, (size_t)n, sizeof(fbuf), &f), n);
    cr_assert_eq(f.type, WIRE_ERROR, "got %s", wire_type_name(f.type));
    cr_assert_eq(f.u.error.code, code, "code %u: %.*s", f.u.error.code,
                 (int)f.u.error.text_len, f.u.error.text);
}

/* A RESUME and then garbage: a PROTO error for that connection, nothing else hurt. */
Test(remote_attack, resume_then_garbage_hurts_no_one_else)
{
    struct t_echo_ep srv;
    struct t_edge e;
    uint8_t junk[64];
    const void *got;

    t_echo_ep_start(&srv);
    t_edge_start(&e, t_app("passthrough"), srv.addr, "");
    struct cessna_ep *good = t_ep_connect(&e);
    cr_assert_eq(cessna_ep_send(good, "ping", 4), 0);
    cr_assert_eq(cessna_ep_recv(good, &got), 4);
    int fds = nfds(e.sup.pid);

    for (int i = 0; i < 20; i++) {
        /* One write, so the edge reads the garbage with the RESUME: written later, the
         * server endpoint's refusal of the unknown session may come first (a busy CI). */
        uint8_t msg[WIRE_RESUME_MAX + sizeof(junk)];
        size_t n = wire_put_resume(msg, SID + (uint64_t)i, token, 1, 0, 1, 0, NULL, 0);
        int fd = t_connect(e.sup.addr);
        t_fill(junk, sizeof(junk), (uint64_t)i + 1);
        memcpy(msg + n, junk, sizeof(junk));
        t_write_all(fd, msg, n + sizeof(junk));
        expect_error(fd, WIRE_ERR_PROTO);
        close(fd);
    }
    cr_assert_eq(cessna_ep_send(good, "pong", 4), 0);
    cr_assert_eq(cessna_ep_recv(good, &got), 4, "%s", cessna_ep_error(good));
    usleep(200 * 1000);
    cr_expect_eq(nfds(e.sup.pid), fds, "the edge's fds: %d before, %d after", fds,
                 nfds(e.sup.pid));
    cessna_ep_close(good, 2000);
    cessna_ep_free(good);
    t_edge_stop(&e);
}

/* A server endpoint that grants the resume and then lies: a 4 GiB snapshot that ends after
 * one piece. The client hears an error, the partial file is gone, no fd is left open. */
Test(remote_attack, server_snapshot_that_lies_about_its_size)
{
    char saddr[64], dir[400];
    struct t_edge e;
    static uint8_t piece[WIRE_SNAP_PUT_HDR_LEN + 4096];
    uint8_t buf[64];
    int lfd = listen_any(saddr, sizeof(saddr));

    t_edge_start(&e, t_app("passthrough"), saddr, "");
    int fds = nfds(e.sup.pid);
    int cli = client_resume(e.sup.addr, SID, token, 1);
    int srv = accept_within(lfd, 3000);
    cr_assert(srv >= 0);
    cr_assert(t_read_frame(srv, fbuf, sizeof(fbuf), 3000) > 0);
    t_write_all(srv, buf, wire_put_resume_info(buf, 2, 0, 1, 0));
    wire_put_snap_put_hdr(piece, 5, 0, 4ull << 30, 0, 4096);
    t_write_all(srv, piece, sizeof(piece));
    t_write_all(srv, buf, wire_put_empty(buf, WIRE_RESUME_END));
    expect_error(cli, WIRE_ERR_PROTO);
    close(cli);
    close(srv);
    usleep(300 * 1000);
    snprintf(dir, sizeof(dir), "%s/state/%llu", e.dir, SID);
    cr_expect_eq(files_in(dir), 0, "the partial snapshot is removed");
    cr_expect_eq(nfds(e.sup.pid), fds, "the edge's fds: %d before, %d after", fds,
                 nfds(e.sup.pid));
    close(lfd);
    t_edge_stop(&e);
}
