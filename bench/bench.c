/* bench.c - cessna-bench: main, options, and the run loop (one path at a time: bring its
 * processes up, measure latency then throughput per message size, bring them down; then
 * the sections: snapshot, recovery, snapshot-latency, remote).
 *
 * Exit status: 0 when every selected path and section ran (whether or not the targets
 * were met), 1 when one could not be run, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "proc.h"
#include "cessna_version.h"

#ifndef CESSNA_BUILD_DIR
#define CESSNA_BUILD_DIR "build"
#endif

#define DEFAULT_MESSAGES 20000 /* 64 B latency round trips; sizes above 1 KiB get a quarter */
#define DEFAULT_SECONDS  3.0
#define QUICK_MESSAGES   2000
#define QUICK_SECONDS    1.0
#define MAX_SIZE         (1u << 20)
#define DEFAULT_SNAP_SIZES     "64K,1M,16M,256M"
#define DEFAULT_SNAP_RUNS      3
#define QUICK_SNAP_RUNS        1
#define DEFAULT_RECOVERY_RUNS  10
#define QUICK_RECOVERY_RUNS    3
#define DEFAULT_RECOVERY_MSGS  1000
#define DEFAULT_RECOVERY_STATE (1u << 20)
#define DEFAULT_SNAP_INTERVAL  100
#define DEFAULT_REMOTE_RUNS    5
#define QUICK_REMOTE_RUNS      3
#define DEFAULT_REMOTE_MSGS    500
#define DEFAULT_DRAIN_SESSIONS 20
#define MAX_DRAIN_SESSIONS     60   /* the edges run max_sessions = 64 */
#define MAX_STATE              (1ull << 30) /* ballast per session, at most */
#define DEFAULT_MANY           "100,1000,10000"
#define MAX_MANY               65536 /* the supervisor's max_sessions at most */
#define DEFAULT_MANY_SECONDS   10.0
#define QUICK_MANY_SECONDS     3.0
#define DEFAULT_INFLIGHT       64
#define MAX_INFLIGHT           1024
#define NOFILE_SLACK           256  /* the bench's own descriptors beside the connections */

