/* addr.h - "HOST:PORT" and "[V6]:PORT" parsing and socket helpers. */
#ifndef CESSNA_ADDR_H
#define CESSNA_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Syntax only, no name lookup: split HOST:PORT or [V6]:PORT. 0, or -EINVAL with a reason. */
int addr_split(const char *s, char *host, size_t hostlen, char *port, size_t portlen,
               char *err, size_t errlen);

/* 0, or -EINVAL with a reason in err. HOST may be a name (resolved once, numeric preferred). */
int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);

/* A listening TCP socket (SO_REUSEADDR, backlog 512) on s, or -errno with a reason in err. */
int addr_listen(const char *s, char *err, size_t errlen);

/* A connected TCP socket (blocking, TCP_NODELAY) to s, or -errno with a reason in err. */
int addr_connect(const char *s, char *err, size_t errlen);
/* The same, giving up after timeout_ms (-ETIMEDOUT; 0: the kernel's own limit). */
int addr_connect_within(const char *s, int timeout_ms, char *err, size_t errlen);

/* "IP:PORT" or "[V6]:PORT" of a socket address ("?" for another family): the length. */
size_t addr_format(const struct sockaddr *sa, char *buf, size_t len);

/* The same for a connected socket's peer; "?" when it has none. */
size_t addr_peer(int fd, char *buf, size_t len);

/* The port a bound socket listens on, or -1. */
int addr_local_port(int fd);

#endif
