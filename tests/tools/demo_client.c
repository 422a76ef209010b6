/* demo_client - sends compressible text over plain TCP and checks the echo.
 *
 *   demo_client --connect HOST:PORT [--bytes N] [--chunk N] [--pace-ms N] [--timeout-ms N]
 *
 * Generates N bytes (default 1 MiB) of deterministic JSON-like log lines, sends them in
 * chunks (default 4 KiB, --pace-ms apart: default 0) from a second thread while the main thread reads the echo, so
 * neither side can deadlock on full socket buffers. Once N bytes came back (or the peer
 * closed, or nothing arrived for --timeout-ms, default 30 s) it compares byte for byte,
 * prints "sent=N received=M match=yes|no" and exits 0 only on a match.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "addr.h"

struct sender {
    int fd;
    const char *data;
    size_t len, chunk, sent;
    long pace_ms;           /* pause between chunks (the demo kills a worker meanwhile) */
    int err;
};

/* Deterministic, compressible text: log lines with a counter, cut to exactly n bytes. */
static char *gen_text(size_t n)
{
    static const char *const paths[] = { "/api/v1/items", "/api/v1/users", "/static/app.js",
                                         "/healthz", "/api/v1/orders" };
    static const char *const levels[] = { "info", "info", "info", "warn", "debug" };
    char *buf = malloc(n + 256);
    size_t off = 0;

    if (!buf)
        return NULL;
    for (unsigned long i = 0; off < n; i++)
        off += (size_t)snprintf(buf + off, 256,
                                "{\"seq\":%lu,\"level\":\"%s\",\"path\":\"%s/%lu\",\"status\":%d,"
                                "\"ms\":%lu,\"msg\":\"request served\"}\n",
                                i, levels[i % 5], paths[i % 5], i % 97, i % 13 ? 200 : 404,
                                (i * 7) % 250);
    return buf;
}

static void *send_thread(void *arg)
{
    struct sender *s = arg;

    while (s->sent < s->len) {
        size_t n = s->len - s->sent < s->chunk ? s->len - s->sent : s->chunk;
        ssize_t w = send(s->fd, s->data + s->sent, n, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            s->err = errno;
            break;
        }
        s->sent += (size_t)w;
        if (s->pace_ms > 0)
            usleep((useconds_t)s->pace_ms * 1000);
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: demo_client --connect HOST:PORT [--bytes N] [--chunk N] [--pace-ms N] "
                    "[--timeout-ms N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *connect_to = NULL;
    size_t nbytes = 1024 * 1024, chunk = 4096;
    long timeout_ms = 30000, pace_ms = 0;
    char err[256];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc)
            connect_to = argv[++i];
        else if (strcmp(argv[i], "--bytes") == 0 && i + 1 < argc)
            nbytes = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc)
            chunk = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--pace-ms") == 0 && i + 1 < argc)
            pace_ms = strtol(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = strtol(argv[++i], NULL, 0);
        else
            usage();
    }
    if (!connect_to || chunk == 0)
        usage();

    char *data = gen_text(nbytes);
    char *echo = malloc(nbytes + 1);
    if (!data || !echo) {
        fprintf(stderr, "demo_client: error msg=\"out of memory\"\n");
        return 1;
    }
    int fd = addr_connect(connect_to, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "demo_client: error msg=\"%s\"\n", err);
        return 1;
    }
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

    struct sender s = { .fd = fd, .data = data, .len = nbytes, .chunk = chunk,
                         .pace_ms = pace_ms };
    pthread_t th;
    if (pthread_create(&th, NULL, send_thread, &s) != 0) {
        fprintf(stderr, "demo_client: error msg=\"pthread_create failed\"\n");
        return 1;
    }

    /* Read until everything came back; extra bytes in the last read count as a mismatch. */
    size_t got = 0;
    while (got < nbytes) {
        ssize_t r = recv(fd, echo + got, nbytes + 1 - got, 0);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            fprintf(stderr, "demo_client: error msg=\"recv: %s\" received=%zu\n",
                    errno == EAGAIN ? "timed out" : strerror(errno), got);
            break;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    shutdown(fd, SHUT_RDWR);                   /* unblocks the sender if it is stuck */
    pthread_join(th, NULL);
    close(fd);
    if (s.err)
        fprintf(stderr, "demo_client: error msg=\"send: %s\" sent=%zu\n", strerror(s.err), s.sent);

    int match = got == nbytes && s.sent == nbytes && memcmp(data, echo, nbytes) == 0;
    printf("sent=%zu received=%zu match=%s\n", s.sent, got, match ? "yes" : "no");
    fflush(stdout);
    free(data);
    free(echo);
    return match ? 0 : 1;
}
