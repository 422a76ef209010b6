/* proctitle.c - see proctitle.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "proctitle.h"

extern char **environ;

static char *area;      /* argv[0] .. the end of the last contiguous env string */
static size_t area_len;

void proctitle_init(int argc, char **argv)
{
    char *start, *end;
    int n = 0;

    if (argc < 1 || !argv[0])
        return;
    start = argv[0];
    /* The strings the kernel laid out back to back: argv's, then environ's. */
    end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc && argv[i] == end; i++)
        end = argv[i] + strlen(argv[i]) + 1;
    for (; environ && environ[n]; n++)
        ;
    /* argv's strings move to the heap too: getopt's optarg then points there, and what the
     * program keeps of its arguments survives the title. */
    for (int i = 0; i < argc; i++) {
        char *copy = strdup(argv[i]);
        if (!copy)
            return;
        argv[i] = copy;
    }
    char **env = calloc((size_t)n + 1, sizeof(*env));
    if (!env)
        return;   /* no room to move the environment: argv alone */
    for (int i = 0; i < n; i++) {
        if (environ[i] == end)
            end = environ[i] + strlen(environ[i]) + 1;
        env[i] = strdup(environ[i]);
        if (!env[i])
            return;   /* (leaked: the process is starting and out of memory) */
    }
    environ = env;
    area = start;
    area_len = (size_t)(end - start);
}

void proctitle_set(const char *comm, const char *fmt, ...)
{
    char title[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(title, sizeof(title), fmt, ap);
    va_end(ap);
    if (comm)
        prctl(PR_SET_NAME, comm, 0, 0, 0);
    if (!area || area_len < 2)
        return;
    size_t n = strlen(title);
    if (n > area_len - 1)
        n = area_len - 1;
    /* Zeroed past the title: the kernel returns the area up to its last byte, and a
     * NUL there says the argv strings are ours (no reading on into the environment). */
    memcpy(area, title, n);
    memset(area + n, 0, area_len - n);
}
