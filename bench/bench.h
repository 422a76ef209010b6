/* bench.h - cessna-bench: per-message round-trip latency and throughput on loopback, for
 * plain TCP, HAProxy chains and the two CESSNA edge paths, in one run.
 *
 *   bench.c   main, options, the run loop
 *   report.c  the markdown table and the targets
 *   stacks.c  one path's processes: echo servers, HAProxy, supervisor, proxies
 *   procs.c   children: the fork wrapper, ready lines, stopping, temp files
 *   echo.c    the echo servers (plain TCP and native endpoint), run in forked children
 *   load.c    the latency and throughput drivers
 *   edgectl.c one edge session driven from outside: control socket, replies with timeouts
 *   snapbench.c  section "snapshot": fork pause, write time and size against state size
 *   recbench.c   section "recovery": kill to first new output, cold and hot standby
 *   snaplat.c    section "snapshot-latency": edge-native latency with periodic snapshots
 *   remworld.c   the processes of a remote-recovery setup (client proxy, 3 edges, server
 *                proxy with --store, plain echo) and plain-TCP asks through it
 *   rembench.c   section "remote": kill of a whole edge node to first new output, split
 *   remdrain.c   section "remote", part 2: drain time per session
 *   remship.c    section "remote", part 3: latency with snapshots shipped and not shipped
 *   manybench.c  section "sessions": 100 .. 10,000 concurrent sessions on one edge against
 *                HAProxy with as many connections (setup rate, memory, msgs/s, snapshot CPU)
 *   manyload.c   the load generator of N connections (edge sessions or plain TCP), one thread
 *   procstat.c   /proc: a process tree's PSS and CPU time, kernel memory, load average
 *   hostcost.c   the machine's own cost of a system call, a wake-up, a fork, a page fault
 *   jsonw.c      a tiny JSON writer (--json)
 *   plot.c       --plot DIR: each section's data and gnuplot script, PNGs drawn at the end
 *
 * The sections run after the paths, each on edges of its own, and print their tables
 * after the paths' table.
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
    PATH_DIRECT,           /* client -> echo */
    PATH_HAPROXY1,         /* client -> haproxy -> echo */
    PATH_HAPROXY1_BUSY,    /* the same, haproxy with busy-polling */
    PATH_EDGE_NATIVE,      /* native endpoint -> supervisor -> native endpoint (echo) */
    PATH_EDGE_NATIVE_OFF,  /* the same, the edge with busy_poll = off */
    PATH_HAPROXY3,         /* client -> haproxy -> haproxy -> haproxy -> echo */
    PATH_HAPROXY3_BUSY,    /* the same, each haproxy with busy-polling */
    PATH_EDGE_PROXIES,     /* client -> client-proxy -> supervisor -> server-proxy -> echo */
    PATH_EDGE_PROXIES_OFF, /* the same, the edge with busy_poll = off */
    PATH_COUNT
};

/* The sections measured after the paths (also chosen with --paths). */
enum bench_section {
    SEC_SNAPSHOT,      /* snapshot pause, write time and size per app state size */
    SEC_RECOVERY,      /* recovery time, cold and hot standby */
    SEC_SNAP_LATENCY,  /* edge-native latency with and without periodic snapshots */
    SEC_REMOTE,        /* remote recovery, drain, shipping cost */
    SEC_SESSIONS,      /* many concurrent sessions against HAProxy with many connections */
    SEC_COUNT
};

#define BENCH_MAX_SNAP_SIZES 8
#define BENCH_MAX_MANY       8

