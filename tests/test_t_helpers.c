/* test_t_helpers.c - the socket readers the integration tests rely on (tests/t_helpers.c):
 * a peer that closes and a peer that stays silent must never look the same. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "t_helpers.h"
#include "wire.h"

TestSuite(t_helpers, .timeout = 10);

static void t_pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0, "socketpair: %s", strerror(errno));
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

Test(t_helpers, read_n_timeout_is_not_eof)
{
    int sv[2];
    char buf[8];
    struct timespec t0;

    t_pair(sv);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(t_read_n(sv[0], buf, 1, 200), -ETIMEDOUT, "a silent open peer times out");
    cr_assert_geq(elapsed_ms(&t0), 190, "it waited for the timeout");

    /* Part of the bytes, then silence: still a timeout, and the part is in buf. */
    t_write_all(sv[1], "abc", 3);
    memset(buf, 0, sizeof(buf));
    cr_assert_eq(t_read_n(sv[0], buf, 5, 200), -ETIMEDOUT);
    cr_assert_str_eq(buf, "abc");
    close(sv[0]);
    close(sv[1]);
}

Test(t_helpers, read_n_eof_returns_what_arrived)
{
    int sv[2];
    char buf[8];

    t_pair(sv);
    t_write_all(sv[1], "abc", 3);
    cr_assert_eq(t_read_n(sv[0], buf, 3, 1000), 3);
    t_write_all(sv[1], "de", 2);
    close(sv[1]);
    cr_assert_eq(t_read_n(sv[0], buf, 5, 1000), 2, "short on EOF");
    cr_assert_eq(t_read_n(sv[0], buf, 1, 1000), 0, "then 0: EOF");
    t_expect_eof(sv[0], 1000, "closed peer");
    close(sv[0]);
}

/* The piece that arrived is counted even when less than asked for (the slow-reader test's
 * stream is read this way). */
Test(t_helpers, recv_wait_returns_each_piece)
{
    int sv[2];
    char buf[8];

    t_pair(sv);
    cr_assert_eq(t_recv_wait(sv[0], buf, sizeof(buf), 100), -ETIMEDOUT);
    t_write_all(sv[1], "abc", 3);
    cr_assert_eq(t_recv_wait(sv[0], buf, sizeof(buf), 1000), 3);
    cr_assert_arr_eq(buf, "abc", 3);
    close(sv[1]);
    cr_assert_eq(t_recv_wait(sv[0], buf, sizeof(buf), 1000), 0, "then 0: EOF");
    close(sv[0]);
}

Test(t_helpers, read_frame_tells_eof_timeout_and_torn_frames_apart)
{
    int sv[2];
    uint8_t frame[256], buf[256];

    t_pair(sv);
    cr_assert_eq(t_read_frame(sv[0], buf, sizeof(buf), 200), -ETIMEDOUT);

    size_t n = wire_put_data_hdr(frame, 1, 5);
    memcpy(frame + n, "hello", 5);
    t_write_all(sv[1], frame, n + 5);
    cr_assert_eq(t_read_frame(sv[0], buf, sizeof(buf), 1000), (long)(n + 5));
    cr_assert_eq(memcmp(buf, frame, n + 5), 0);

    t_write_all(sv[1], frame, n + 2);   /* the body stops short, the peer stays open */
    cr_assert_eq(t_read_frame(sv[0], buf, sizeof(buf), 200), -ETIMEDOUT);

    t_write_all(sv[1], frame, n + 2);   /* the body stops short, the peer closes */
    close(sv[1]);
    cr_assert_eq(t_read_frame(sv[0], buf, sizeof(buf), 1000), -EPROTO);
    cr_assert_eq(t_read_frame(sv[0], buf, sizeof(buf), 1000), 0, "EOF");
    close(sv[0]);
}
