/* exitwatch.c - knowing when a session's worker exits, without a descriptor per session.
 *
 * Workers are the supervisor's own children (the zygote forks them with CLONE_PARENT), so
 * their pids cannot be reused before we reap them: the pid is as safe a handle as a pidfd.
 * The loop waits for the exit with IORING_OP_WAITID (Linux 6.7) and WNOWAIT, and
 * sess_on_worker_exit reaps with waitid(P_PID) when it handles the completion; until then
 * kill(pid) can only reach the worker. A kernel without the operation keeps the pidfd the
 * zygote sends with each worker and polls it, as before. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sup.h"

/* Not in Debian 12's liburing and kernel headers yet. */
#define OP_WAITID 50

void exitwatch_probe(void)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(&S.ring);

    S.waitid_watch = p && io_uring_opcode_supported(p, OP_WAITID);
    if (p)
        io_uring_free_probe(p);
    if (!S.waitid_watch)
        LOG(LOG_INFO, "msg=\"io_uring has no waitid operation (Linux < 6.7): each session "
            "keeps its worker's pidfd\"");
}

void sess_arm_exit_watch(struct session *s)
{
    struct io_uring_sqe *sqe = sup_sqe();

    if (S.waitid_watch) {
        /* waitid(P_PID, pid, NULL, options): the pid in fd, the id type in len, the
         * options in file_index; no siginfo (sess_on_worker_exit reaps and reads it). */
        io_uring_prep_rw(OP_WAITID, sqe, s->pid, NULL, P_PID, 0);
        sqe->file_index = WEXITED | WNOWAIT | __WALL;
    } else {
        io_uring_prep_poll_add(sqe, s->pidfd, POLLIN);
    }
    io_uring_sqe_set_data64(sqe, UD(OP_WORKER_EXIT, s->slot, 0));
    s->exit_armed = 1;
    s->inflight++;
}

/* The worker's pidfd from the zygote (or a dup of a promoted standby's): kept only when
 * the kernel cannot wait for a pid through io_uring. */
void sess_keep_pidfd(struct session *s, int pidfd)
{
    if (S.waitid_watch) {
        if (pidfd >= 0)
            close(pidfd);
        pidfd = -1;
    }
    s->pidfd = pidfd;
}

/* Signal the worker, if it is still ours to signal (not reaped). 0 or -errno. */
int sess_signal_worker(struct session *s, int sig)
{
    if (s->pid <= 0 || s->worker_reaped)
        return -ESRCH;
    return kill(s->pid, sig) == -1 ? -errno : 0;
}
