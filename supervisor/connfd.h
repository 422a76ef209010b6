/* connfd.h - a session's two sockets: io_uring direct descriptors at index 2 * slot + side
 * in the ring's file table, or plain descriptors where the kernel cannot (connfd.c). */
#ifndef CESSNA_CONNFD_H
#define CESSNA_CONNFD_H

#include <stddef.h>

struct io_uring_sqe;
struct session;
struct conn;

/* At start, before set_fd_limit: does the kernel do everything a direct socket needs?
 * Sets S.direct (off with CESSNA_NO_DIRECT_FILES=1); one info line when it is off. */
void connfd_probe(void);

/* The table of 2 * slots entries on S.ring, once max_sessions is known. On failure direct
 * descriptors are off (a warning says why) and -errno comes back. */
int  connfd_register(unsigned slots);

/* A new socket (accepted or created, options set) becomes c's: installed at its index and
 * closed, or kept as it is. The descriptor is taken either way. 0 or -errno (c has none). */
int  connfd_install(struct session *s, struct conn *c, int fd);

/* An operation prepared on c->fd names the socket by its index: IOSQE_FIXED_FILE. */
void connfd_prep(struct io_uring_sqe *sqe);

/* shutdown(2), SO_LINGER {1, 0} and close(2) of c's socket. With direct descriptors they
 * go through the ring and complete as OP_SOCK_CTL (the first two) and OP_SOCK_CLOSE, each
 * counted in s->inflight; a repeated shutdown of what is shut already is not sent again. */
void connfd_shutdown(struct session *s, struct conn *c, int how);
void connfd_linger0(struct session *s, struct conn *c);
void connfd_close(struct session *s, struct conn *c);

/* A shutdown or setsockopt of c is in flight: c must not be closed before it completes. */
int  connfd_busy(const struct conn *c);

/* Completions (loop.c dispatch): OP_SOCK_CTL on c, OP_SOCK_CLOSE of s's socket on `side`. */
void connfd_ctl_done(struct session *s, struct conn *c, int res);
void connfd_close_done(struct session *s, int side, int res);

#endif
