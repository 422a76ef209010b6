/* spawn.h - the supervisor <-> zygote protocol (DESIGN.md section 6), over a
 * SOCK_SEQPACKET socketpair. Fixed-size, zeroed, versioned records (STYLE.md 4).
 *
 *   zygote -> supervisor, once:  spawn_ready   (status 0, or -errno and a reason)
 *   supervisor -> zygote:        spawn_request + fds [memfd, snapshot report socket, and on
 *                                kernels without io_uring futex waits an eventfd: the
 *                                doorbell to the supervisor (bell.h)]
 *   zygote -> supervisor:        spawn_reply   + fd  [pidfd of the new worker] when status == 0
 */
#ifndef CESSNA_SPAWN_H
#define CESSNA_SPAWN_H

#include <stddef.h>
#include <stdint.h>

#define SPAWN_VERSION 4u   /* 2: max_memory; 3: the layout fingerprint when ready;
                            * 4: futex doorbells (fds: memfd, report[, doorbell]) */

struct spawn_ready {
    uint32_t version;
    int32_t  status;
    char     text[256];
    uint8_t  fingerprint[32];   /* the layout its workers' snapshots carry (snap.h) */
};

struct spawn_request {
    uint32_t version;
    uint32_t ring_size;
    uint64_t session_id;
    uint32_t max_message;
    uint32_t pad;
    uint64_t restore_pos;   /* 0: start fresh; else restore the snapshot at this position */
    uint64_t max_memory;    /* the session's arena cap in bytes (max_session_memory) */
};

struct spawn_reply {
    uint32_t version;
    int32_t  status;
    int32_t  pid;
    uint32_t pad;
};

/* Send len bytes and nfds fds as one message. 0 or -errno. */
int spawn_send(int sock, const void *buf, size_t len, const int *fds, int nfds);
/* Receive one message of exactly len bytes and up to maxfds fds (*nfds set). 0, -errno,
 * -ECONNRESET on EOF, -EPIPE on a message of another size (its fds are passed on all the
 * same). Fds that arrive beyond maxfds are closed. */
int spawn_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds);

#endif
