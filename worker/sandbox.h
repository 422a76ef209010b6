/* sandbox.h - confine a session worker before app code runs (docs/sandbox.md, DESIGN.md 6):
 * no_new_privs, an unprivileged user, Landlock on its own session directory, and a seccomp
 * allow-list whose violations end the session with an error naming the call. */
#ifndef CESSNA_SANDBOX_H
#define CESSNA_SANDBOX_H

#include <stddef.h>

/* Zygote: on or off; the user workers run as when the zygote is root (NULL or "root": none).
 * Resolves the user, checks the kernel and compiles the filter once, for every worker.
 * 0, or -errno with a reason. */
int  sandbox_init(int enabled, const char *user, char *err, size_t errlen);

/* The descriptors a confined worker keeps; sandbox_enter moves them to the fixed numbers
 * the filter names and updates them here. */
struct sandbox_fds {
    int report;       /* snapshot report socket: the only socket it may send on */
    int session_dir;  /* STATE_DIR/SESSION_ID, opened O_DIRECTORY: files are opened under it */
    int cache_dir;    /* cache_dir (O_PATH), read-only; -1 when there is none */
};

/* Worker, after its setup and before the app's first event: confine this process. From here
 * on a refused call runs fail(text), which must not return. 0 when confined (or the sandbox
 * is off), -errno with a reason if confinement failed (the worker must then not run the app). */
int  sandbox_enter(struct sandbox_fds *fds, void (*fail)(const char *text),
                   char *err, size_t errlen);

/* Snapshot child, right after the fork: its own process group (it may signal itself, see
 * sandbox.c); a refused call now runs fail(text) (the child's failure report), then ends
 * this child only. */
void sandbox_snapshot_child(void (*fail)(const char *text));
/* A hot standby taking over: it is the worker again. */
void sandbox_resume_worker(void);

#endif
