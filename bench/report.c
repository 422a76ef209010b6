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
#define TARGET_ISSUE8_P50 1.0 /* issue 8: 64 B edge-proxies (busy_poll off) p50 / haproxy3 */
#define ISSUE8_SIZE       64

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
    fprintf(f, "\nIn parentheses: edge figure / plain HAProxy baseline figure (edge-native and "
               "edge-native-off vs haproxy1, edge-proxies and edge-proxies-off vs haproxy3, the "
               "same number of process hops). Edge busy_poll: %s on edge-native and "
               "edge-proxies, off on the -off paths; the -busy HAProxy paths run with "
               "busy-polling.\n\n", o->busy_poll_off ? "off" : "auto");
}

static int is_edge(int p)
{
    return stack_baseline((enum bench_path)p) != PATH_COUNT;
}

/* Every edge path against both HAProxy baselines of its hop count; the like-with-like one
 * marked. */
static void print_baselines(FILE *f, const struct bench_opts *o,
                            struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    int any = 0;

    for (int p = 0; p < PATH_COUNT; p++)
        if (o->selected[p] && is_edge(p) &&
            (o->selected[stack_baseline((enum bench_path)p)] ||
             o->selected[stack_baseline((enum bench_path)p) + 1]))
            any = 1;
    if (!any)
        return;
    fprintf(f, "### Edge against both HAProxy baselines (ratios: edge / HAProxy)\n\n");
    fprintf(f, "| path | edge busy_poll | size | baseline | like with like | p50 | p99 | "
               "p99.9 | msgs/s |\n");
    fprintf(f, "|---|---|---:|---|---|---:|---:|---:|---:|\n");
    for (int si = 0; si < o->nsizes; si++) {
        char size[32];

        size_label(o->sizes[si], size, sizeof(size));
        for (int p = 0; p < PATH_COUNT; p++) {
            enum bench_path plain = stack_baseline((enum bench_path)p);

            if (!o->selected[p] || plain == PATH_COUNT)
                continue;
            /* the busy-polling baseline follows the plain one in enum bench_path */
            for (int b = plain; b <= (int)plain + 1; b++) {
                const struct bench_result *r = &res[p][si], *base = &res[b][si];
                int like = b == (int)stack_like_baseline((enum bench_path)p, o);

                if (!o->selected[b])
                    continue;
                if (!r->ran || !base->ran) {
                    fprintf(f, "| %s | %s | %s | %s | %s | failed | | | |\n",
                            stack_path_name((enum bench_path)p),
                            stack_path_edge_off((enum bench_path)p, o) ? "off" : "auto", size,
                            stack_path_name((enum bench_path)b), like ? "yes" : "");
                    continue;
                }
                fprintf(f, "| %s | %s | %s | %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |\n",
                        stack_path_name((enum bench_path)p),
                        stack_path_edge_off((enum bench_path)p, o) ? "off" : "auto", size,
                        stack_path_name((enum bench_path)b), like ? "yes" : "",
                        r->lat.p50_us / base->lat.p50_us, r->lat.p99_us / base->lat.p99_us,
                        r->lat.p999_us / base->lat.p999_us,
                        r->tput.msgs_per_s / base->tput.msgs_per_s);
            }
        }
    }
    fprintf(f, "\n");
}

/* Issue 8: the 64 B round trip through both proxies with busy_poll = off at most 1.0x a
 * chain of three HAProxies; busy_poll auto reported beside it. */
