/* main.c - cessna-worker: the zygote of one app (DESIGN.md section 6).
 *
 * The supervisor starts it with ASLR off; it loads the app module, reserves the arena at
 * its fixed address, reports ready, then forks one worker per session on request. Workers
 * are created with CLONE_PARENT, so the supervisor is their parent: it reaps them and sees
 * how they died. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cessna_version.h"
#include "log.h"
#include "proc.h"
#include "determ.h"
#include "proctitle.h"
#include "runtime.h"
#include "sandbox.h"
#include "spawn.h"
#include "wsnap.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cessna-worker --zygote --app MODULE.so --fd N --state-dir DIR [--cache-dir DIR]\n"
        "                     [--sandbox on|off] [--worker-user USER] [--log-fd N]\n"
        "\n"
        "The per-app zygote that cessna-supervisor starts; it is not run by hand.\n"
        "It loads MODULE.so, then forks one worker per session on the supervisor's\n"
        "request over the socket N. In ps it shows as 'cessna-worker zygote app=NAME', each\n"
        "worker as 'cessna-worker session=ID' (a hot standby: '... standby').\n"
        "--log-fd N is the supervisor's log level page: its level, reloads included, holds\n"
        "for the zygote and every worker.\n"
        "  -V, --version   print the version and exit\n");
}

static void report_ready(int sock, int status, const char *text)
{
    struct spawn_ready r;

    memset(&r, 0, sizeof(r));
    r.version = SPAWN_VERSION;
    r.status = status;
    snprintf(r.text, sizeof(r.text), "%s", text);
    if (status == 0)
        memcpy(r.fingerprint, wsnap_fingerprint(), sizeof(r.fingerprint));
    spawn_send(sock, &r, sizeof(r), NULL, 0);
}

static void spawn_one(int sock, const struct spawn_request *req, const int *fds, int nfds)
{
    struct spawn_reply rep;
    int pidfd = -1;
    pid_t pid = proc_fork(PROC_SIBLING, &pidfd);

    if (pid == 0) {
        struct rt_session s = {
            .session_id = req->session_id, .ring_size = req->ring_size,
            .max_message = req->max_message,
            .memfd = fds[0], .report_fd = fds[1], .doorbell_out = nfds > 2 ? fds[2] : -1,
            .restore_pos = req->restore_pos,
            .max_memory = req->max_memory,
        };
        close(sock);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        proctitle_set("cessna-worker", "cessna-worker session=%llu",
                      (unsigned long long)req->session_id);
        rt_run(&s);
    }
    memset(&rep, 0, sizeof(rep));
    rep.version = SPAWN_VERSION;
    rep.status = pid < 0 ? pid : 0;
    rep.pid = pid < 0 ? 0 : pid;
    spawn_send(sock, &rep, sizeof(rep), &pidfd, pid < 0 ? 0 : 1);
    if (pidfd >= 0)
        close(pidfd);
}

int main(int argc, char **argv)
{
    const char *self = strrchr(argv[0], '/');

    proctitle_init(argc, argv);
    self = strrchr(argv[0], '/');
    if (strcmp(self ? self + 1 : argv[0], "cessna-replay") == 0)
        return replay_main(argc, argv);

    static const struct option opts[] = {
        { "zygote", no_argument, NULL, 'z' },
        { "app", required_argument, NULL, 'a' },
        { "fd", required_argument, NULL, 'f' },
        { "log-fd", required_argument, NULL, 'l' },
        { "cache-dir", required_argument, NULL, 'c' },
        { "state-dir", required_argument, NULL, 's' },
        { "sandbox", required_argument, NULL, 'b' },
        { "worker-user", required_argument, NULL, 'u' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    const char *app = NULL, *cache_dir = NULL, *worker_user = "nobody";
    int sock = -1, log_fd = -1, zygote = 0, sandbox = 1, c;
    char err[256];

    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case 'z': zygote = 1; break;
        case 'a': app = optarg; break;
        case 'f': sock = atoi(optarg); break;
        case 'l': log_fd = atoi(optarg); break;
        case 'c': cache_dir = optarg; break;
        case 's': rt_set_state_dir(optarg); break;
        case 'b': sandbox = strcmp(optarg, "off") != 0; break;
        case 'u': worker_user = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cessna-worker %s\n", CESSNA_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!zygote || !app || sock < 0) {
        usage(stderr);
        return 2;
    }
    log_init("cessna-zygote");
    rt_reexec_for_workers(argv);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);

    if (rt_load_app(app, err, sizeof(err)) < 0 || rt_reserve_arena(err, sizeof(err)) < 0 ||
        wsnap_init(app, err, sizeof(err)) < 0 ||
        sandbox_init(sandbox, worker_user, err, sizeof(err)) < 0) {
        report_ready(sock, -EINVAL, err);
        return 1;
    }
    /* The supervisor's level, reloads included, for every worker. Mapped only now: the
     * layout fingerprint (load addresses) must be what cessna-replay, which has no such
     * page, gets too. */
    if (log_fd >= 0)
        log_follow(log_fd);
    if (cache_dir && *cache_dir) {
        int dfd = open(cache_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd == -1) {
            snprintf(err, sizeof(err), "cache_dir %s: %s", cache_dir, strerror(errno));
            report_ready(sock, -errno, err);
            return 1;
        }
        rt_set_cache_dir(dfd);
    }
    /* ps: "cessna-worker zygote app=NAME" (the module's file name without .so). */
    const char *base = strrchr(app, '/') ? strrchr(app, '/') + 1 : app;
    size_t blen = strlen(base);
    if (blen > 3 && strcmp(base + blen - 3, ".so") == 0)
        blen -= 3;
    proctitle_set("cessna-zygote", "cessna-worker zygote app=%.*s", (int)blen, base);
    determ_resolve_libc();   /* before rt_prepare_heap: a lookup may allocate */
    rt_prepare_heap();
    report_ready(sock, 0, "ready");

    for (;;) {
        struct spawn_request req;
        int fds[3], nfds, rc;

        rc = spawn_recv(sock, &req, sizeof(req), fds, 3, &nfds);
        if (rc < 0) {
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            if (rc == -EPIPE || rc == -ECONNRESET)
                return 0;   /* the supervisor closed the socket (or exited): we are done */
            LOG(LOG_ERROR, "msg=\"spawn request\" error=\"%s\"", strerror(-rc));
            return 1;
        }
        if (req.version != SPAWN_VERSION || nfds < 2) {
            LOG(LOG_ERROR, "msg=\"bad spawn request\" version=%u fds=%d", req.version, nfds);
        } else {
            spawn_one(sock, &req, fds, nfds);
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}