static const char *const section_names[SEC_COUNT] = {
    [SEC_SNAPSHOT] = "snapshot", [SEC_RECOVERY] = "recovery",
    [SEC_SNAP_LATENCY] = "snapshot-latency", [SEC_REMOTE] = "remote",
    [SEC_SESSIONS] = "sessions",
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cessna-bench [options]\n"
            "\n"
            "Round-trip latency (p50, p99, p99.9) and throughput on loopback, for plain TCP,\n"
            "HAProxy chains and the CESSNA edge paths, printed as a markdown table.\n"
            "\n"
            "  --messages N   latency round trips for sizes up to 1 KiB (default %d);\n"
            "                 larger sizes get N/4 (so 5000 for 16 KiB by default)\n"
            "  --seconds S    length of each throughput run (default %.0f)\n"
            "  --quick        CI smoke: %d round trips (%d above 1 KiB), %.0f s throughput\n"
            "  --sizes LIST   message sizes in bytes (default 64,16384; at most %u)\n"
            "  --paths LIST   subset of direct,haproxy1,haproxy1-busy,edge-native,\n"
            "                 edge-native-off,haproxy3,haproxy3-busy,edge-proxies,\n"
            "                 edge-proxies-off,snapshot,recovery,snapshot-latency,remote,\n"
            "                 sessions (default all)\n"
            "  --build DIR    where bin/ and apps/ are (default: the programs beside\n"
            "                 cessna-bench, the apps in ../apps or, installed,\n"
            "                 ../lib/cessna/apps; else %s)\n"
            "  --haproxy BIN  the haproxy binary (default /usr/sbin/haproxy)\n"
            "  --keep-tmp     keep the temp dir (configs, children's logs) instead of removing it\n"
            "  --busy-poll auto|off  the edge's busy_poll setting on edge-native, edge-proxies\n"
            "                        and the sections (default auto; the -off paths are always\n"
            "                        off)\n"
            "  --sandbox on|off      the edge's sandbox setting (default on)\n"
            "  --snap-sizes LIST     snapshot: app state sizes, bytes or with K/M/G\n"
            "                        (default %s)\n"
            "  --snap-runs N         snapshot: sessions per size, medians shown (default %d;\n"
            "                        --quick %d)\n"
            "  --recovery-runs N     recovery: kills per standby mode (default %d; --quick %d)\n"
            "  --recovery-msgs N     recovery: messages echoed between snapshot and kill\n"
            "                        (default %d, so %d events to replay)\n"
            "  --recovery-state SIZE recovery and remote: app state (default 1M)\n"
            "  --snap-interval MS    snapshot-latency: the interval compared with none\n"
            "                        (default %d)\n"
            "  --remote-runs N       remote: whole-node kills (default %d; --quick %d)\n"
            "  --remote-msgs N       remote: messages echoed between the stored snapshot and\n"
            "                        the kill (default %d, so %d events to replay)\n"
            "  --drain-sessions N    remote: sessions on the drained edge (default %d)\n"
            "  --sessions LIST       sessions: numbers of concurrent sessions, each\n"
            "                        1..%d (default %s)\n"
            "  --sessions-seconds S  sessions: length of each paced run, one 64 B message\n"
            "                        per session per second (default %.0f; --quick %.0f)\n"
            "  --sessions-stacks LIST  sessions: subset of edge,haproxy,haproxy-busy (default\n"
            "                        all three)\n"
            "  --setup-inflight K    sessions: opens in flight at once while setting up, 1..%d\n"
            "                        (default %d; 1 = one after the other)\n"
            "  --sessions-reopen     sessions: on the edge, once the N opened, close them\n"
            "                        cleanly and open N again on the same supervisor\n"
            "                        (its session directories recycled): both openings'\n"
            "                        rates and the supervisor's own CPU for each\n"
            "  --dirs-ahead on|off   sessions: the edge makes its N session directories ahead\n"
            "                        (session_dirs_ahead = N) and the opening starts once\n"
            "                        they are made (default on; off: each new session\n"
            "                        makes its own)\n"
            "  --json FILE    write the run's numbers to FILE as JSON (load average, the\n"
            "                 paths, the sessions section)\n"
            "  --plot DIR     write each plot's data (DIR/*.dat) and draw PNG plots in DIR\n"
            "                 with gnuplot: latency percentiles per path, memory and\n"
            "                 throughput against N (sessions), snapshot cost against state\n"
            "                 size (snapshot), round trips around the kills (recovery:\n"
            "                 worker kills; remote: whole-node kills and the hang); a\n"
            "                 plot whose section did not run is not drawn. Without gnuplot\n"
            "                 the data is still written and the run exits 1\n"
            "  --help         this text\n"
            "  -V, --version  print the version and exit\n"
            "\n"
            "Paths: direct = client -> echo; haproxy1 = client -> haproxy -> echo;\n"
            "edge-native = libcessna-endpoint client -> cessna-supervisor (passthrough.so) ->\n"
            "libcessna-endpoint echo server; haproxy3 = three chained haproxies;\n"
            "edge-proxies = client -> cessna-client-proxy -> cessna-supervisor ->\n"
            "cessna-server-proxy -> echo. haproxy1-busy, haproxy3-busy: the same with\n"
            "HAProxy's busy-polling (global section); edge-native-off, edge-proxies-off: the\n"
            "edge with busy_poll = off. Each edge path is compared with plain HAProxy of the\n"
            "same number of hops and, like with like, an edge that may poll (busy_poll auto)\n"
            "with busy-polling HAProxy, one that does not with plain HAProxy. Targets: each\n"
            "edge path's p50 within %.1fx and throughput at least %.1fx of its plain HAProxy\n"
            "baseline (haproxy1, haproxy3); issue 8: 64 B edge-proxies-off p50 at most 1.0x\n"
            "haproxy3 (edge-proxies with busy_poll auto reported beside it).\n"
            "\n"
            "Sections, after the paths' table, each on edges of its own (ballast.so holds as\n"
            "much arena state as asked): snapshot = fork pause, write time and file size of a\n"
            "full and a delta snapshot per state size (target: fork < 200 us at 1 MiB);\n"
            "recovery = kill-worker to the first new output and the supervisor's split\n"
            "(start, load, replay), cold and hot standby (targets: hot < 1 ms, cold < 5 ms);\n"
            "snapshot-latency = edge-native 64 B latency and throughput with periodic\n"
            "snapshots against none (target: latency within 1.1x);\n"
            "remote = through client proxy, 3 edges and server proxy (--store): SIGKILL of\n"
            "the whole edge node to the first new output, split into detect, reconnect,\n"
            "fetch, restore, replay (target < 50 ms), and one SIGSTOP found by the heartbeat;\n"
            "drain time per session; 64 B latency with snapshots every 100 ms shipped\n"
            "against not shipped (target: within 1.1x);\n"
            "sessions = N concurrent sessions on one edge (max_sessions = N) against one\n"
            "HAProxy with N connections, plain and busy-polling, same load generator: setup\n"
            "rate with K opens in flight, PSS of the edge's tree + kernel memory per session,\n"
            "msgs/s, p50 and p99 with one 64 B message per session per second and\n"
            "saturating, CPU of snapshots every 1000 ms (per session-second and per\n"
            "snapshot); an N a stack cannot open is reported as refused at the count it\n"
            "reached, with its reason, and measured with what opened. The bench raises its\n"
            "RLIMIT_NOFILE for the largest N (as root the hard limit too, up to\n"
            "fs.nr_open); the edge runs under the limits the bench started with.\n"
            "Every run prints the load average at its start and end, with a warning above\n"
            "one per core.\n"
            "\n"
            "Exit: 0 when every selected path ran (PASS or MISS), 1 when one could not run\n"
            "or --json / --plot failed, 2 on a usage error.\n",
            DEFAULT_MESSAGES, DEFAULT_SECONDS, QUICK_MESSAGES, QUICK_MESSAGES / 4, QUICK_SECONDS,
            MAX_SIZE, CESSNA_BUILD_DIR, DEFAULT_SNAP_SIZES, DEFAULT_SNAP_RUNS, QUICK_SNAP_RUNS,
            DEFAULT_RECOVERY_RUNS, QUICK_RECOVERY_RUNS, DEFAULT_RECOVERY_MSGS,
            2 * DEFAULT_RECOVERY_MSGS, DEFAULT_SNAP_INTERVAL, DEFAULT_REMOTE_RUNS,
            QUICK_REMOTE_RUNS, DEFAULT_REMOTE_MSGS, 2 * DEFAULT_REMOTE_MSGS,
            DEFAULT_DRAIN_SESSIONS, MAX_MANY, DEFAULT_MANY, DEFAULT_MANY_SECONDS,
            QUICK_MANY_SECONDS, MAX_INFLIGHT, DEFAULT_INFLIGHT, 1.5, 0.5);
}

