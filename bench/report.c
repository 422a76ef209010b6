/* report.c - the results as a markdown table (for the README), each edge figure with its
 * ratio to the HAProxy baseline of the same number of process hops, then the targets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define TARGET_P50_RATIO  1.5 /* edge p50 latency at most this times the baseline's */
#define TARGET_TPUT_RATIO 0.5 /* edge throughput at least this times the baseline's */

static void size_label(size_t size, char *out, size_t len)
{
    if (size >= (1u << 20) && size % (1u << 20) == 0)
        snprintf(out, len, "%zu MiB", size >> 20);
    else if (size >= 1024 && size % 1024 == 0)
        snprintf(out, len, "%zu KiB", size >> 10);
    else
        snprintf(out, len, "%zu B", size);
}

void report_size_label(size_t size, char *out, size_t len)
{
    size_label(size, out, len);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The median of n values (the mean of the middle two for even n); sorts v. */
double report_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double report_max(const double *v, int n)
{
    double m = n > 0 ? v[0] : 0;

    for (int i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

static const char *num_format(double v)
{
    return v >= 100.0 ? "%.0f" : v >= 10.0 ? "%.1f" : "%.2f";
}

/* "value" or "value (ratio x)" when there is a baseline figure. */
static void cell(char *out, size_t len, double v, const double *base)
{
    int n = snprintf(out, len, num_format(v), v);

    if (base && *base > 0 && n > 0 && (size_t)n < len)
        snprintf(out + n, len - (size_t)n, " (%.2fx)", v / *base);
}

static void print_header(FILE *f, const struct bench_opts *o)
{
    char date[64] = "", sizes[128] = "";
    struct utsname u;
    time_t now = time(NULL);
    size_t used = 0;

    strftime(date, sizeof(date), "%Y-%m-%d %H:%M", localtime(&now));
    if (uname(&u) != 0)
        strcpy(u.release, "?");
    for (int i = 0; i < o->nsizes; i++) {
        char label[32];
        size_t count = o->sizes[i] <= 1024 ? o->messages : (o->messages / 4 ? o->messages / 4 : 1);

        size_label(o->sizes[i], label, sizeof(label));
        used += (size_t)snprintf(sizes + used, sizeof(sizes) - used, "%s%zu (%s)",
                                 i ? ", " : "", count, label);
        if (used >= sizeof(sizes))
            break;
    }
    fprintf(f, "## cessna-bench: loopback round trips\n\n");
    fprintf(f, "%s, Linux %s, %ld CPUs. Latency: one connection, one message outstanding, "
               "%s round trips after 5%% warm-up. Throughput: one connection, %.1f s, "
               "at most 256 messages or 4 MiB in flight.\n\n",
            date, u.release, sysconf(_SC_NPROCESSORS_ONLN), sizes, o->seconds);
}

static void print_row(FILE *f, enum bench_path path, const char *size,
                      const struct bench_result *r, const struct bench_result *base)
{
    char p50[48], p99[48], p999[48], mps[48], mbs[48];
    int with = base && base->ran;

    if (!r->ran) {
        fprintf(f, "| %s | %s | failed | | | | |\n", stack_path_name(path), size);
        return;
    }
    cell(p50, sizeof(p50), r->lat.p50_us, with ? &base->lat.p50_us : NULL);
    cell(p99, sizeof(p99), r->lat.p99_us, with ? &base->lat.p99_us : NULL);
    cell(p999, sizeof(p999), r->lat.p999_us, with ? &base->lat.p999_us : NULL);
    cell(mps, sizeof(mps), r->tput.msgs_per_s, with ? &base->tput.msgs_per_s : NULL);
    cell(mbs, sizeof(mbs), r->tput.mb_per_s, with ? &base->tput.mb_per_s : NULL);
    fprintf(f, "| %s | %s | %s | %s | %s | %s | %s |\n", stack_path_name(path), size, p50, p99,
            p999, mps, mbs);
}

static void print_table(FILE *f, const struct bench_opts *o,
                        struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    fprintf(f, "| path | size | p50 µs | p99 µs | p99.9 µs | msgs/s | MB/s |\n");
    fprintf(f, "|---|---:|---:|---:|---:|---:|---:|\n");
    for (int si = 0; si < o->nsizes; si++) {
        char size[32];

        size_label(o->sizes[si], size, sizeof(size));
        for (int p = 0; p < PATH_COUNT; p++) {
            enum bench_path base = stack_baseline((enum bench_path)p);

            if (!o->selected[p])
                continue;
            print_row(f, (enum bench_path)p, size, &res[p][si],
                      base < PATH_COUNT && o->selected[base] ? &res[base][si] : NULL);
        }
    }
    fprintf(f, "\nIn parentheses: edge figure / HAProxy baseline figure (edge-native vs haproxy1, "
               "edge-proxies vs haproxy3, the same number of process hops).\n\n");
}

/* One target row; returns 1 when missed. */
static int print_target(FILE *f, enum bench_path path, const char *size,
                        const struct bench_result *r, const struct bench_result *b,
                        int *evaluated)
{
    enum bench_path base = stack_baseline(path);

    if (!r->ran || !b || !b->ran) {
        fprintf(f, "| %s | %s | %s | | | %s |\n", stack_path_name(path), size,
                stack_path_name(base), !r->ran ? "FAILED" : "n/a (baseline not run)");
        return 0;
    }
    double lat = r->lat.p50_us / b->lat.p50_us;
    double tput = r->tput.msgs_per_s / b->tput.msgs_per_s;
    int pass = lat <= TARGET_P50_RATIO && tput >= TARGET_TPUT_RATIO;

    fprintf(f, "| %s | %s | %s | %.2fx %s | %.2fx %s | %s |\n", stack_path_name(path), size,
            stack_path_name(base), lat, lat <= TARGET_P50_RATIO ? "ok" : "**over**", tput,
            tput >= TARGET_TPUT_RATIO ? "ok" : "**under**", pass ? "PASS" : "MISS");
    (*evaluated)++;
    return !pass;
}

static int print_targets(FILE *f, const struct bench_opts *o,
                         struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    int missed = 0, evaluated = 0;

    if (!o->selected[PATH_EDGE_NATIVE] && !o->selected[PATH_EDGE_PROXIES])
        return 0;
    fprintf(f, "### Targets: edge p50 latency <= %.1fx and throughput >= %.1fx its baseline\n\n",
            TARGET_P50_RATIO, TARGET_TPUT_RATIO);
    fprintf(f, "| path | size | baseline | p50 ratio | throughput ratio | result |\n");
    fprintf(f, "|---|---:|---|---:|---:|---|\n");
    for (int si = 0; si < o->nsizes; si++) {
        char size[32];

        size_label(o->sizes[si], size, sizeof(size));
        for (int p = PATH_EDGE_NATIVE; p < PATH_COUNT; p++) {
            enum bench_path base = stack_baseline((enum bench_path)p);

            if (!o->selected[p] || base == PATH_COUNT)
                continue;
            missed += print_target(f, (enum bench_path)p, size, &res[p][si],
                                   o->selected[base] ? &res[base][si] : NULL, &evaluated);
        }
    }
    fprintf(f, "\nTargets: %d PASS, %d MISS", evaluated - missed, missed);
    fprintf(f, "%s\n\n", evaluated ? "" : " (nothing to compare: run the baselines too)");
    return missed;
}

static void print_errors(FILE *f, const struct bench_opts *o,
                         struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    int any = 0;

    for (int p = 0; p < PATH_COUNT; p++)
        for (int si = 0; si < o->nsizes; si++) {
            if (!o->selected[p] || !res[p][si].failed)
                continue;
            if (si > 0 && res[p][si - 1].failed && strcmp(res[p][si - 1].err, res[p][si].err) == 0)
                continue; /* a setup failure, reported for each size */
            if (!any++)
                fprintf(f, "### Errors\n\n");
            fprintf(f, "- %s\n", res[p][si].err);
        }
    if (any)
        fprintf(f, "\n");
}

int report_print(FILE *f, const struct bench_opts *o,
                 struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    int missed;

    print_header(f, o);
    print_table(f, o, res);
    missed = print_targets(f, o, res);
    print_errors(f, o, res);
    fflush(f);
    return missed;
}