struct bench_opts {
    size_t messages;                /* latency round trips for sizes <= 1 KiB; a quarter above */
    double seconds;                 /* per throughput run */
    char   build[PATH_MAX];         /* --build: holds bin/ and apps/ ("" when not given) */
    char   bin[PATH_MAX];           /* where cessna-supervisor and the proxies are */
    char   apps[PATH_MAX];          /* where passthrough.so, ballast.so ... are */
    char   haproxy[PATH_MAX];       /* the haproxy binary */
    size_t sizes[BENCH_MAX_SIZES];
    int    nsizes;
    int    selected[PATH_COUNT];
    char   tmpdir[PATH_MAX];        /* configs, logs, state; removed at the end */
    int    keep_tmp;                /* unless this is set */
    int    busy_poll_off;           /* run the edge with busy_poll = off */
    int    sandbox_off;             /* run the edge with sandbox = off */
    int    sections[SEC_COUNT];     /* which sections run */
    size_t snap_sizes[BENCH_MAX_SNAP_SIZES]; /* snapshot: app state sizes (bytes) */
    int    nsnap_sizes;
    int    snap_runs;               /* snapshot: sessions per size (medians reported) */
    int    recovery_runs;           /* recovery: kills per standby mode */
    int    recovery_msgs;           /* recovery: messages echoed between snapshot and kill */
    size_t recovery_state;          /* recovery: app state (bytes) */
    unsigned snap_interval_ms;      /* snapshot-latency: the interval compared with 0 */
    int    remote_runs;             /* remote: whole-node kills */
    int    remote_msgs;             /* remote: messages echoed between snapshot and kill */
    int    drain_sessions;          /* remote: sessions on the drained edge */
    int    many[BENCH_MAX_MANY];    /* sessions: the numbers of concurrent sessions */
    int    nmany;
    double many_seconds;            /* sessions: length of each paced run */
    int    many_inflight;           /* sessions: opens in flight at once */
    int    many_reopen;             /* sessions: close the edge's N cleanly, open N again */
    int    many_dirs_ahead_off;     /* sessions: no session_dirs_ahead (each makes its own) */
    int    many_stacks;             /* sessions: bit per stack (MANY_STACK_*) */
    char   json[PATH_MAX];          /* --json FILE: the run's numbers; "" none */
    char   plot[PATH_MAX];          /* --plot DIR: data files and PNG plots; "" none */
};

/* sessions: the stacks compared (--sessions-stacks). */
enum { MANY_EDGE, MANY_HAPROXY, MANY_HAPROXY_BUSY, MANY_STACKS };

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
    int          machine_nofile; /* the child gets RLIMIT_NOFILE as the bench found it at
                                    start, not as the bench raised it (the edge is measured
                                    under the machine's limits) */
    proc_main_fn fn;          /* runs in the child, which then _exit()s; NULL with argv */
    void        *arg;
    char *const *argv;        /* exec this instead of fn (argv[0] is the path) */
};

int  proc_install_signals(const char *tmpdir, char *err, size_t errlen);
/* RLIMIT_NOFILE: remember the machine's limits, then raise the bench's own (and so its
 * children's) to `want` descriptors: the soft limit up to the hard one, and as root the hard
 * one too, up to /proc/sys/fs/nr_open. A line on f says what was done and what was refused. */
void proc_raise_nofile(FILE *f, long want);
long proc_nofile_soft(void);   /* the bench's, now */
long proc_nofile_hard(void);
long proc_machine_nofile(void); /* the soft limit the bench started with */
int  proc_interrupted(void);
int  proc_start(struct bench_proc *p, const struct proc_spec *spec, const char *dir,
                char *err, size_t errlen);
int  proc_read_ready(struct bench_proc *p, int timeout_ms, char *addr, size_t addrlen,
                     char *err, size_t errlen);
int  proc_wait_port(struct bench_proc *p, int port, int timeout_ms, char *err, size_t errlen);
int  proc_check(struct bench_proc *p, char *err, size_t errlen);
void proc_stop(struct bench_proc *p, int grace_ms);
/* The last non-empty line of the child's log ("" when none). */
void proc_log_last(const struct bench_proc *p, char *out, size_t outlen);
/* Run argv to its end (gnuplot), output in dir/name.log: 0 on exit status 0. */
int  proc_run(const char *name, char *const argv[], const char *dir, int timeout_ms, char *err,
              size_t errlen);
int  proc_tmpdir_create(char *dir, size_t len, char *err, size_t errlen);
void proc_tmpdir_remove(const char *dir);

/* ---- stacks.c: the processes of one path ---- */

struct bench_stack {
    enum bench_path   path;
    struct bench_proc procs[BENCH_MAX_PROCS];
    int               nprocs;
    char              entry[64]; /* HOST:PORT the client connects to */
    int               native;    /* the entry speaks CESSNA (cessna_ep_connect) */
    char              tag[40];   /* stack_up_edge: prefix of its processes' names */
    char              control[PATH_MAX]; /* the supervisor's control socket, if any */
    char              ini[PATH_MAX];     /* and its configuration file */
};

