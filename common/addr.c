/* addr.c - see addr.h. */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "addr.h"

int addr_split(const char *s, char *host, size_t hostlen, char *port, size_t portlen,
               char *err, size_t errlen)
{
    const char *h, *p, *end;
    size_t hl;

    if (!s || !*s) {
        snprintf(err, errlen, "empty address (want HOST:PORT)");
        return -EINVAL;
    }
    if (s[0] == '[') {
        end = strchr(s, ']');
        if (!end || end[1] != ':') {
            snprintf(err, errlen, "bad address '%s' (want [V6ADDR]:PORT)", s);
            return -EINVAL;
        }
        h = s + 1;
        hl = (size_t)(end - h);
        p = end + 2;
    } else {
        end = strrchr(s, ':');
        if (!end) {
            snprintf(err, errlen, "bad address '%s' (want HOST:PORT)", s);
            return -EINVAL;
        }
        h = s;
        hl = (size_t)(end - s);
        p = end + 1;
    }
    char *pend;
    long pv = strtol(p, &pend, 10);
    if (hl == 0 || hl >= hostlen || !*p || *pend || pv < 0 || pv > 65535 ||
        strlen(p) >= portlen) {
        snprintf(err, errlen, "bad address '%s' (want HOST:PORT, port 0..65535)", s);
        return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    strcpy(port, p);
    return 0;
}

int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
    char host[256], port[16];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc;

    rc = addr_split(s, host, sizeof(host), port, sizeof(port), err, errlen);
    if (rc < 0)
        return rc;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* A TCP socket for the address s: fd, or -errno with a reason; *ss and *len filled. */
static int tcp_socket(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err,
                      size_t errlen)
{
    int fd, rc = addr_parse(s, ss, len, err, errlen);

    if (rc < 0)
        return rc;
    fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return rc;
    }
    return fd;
}

int addr_listen(const char *s, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1, rc;

    fd = tcp_socket(s, &ss, &len, err, errlen);
    if (fd < 0)
        return fd;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) == -1 || listen(fd, 512) == -1) {
        rc = -errno;
        snprintf(err, errlen, "listen on %s: %s", s, strerror(errno));
        close(fd);
        return rc;
    }
    return fd;
}

int addr_connect(const char *s, char *err, size_t errlen)
{
    return addr_connect_within(s, 0, err, errlen);
}

int addr_connect_within(const char *s, int timeout_ms, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 }, none = { 0, 0 };
    socklen_t len;
    int fd, one = 1, rc;

    fd = tcp_socket(s, &ss, &len, err, errlen);
    if (fd < 0)
        return fd;
    /* A blocking connect gives up after SO_SNDTIMEO (with EINPROGRESS). */
    if (timeout_ms > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&ss, len) == -1) {
        if (errno == EINPROGRESS || errno == EAGAIN) {
            rc = -ETIMEDOUT;
            snprintf(err, errlen, "connect to %s: no answer within %d ms", s, timeout_ms);
        } else {
            rc = -errno;
            snprintf(err, errlen, "connect to %s: %s", s, strerror(errno));
        }
        close(fd);
        return rc;
    }
    if (timeout_ms > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int addr_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

size_t addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    int n;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        n = snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        n = snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        n = snprintf(buf, len, "?");
    }
    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len ? len - 1 : 0;
}

size_t addr_peer(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == -1)
        ss.ss_family = AF_UNSPEC;
    return addr_format((struct sockaddr *)&ss, buf, len);
}