static int parse_sizes(struct bench_opts *o, const char *list)
{
    char buf[256], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", list);
    o->nsizes = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        unsigned long long v = strtoull(tok, &end, 10);

        if (*end || v == 0 || v > MAX_SIZE || o->nsizes == BENCH_MAX_SIZES) {
            fprintf(stderr, "cessna-bench: bad --sizes '%s' (1..%u bytes, at most %d sizes)\n",
                    list, MAX_SIZE, BENCH_MAX_SIZES);
            return -EINVAL;
        }
        o->sizes[o->nsizes++] = (size_t)v;
    }
    return o->nsizes ? 0 : -EINVAL;
}

static int parse_many(struct bench_opts *o, const char *list)
{
    char buf[256], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", list);
    o->nmany = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long v = strtol(tok, &end, 10);

        if (*end || v < 1 || v > MAX_MANY || o->nmany == BENCH_MAX_MANY) {
            fprintf(stderr, "cessna-bench: bad --sessions '%s' (1..%d each, at most %d)\n",
                    list, MAX_MANY, BENCH_MAX_MANY);
            return -EINVAL;
        }
        o->many[o->nmany++] = (int)v;
    }
    return o->nmany ? 0 : -EINVAL;
}

static int parse_many_stacks(struct bench_opts *o, const char *list)
{
    static const char *const names[MANY_STACKS] = { "edge", "haproxy", "haproxy-busy" };
    char buf[256], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", list);
    o->many_stacks = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = 0;

        for (int i = 0; i < MANY_STACKS; i++)
            if (strcmp(tok, names[i]) == 0) {
                o->many_stacks |= 1 << i;
                found = 1;
            }
        if (!found) {
            fprintf(stderr, "cessna-bench: bad --sessions-stacks '%s' (edge, haproxy, "
                            "haproxy-busy)\n", list);
            return -EINVAL;
        }
    }
    return o->many_stacks ? 0 : -EINVAL;
}

static int section_parse(const char *name, enum bench_section *sec)
{
    for (int i = 0; i < SEC_COUNT; i++)
        if (strcmp(name, section_names[i]) == 0) {
            *sec = (enum bench_section)i;
            return 0;
        }
    return -EINVAL;
}

static int parse_paths(struct bench_opts *o, const char *list)
{
    char buf[256], *save = NULL;
    int n = 0;

    snprintf(buf, sizeof(buf), "%s", list);
    memset(o->selected, 0, sizeof(o->selected));
    memset(o->sections, 0, sizeof(o->sections));
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        enum bench_path p;
        enum bench_section sec;

        if (stack_path_parse(tok, &p) == 0) {
            o->selected[p] = 1;
        } else if (section_parse(tok, &sec) == 0) {
            o->sections[sec] = 1;
        } else {
            fprintf(stderr, "cessna-bench: unknown path '%s' in --paths (want direct, haproxy1, "
                            "haproxy1-busy, edge-native, edge-native-off, haproxy3, "
                            "haproxy3-busy, edge-proxies, edge-proxies-off, snapshot, "
                            "recovery, snapshot-latency, remote, sessions)\n", tok);
            return -EINVAL;
        }
        n++;
    }
    return n ? 0 : -EINVAL;
}

