/* t_duplex.h - one session of an example app driven from both ends (it_apps_conf.c,
 * it_apps_game.c): N supervisors (each its own process group, snapshots shipped), a native
 * server that stores them (cessna_ep_server_new) and a native client with every edge in its
 * list. A reader thread per side keeps every message that side receives, in order, in a
 * transcript; a script (a function on a thread of its own) sends on either side and waits
 * for what it expects, while the test's main thread injects faults: worker SIGKILLs at
 * random moments, or whole edge nodes killed and restarted empty. */
#ifndef CESSNA_T_DUPLEX_H
#define CESSNA_T_DUPLEX_H

#include <pthread.h>
#include <stddef.h>

#include "t_helpers.h"

#define DX_EDGES_MAX 3
enum { DX_CLIENT = 0, DX_SERVER = 1 };
enum dx_fault { DX_NONE, DX_KILL_WORKER, DX_KILL_EDGE };

struct dx_side {
    struct cessna_ep *ep;
    pthread_t th;
    char *buf;                         /* every message received, concatenated */
    size_t len, cap, last;             /* last: where the newest message starts */
    int msgs;
    volatile int ended;                /* CLOSE (1) or an error (-1) */
    char why[256];
};

struct dx {
    const char *dir;
    char app[300], app_cfg[512], extra[512], secret_file[300], store[300], edges[256];
    int nedges, lfd;
    char server_addr[64];
    struct cessna_ep_server *srv;
    struct t_proc edge[DX_EDGES_MAX];
    int port[DX_EDGES_MAX], restarts[DX_EDGES_MAX];
    struct dx_side side[2];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void (*script)(struct dx *d);
    volatile int script_done;
    char script_why[400];              /* a script's failure, "" when it went through */
};

/* Start the edges running app_path with the [app] lines app_cfg (and [edge] lines extra),
 * the server and the client; returns when both ends hold the session. */
void dx_start(struct dx *d, const char *app_path, const char *app_cfg, const char *extra,
              int nedges);
/* Run script(d) on a thread while faults of kind f land every gap_min..gap_max ms until it
 * returns; the number of faults made. */
int  dx_run(struct dx *d, void (*script)(struct dx *d), enum dx_fault f, int gap_min_ms,
            int gap_max_ms);
/* Wait until both sides ended with CLOSE (the app ends the session); frees the endpoints. */
void dx_finish(struct dx *d);
void dx_stop(struct dx *d);

/* For scripts: send text on one side; wait until a side has received n messages, or its
 * transcript holds needle. Nonzero (and script_why set) on failure: return at once. */
int  dx_send(struct dx *d, int side, const char *text);
int  dx_wait_msgs(struct dx *d, int side, int n, int timeout_ms);
int  dx_wait_text(struct dx *d, int side, const char *needle, int timeout_ms);
int  dx_msgs(struct dx *d, int side);
/* The newest message a side received (cut to len). */
void dx_last(struct dx *d, int side, char *out, size_t len);

/* Both transcripts of b equal a's, byte for byte (a: the run without faults). */
void dx_compare(struct dx *a, struct dx *b);

/* Run script on a new world (app_path, app_cfg, [edge] extra, nedges edges) under fault f
 * every gap_min..gap_max ms, check at least min_faults landed, and compare both sides'
 * transcripts with clean's, byte for byte. */
void dx_compare_faulty(struct dx *clean, const char *app_path, const char *app_cfg,
                       const char *extra, void (*script)(struct dx *d), enum dx_fault f,
                       int nedges, int gap_min, int gap_max, int min_faults);

/* A session of app (a built app's name) with [app] lines app_cfg must fail at its start
 * (init refuses it), and the edge's log must hold want (the app's line naming the setting). */
void dx_bad_setting(const char *app, const char *app_cfg, const char *want);

#endif
