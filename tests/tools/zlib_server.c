/* zlib_server - a plain TCP server (no CESSNA) that speaks zlib, the compress app's peer.
 *
 *   zlib_server --listen HOST:PORT
 *
 * Per connection (one forked child each): the incoming bytes are inflated as one zlib
 * stream (a stream that ends may be followed by another), and the plain bytes are echoed
 * back deflated by the connection's own persistent deflate stream, with Z_SYNC_FLUSH
 * after each read so replies go out at once.
 *
 * stdout: "ready listen=HOST:PORT" (the real port, also for port 0) once listening, and
 * "conn compressed_in=N plain=M compressed_out=K" when each connection closes, also after
 * an error. Bad zlib input: an error line on stderr, and the connection is closed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "addr.h"

#define BUFSZ (64 * 1024)

struct counts {
    unsigned long long in, plain, out;
};

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Deflate the plain bytes (or just flush with flush = Z_SYNC_FLUSH/Z_FINISH) and send. */
static int deflate_send(int fd, z_stream *def, const unsigned char *p, size_t n, int flush,
                        struct counts *c)
{
    unsigned char out[BUFSZ];

    def->next_in = (Bytef *)p;
    def->avail_in = (uInt)n;
    do {
        def->next_out = out;
        def->avail_out = sizeof(out);
        int rc = deflate(def, flush);
        if (rc == Z_STREAM_ERROR)
            return -EINVAL;
        size_t have = sizeof(out) - def->avail_out;
        if (have) {
            int err = write_all(fd, out, have);
            if (err)
                return err;
            c->out += have;
        }
    } while (def->avail_out == 0 || def->avail_in > 0);
    return 0;
}

/* One connection: returns when the peer closes, on an I/O error or on bad input. */
static void serve(int fd, struct counts *c)
{
    z_stream inf = { 0 }, def = { 0 };
    unsigned char in[BUFSZ], plain[BUFSZ];

    if (inflateInit(&inf) != Z_OK || deflateInit(&def, Z_DEFAULT_COMPRESSION) != Z_OK) {
        fprintf(stderr, "zlib_server: error msg=\"zlib init failed\"\n");
        return;
    }
    for (;;) {
        ssize_t r = read(fd, in, sizeof(in));
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            fprintf(stderr, "zlib_server: error msg=\"read: %s\"\n", strerror(errno));
            break;
        }
        if (r == 0) {                               /* peer done: end our stream cleanly */
            deflate_send(fd, &def, NULL, 0, Z_FINISH, c);
            break;
        }
        c->in += (unsigned long long)r;
        inf.next_in = in;
        inf.avail_in = (uInt)r;
        int bad = 0;
        do {
            inf.next_out = plain;
            inf.avail_out = sizeof(plain);
            int rc = inflate(&inf, Z_SYNC_FLUSH);
            if (rc == Z_STREAM_END) {
                inflateReset(&inf);
            } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
                fprintf(stderr, "zlib_server: error msg=\"bad zlib input: %s\"\n",
                        inf.msg ? inf.msg : zError(rc));
                bad = 1;
                break;
            }
            size_t have = sizeof(plain) - inf.avail_out;
            c->plain += have;
            if (have && deflate_send(fd, &def, plain, have, Z_NO_FLUSH, c)) {
                bad = 1;
                break;
            }
        } while (inf.avail_in > 0 || inf.avail_out == 0);
        if (bad || deflate_send(fd, &def, NULL, 0, Z_SYNC_FLUSH, c))
            break;
    }
    inflateEnd(&inf);
    deflateEnd(&def);
}

static void usage(void)
{
    fprintf(stderr, "usage: zlib_server --listen HOST:PORT\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *listen_at = NULL;
    char err[256];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_at = argv[++i];
        else
            usage();
    }
    if (!listen_at)
        usage();

    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_IGN);                      /* children reap themselves */
    int lfd = addr_listen(listen_at, err, sizeof(err));
    if (lfd < 0) {
        fprintf(stderr, "zlib_server: error msg=\"%s\"\n", err);
        return 1;
    }
    const char *colon = strrchr(listen_at, ':');
    printf("ready listen=%.*s:%d\n", (int)(colon - listen_at), listen_at, addr_local_port(lfd));
    fflush(stdout);

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            fprintf(stderr, "zlib_server: error msg=\"accept: %s\"\n", strerror(errno));
            return 1;
        }
        pid_t pid = fork();
        if (pid == -1) {
            fprintf(stderr, "zlib_server: error msg=\"fork: %s\"\n", strerror(errno));
            close(fd);
            continue;
        }
        if (pid == 0) {
            struct counts c = { 0 };
            prctl(PR_SET_PDEATHSIG, SIGTERM);      /* die with the server */
            close(lfd);
            serve(fd, &c);
            close(fd);
            printf("conn compressed_in=%llu plain=%llu compressed_out=%llu\n", c.in, c.plain, c.out);
            fflush(stdout);
            _exit(0);
        }
        close(fd);
    }
}