/* "65536", "64K", "1M", "1G" (binary units). */
static int parse_bytes(const char *s, unsigned long long *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);

    if (end == s)
        return -EINVAL;
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end || v == 0 || v > MAX_STATE)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_snap_sizes(struct bench_opts *o, const char *list)
{
    char buf[256], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", list);
    o->nsnap_sizes = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long long v;

        if (parse_bytes(tok, &v) < 0 || o->nsnap_sizes == BENCH_MAX_SNAP_SIZES) {
            fprintf(stderr, "cessna-bench: bad --snap-sizes '%s' (1 B..1G each, K/M/G allowed, "
                            "at most %d sizes)\n", list, BENCH_MAX_SNAP_SIZES);
            return -EINVAL;
        }
        o->snap_sizes[o->nsnap_sizes++] = (size_t)v;
    }
    return o->nsnap_sizes ? 0 : -EINVAL;
}

static int parse_state(struct bench_opts *o, const char *s)
{
    unsigned long long v;

    if (parse_bytes(s, &v) < 0) {
        fprintf(stderr, "cessna-bench: bad --recovery-state '%s' (1 B..1G, K/M/G allowed)\n", s);
        return -EINVAL;
    }
    o->recovery_state = (size_t)v;
    return 0;
}

/* An option that is `on` (or `auto`, as named) or off: *off set for "off". */
static int parse_off(const char *opt, const char *on, const char *arg, int *off)
{
    if (strcmp(arg, on) && strcmp(arg, "off")) {
        fprintf(stderr, "cessna-bench: %s takes %s or off\n", opt, on);
        return -EINVAL;
    }
    *off = strcmp(arg, "off") == 0;
    return 0;
}

