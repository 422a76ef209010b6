/* t_helpers.h - shared helpers for the integration tests: real processes on loopback.
 * Every t_* function that sets something up stops the test (cr_fatal) when it fails. */
#ifndef CESSNA_T_HELPERS_H
#define CESSNA_T_HELPERS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct t_proc {
    pid_t pid;
    int out_fd;         /* the child's stdout */
    char addr[64];      /* from its "ready listen=ADDR" line */
    char log[256];      /* where its stderr goes */
};

/* A fresh temp directory (removed by nothing: tests leave their logs for debugging). */
const char *t_tmpdir(void);
/* Path of a built binary / app / tool. */
const char *t_bin(const char *name);
const char *t_app(const char *name);
const char *t_tool(const char *name);
const char *t_test_app(const char *name);   /* tests/apps/NAME.c, built for the tests */

/* Start argv with stdout piped and stderr to a log in dir; wait for "ready listen=". */
void t_start(struct t_proc *p, const char *dir, const char *name, char *const argv[]);
/* Start without waiting for a ready line (for programs that are expected to fail). */
pid_t t_start_raw(const char *dir, const char *name, char *const argv[], int *out_fd);
/* SIGTERM, wait up to 2 s, then SIGKILL. Returns the wait status. */
int t_stop(struct t_proc *p);
/* Wait for a pid with a timeout in ms: the wait status, or -1 on timeout. */
int t_wait(pid_t pid, int timeout_ms);

struct t_edge {
    struct t_proc sup;
    char dir[256];
    char control[300];
};
/* A supervisor running app (a path) toward server_addr; extra is appended to [edge]. */
void t_edge_start(struct t_edge *e, const char *app, const char *server_addr, const char *extra);
void t_edge_stop(struct t_edge *e);
/* Ask the control socket; the reply is NUL-terminated in out. */
void t_ctl(const struct t_edge *e, const char *cmd, char *out, size_t len);
/* The same on a control socket by path, without stopping the test (for threads, and for an
 * edge that may be gone): 0, or -1 when nothing answered. */
int  t_ctl_try(const char *control, const char *cmd, char *out, size_t len);
/* The value of key= in text (first match), or 0. */
uint64_t t_field(const char *text, const char *key);
/* Ask e for "stats" until its sessions= is at most n (an ended session holds its slot until
 * its worker is reaped, a while after its end line) or timeout_ms passed; the last stats
 * are in out. Returns 0 when reached, -1 on time out. */
int t_wait_sessions(const struct t_edge *e, uint64_t n, int timeout_ms, char *out, size_t len);
/* Whether e keeps its sessions' sockets as io_uring direct descriptors, not descriptors
 * (its start line says so; off before Linux 6.7 or with CESSNA_NO_DIRECT_FILES=1). */
int  t_edge_direct_sockets(const struct t_edge *e);
/* The value of key in the `cessna-ctl sessions` line of session id (0: no such line). */
uint64_t t_session_field(const struct t_edge *e, uint64_t id, const char *key);

/* A native server endpoint (libcessna-endpoint) that echoes every message back, one thread
 * per session. Counts sessions that ended with CLOSE. */
struct t_echo_ep {
    int listen_fd;
    char addr[64];
    volatile int closes, errors, sessions;
};
void t_echo_ep_start(struct t_echo_ep *e);
/* The same in two steps: connections queue in the backlog (their HELLO unanswered) until
 * serve. */
void t_echo_ep_listen(struct t_echo_ep *e);
void t_echo_ep_serve(struct t_echo_ep *e);

/* A plain TCP echo server, one thread per connection. */
struct t_echo_tcp {
    int listen_fd;
    char addr[64];
};
void t_echo_tcp_start(struct t_echo_tcp *e);

/* Plain TCP helpers. */
int  t_connect(const char *addr);
void t_write_all_at(int fd, const void *buf, size_t len, const char *file, int line);
#define t_write_all(fd, buf, len) t_write_all_at((fd), (buf), (len), __FILE__, __LINE__)
/* Read exactly len bytes within timeout_ms. Returns len; fewer (0 included) when the peer
 * closed first (EOF, or a reset: ECONNRESET counts as closed); -ETIMEDOUT when the time
 * ran out first, or -errno of a failed poll/read. What did arrive is in buf either way.
 * A timeout is never 0: a silent peer that stays open is not a closed one. */
long t_read_n(int fd, void *buf, size_t len, int timeout_ms);
/* One recv within timeout_ms: the bytes it read (> 0), 0 at a clean end, -errno
 * (-ECONNRESET; -ETIMEDOUT when nothing arrived). For streams read in whatever pieces
 * arrive: t_read_n's count of a read cut short by its timeout is not returned. */
long t_recv_wait(int fd, void *buf, size_t len, int timeout_ms);
/* Read one CESSNA frame within timeout_ms into buf; returns its total length, 0 on EOF (or
 * reset) before its first byte, -ETIMEDOUT on timeout, -EPROTO when the peer closed in the
 * middle of the frame. */
long t_read_frame(int fd, void *buf, size_t cap, int timeout_ms);
/* Fail the test unless the peer closes fd within timeout_ms with nothing more to read:
 * data, or a timeout (the peer still open), fails it. */
void t_expect_eof_at(int fd, int timeout_ms, const char *what, const char *file, int line);
#define t_expect_eof(fd, timeout_ms, what) \
    t_expect_eof_at((fd), (timeout_ms), (what), __FILE__, __LINE__)

/* Children of parent: returns how many are zombies; the others that are not in skip[]
 * go to live[] (up to max, *nlive set). */
int t_children(pid_t parent, const pid_t *skip, int nskip, pid_t *live, int max, int *nlive);

/* CLOCK_MONOTONIC in ms. */
long t_now_ms(void);
/* A client endpoint with a new session on edge e (the test stops if it cannot connect). */
struct cessna_ep;
struct cessna_ep *t_ep_connect(const struct t_edge *e);

/* Deterministic pseudo-random bytes. */
void t_fill(void *buf, size_t len, uint64_t seed);

/* CPU time of a process so far, in clock ticks (utime + stime of /proc/PID/stat). */
long t_cpu_ticks(pid_t pid);

/* A file's text, NUL-terminated, at most len - 1 bytes of it (the test fails if it cannot be
 * opened). */
void t_read_file(const char *path, char *buf, size_t len);

/* Give this test process a mount namespace of its own (it runs as root), so that what it
 * mounts goes with it even when an assertion ends it early; skips the test if it cannot. */
void t_own_mounts(void);

#endif
