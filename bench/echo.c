/* echo.c - the echo servers the paths end in. Each runs in a forked child (procs.c), with a
 * thread per connection, so a pipelined stream is read and written back as it comes: the
 * client reads concurrently (throughput) or waits for each echo (latency), so nothing
 * deadlocks.
 *
 * The sessions section's echo servers (echo_*_many_main) serve thousands of connections of
 * small messages from one thread with epoll instead: a thread each would add thousands of
 * threads (pids: kernel.pid_max counts them beside the edge's workers) and their kernel
 * stacks to the memory the section measures.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
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

/* ---- one thread, epoll: the sessions section ---- */

#define MANY_EVENTS 256
#define LISTENER    ((void *)1)

static int many_epoll(int lfd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = LISTENER };

    if (ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) == -1) {
        fprintf(stderr, "echo: epoll: %s\n", strerror(errno));
        return -1;
    }
    return ep;
}

/* Plain TCP: whatever a connection sent, written back (blocking writes: small echoes into
 * an empty socket buffer). */
int echo_plain_many_main(void *arg)
{
    int lfd = *(const int *)arg, one = 1, ep = many_epoll(lfd);
    struct epoll_event evs[MANY_EVENTS];
    char buf[64 * 1024];

    if (ep < 0)
        return -1;
    for (;;) {
        int n = epoll_wait(ep, evs, MANY_EVENTS, -1);

        if (n == -1 && errno != EINTR) {
            fprintf(stderr, "echo: epoll_wait: %s\n", strerror(errno));
            return -1;
        }
        for (int k = 0; k < n; k++) {
            if (evs[k].data.ptr == LISTENER) {
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                struct epoll_event ev = { .events = EPOLLIN };

                if (fd == -1)
                    continue; /* EAGAIN, EMFILE ...: the client sees it as a stall */
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                ev.data.fd = fd;
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
                    close(fd);
                continue;
            }
            int fd = evs[k].data.fd;
            ssize_t r = read(fd, buf, sizeof(buf));

            if (r == -1 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0 || write_all(fd, buf, (size_t)r) < 0)
                close(fd); /* leaves the epoll set with it */
        }
    }
}

/* Native endpoint: sessions are accepted by ACCEPTERS threads (cessna_ep_accept waits for
 * the edge's HELLO: one thread accepting one after the other made the bench's server, not
 * the edge, what capped the setup rate) and handed to the epoll thread, which reads them in
 * nonblocking mode and sends every message back. */
#define ACCEPTERS 8

struct accepter {
    int lfd, ep;
};

static void *accept_native(void *arg)
{
    const struct accepter *a = arg;

    for (;;) {
        char err[256];
        struct cessna_ep *s = cessna_ep_accept(a->lfd, err, sizeof(err));
        struct epoll_event ev = { .events = EPOLLIN };

        if (!s) {
            fprintf(stderr, "echo-native: cessna_ep_accept: %s\n", err);
            continue;
        }
        cessna_ep_set_nonblocking(s, 1);
        ev.data.ptr = s;
        if (epoll_ctl(a->ep, EPOLL_CTL_ADD, cessna_ep_fd(s), &ev) == -1) {
            fprintf(stderr, "echo-native: epoll_ctl: %s\n", strerror(errno));
            cessna_ep_free(s);
        }
    }
    return NULL;
}

int echo_native_many_main(void *arg)
{
    static struct accepter a;
    struct epoll_event evs[MANY_EVENTS];

    a.lfd = *(const int *)arg;
    a.ep = epoll_create1(EPOLL_CLOEXEC);
    if (a.ep == -1) {
        fprintf(stderr, "echo-native: epoll: %s\n", strerror(errno));
        return -1;
    }
    for (int i = 0; i < ACCEPTERS; i++) {
        pthread_t th;
        if (pthread_create(&th, NULL, accept_native, &a) != 0) {
            fprintf(stderr, "echo-native: pthread_create failed\n");
            return -1;
        }
        pthread_detach(th);
    }
    int ep = a.ep;
    for (;;) {
        int n = epoll_wait(ep, evs, MANY_EVENTS, -1);

        if (n == -1 && errno != EINTR) {
            fprintf(stderr, "echo-native: epoll_wait: %s\n", strerror(errno));
            return -1;
        }
        for (int k = 0; k < n; k++) {
            struct cessna_ep *s = evs[k].data.ptr;
            long r;

            for (;;) {
                const void *data;

                r = cessna_ep_recv(s, &data);
                if (r < 0)
                    break;
                if (cessna_ep_send(s, data, (size_t)r) < 0) {
                    fprintf(stderr, "echo-native: session=%llu cessna_ep_send failed: %s\n",
                            (unsigned long long)cessna_ep_session_id(s), cessna_ep_error(s));
                    r = -EIO;
                    break;
                }
            }
            if (r == -EAGAIN)
                continue;
            if (r != CESSNA_EP_CLOSED && r != -ECONNRESET)
                fprintf(stderr, "echo-native: session=%llu cessna_ep_recv: %s %s\n",
                        (unsigned long long)cessna_ep_session_id(s), strerror((int)-r),
                        cessna_ep_error(s));
            epoll_ctl(ep, EPOLL_CTL_DEL, cessna_ep_fd(s), NULL);
            cessna_ep_free(s);
        }
    }
}

/* ---- by name: a child runs one of these after exec'ing the bench (procs.c) ---- */

static const struct {
    const char *name;
    proc_main_fn fn;
} children[] = {
    { "echo", echo_plain_main },
    { "echo-native", echo_native_main },
    { "echo-many", echo_plain_many_main },
    { "echo-native-many", echo_native_many_main },
};

const char *echo_child_name(proc_main_fn fn)
{
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++)
        if (children[i].fn == fn)
            return children[i].name;
    return NULL;
}

proc_main_fn echo_child_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++)
        if (strcmp(children[i].name, name) == 0)
            return children[i].fn;
    return NULL;
}