static int parse_number(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (*end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "cessna-bench: bad %s '%s' (want %g..%g)\n", opt, s, lo, hi);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* 0 to run, 1 after --help or --version, -EINVAL on a usage error. */
/* Where the programs and apps are: --build DIR (DIR/bin, DIR/apps); else beside this program,
 * with the apps in ../apps (a build directory) or ../lib/cessna/apps (installed); else the
 * build directory this was built in. Absolute: the children get them in their configs. */
static void find_binaries(struct bench_opts *o)
{
    char dir[PATH_MAX], probe[PATH_MAX + 32], abs[PATH_MAX];

    if (!o->build[0] && proc_exe_dir(dir, sizeof(dir)) == 0) {
        snprintf(probe, sizeof(probe), "%s/cessna-supervisor", dir);
        if (access(probe, X_OK) == 0) {
            snprintf(o->bin, sizeof(o->bin), "%s", dir);
            snprintf(probe, sizeof(probe), "%s/../apps", dir);
            if (!realpath(probe, abs)) {
                snprintf(probe, sizeof(probe), "%s/../lib/cessna/apps", dir);
                if (!realpath(probe, abs))
                    snprintf(abs, sizeof(abs), "%s", probe);
            }
            snprintf(o->apps, sizeof(o->apps), "%s", abs);
            return;
        }
    }
    if (!o->build[0])
        snprintf(o->build, sizeof(o->build), "%s", CESSNA_BUILD_DIR);
    if (realpath(o->build, abs))
        snprintf(o->build, sizeof(o->build), "%s", abs);
    snprintf(o->bin, sizeof(o->bin), "%s/bin", o->build);
    snprintf(o->apps, sizeof(o->apps), "%s/apps", o->build);
}

static int parse_options(struct bench_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },          { "messages", required_argument, NULL, 'm' },
        { "version", no_argument, NULL, 'V' },
        { "seconds", required_argument, NULL, 's' }, { "quick", no_argument, NULL, 'q' },
        { "build", required_argument, NULL, 'b' },   { "sizes", required_argument, NULL, 'z' },
        { "paths", required_argument, NULL, 'p' },   { "haproxy", required_argument, NULL, 'x' },
        { "keep-tmp", no_argument, NULL, 'k' },
        { "busy-poll", required_argument, NULL, 'B' },
        { "sandbox", required_argument, NULL, 'X' },
        { "snap-sizes", required_argument, NULL, 'S' },
        { "snap-runs", required_argument, NULL, 'R' },
        { "recovery-runs", required_argument, NULL, 'r' },
        { "recovery-msgs", required_argument, NULL, 'M' },
        { "recovery-state", required_argument, NULL, 'T' },
        { "snap-interval", required_argument, NULL, 'I' },
        { "remote-runs", required_argument, NULL, 'K' },
        { "remote-msgs", required_argument, NULL, 'G' },
        { "drain-sessions", required_argument, NULL, 'D' },
        { "sessions", required_argument, NULL, 'N' },
        { "sessions-seconds", required_argument, NULL, 'E' },
        { "json", required_argument, NULL, 'J' },
        { "sessions-stacks", required_argument, NULL, 'W' },
        { "setup-inflight", required_argument, NULL, 'F' },
        { "plot", required_argument, NULL, 'P' },
        { "sessions-reopen", no_argument, NULL, 'O' },
        { "dirs-ahead", required_argument, NULL, 'A' },
        { NULL, 0, NULL, 0 },
    };
    double messages = 0, seconds = 0, snap_runs = 0, rec_runs = 0, rec_msgs = 0, interval = 0;
    double rem_runs = 0, rem_msgs = 0, drain = 0, many_seconds = 0, inflight = 0;
    int quick = 0, c;

    memset(o, 0, sizeof(*o));
    snprintf(o->haproxy, sizeof(o->haproxy), "%s", "/usr/sbin/haproxy");
    parse_sizes(o, "64,16384");
    for (int p = 0; p < PATH_COUNT; p++)
        o->selected[p] = 1;
    for (int i = 0; i < SEC_COUNT; i++)
        o->sections[i] = 1;
    parse_snap_sizes(o, DEFAULT_SNAP_SIZES);
    o->recovery_state = DEFAULT_RECOVERY_STATE;
    parse_many(o, DEFAULT_MANY);
    o->many_stacks = (1 << MANY_STACKS) - 1;

    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        int rc = 0;

        switch (c) {
        case 'h': usage(stdout); return 1;
        case 'V': printf("cessna-bench %s\n", CESSNA_VERSION); return 1;
        case 'm': rc = parse_number("--messages", optarg, 1, 1e8, &messages); break;
        case 's': rc = parse_number("--seconds", optarg, 0.1, 3600, &seconds); break;
        case 'q': quick = 1; break;
        case 'k': o->keep_tmp = 1; break;
        case 'B': rc = parse_off("--busy-poll", "auto", optarg, &o->busy_poll_off); break;
        case 'X': rc = parse_off("--sandbox", "on", optarg, &o->sandbox_off); break;
        case 'b': snprintf(o->build, sizeof(o->build), "%s", optarg); break;
        case 'x': snprintf(o->haproxy, sizeof(o->haproxy), "%s", optarg); break;
        case 'z': rc = parse_sizes(o, optarg); break;
        case 'p': rc = parse_paths(o, optarg); break;
        case 'S': rc = parse_snap_sizes(o, optarg); break;
        case 'R': rc = parse_number("--snap-runs", optarg, 1, 16, &snap_runs); break;
        case 'r': rc = parse_number("--recovery-runs", optarg, 1, 64, &rec_runs); break;
        case 'M': rc = parse_number("--recovery-msgs", optarg, 1, 1e6, &rec_msgs); break;
        case 'T': rc = parse_state(o, optarg); break;
        case 'I': rc = parse_number("--snap-interval", optarg, 1, 60000, &interval); break;
        case 'K': rc = parse_number("--remote-runs", optarg, 1, 63, &rem_runs); break;
        case 'G': rc = parse_number("--remote-msgs", optarg, 1, 1e6, &rem_msgs); break;
        case 'D':
            rc = parse_number("--drain-sessions", optarg, 1, MAX_DRAIN_SESSIONS, &drain);
            break;
        case 'N': rc = parse_many(o, optarg); break;
        case 'E':
            rc = parse_number("--sessions-seconds", optarg, 1, 3600, &many_seconds);
            break;
        case 'J': snprintf(o->json, sizeof(o->json), "%s", optarg); break;
        case 'W': rc = parse_many_stacks(o, optarg); break;
        case 'F':
            rc = parse_number("--setup-inflight", optarg, 1, MAX_INFLIGHT, &inflight);
            break;
        case 'P': snprintf(o->plot, sizeof(o->plot), "%s", optarg); break;
        case 'O': o->many_reopen = 1; break;
        case 'A': rc = parse_off("--dirs-ahead", "on", optarg, &o->many_dirs_ahead_off); break;
        default: rc = -EINVAL; break;
        }
        if (rc < 0)
            return -EINVAL;
    }
    if (optind < argc) {
        fprintf(stderr, "cessna-bench: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    find_binaries(o);
    /* Explicit counts win over --quick, whatever the order. */
    o->messages = messages > 0 ? (size_t)messages : quick ? QUICK_MESSAGES : DEFAULT_MESSAGES;
    o->seconds = seconds > 0 ? seconds : quick ? QUICK_SECONDS : DEFAULT_SECONDS;
    o->snap_runs = snap_runs > 0 ? (int)snap_runs : quick ? QUICK_SNAP_RUNS : DEFAULT_SNAP_RUNS;
    o->recovery_runs = rec_runs > 0 ? (int)rec_runs
                                    : quick ? QUICK_RECOVERY_RUNS : DEFAULT_RECOVERY_RUNS;
    o->recovery_msgs = rec_msgs > 0 ? (int)rec_msgs : DEFAULT_RECOVERY_MSGS;
    o->snap_interval_ms = interval > 0 ? (unsigned)interval : DEFAULT_SNAP_INTERVAL;
    o->remote_runs = rem_runs > 0 ? (int)rem_runs : quick ? QUICK_REMOTE_RUNS : DEFAULT_REMOTE_RUNS;
    o->remote_msgs = rem_msgs > 0 ? (int)rem_msgs : DEFAULT_REMOTE_MSGS;
    o->drain_sessions = drain > 0 ? (int)drain : DEFAULT_DRAIN_SESSIONS;
    o->many_seconds = many_seconds > 0 ? many_seconds
                                       : quick ? QUICK_MANY_SECONDS : DEFAULT_MANY_SECONDS;
    o->many_inflight = inflight > 0 ? (int)inflight : DEFAULT_INFLIGHT;
    return 0;
}

static size_t messages_for(const struct bench_opts *o, size_t size)
{
    if (size <= 1024)
        return o->messages;
    return o->messages / 4 ? o->messages / 4 : 1;
}

/* Name what failed: the run's own error, plus any process of the path that died. */
static void fail_result(struct bench_result *r, struct bench_stack *s, const char *what,
                        const char *why)
{
    char dead[BENCH_ERRLEN / 2];
    int died = s && stack_check(s, dead, sizeof(dead)) < 0;

    r->failed = 1;
    if (proc_interrupted())
        return; /* the signal thread is ending the bench */
    if (snprintf(r->err, sizeof(r->err), "%s: %s%s%s", what, why, died ? "; " : "",
                 died ? dead : "") >= (int)sizeof(r->err))
        strcpy(r->err + sizeof(r->err) - 4, "...");
    fprintf(stderr, "cessna-bench: FAILED %s\n", r->err);
}

/* Latency, then throughput, on one connection (a new session on the edge paths). */
static void run_size(struct bench_stack *s, const struct bench_opts *o, size_t size,
                     struct bench_result *r)
{
    char what[96], err[BENCH_ERRLEN];
    size_t count = messages_for(o, size);
    struct bench_conn c;
    int rc;

    snprintf(what, sizeof(what), "%s %zu B", stack_path_name(s->path), size);
    if (stack_check(s, err, sizeof(err)) < 0) {
        fail_result(r, NULL, what, err);
        return;
    }
    if (load_connect(&c, s->entry, s->native, err, sizeof(err)) < 0) {
        snprintf(what + strlen(what), sizeof(what) - strlen(what), " connect to %s", s->entry);
        fail_result(r, s, what, err);
        return;
    }
    fprintf(stderr, "cessna-bench: %s: latency, %zu round trips\n", what, count);
    rc = load_latency(&c, size, count, &r->lat, err, sizeof(err));
    if (rc < 0) {
        strncat(what, " latency", sizeof(what) - strlen(what) - 1);
        fail_result(r, s, what, err);
        load_close(&c);
        return;
    }
    fprintf(stderr, "cessna-bench: %s: throughput, %.1f s\n", what, o->seconds);
    rc = load_throughput(&c, size, o->seconds, &r->tput, err, sizeof(err));
    load_close(&c);
    if (rc < 0) {
        strncat(what, " throughput", sizeof(what) - strlen(what) - 1);
        fail_result(r, s, what, err);
        return;
    }
    r->ran = 1;
}

static int run_path(enum bench_path path, const struct bench_opts *o,
                    struct bench_result res[BENCH_MAX_SIZES])
{
    char err[BENCH_ERRLEN], what[64];
    struct bench_stack s;
    int failed = 0;

    fprintf(stderr, "cessna-bench: %s: starting its processes\n", stack_path_name(path));
    if (stack_up(&s, path, o, err, sizeof(err)) < 0) {
        snprintf(what, sizeof(what), "%s setup", stack_path_name(path));
        for (int si = 0; si < o->nsizes; si++)
            fail_result(&res[si], NULL, what, err);
        stack_down(&s);
        return -1;
    }
    for (int si = 0; si < o->nsizes; si++) {
        run_size(&s, o, o->sizes[si], &res[si]);
        failed |= res[si].failed;
    }
    stack_down(&s);
    return failed ? -1 : 0;
}

static int any_path(const struct bench_opts *o)
{
    for (int p = 0; p < PATH_COUNT; p++)
        if (o->selected[p])
            return 1;
    return 0;
}

/* The sections, each printing its table after the paths' one. -1 if one could not run. */
static int run_sections(FILE *f, const struct bench_opts *o)
{
    static int (*const run[SEC_COUNT])(FILE *, const struct bench_opts *) = {
        [SEC_SNAPSHOT] = snapbench_run, [SEC_RECOVERY] = recbench_run,
        [SEC_SNAP_LATENCY] = snaplat_run, [SEC_REMOTE] = rembench_run,
        [SEC_SESSIONS] = manybench_run,
    };
    int failed = 0;

    for (int i = 0; i < SEC_COUNT && !proc_interrupted(); i++)
        if (o->sections[i] && run[i](f, o) < 0)
            failed = 1;
    return failed ? -1 : 0;
}

/* Descriptors the run needs in one process: the load generator holds N connections, the
 * echo server N, HAProxy 2 N (section sessions). */
static long nofile_wanted(const struct bench_opts *o)
{
    long n = 0;

    if (o->sections[SEC_SESSIONS])
        for (int i = 0; i < o->nmany; i++)
            if (o->many[i] > n)
                n = o->many[i];
    return 2 * n + NOFILE_SLACK > 4096 ? 2 * n + NOFILE_SLACK : 4096;
}

/* The machine's load average, with a warning when above one per core: other work skews
 * every figure of the run. */
static void print_load(FILE *f, const char *when, double la[3])
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (ps_loadavg(la) < 0) {
        la[0] = la[1] = la[2] = -1;
        fprintf(f, "Load average at %s: unreadable.\n\n", when);
        return;
    }
    fprintf(f, "Load average at %s: %.2f %.2f %.2f (1, 5, 15 min; %ld CPUs).%s\n\n", when,
            la[0], la[1], la[2], cpus,
            la[0] > (double)cpus ? " **Warning: above one per core: other work on this machine "
                                   "skews the figures.**" : "");
    fflush(f);
}

