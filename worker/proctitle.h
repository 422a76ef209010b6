/* proctitle.h - what ps shows for the zygote and each worker.
 *
 * /proc/PID/cmdline (ps's COMMAND) is the process's own argv memory: the title is written
 * over the original argv strings and the environment strings that follow them (the
 * environment is copied to the heap first, so getenv still works), and the rest is
 * zeroed. /proc/PID/comm (top, ps -o comm) is set with prctl(PR_SET_NAME), 15 characters.
 * Neither needs a syscall the sandbox refuses: writing memory needs none, and the seccomp
 * filter allows PR_SET_NAME (sandbox.c). */
#ifndef CESSNA_PROCTITLE_H
#define CESSNA_PROCTITLE_H

/* Once, first thing in main() (before getopt): argv[i] and the environment become heap
 * copies, and their original memory is the title's. */
void proctitle_init(int argc, char **argv);
/* The title (truncated to the room there is) and comm (truncated to 15 characters). */
void proctitle_set(const char *comm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
