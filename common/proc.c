/* proc.c - see proc.h. clone with CLONE_PIDFD gives the pidfd atomically with the fork (no
 * pid reuse race) and lets a zygote create workers whose parent is the supervisor
 * (CLONE_PARENT), so the supervisor can reap them and see how they died. It is the legacy
 * clone, not clone3, because a worker's seccomp filter can check clone's flags but not
 * clone3's (worker/sandbox.c). */
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proc.h"

#define MAX_CLOSE_FDS 16
static int close_fds[MAX_CLOSE_FDS];
static int nclose_fds;

void proc_close_in_child(int fd)
{
    if (nclose_fds < MAX_CLOSE_FDS)
        close_fds[nclose_fds++] = fd;
}

void proc_forget(int fd)
{
    for (int i = 0; i < nclose_fds; i++) {
        if (close_fds[i] == fd) {
            close_fds[i] = close_fds[--nclose_fds];
            return;
        }
    }
}

static void child_setup(void)
{
    struct sigaction sa = { .sa_handler = SIG_DFL };
    sigset_t none;

    /* SIGSYS stays: a confined worker's snapshot child keeps the sandbox's handler, and
     * may not change it (worker/sandbox.c). */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP && sig != SIGSYS)
            sigaction(sig, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; i < nclose_fds; i++)
        close(close_fds[i]);
    nclose_fds = 0;
}

pid_t proc_fork(unsigned flags, int *pidfd)
{
    unsigned long cflags = 0;
    int fd = -1;
    long pid;

    /* A sibling inherits our own exit signal (the kernel refuses one with CLONE_PARENT). */
    if (!(flags & PROC_SIBLING))
        cflags |= SIGCHLD;
    if (flags & PROC_SIBLING)
        cflags |= CLONE_PARENT;
    if (pidfd)
        cflags |= CLONE_PIDFD;   /* the pidfd comes back in the parent_tid argument */
    /* clone(flags, stack, parent_tid, child_tid, tls); with no stack the child goes on on
     * a copy of ours, like fork (child_tid and tls swap places on some architectures:
     * both are unused here). */
    pid = syscall(SYS_clone, cflags, NULL, pidfd ? &fd : NULL, NULL, 0ul);
    if (pid == -1)
        return -errno;
    if (pid == 0) {
        child_setup();
        return 0;
    }
    if (pidfd)
        *pidfd = fd;
    return (pid_t)pid;
}

int proc_exe_dir(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    char *slash;

    if (n == -1)
        return -errno;
    buf[n] = 0;
    slash = strrchr(buf, '/');
    if (!slash)
        return -EINVAL;
    *slash = 0;
    return 0;
}