/* An edge-native stack for the sections: native echo <- supervisor <- the bench. */
struct edge_spec {
    char        tag[40];              /* names its files and processes: "recovery-hot" */
    const char *app;                  /* in BUILD/apps: "ballast.so" */
    unsigned    snapshot_interval_ms; /* 0: snapshots only when asked for */
    int         hot;                  /* standby = hot (else cold) */
    unsigned    max_sessions;         /* 0: 64 */
    int         busy_poll_off;        /* busy_poll = off whatever --busy-poll says */
    int         many;                 /* the one-thread epoll echo server (sessions) */
    unsigned    hibernate_after_ms;   /* 0: the default (30000) */
    unsigned    dirs_ahead;           /* session_dirs_ahead (0: none) */
};

const char *stack_path_name(enum bench_path path);
int  stack_path_parse(const char *name, enum bench_path *path);
enum bench_path stack_baseline(enum bench_path edge); /* PATH_COUNT for non-edge paths */
/* The like-with-like baseline: haproxy with busy-polling for an edge that may poll (busy_poll
 * auto), plain haproxy for one that does not (busy_poll off). */
enum bench_path stack_like_baseline(enum bench_path edge, const struct bench_opts *o);
int  stack_path_busy(enum bench_path path);      /* haproxy busy-polling path */
int  stack_path_edge_off(enum bench_path path, const struct bench_opts *o); /* busy_poll off */
int  stack_up(struct bench_stack *s, enum bench_path path, const struct bench_opts *o,
              char *err, size_t errlen);
int  stack_up_edge(struct bench_stack *s, const struct edge_spec *e, const struct bench_opts *o,
                   char *err, size_t errlen);
/* plain echo <- one HAProxy with maxconn (and its fd limit) for that many connections,
 * with busy-polling if busy. */
int  stack_up_haproxy(struct bench_stack *s, const struct bench_opts *o, int maxconn, int busy,
                      char *err, size_t errlen);
/* The most connections one HAProxy can hold under the bench's RLIMIT_NOFILE hard limit. */
int  stack_haproxy_max_conns(void);
int  stack_check(struct bench_stack *s, char *err, size_t errlen);
/* The edge's INI gets `key = value` instead of the line it had, then SIGHUP (a run-time key:
 * the supervisor reloads it). 0 or -errno. */
int  stack_edge_reload(struct bench_stack *s, const char *key, const char *value, char *err,
                       size_t errlen);
void stack_down(struct bench_stack *s);

/* ---- echo.c: echo servers (child mains; arg is a pointer to the listening fd) ---- */

int echo_plain_main(void *arg);
int echo_native_main(void *arg);
int echo_plain_many_main(void *arg);   /* one thread, epoll: the sessions section */
int echo_native_many_main(void *arg);
/* By name, for a child that runs one after exec'ing the bench itself (procs.c): the name
 * of a main (NULL for any other function), the main of a name (NULL for an unknown one). */
const char *echo_child_name(proc_main_fn fn);
proc_main_fn echo_child_by_name(const char *name);

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
int  load_latency_samples(struct bench_conn *c, size_t size, size_t warm, size_t count,
                          uint64_t *samples, char *err, size_t errlen);
void load_percentiles(uint64_t *samples, size_t count, struct lat_result *r); /* sorts */
int  load_throughput(struct bench_conn *c, size_t size, double seconds, struct tput_result *r,
                     char *err, size_t errlen);

/* ---- edgectl.c: one edge session, driven from outside ---- */

#define ECTL_LINE 1024

/* The reply to one control command ("sessions", "snapshot 7", ...) in out, NUL-ended. */
int  ectl_cmd(const char *sock, const char *cmd, char *out, size_t outlen, char *err,
              size_t errlen);
/* The `sessions` line of session id. */
int  ectl_session(const char *sock, uint64_t id, char *line, size_t len, char *err,
                  size_t errlen);
/* A numeric key=value field of a control line: 0, or -ENOENT (absent or "-"). */
int  ectl_field(const char *line, const char *key, uint64_t *v);
/* A text field, copied into out ("" when absent). */
void ectl_text(const char *line, const char *key, char *out, size_t outlen);

struct ectl_snap {
    uint64_t position;
    int      full;          /* the supervisor said full (else delta) */
    uint64_t fork_us, write_us, bytes;
    char     line[ECTL_LINE]; /* the session's line once durable */
};

/* Ask for a snapshot of session id and wait until it is durable (snapshots= grows). */
int  ectl_snapshot(struct bench_stack *s, uint64_t id, struct ectl_snap *r, char *err,
                   size_t errlen);