#define STEAL_WARN_PCT 5.0
#define OTHERS_WARN_PCT 5.0

/* The machine's time that went elsewhere over the whole run: what the hypervisor gave to
 * others (a shared host), and what ran outside the bench's own processes (other programs,
 * kernel threads such as DAMON's kdamond); each with a warning above 5%. NaN when
 * /proc/stat is unreadable. */
static void print_elsewhere(FILE *f, const struct ps_machine *m0, double *steal_pct,
                            double *others_pct)
{
    struct ps_machine m1;

    *steal_pct = *others_pct = 0.0 / 0.0;
    if (ps_machine_read(&m1) < 0)
        return;
    *steal_pct = ps_steal_pct(m0, &m1);
    *others_pct = ps_others_pct(m0, &m1);
    if (*steal_pct == *steal_pct)
        fprintf(f, "Time stolen by the hypervisor over the run: %.1f%% of the machine's "
                "(/proc/stat steal).%s\n\n", *steal_pct, *steal_pct > STEAL_WARN_PCT ?
                " **Warning: a shared host took part of this machine: the figures are lower "
                "than the code's.**" : "");
    if (*others_pct == *others_pct)
        fprintf(f, "Time other work took over the run: %.1f%% of the machine's (its busy time "
                "outside the bench and the stacks it started: other programs, kernel threads "
                "such as kdamond; /proc/stat's busy time less our processes' run times).%s\n\n",
                *others_pct, *others_pct > OTHERS_WARN_PCT ? " **Warning: other work took "
                "part of this machine: the figures are lower than the code's.**" : "");
}

