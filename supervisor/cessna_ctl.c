/* cessna_ctl.c - cessna-ctl: ask a running supervisor through its control socket. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "cessna_version.h"
#include "ctlcmd.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cessna-ctl --socket PATH [--json] COMMAND [ID]\n"
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
        "  drain             refuse new sessions, move every session that can move, close\n"
        "                    the others once quiet, and stop the supervisor when none is\n"
        "                    left (SIGTERM does the same)\n"
        "\n"
        "  -s, --socket PATH the supervisor's control socket ([edge] control)\n"
        "  -j, --json        print one JSON object instead of text: stats as an object of\n"
        "                    its fields, sessions as {\"sessions\": [ ... ]}, the other\n"
        "                    commands as {\"ok\": true, \"message\": TEXT} or {\"ok\": false,\n"
        "                    \"error\": TEXT}; numbers are numbers (the session id is a\n"
        "                    string), \"-\" (none) is null\n"
        "  -h, --help        this text\n"
        "  -V, --version     print the version and exit\n");
}

/* ---- --json: the supervisor's key=value text, converted ---- */

/* A value as JSON: a whole number as a number, "-" (none) as null, else a string. */
static json_t *json_value(const char *v)
{
    const char *p = v + (v[0] == '-');
    char *end;

    if (strcmp(v, "-") == 0)
        return json_null();
    if (*p >= '0' && *p <= '9' && strspn(p, "0123456789") == strlen(p)) {
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!errno && !*end)
            return json_integer(n);
    }
    return json_string(v);
}

/* One line of key=value fields as an object; NULL when a word is not key=value. A session
 * id stays a string: 63 bits do not fit a double, and jq 1.6 or JavaScript would round it. */
static json_t *json_fields(char *line)
{
    json_t *o = json_object();
    char *save = NULL;

    for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(w, '=');
        if (!eq || eq == w) {
            json_decref(o);
            return NULL;
        }
        *eq = 0;
        json_object_set_new(o, w, strcmp(w, "id") == 0 ? json_string(eq + 1) : json_value(eq + 1));
    }
    return o;
}

/* The reply to verb as one JSON object (on stdout); 1 when the supervisor said error. */
static int print_json(const char *verb, char *reply)
{
    json_t *root = NULL;
    int failed = 0;
    size_t n = strlen(reply);

    while (n && (reply[n - 1] == '\n' || reply[n - 1] == ' '))
        reply[--n] = 0;
    if (strncmp(reply, "error:", 6) == 0) {
        failed = 1;
        root = json_pack("{s:b, s:s}", "ok", 0, "error", reply + 6 + strspn(reply + 6, " "));
    } else if (strcmp(verb, "stats") == 0) {
        root = json_fields(reply);
    } else if (strcmp(verb, "sessions") == 0) {
        json_t *list = json_array();
        char *save = NULL;
        root = json_pack("{s:o}", "sessions", list);
        for (char *l = strtok_r(reply, "\n", &save); l && root; l = strtok_r(NULL, "\n", &save)) {
            json_t *o = json_fields(l);
            if (!o) {
                json_decref(root);
                root = NULL;
            } else {
                json_array_append_new(list, o);
            }
        }
    } else {
        const char *msg = strncmp(reply, "ok", 2) == 0 ? reply + 2 + strspn(reply + 2, " ") : reply;
        root = json_pack("{s:b, s:s}", "ok", 1, "message", msg);
    }
    if (!root) {
        fprintf(stderr, "cessna-ctl: cannot convert the supervisor's reply to JSON:\n%s\n", reply);
        return 1;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(root);
    if (!text) {
        fprintf(stderr, "cessna-ctl: out of memory for the JSON output\n");
        return 1;
    }
    puts(text);
    free(text);
    return failed;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    const char *path = NULL;
    char cmd[256], buf[65536];
    ssize_t n;
    int c, fd, failed = 0, json = 0;

    while ((c = getopt_long(argc, argv, "s:jhV", opts, NULL)) != -1) {
        switch (c) {
        case 's': path = optarg; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cessna-ctl %s\n", CESSNA_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!path || optind >= argc) {
        fprintf(stderr, "cessna-ctl: %s\n", !path ? "--socket PATH is required (the edge's control "
                "socket: [edge] control, by default STATE_DIR/control.sock)" : "no command given");
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[optind], "kill-worker") == 0 || strcmp(argv[optind], "snapshot") == 0 ||
        strcmp(argv[optind], "move") == 0 || strcmp(argv[optind], "log") == 0) {
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
    if (json) {   /* the whole reply first: it is converted at once */
        char *all = calloc(1, 1);   /* an empty reply (no sessions) is one too */
        size_t len = 0;
        while ((n = read(fd, buf, sizeof(buf))) > 0) {
            char *more = realloc(all, len + (size_t)n + 1);
            if (!more) {
                fprintf(stderr, "cessna-ctl: out of memory for the reply\n");
                return 1;
            }
            all = more;
            memcpy(all + len, buf, (size_t)n);
            len += (size_t)n;
        }
        close(fd);
        if (n == -1 || !all) {
            fprintf(stderr, "cessna-ctl: reading the reply: %s\n", strerror(n == -1 ? errno : ENOMEM));
            free(all);
            return 1;
        }
        all[len] = 0;
        failed = print_json(argv[optind], all);
        free(all);
        return failed;
    }
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (strncmp(buf, "error:", 6) == 0)
            failed = 1;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    return failed ? 1 : 0;
}