/* One message, then one reply within timeout_ms; the reply copied into buf (NUL-ended). */
int  ectl_ask(struct bench_conn *c, const char *msg, size_t len, char *buf, size_t cap,
              int timeout_ms, char *err, size_t errlen);
/* The next message within timeout_ms: its length, *data in the endpoint's buffer. */
long ectl_recv(struct bench_conn *c, const void **data, int timeout_ms, char *err,
               size_t errlen);
uint64_t ectl_now_ns(void);
void     ectl_pause_us(long us);

/* ---- the sections: each runs, then prints its markdown section to f. -1 when some
 * measurement could not run (the section says what failed). ---- */

int snapbench_run(FILE *f, const struct bench_opts *o);
int recbench_run(FILE *f, const struct bench_opts *o);
int snaplat_run(FILE *f, const struct bench_opts *o);
int rembench_run(FILE *f, const struct bench_opts *o);
int remdrain_run(FILE *f, const struct bench_opts *o);  /* parts of "remote" */
int remship_run(FILE *f, const struct bench_opts *o);

/* ---- remworld.c: client proxy -> edges -> server proxy (--store) -> plain echo ---- */

#define REM_EDGES 3

struct rem_spec {
    char     tag[32];               /* names files and processes: "remote-kill" */
    int      nedges;                /* 1..REM_EDGES */
    const char *app;                /* in BUILD/apps */
    unsigned snapshot_interval_ms;  /* 0: only when asked for */
    int      ship_off;              /* ship_snapshots = off */
    unsigned edge_heartbeat_ms;     /* heartbeat_interval_ms at the edges */
    unsigned proxy_heartbeat_ms;    /* the client proxy's --heartbeat-ms */
};

struct rem_world {
    struct rem_spec   spec;
    char              tag[32];
    struct bench_proc echo, sproxy, cproxy, edge[REM_EDGES];
    int               port[REM_EDGES], runs[REM_EDGES];
    char              control[REM_EDGES][PATH_MAX];
    char              entry[64], echo_addr[64], sproxy_addr[64]; /* entry: the client proxy */
    char              secret[PATH_MAX], store[PATH_MAX];
};

int  rw_up(struct rem_world *w, const struct rem_spec *spec, const struct bench_opts *o,
           char *err, size_t errlen);
int  rw_edge_start(struct rem_world *w, int i, const struct bench_opts *o, char *err,
                   size_t errlen);
int  rw_check(struct rem_world *w, char *err, size_t errlen);
void rw_edge_signal(struct rem_world *w, int i, int sig);   /* to the node's whole group */
void rw_edge_stop(struct rem_world *w, int i);              /* and reap it */
void rw_down(struct rem_world *w);
int  rw_find_session(struct rem_world *w, uint64_t id, int skip, char *line, size_t len);
int  rw_connect(struct rem_world *w, char *err, size_t errlen);  /* a plain fd */
int  rw_read(int fd, char *buf, size_t len, uint64_t deadline_ns, char *err, size_t errlen);
int  rw_ask(int fd, const char *msg, const char *expect, int timeout_ms, char *err,
            size_t errlen);

/* ---- manyload.c: N connections from one thread ---- */

#define MANY_MSG 64

struct many_conn;

struct many_set {
    struct many_conn *conns;
    int               n;       /* open and proven (closed by many_close) */
    int               proven;  /* the same: each with its first message echoed */
    int               tried;   /* connects started */
    int               native;
    int               inflight; /* opens in flight at once */
    int               epfd;
    double            open_s;  /* opening took this long (failed ones included) */
    double            proven_s; /* from the start to the last one proven */
    struct lat_result setup;   /* one open: connect to first echo, µs */
};

struct many_result {
    uint64_t          sent, echoes, late; /* echoes: received in the measured window */
    double            seconds, msgs_per_s;
    struct lat_result lat;
};

/* Open n connections, inflight at a time (threads), each proven by one echo; the first
 * failure stops new opens. On failure m->proven are open and err says why. */
int  many_open(struct many_set *m, const char *entry, int native, int n, int inflight,
               char *err, size_t errlen);
void many_close(struct many_set *m);
/* Native sessions only: each sent CLOSE and waited for (threads at a time), then
 * many_close. The number closed cleanly. */
int  many_close_clean(struct many_set *m, int threads, int timeout_ms);
/* Each connection one 64 B message per 1/rate_hz s, spread evenly, for seconds (after one
 * warm-up period). */
int  many_paced(struct many_set *m, double rate_hz, double seconds, struct many_result *r,
                char *err, size_t errlen);
