/* cessna_ctl.c - cessna-ctl: ask a running supervisor through its control socket. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cessna_version.h"
#include "ctlcmd.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cessna-ctl --socket PATH COMMAND\n"
        "\n"
        "Commands:\n"
        "  sessions          one line per session: id= worker= state= events= ordered=\n"
        "                    to_client= to_server= recoveries= standby= snapshot= snapshots=\n"
        "                    snapshot_bytes= fork_us= write_us= held_events=, and after a\n"
        "                    recovery: recovery= recovery_us= recovery_start_us=\n"
        "                    recovery_load_us= recovery_replay_us=\n"
        "  stats             counters of the edge node\n"
        "  kill-worker ID    SIGKILL the worker of session ID (for demos and tests)\n"
        "  snapshot ID       take a snapshot of session ID now\n"
        "  log ID            write session ID's events since its last durable snapshot to\n"
        "                    STATE_DIR/ID/events-FIRST.log (for cessna-replay) and say where\n"
        "  move ID           move session ID to another edge: a final snapshot is shipped to\n"
        "                    the server endpoint, then its client endpoint resumes elsewhere\n"
        "  drain             move every session away, refuse new ones, and stop the supervisor\n"
        "                    when none is left (SIGTERM does the same)\n"
        "\n"
        "  -s, --socket PATH the supervisor's control socket ([edge] control)\n"
        "  -h, --help        this text\n"
        "  -V, --version     print the version and exit\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    const char *path = NULL;
    char cmd[256], buf[65536];
    ssize_t n;
    int c, fd, failed = 0;

    while ((c = getopt_long(argc, argv, "s:hV", opts, NULL)) != -1) {
        switch (c) {
        case 's': path = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cessna-ctl %s\n", CESSNA_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!path || optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[optind], "kill-worker") == 0 || strcmp(argv[optind], "snapshot") == 0 ||
        strcmp(argv[optind], "move") == 0) {
        if (optind + 2 != argc) {
            fprintf(stderr, "cessna-ctl: %s needs a session id\n", argv[optind]);
            return 2;
        }
        snprintf(cmd, sizeof(cmd), "%s %s\n", argv[optind], argv[optind + 1]);
    } else if ((strcmp(argv[optind], "sessions") == 0 || strcmp(argv[optind], "stats") == 0 ||
                strcmp(argv[optind], "drain") == 0) && optind + 1 == argc) {
        snprintf(cmd, sizeof(cmd), "%s\n", argv[optind]);
    } else {
        fprintf(stderr, "cessna-ctl: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    struct ctl_cmd parsed;
    char why[CTL_LINE_MAX + 128];
    if (ctl_parse(cmd, strlen(cmd), &parsed, why, sizeof(why)) < 0) {   /* as the edge would */
        fprintf(stderr, "cessna-ctl: %s", why);
        return 2;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "cessna-ctl: socket path too long: %s\n", path);
        return 2;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        fprintf(stderr, "cessna-ctl: cannot reach the supervisor at %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (write(fd, cmd, strlen(cmd)) == -1) {
        fprintf(stderr, "cessna-ctl: write: %s\n", strerror(errno));
        return 1;
    }
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (strncmp(buf, "error:", 6) == 0)
            failed = 1;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    return failed ? 1 : 0;
}
