/* it_remote_attack.c - integration: hostile or unlucky peers around remote recovery (a
 * client's RESUME at an edge). Raw frames on loopback against a real supervisor; the
 * "server endpoint" is a socket the test holds. */
#include <criterion/criterion.h>
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

    /* The owner's RESUME reaches the server endpoint with the owner's token. */
    int srv = accept_within(lfd, 3000);
    if (srv < 0) {
        long n = t_read_frame(owner, fbuf, sizeof(fbuf), 1000);
        if (n > 0 && wire_next(fbuf, (size_t)n, sizeof(fbuf), &f) == n && f.type == WIRE_ERROR)
            cr_assert_fail("the owner was refused: code %u: %.*s", f.u.error.code,
                           (int)f.u.error.text_len, f.u.error.text);
        cr_assert_fail("the owner's RESUME never reached the server endpoint");
    }
    long n = t_read_frame(srv, fbuf, sizeof(fbuf), 3000);
    cr_assert(n > 0 && wire_next(fbuf, (size_t)n, sizeof(fbuf), &f) == n);
    cr_assert_eq(f.type, WIRE_RESUME);
    cr_assert_eq(f.u.resume.session_id, SID);
    cr_assert_eq(memcmp(f.u.resume.token, token, WIRE_TOKEN_LEN), 0,
                 "the server endpoint is asked with the owner's token");
    close(srv);
    close(owner);
    close(evil);
    close(lfd);
    t_edge_stop(&e);
}