/* Each connection its next message as soon as its echo is back, for seconds. */
int  many_saturate(struct many_set *m, double seconds, struct many_result *r, char *err,
                   size_t errlen);

/* ---- procstat.c ---- */

struct ps_usage {
    uint64_t pss_kib; /* summed over the tree */
    int      procs;   /* processes whose PSS was read */
    double   cpu_s;   /* user + system, own and reaped children's */
};

int    ps_tree(pid_t root, pid_t **pids);   /* root and its descendants: their count */
int    ps_tree_usage(pid_t root, struct ps_usage *u);
double ps_tree_cpu_s(pid_t root);
double ps_cpu_s(pid_t pid);                 /* one process: user + system, its own */
int    ps_kernel_kib(uint64_t *kib);        /* meminfo Slab + PageTables + KernelStack */
int    ps_loadavg(double la[3]);
/* The machine's time (/proc/stat) and this process tree's CPU (the bench, its load
 * generator's threads, every stack it started, reaped ones included) at one moment. */
struct ps_machine {
    uint64_t steal, busy, total;   /* ticks: stolen; neither idle, iowait nor stolen; all */
    double   ours_s;
};
int    ps_machine_read(struct ps_machine *m);
/* Between two readings, in % of the machine's time, or NaN: what the hypervisor took
 * (steal), and what ran outside this tree (other programs, kernel threads such as kdamond;
 * softirq work the kernel defers to ksoftirqd counts there too, even for our traffic). */
double ps_steal_pct(const struct ps_machine *a, const struct ps_machine *b);
double ps_others_pct(const struct ps_machine *a, const struct ps_machine *b);

/* ---- hostcost.c ---- */

/* This machine's own costs, measured at the start of a run; -1 where one failed. */
struct hostcost {
    double syscall_us;           /* getppid() */
    double wake_round_trip_us;   /* a byte to another process over a pipe and back */
    double fork_us;              /* fork, the child's _exit, waitpid */
    double page_fault_us;        /* first touch of a fresh anonymous page */
};
void hostcost_measure(struct hostcost *h);
void hostcost_print(FILE *f, const struct hostcost *h);

/* ---- jsonw.c ---- */

#define JSONW_MAX_DEPTH 16

struct jsonw {
    FILE *f;
    int   depth, after_key;
    int   count[JSONW_MAX_DEPTH];
};

void jw_obj(struct jsonw *w);
void jw_obj_end(struct jsonw *w);
void jw_arr(struct jsonw *w);
void jw_arr_end(struct jsonw *w);
void jw_key(struct jsonw *w, const char *key);
void jw_num(struct jsonw *w, const char *key, double v);     /* key NULL inside an array */
void jw_str(struct jsonw *w, const char *key, const char *s); /* s NULL: null */

/* ---- manybench.c: section "sessions" ---- */

int  manybench_run(FILE *f, const struct bench_opts *o);
void manybench_json(struct jsonw *w);     /* the section's numbers, as "sessions": {...} */
const char *manybench_stack_name(int stack);

/* ---- plot.c: --plot DIR ---- */

/* A data file DIR/name.dat for a plot, opened for writing (its first line a comment with
 * the columns); NULL when --plot is not set or the file cannot be made (said on stderr).
 * The plot of that name is drawn at the end of the run by plot_draw. */
FILE *plot_data(const struct bench_opts *o, const char *name, const char *columns);
void  plot_data_close(FILE *f);
void  plot_num(FILE *f, double v);   /* " v", or " ?" (missing) when not finite */
/* The gnuplot commands for DIR/name.png (after the terminal and output lines the bench
 * writes); %D in text stands for DIR's absolute path. Drawn by plot_draw. */
void  plot_script(const struct bench_opts *o, const char *name, const char *text);
/* Draw a PNG per data file written in this run, with gnuplot. 0, or -errno with err set
 * (gnuplot missing, or it failed). */
int   plot_draw(const struct bench_opts *o, char *err, size_t errlen);

/* helpers shared by the sections (report.c) */
void report_size_label(size_t size, char *out, size_t len);
double report_median(double *v, int n); /* sorts v */
double report_max(const double *v, int n);

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
void report_json(struct jsonw *w, const struct bench_opts *o,
                 struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES]);
/* The paths' latency percentiles and throughput, as plot data. */
void  report_plot_data(const struct bench_opts *o,
                       struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES]);

#endif
