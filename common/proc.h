/* proc.h - the one fork wrapper (STYLE.md 3), and child-side hygiene. */
#ifndef CESSNA_PROC_H
#define CESSNA_PROC_H

#include <sys/types.h>

enum proc_flags {
    PROC_SIBLING = 1,  /* the child's parent is our parent (CLONE_PARENT) */
};

/* Fork. Returns the child's pid in the parent (and a pidfd in *pidfd when pidfd != NULL),
 * 0 in the child, -errno on failure. In the child, signal dispositions are reset and the
 * fds registered with proc_close_in_child() are closed. A child leaves with _exit(). */
pid_t proc_fork(unsigned flags, int *pidfd);

/* Register an fd that no forked child may keep (a listener, the io_uring fd, ...). */
void proc_close_in_child(int fd);
void proc_forget(int fd);

/* The directory of the running executable (for finding sibling binaries). */
int proc_exe_dir(char *buf, size_t len);

#endif