static void json_loadavg(struct jsonw *w, const char *key, const double la[3])
{
    jw_key(w, key);
    jw_arr(w);
    for (int i = 0; i < 3; i++)
        jw_num(w, NULL, la[i] >= 0 ? la[i] : 0.0 / 0.0);
    jw_arr_end(w);
}

/* What the run learnt of the machine it ran on. */
struct run_machine {
    double la_start[3], la_end[3];   /* load average */
    double steal_pct, others_pct;    /* over the run */
    struct hostcost costs;           /* measured at the start */
};

static void json_hostcost(struct jsonw *w, const struct hostcost *h)
{
    jw_key(w, "machine_costs_us");
    jw_obj(w);
    jw_num(w, "syscall", h->syscall_us);
    jw_num(w, "wake_round_trip", h->wake_round_trip_us);
    jw_num(w, "fork", h->fork_us);
    jw_num(w, "page_fault", h->page_fault_us);
    jw_obj_end(w);
}

/* --json FILE: the machine, the paths and the sessions section. */
static int write_json(const struct bench_opts *o,
                      struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES],
                      const struct run_machine *m, char *err, size_t errlen)
{
    FILE *f = fopen(o->json, "w");
    struct jsonw w = { .f = f };

    if (!f) {
        int rc = -errno;
        snprintf(err, errlen, "--json %s: %s", o->json, strerror(errno));
        return rc;
    }
    jw_obj(&w);
    jw_num(&w, "cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
    json_loadavg(&w, "loadavg_start", m->la_start);
    json_loadavg(&w, "loadavg_end", m->la_end);
    jw_num(&w, "steal_pct", m->steal_pct);
    jw_num(&w, "others_pct", m->others_pct);
    json_hostcost(&w, &m->costs);
    jw_str(&w, "busy_poll", o->busy_poll_off ? "off" : "auto");
    jw_str(&w, "sandbox", o->sandbox_off ? "off" : "on");
    if (any_path(o))
        report_json(&w, o, res);
    if (o->sections[SEC_SESSIONS])
        manybench_json(&w);
    jw_obj_end(&w);
    if (fclose(f) != 0) {
        int rc = -errno;
        snprintf(err, errlen, "--json %s: %s", o->json, strerror(errno));
        return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct run_machine run;
    struct ps_machine m0;
    static struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES];
    struct bench_opts o;
    char err[BENCH_ERRLEN];
    int rc, failed = 0, output_failed = 0;

    if (argc == 4 && strcmp(argv[1], "--child") == 0) {   /* an echo server (procs.c) */
        proc_main_fn fn = echo_child_by_name(argv[2]);
        int fd = atoi(argv[3]);

        if (!fn) {
            fprintf(stderr, "cessna-bench: no child named %s\n", argv[2]);
            return 2;
        }
        return fn(&fd) == 0 ? 0 : 1;
    }
    rc = parse_options(&o, argc, argv);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "usage: cessna-bench [options]; see cessna-bench --help\n");
        return rc < 0 ? 2 : 0;
    }
    if (proc_tmpdir_create(o.tmpdir, sizeof(o.tmpdir), err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: %s\n", err);
        return 1;
    }
    if (proc_install_signals(o.keep_tmp ? NULL : o.tmpdir, err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: %s\n", err);
        proc_tmpdir_remove(o.tmpdir);
        return 1;
    }
    print_load(stdout, "start", run.la_start);
    hostcost_measure(&run.costs);
    hostcost_print(stdout, &run.costs);
    ps_machine_read(&m0);   /* all zero when unreadable: the shares are then NaN */
    proc_raise_nofile(stdout, nofile_wanted(&o));
    if (o.plot[0] && mkdir(o.plot, 0755) == -1 && errno != EEXIST) {
        fprintf(stderr, "cessna-bench: --plot %s: %s\n", o.plot, strerror(errno));
        proc_tmpdir_remove(o.tmpdir);
        return 1;
    }
    for (int p = 0; p < PATH_COUNT; p++)
        if (o.selected[p] && run_path((enum bench_path)p, &o, res[p]) < 0)
            failed = 1;
    if (any_path(&o)) {
        report_print(stdout, &o, res);
        report_plot_data(&o, res);
    }
    if (run_sections(stdout, &o) < 0)
        failed = 1;
    print_load(stdout, "end", run.la_end);
    print_elsewhere(stdout, &m0, &run.steal_pct, &run.others_pct);
    if (o.json[0] && write_json(&o, res, &run, err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: %s\n", err);
        output_failed = 1;
    }
    if (o.plot[0] && plot_draw(&o, err, sizeof(err)) < 0) {
        fprintf(stderr, "cessna-bench: --plot: %s\n", err);
        output_failed = 1;
    }
    if (o.keep_tmp)
        fprintf(stderr, "cessna-bench: configs and logs kept in %s\n", o.tmpdir);
    else
        proc_tmpdir_remove(o.tmpdir);
    if (failed)
        fprintf(stderr, "cessna-bench: some paths or sections could not be run (see the errors above)%s\n",
                o.keep_tmp ? "" : "; rerun with --keep-tmp to keep the children's logs");
    if (output_failed)
        fprintf(stderr, "cessna-bench: --json or --plot failed (see above)\n");
    return failed || output_failed ? 1 : 0;
}
