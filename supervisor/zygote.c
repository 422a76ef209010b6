/* zygote.c - start the app's zygote and ask it for session workers (DESIGN.md section 6). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "spawn.h"
#include "sup.h"

#define ZYGOTE_READY_TIMEOUT_MS 10000

int zygote_start(const char *app, const char *cache_dir, const char *state_dir, char *err,
                 size_t errlen)
{
    char dir[PATH_MAX], exe[PATH_MAX + 32], fdarg[16];
    struct spawn_ready ready;
    struct pollfd pfd;
    int sv[2], pidfd = -1, nfds, rc;
    pid_t pid;

    if (proc_exe_dir(dir, sizeof(dir)) < 0) {
        snprintf(err, errlen, "cannot find the directory of this executable");
        return -ENOENT;
    }
    snprintf(exe, sizeof(exe), "%s/cessna-worker", dir);
    if (access(exe, X_OK) == -1) {
        snprintf(err, errlen, "worker binary %s: %s", exe, strerror(errno));
        return -ENOENT;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -errno;
    }
    pid = proc_fork(0, &pidfd);
    if (pid < 0) {
        snprintf(err, errlen, "fork of the zygote: %s", strerror(-pid));
        close(sv[0]);
        close(sv[1]);
        return pid;
    }
    if (pid == 0) {
        char *argv[] = { exe, "--zygote", "--app", (char *)app, "--fd", fdarg,
                         "--cache-dir", (char *)(cache_dir ? cache_dir : ""),
                         "--state-dir", (char *)state_dir, NULL };
        int fd = dup(sv[1]);   /* without CLOEXEC: it crosses the exec */
        snprintf(fdarg, sizeof(fdarg), "%d", fd);
        personality(ADDR_NO_RANDOMIZE);
        execv(exe, argv);
        _exit(127);
    }
    close(sv[1]);

    pfd = (struct pollfd){ .fd = sv[0], .events = POLLIN };
    rc = poll(&pfd, 1, ZYGOTE_READY_TIMEOUT_MS);
    if (rc <= 0) {
        snprintf(err, errlen, "zygote did not report ready within %d ms", ZYGOTE_READY_TIMEOUT_MS);
        goto fail;
    }
    rc = spawn_recv(sv[0], &ready, sizeof(ready), NULL, 0, &nfds);
    if (rc < 0) {
        snprintf(err, errlen, "zygote exited before it was ready (see its log above)");
        goto fail;
    }
    if (ready.version != SPAWN_VERSION || ready.status != 0) {
        ready.text[sizeof(ready.text) - 1] = 0;
        snprintf(err, errlen, "%s", ready.text);
        goto fail;
    }
    S.zygote_sock = sv[0];
    S.zygote_pid = pid;
    S.zygote_pidfd = pidfd;
    LOG(LOG_INFO, "msg=\"zygote ready\" pid=%d app=%s", (int)pid, app);
    return 0;
fail:
    kill(pid, SIGKILL);
    close(sv[0]);
    close(pidfd);
    while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
        ;
    return -EINVAL;
}

/* Synchronous: the zygote answers within a fork's time. */
int zygote_spawn(struct session *s, int memfd, uint64_t restore_pos, char *err, size_t errlen)
{
    struct spawn_request req;
    struct spawn_reply rep;
    int fds[4] = { memfd, s->doorbell_in, s->doorbell_out, s->report_worker_fd };
    int pidfd = -1, nfds, rc;

    memset(&req, 0, sizeof(req));
    req.version = SPAWN_VERSION;
    req.ring_size = S.ring_size;
    req.session_id = s->id;
    req.max_message = S.cfg.max_message_bytes;
    req.restore_pos = restore_pos;
    rc = spawn_send(S.zygote_sock, &req, sizeof(req), fds, 4);
    if (rc == 0)
        rc = spawn_recv(S.zygote_sock, &rep, sizeof(rep), &pidfd, 1, &nfds);
    if (rc < 0) {
        snprintf(err, errlen, "zygote unreachable: %s", strerror(-rc));
        return rc;
    }
    if (rep.status != 0 || nfds != 1) {
        snprintf(err, errlen, "zygote could not fork a worker: %s",
                 strerror(rep.status ? -rep.status : EPROTO));
        if (nfds == 1)
            close(pidfd);
        return rep.status ? rep.status : -EPROTO;
    }
    s->pid = rep.pid;
    s->pidfd = pidfd;
    return 0;
}
