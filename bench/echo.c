/* echo.c - the echo servers the paths end in. Each runs in a forked child (procs.c), with a
 * thread per connection, so a pipelined stream is read and written back as it comes: the
 * client reads concurrently (throughput) or waits for each echo (latency), so nothing
 * deadlocks.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cessna_endpoint.h"

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *echo_plain_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[64 * 1024];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(fd, buf, (size_t)n) < 0)
            break;
    }
    close(fd);
    return NULL;
}

static int spawn_detached(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t th;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return -rc;
}

int echo_plain_main(void *arg)
{
    int lfd = *(const int *)arg, one = 1;

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            fprintf(stderr, "echo: accept: %s\n", strerror(errno));
            return -errno;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (spawn_detached(echo_plain_conn, (void *)(intptr_t)fd) < 0) {
            fprintf(stderr, "echo: pthread_create failed\n");
            close(fd);
        }
    }
}

/* One session: every message back as it came, until the edge closes the session. */
static void *echo_native_session(void *arg)
{
    struct cessna_ep *ep = arg;
    long n;

    for (;;) {
        const void *data;

        n = cessna_ep_recv(ep, &data);
        if (n < 0)
            break;
        if (cessna_ep_send(ep, data, (size_t)n) < 0) {
            fprintf(stderr, "echo-native: session=%llu cessna_ep_send failed: %s\n",
                    (unsigned long long)cessna_ep_session_id(ep), cessna_ep_error(ep));
            break;
        }
    }
    if (n == CESSNA_EP_CLOSED)
        cessna_ep_close(ep, 1000);
    else if (n < 0)
        fprintf(stderr, "echo-native: session=%llu cessna_ep_recv: %s %s\n",
                (unsigned long long)cessna_ep_session_id(ep), strerror((int)-n),
                cessna_ep_error(ep));
    cessna_ep_free(ep);
    return NULL;
}

int echo_native_main(void *arg)
{
    int lfd = *(const int *)arg;

    for (;;) {
        char err[256];
        struct cessna_ep *ep = cessna_ep_accept(lfd, err, sizeof(err));

        if (!ep) {
            struct timespec pause = { 0, 10 * 1000 * 1000 };

            fprintf(stderr, "echo-native: cessna_ep_accept: %s\n", err);
            nanosleep(&pause, NULL); /* a broken listener must not spin */
            continue;
        }
        if (spawn_detached(echo_native_session, ep) < 0) {
            fprintf(stderr, "echo-native: pthread_create failed\n");
            cessna_ep_free(ep);
        }
    }
}
