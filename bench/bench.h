/* bench.h - cessna-bench: per-message round-trip latency and throughput on loopback, for
 * plain TCP, HAProxy chains and the two CESSNA edge paths, in one run.
 *
 *   bench.c   main, options, the run loop
 *   report.c  the markdown table and the targets
 *   stacks.c  one path's processes: echo servers, HAProxy, supervisor, proxies
 *   procs.c   children: the fork wrapper, ready lines, stopping, temp files
 *   echo.c    the echo servers (plain TCP and native endpoint), run in forked children
 *   load.c    the latency and throughput drivers
 *
 * Functions return 0 or -errno; on failure they write the reason into err.
 */
#ifndef CESSNA_BENCH_H
#define CESSNA_BENCH_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define BENCH_ERRLEN    1024
#define BENCH_MAX_SIZES 8
#define BENCH_MAX_PROCS 8

/* The paths, in the order they run and are reported. */
enum bench_path {
    PATH_DIRECT,       /* client -> echo */
    PATH_HAPROXY1,     /* client -> haproxy -> echo */
    PATH_EDGE_NATIVE,  /* native endpoint -> supervisor -> native endpoint (echo) */
    PATH_HAPROXY3,     /* client -> haproxy -> haproxy -> haproxy -> echo */
    PATH_EDGE_PROXIES, /* client -> client-proxy -> supervisor -> server-proxy -> echo */
    PATH_COUNT
};

struct bench_opts {
    size_t messages;                /* latency round trips for sizes <= 1 KiB; a quarter above */
    double seconds;                 /* per throughput run */
    char   build[PATH_MAX];         /* holds bin/ and apps/ */
    char   haproxy[PATH_MAX];       /* the haproxy binary */
    size_t sizes[BENCH_MAX_SIZES];
    int    nsizes;
    int    selected[PATH_COUNT];
    char   tmpdir[PATH_MAX];        /* configs, logs, state; removed at the end */
    int    keep_tmp;                /* unless this is set */
    int    busy_poll_off;           /* run the edge with busy_poll = off */
};

/* ---- procs.c: child processes ---- */

struct bench_proc {
    char  name[48];      /* "haproxy3.hop2", "cessna-supervisor" */
    pid_t pid;           /* 0 when not running */
    int   out_fd;        /* read end of the child's stdout pipe, or -1 */
    char  log_path[PATH_MAX]; /* the child's stderr, and its stdout after the ready line */
};

typedef int (*proc_main_fn)(void *arg);

struct proc_spec {
    const char  *name;
    int          want_stdout; /* pipe the child's stdout to out_fd (for the ready line);
                                 otherwise it goes to the log with stderr */
    int          keep_fd;     /* a descriptor the child keeps (a listener), or -1 */
    proc_main_fn fn;          /* runs in the child, which then _exit()s; NULL with argv */
    void        *arg;
    char *const *argv;        /* exec this instead of fn (argv[0] is the path) */
};

int  proc_install_signals(const char *tmpdir, char *err, size_t errlen);
int  proc_interrupted(void);
int  proc_start(struct bench_proc *p, const struct proc_spec *spec, const char *dir,
                char *err, size_t errlen);
int  proc_read_ready(struct bench_proc *p, int timeout_ms, char *addr, size_t addrlen,
                     char *err, size_t errlen);
int  proc_wait_port(struct bench_proc *p, int port, int timeout_ms, char *err, size_t errlen);
int  proc_check(struct bench_proc *p, char *err, size_t errlen);
void proc_stop(struct bench_proc *p, int grace_ms);
int  proc_tmpdir_create(char *dir, size_t len, char *err, size_t errlen);
void proc_tmpdir_remove(const char *dir);

/* ---- stacks.c: the processes of one path ---- */

struct bench_stack {
    enum bench_path   path;
    struct bench_proc procs[BENCH_MAX_PROCS];
    int               nprocs;
    char              entry[64]; /* HOST:PORT the client connects to */
    int               native;    /* the entry speaks CESSNA (cessna_ep_connect) */
};

const char *stack_path_name(enum bench_path path);
int  stack_path_parse(const char *name, enum bench_path *path);
enum bench_path stack_baseline(enum bench_path edge); /* PATH_COUNT for non-edge paths */
int  stack_up(struct bench_stack *s, enum bench_path path, const struct bench_opts *o,
              char *err, size_t errlen);
int  stack_check(struct bench_stack *s, char *err, size_t errlen);
void stack_down(struct bench_stack *s);

/* ---- echo.c: echo servers (child mains; arg is a pointer to the listening fd) ---- */

int echo_plain_main(void *arg);
int echo_native_main(void *arg);

/* ---- load.c: the drivers ---- */

struct cessna_ep;

struct bench_conn {
    int               fd; /* the socket (the endpoint's, when ep is set) */
    struct cessna_ep *ep; /* NULL for plain TCP */
};

struct lat_result {
    size_t samples;
    double p50_us, p99_us, p999_us;
};

struct tput_result {
    uint64_t msgs;    /* messages fully echoed in the measured interval */
    double   elapsed; /* seconds */
    double   msgs_per_s, mb_per_s;
};

int  load_connect(struct bench_conn *c, const char *entry, int native, char *err, size_t errlen);
void load_close(struct bench_conn *c);
int  load_latency(struct bench_conn *c, size_t size, size_t count, struct lat_result *r,
                  char *err, size_t errlen);
int  load_throughput(struct bench_conn *c, size_t size, double seconds, struct tput_result *r,
                     char *err, size_t errlen);

/* ---- report.c ---- */

struct bench_result {
    int                ran;    /* both measurements done */
    int                failed; /* something failed; err says what */
    char               err[BENCH_ERRLEN];
    struct lat_result  lat;
    struct tput_result tput;
};

/* res[path][size index]. Returns the number of targets missed (informational). */
int report_print(FILE *f, const struct bench_opts *o,
                 struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES]);

#endif
