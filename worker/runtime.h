/* runtime.h - the worker side: the app module, the arena, and a session's event loop. */
#ifndef CESSNA_RUNTIME_H
#define CESSNA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

/* The arena sits at the same fixed address in every worker of every edge (ASLR is off in
 * the zygote), so pointers inside it stay valid in a snapshot restored elsewhere. */
#define RT_ARENA_BASE ((void *)0x200000000000ull)   /* above ASan's shadow too */
#define RT_ARENA_SIZE (4ull << 30)
/* The first page of the arena holds the runtime's own state; the allocator gets the rest. */
#define RT_STATE_SPACE 4096ull

struct rt_session {
    uint64_t session_id;
    uint32_t ring_size;
    uint32_t max_message;
    int memfd;       /* the session's shared memory (shm.h) */
    int doorbell_out;/* -1: the supervisor waits on shm_ctl.bell_out (bell.h); else an
                      * eventfd it waits on instead (kernels before 6.7) */
    int report_fd;   /* snapshot children report here */
    uint64_t restore_pos;   /* 0: start fresh; else restore the snapshot at this position */
    uint64_t max_memory;    /* the arena's cap in bytes (max_session_memory); 0: no cap */
};

/* Re-exec this program with ASLR off unless it is off already: the layout must be the
 * same in every process that runs the app (snapshots hold raw pointers). LD_BIND_NOW is
 * set for that exec too, so workers forked later find every symbol resolved. */
void rt_reexec_for_workers(char **argv);
/* Zygote: load and check the app module; reserve the arena. 0, or -errno with a reason. */
int rt_load_app(const char *path, char *err, size_t errlen);
int rt_reserve_arena(char *err, size_t errlen);
/* Zygote: the directory cessna_cache_read() reads from (an O_PATH fd), or -1 for none. */
void rt_set_cache_dir(int dirfd);
/* Zygote: where snapshots go (STATE_DIR/SESSION_ID/). */
void rt_set_state_dir(const char *dir);

/* Worker, inside an event: the state of the libc rand() family (determ.c). */
uint64_t *rt_rand_state(void);

/* cessna-replay's main (the same binary as the worker, called by that name). */
int replay_main(int argc, char **argv);

/* Worker: run the session until it ends; never returns. */
/* libc's heap settings and a trimmed heap, done once in the zygote (or cessna-replay) before
 * any worker is forked: the workers inherit both. */
void rt_prepare_heap(void);
void rt_run(const struct rt_session *s) __attribute__((noreturn));

#endif
