/* procstat.c - what /proc says about a process tree and the machine: a process and its
 * descendants, their PSS (smaps_rollup) and CPU time (stat), the kernel's own memory
 * (meminfo) and the load average. Read only; nothing here changes a process.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

struct pid_parent {
    pid_t pid, ppid;
};

/* Fields of /proc/PID/stat after the command: the one at 1-based stat field `field`
 * (3 = state, 4 = ppid, 14 = utime ...). 0, or -1 when unreadable. */
static int stat_fields(pid_t pid, unsigned long long *out, const int *fields, int n)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t len;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = 0;
    p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    if (!p)
        return -1;
    p++;
    for (int field = 3, got = 0; got < n; field++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return -1;
        for (int i = 0; i < n; i++)
            if (fields[i] == field) {
                out[i] = strtoull(p, NULL, 10);
                got++;
            }
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

/* Every process on the machine with its parent. */
static int all_parents(struct pid_parent **out)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    struct pid_parent *v = NULL;
    int n = 0, cap = 0;
    static const int ppid_field[] = { 4 };

    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        unsigned long long ppid;

        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(de->d_name);
        if (stat_fields(pid, &ppid, ppid_field, 1) < 0)
            continue; /* gone meanwhile */
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            struct pid_parent *nv = realloc(v, (size_t)cap * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        v[n].pid = pid;
        v[n].ppid = (pid_t)ppid;
        n++;
    }
    closedir(d);
    *out = v;
    return n;
}

int ps_tree(pid_t root, pid_t **pids)
{
    struct pid_parent *all = NULL;
    int n = all_parents(&all), have = 1;
    pid_t *tree;

    if (n < 0)
        return n;
    tree = malloc(((size_t)n + 1) * sizeof(*tree));
    if (!tree) {
        free(all);
        return -ENOMEM;
    }
    tree[0] = root;
    /* Breadth first: each process found adds its children behind it. */
    for (int i = 0; i < have; i++)
        for (int j = 0; j < n; j++)
            if (all[j].ppid == tree[i] && all[j].pid != root && have <= n)
                tree[have++] = all[j].pid;
    free(all);
    *pids = tree;
    return have;
}

static long long rollup_pss_kib(pid_t pid)
{
    char path[64], line[256];
    long long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "Pss:", 4) == 0) {
            kib = strtoll(line + 4, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

/* The run time of each of pid's threads now (/proc/PID/task/TID/schedstat, in ns), summed:
 * exact, where stat's utime and stime are whole clock ticks (10 ms) per process, and a
 * worker that ran 4 ms in all, in slices of 60 µs, shows 0 there. */
static double threads_run_s(pid_t pid)
{
    char path[64];
    struct dirent *de;
    double s = 0;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    while ((de = readdir(d))) {
        char file[128];
        unsigned long long ns;
        FILE *f;

        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        snprintf(file, sizeof(file), "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
        if (!(f = fopen(file, "re")))
            continue;
        if (fscanf(f, "%llu", &ns) == 1)
            s += (double)ns / 1e9;
        fclose(f);
    }
    closedir(d);
    return s;
}

/* CPU seconds of one process: its own, by its threads' run times (or by stat's ticks when
 * more: threads that ended, such as io_uring's workers, are in those only), plus its
 * reaped children's when `children` (stat's cutime + cstime: summed in the kernel before
 * they become ticks, so many short children add up). */
static double process_cpu_s(pid_t pid, int children)
{
    static const int cpu_fields[] = { 14, 15, 16, 17 }; /* utime stime cutime cstime */
    unsigned long long t[4];
    long tick = sysconf(_SC_CLK_TCK);
    double hz = (double)(tick > 0 ? tick : 100), own;

    if (stat_fields(pid, t, cpu_fields, 4) < 0)
        return 0;
    own = threads_run_s(pid);
    if ((double)(t[0] + t[1]) / hz > own)
        own = (double)(t[0] + t[1]) / hz;
    return own + (children ? (double)(t[2] + t[3]) / hz : 0);
}

int ps_tree_usage(pid_t root, struct ps_usage *u)
{
    pid_t *pids = NULL;
    int n = ps_tree(root, &pids);

    memset(u, 0, sizeof(*u));
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        long long pss = rollup_pss_kib(pids[i]);

        if (pss >= 0) {
            u->pss_kib += (uint64_t)pss;
            u->procs++;
        }
        u->cpu_s += process_cpu_s(pids[i], 1);
    }
    free(pids);
    return 0;
}

double ps_tree_cpu_s(pid_t root)
{
    pid_t *pids = NULL;
    int n = ps_tree(root, &pids);
    double s = 0;

    for (int i = 0; i < n; i++)
        s += process_cpu_s(pids[i], 1);
    free(pids);
    return s;
}

double ps_cpu_s(pid_t pid)
{
    return process_cpu_s(pid, 0);
}

int ps_kernel_kib(uint64_t *kib)
{
    static const char *const keys[] = { "Slab:", "PageTables:", "KernelStack:" };
    char line[256];
    FILE *f = fopen("/proc/meminfo", "re");
    int found = 0;

    *kib = 0;
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f))
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0) {
                *kib += strtoull(line + strlen(keys[i]), NULL, 10);
                found++;
            }
    fclose(f);
    return found == 3 ? 0 : -ENOENT;
}

int ps_machine_read(struct ps_machine *m)
{
    unsigned long long v[8] = { 0 };
    FILE *f = fopen("/proc/stat", "re");
    int n;

    memset(m, 0, sizeof(*m));
    if (!f)
        return -errno;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -EINVAL;
    m->steal = v[7];
    /* user, nice, system, irq, softirq: our processes' run times include the interrupts
     * and softirqs that ran in their context (this kernel's ticks put them in irq and
     * softirq, and no IRQ time accounting takes them out of the tasks' times) */
    m->busy = v[0] + v[1] + v[2] + v[5] + v[6];
    for (int i = 0; i < 8; i++)
        m->total += v[i];
    m->ours_s = ps_tree_cpu_s(getpid());
    return 0;
}

double ps_steal_pct(const struct ps_machine *a, const struct ps_machine *b)
{
    if (!a->total || b->total <= a->total || b->steal < a->steal)
        return 0.0 / 0.0;
    return 100.0 * (double)(b->steal - a->steal) / (double)(b->total - a->total);
}

double ps_others_pct(const struct ps_machine *a, const struct ps_machine *b)
{
    long tick = sysconf(_SC_CLK_TCK);
    double hz = (double)(tick > 0 ? tick : 100);

    if (!a->total || b->total <= a->total || b->busy < a->busy)
        return 0.0 / 0.0;
    double others = (double)(b->busy - a->busy) / hz - (b->ours_s - a->ours_s);
    double pct = 100.0 * others / ((double)(b->total - a->total) / hz);
    return pct > 0 ? pct : 0;   /* ticks against exact run times: a little below 0 is 0 */
}

int ps_loadavg(double la[3])
{
    FILE *f = fopen("/proc/loadavg", "re");
    int n;

    if (!f)
        return -errno;
    n = fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]);
    fclose(f);
    return n == 3 ? 0 : -EINVAL;
}
