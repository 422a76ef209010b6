/* plot.c - --plot DIR: each section writes its numbers as a data file (DIR/name.dat, columns
 * separated by spaces, "?" for a missing value) and the gnuplot commands that draw them
 * (DIR/name.gp); at the end of the run plot_draw runs gnuplot on every script written in
 * this run, one PNG each (DIR/name.png). Files left in DIR by an earlier run are not drawn.
 * Without gnuplot the data and scripts are still written, and plot_draw says so.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define MAX_PLOTS       32
#define GNUPLOT_TIMEOUT 30000

static char scripts[MAX_PLOTS][64]; /* written in this run, in order */
static int nscripts;

/* DIR as an absolute path (the scripts name their data files with it). */
static void plot_dir(const struct bench_opts *o, char *out, size_t len)
{
    char abs[PATH_MAX];

    snprintf(out, len, "%s", realpath(o->plot, abs) ? abs : o->plot);
}

FILE *plot_data(const struct bench_opts *o, const char *name, const char *columns)
{
    char dir[PATH_MAX], path[PATH_MAX + 80];
    FILE *f;

    if (!o->plot[0])
        return NULL;
    plot_dir(o, dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cessna-bench: --plot: create %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "# %s\n", columns);
    return f;
}

void plot_data_close(FILE *f)
{
    if (f && fclose(f) != 0)
        fprintf(stderr, "cessna-bench: --plot: writing a data file: %s\n", strerror(errno));
}

void plot_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, " %.6g", v);
    else
        fputs(" ?", f);
}

void plot_script(const struct bench_opts *o, const char *name, const char *text)
{
    char dir[PATH_MAX], path[PATH_MAX + 80];
    FILE *f;

    if (!o->plot[0])
        return;
    if (nscripts == MAX_PLOTS) {
        fprintf(stderr, "cessna-bench: --plot: more than %d plots; %s not drawn\n", MAX_PLOTS,
                name);
        return;
    }
    plot_dir(o, dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/%s.gp", dir, name);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cessna-bench: --plot: create %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "set terminal pngcairo size 1000,600 font \"sans,10\"\n"
               "set output \"%s/%s.png\"\n"
               "set datafile missing \"?\"\n"
               "set grid\n"
               "set key outside right top\n", dir, name);
    for (const char *p = text; *p; p++) /* %D: the directory */
        if (p[0] == '%' && p[1] == 'D') {
            fputs(dir, f);
            p++;
        } else {
            fputc(*p, f);
        }
    if (fclose(f) != 0) {
        fprintf(stderr, "cessna-bench: --plot: write %s: %s\n", path, strerror(errno));
        return;
    }
    snprintf(scripts[nscripts++], sizeof(scripts[0]), "%s", name);
}

/* gnuplot on PATH, or "". */
static void find_gnuplot(char *out, size_t len)
{
    const char *path = getenv("PATH");
    char buf[4096], *save = NULL;

    out[0] = 0;
    snprintf(buf, sizeof(buf), "%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/gnuplot", d);
        if (access(out, X_OK) == 0)
            return;
    }
    out[0] = 0;
}

int plot_draw(const struct bench_opts *o, char *err, size_t errlen)
{
    char gnuplot[PATH_MAX], dir[PATH_MAX], why[BENCH_ERRLEN];
    int failed = 0, drawn = 0;

    plot_dir(o, dir, sizeof(dir));
    if (!nscripts) {
        printf("Plots: nothing to draw in %s (no path or plotted section ran).\n\n", dir);
        return 0;
    }
    find_gnuplot(gnuplot, sizeof(gnuplot));
    if (!gnuplot[0]) {
        snprintf(err, errlen, "gnuplot not found on PATH: no PNG drawn; the data and gnuplot "
                 "scripts are in %s (install gnuplot-nox: scripts/install-deps.sh)", dir);
        printf("Plots: **not drawn: gnuplot not found** (data and scripts in %s).\n\n", dir);
        return -ENOENT;
    }
    err[0] = 0;
    for (int i = 0; i < nscripts; i++) {
        char script[PATH_MAX + 80], name[96];

        snprintf(script, sizeof(script), "%s/%s.gp", dir, scripts[i]);
        snprintf(name, sizeof(name), "gnuplot-%s", scripts[i]);
        char *argv[] = { gnuplot, script, NULL };
        if (proc_run(name, argv, o->tmpdir, GNUPLOT_TIMEOUT, why, sizeof(why)) < 0) {
            fprintf(stderr, "cessna-bench: --plot %s: %s\n", scripts[i], why);
            if (!failed++)
                snprintf(err, errlen, "%s: %s", scripts[i], why);
            continue;
        }
        drawn++;
    }
    printf("Plots (%s):", dir);
    for (int i = 0; i < nscripts; i++)
        printf(" %s.png", scripts[i]);
    printf("%s\n\n", failed ? " (some failed: see the errors)" : "");
    if (failed) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (%d of %d plots failed)", failed, nscripts);
        return -EIO;
    }
    return 0;
}
