/* t_world.h - a small CESSNA deployment for the remote-recovery tests (it_remote.c,
 * it_remote_ops.c): N supervisors (edges, each its own process group) behind one client
 * proxy (--edge E0,E1,...) and one server proxy (--store, --edge-secret-file) in front of a
 * plain TCP server program (or any --target), plus lockstep client programs that drive
 * apps/sequencer.so and keep every byte they receive. */
#ifndef CESSNA_T_WORLD_H
#define CESSNA_T_WORLD_H

#include <pthread.h>
#include <stdint.h>

#include "t_helpers.h"

#define W_EDGES_MAX    4
#define W_SESSIONS_MAX 8

struct w_transcript {
    char *buf;
    size_t len, cap;
};

void w_keep(struct w_transcript *t, const void *data, size_t len);

/* What a world is made of; zero fields take the defaults in brackets. */
struct w_opts {
    int edges;                         /* [3] */
    int sessions;                      /* lockstep clients [6] */
    int rounds;                        /* messages each client sends [900] */
    const char *standby;               /* [cold] */
    const char *app;                   /* built app name [sequencer] */
    const char *target;                /* server proxy --target; NULL: the server program */
    const char *edge_extra[W_EDGES_MAX];   /* more [edge] lines for edge i */
    int no_secret[W_EDGES_MAX];        /* edge i has no edge_secret_file */
    int heartbeat_ms;                  /* client proxy [400] */
    int resume_timeout_ms;             /* client proxy [30000] */
    int snapshot_interval_ms;          /* edges [50]; -1: no snapshots */
    int pause_after, pause_ms;         /* clients pause pause_ms after round pause_after [never] */
};

struct world {
    struct w_opts o;
    const char *dir;
    char secret_file[300], store[300];
    struct t_proc sproxy, cproxy;
    int server_lfd;
    char server_addr[64];
    struct t_proc edge[W_EDGES_MAX];
    int port[W_EDGES_MAX], restarts[W_EDGES_MAX];
    struct w_transcript client[W_SESSIONS_MAX], server[W_SESSIONS_MAX];
    pthread_mutex_t lock;
    char why[W_SESSIONS_MAX][400];
    volatile int server_conns;         /* connections the server program accepted */
    volatile int rounds_done[W_SESSIONS_MAX];
};

/* A loopback port free a moment ago. */
int  w_free_port(void);
/* Start everything (the options are copied, defaults filled in). */
void world_start(struct world *w, const struct w_opts *o);
/* Stop every process of the world (edges as whole process groups). */
void world_stop(struct world *w);

/* Edge i: a new node (empty state_dir) / SIGKILL to its whole process group, waited for. */
void edge_start(struct world *w, int i);
void edge_kill(struct world *w, int i);
/* 1 while something accepts on edge i's control socket. */
int  edge_alive(struct world *w, int i);
/* Ask edge i's control socket (cessna-ctl's protocol). */
void edge_ctl(struct world *w, int i, const char *cmd, char *out, size_t len);
/* The same, for an edge that may be gone: -1 when it does not answer. */
int  edge_ctl_try(struct world *w, int i, const char *cmd, char *out, size_t len);
/* stats field of edge i (0 when the edge does not answer). */
uint64_t edge_stat(struct world *w, int i, const char *key);
/* The edge with the most sessions (-1: none has any). */
int  busiest_edge(struct world *w);
/* Session ids live on edge i (from `sessions`); how many, up to max. */
int  edge_session_ids(struct world *w, int i, uint64_t *ids, int max);
/* key= of session id on edge i; 0 when the edge does not hold it. */
uint64_t edge_session_field(struct world *w, int i, uint64_t id, const char *key);
/* Path of edge i's current log (of its latest start). */
void edge_log(struct world *w, int i, char *path, size_t len);
/* Occurrences of needle in the file at path. */
int  file_count(const char *path, const char *needle);
/* file_count(path, needle) reaches n within timeout_ms: 1, else 0. */
int  file_wait_count(const char *path, const char *needle, int n, int timeout_ms);
/* The last line of path holding needle, into out ("" when none). */
void file_last_line(const char *path, const char *needle, char *out, size_t len);

/* The lockstep client programs. */
struct w_client_arg {
    struct world *w;
    int index;
};
struct w_clients {
    pthread_t th[W_SESSIONS_MAX];
    struct w_client_arg arg[W_SESSIONS_MAX];
};
void run_clients(struct world *w, struct w_clients *c);
void join_clients(struct world *w, struct w_clients *c);
/* Wait until every client has sent at least `rounds` messages (or timeout_ms passed). */
int  wait_rounds(struct world *w, int rounds, int timeout_ms);
/* The server program files a transcript when its connection ends: wait for all. */
void wait_server_transcripts(struct world *w);

/* Mask every RAND value in t, checking they are consecutive draws; the number of draws. */
int  check_rand(struct w_transcript *t, int session);
/* Every client's and server's bytes in b equal a's (a: the fault-free run). */
void compare(struct world *a, struct world *b);

#endif