static void print_issue8(FILE *f, const struct bench_opts *o,
                         struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    static const enum bench_path rows[] = { PATH_EDGE_PROXIES_OFF, PATH_EDGE_PROXIES };
    int si = -1;

    for (int i = 0; i < o->nsizes; i++)
        if (o->sizes[i] == ISSUE8_SIZE)
            si = i;
    if (si < 0 || !o->selected[PATH_HAPROXY3] ||
        (!o->selected[PATH_EDGE_PROXIES_OFF] && !o->selected[PATH_EDGE_PROXIES]))
        return;
    fprintf(f, "### Issue 8 target: %d B round trip through both proxies <= %.1fx a chain of "
               "three HAProxies, edge busy_poll = off (auto reported)\n\n", ISSUE8_SIZE,
            TARGET_ISSUE8_P50);
    fprintf(f, "| path | edge busy_poll | p50 µs | haproxy3 p50 µs | ratio | p99 ratio | "
               "vs haproxy3-busy p50 | result |\n");
    fprintf(f, "|---|---|---:|---:|---:|---:|---:|---|\n");
    for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
        enum bench_path p = rows[k];
        const struct bench_result *r = &res[p][si], *b = &res[PATH_HAPROXY3][si];
        const struct bench_result *bb = &res[PATH_HAPROXY3_BUSY][si];
        int off = stack_path_edge_off(p, o);
        char busy[32] = "-";

        if (!o->selected[p])
            continue;
        if (!r->ran || !b->ran) {
            fprintf(f, "| %s | %s | | | | | | FAILED |\n", stack_path_name(p),
                    off ? "off" : "auto");
            continue;
        }
        double ratio = r->lat.p50_us / b->lat.p50_us;
        if (o->selected[PATH_HAPROXY3_BUSY] && bb->ran)
            snprintf(busy, sizeof(busy), "%.2fx", r->lat.p50_us / bb->lat.p50_us);
        fprintf(f, "| %s | %s | %.1f | %.1f | %.2fx | %.2fx | %s | %s |\n", stack_path_name(p),
                off ? "off" : "auto", r->lat.p50_us, b->lat.p50_us, ratio,
                r->lat.p99_us / b->lat.p99_us, busy,
                !off ? "(reported)" : ratio <= TARGET_ISSUE8_P50 ? "PASS" : "MISS");
    }
    fprintf(f, "\n");
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

    int edges = 0;

    for (int p = 0; p < PATH_COUNT; p++)
        edges |= o->selected[p] && is_edge(p);
    if (!edges)
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
    print_baselines(f, o, res);
    missed = print_targets(f, o, res);
    print_issue8(f, o, res);
    print_errors(f, o, res);
    fflush(f);
    return missed;
}

void report_json(struct jsonw *w, const struct bench_opts *o,
                 struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    jw_key(w, "paths");
    jw_arr(w);
    for (int p = 0; p < PATH_COUNT; p++) {
        if (!o->selected[p])
            continue;
        for (int si = 0; si < o->nsizes; si++) {
            const struct bench_result *r = &res[p][si];

            jw_obj(w);
            jw_str(w, "path", stack_path_name((enum bench_path)p));
            jw_num(w, "size", (double)o->sizes[si]);
            if (is_edge(p)) {
                jw_str(w, "busy_poll", stack_path_edge_off((enum bench_path)p, o) ? "off"
                                                                                  : "auto");
                jw_str(w, "baseline", stack_path_name(stack_baseline((enum bench_path)p)));
                jw_str(w, "like_baseline",
                       stack_path_name(stack_like_baseline((enum bench_path)p, o)));
            }
            jw_num(w, "haproxy_busy_polling", stack_path_busy((enum bench_path)p));
            jw_num(w, "ran", r->ran);
            jw_str(w, "error", r->failed ? r->err : NULL);
            if (r->ran) {
                jw_num(w, "samples", (double)r->lat.samples);
                jw_num(w, "p50_us", r->lat.p50_us);
                jw_num(w, "p99_us", r->lat.p99_us);
                jw_num(w, "p999_us", r->lat.p999_us);
                jw_num(w, "msgs_per_s", r->tput.msgs_per_s);
                jw_num(w, "mb_per_s", r->tput.mb_per_s);
            }
            jw_obj_end(w);
        }
    }
    jw_arr_end(w);
}

void report_plot_data(const struct bench_opts *o,
                      struct bench_result res[PATH_COUNT][BENCH_MAX_SIZES])
{
    for (int si = 0; si < o->nsizes; si++) {
        char name[64], label[32];
        FILE *d;

        size_label(o->sizes[si], label, sizeof(label));
        snprintf(name, sizeof(name), "latency-%zu", o->sizes[si]);
        d = plot_data(o, name, "path p50_us p99_us p999_us msgs_per_s");
        if (!d)
            return;
        fprintf(d, "# size %s\n", label);
        int rows = 0;
        for (int p = 0; p < PATH_COUNT; p++)
            if (o->selected[p] && res[p][si].ran) {
                fprintf(d, "%s %.2f %.2f %.2f %.1f\n", stack_path_name((enum bench_path)p),
                        res[p][si].lat.p50_us, res[p][si].lat.p99_us, res[p][si].lat.p999_us,
                        res[p][si].tput.msgs_per_s);
                rows++;
            }
        plot_data_close(d);
        if (!rows)
            continue;
        char text[1024];
        snprintf(text, sizeof(text),
                 "set title \"%s round trip latency per path (one connection, one message "
                 "outstanding)\"\n"
                 "set ylabel \"µs\"\n"
                 "set logscale y\n"
                 "set style data histograms\n"
                 "set style histogram clustered gap 1\n"
                 "set style fill solid 0.8 border -1\n"
                 "set xtics rotate by -30\n"
                 "plot \"%%D/%s.dat\" using 2:xtic(1) title \"p50\", "
                 "'' using 3 title \"p99\", '' using 4 title \"p99.9\"\n", label, name);
        plot_script(o, name, text);
    }
}
