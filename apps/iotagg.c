/* iotagg.c - aggregation for IoT at the edge (the slides' data aggregation app).
 *
 * The client is a gateway for many devices. Each of its messages holds one or more
 * readings, one per line (the last newline may be left out):
 *
 *     SENSOR VALUE          SENSOR: 1 to 31 printable characters, no spaces
 *                           VALUE:  a whole number 0 .. 4294967295 (e.g. in milli-units)
 *
 * Readings are aggregated per sensor over a window that starts with the first reading after
 * the previous window ended and lasts window_ms (or until the session ends). When it ends,
 * one message goes to the server, sensors sorted by name (those with readings in it):
 *
 *     window N sensors=K refused=R
 *     SENSOR count=C min=A max=B mean=M.mmm p50=X p90=Y p99=Z
 *
 * mean is sum / count rounded down to 3 decimals. Percentiles come from a log-bucket
 * histogram: values below 16 exactly, above that 16 buckets per power of two, each reported
 * by its midpoint, so pXX is within 1/32 (3.125%) of the true value of that rank (the
 * ceil(C*XX/100)-th smallest reading of the window).
 *
 * A reading above alert_above, where the sensor's previous one was not, sends at once
 *     ALERT SENSOR VALUE above LIMIT
 * to the client and to the server. Messages from the server are passed to the client
 * unchanged (commands for the devices). Every message the app makes ends with a newline, so
 * programs behind the proxies with --framing line read lines.
 *
 * Memory is bounded: at most max_sensors sensors are known. A reading from a new sensor
 * when the table is full is dropped and the client gets "REFUSED SENSOR max_sensors=N"; a
 * sensor without readings in idle_windows windows in a row is forgotten, making room.
 * A malformed reading ends the session with an ERROR that quotes it.
 *
 * [app] keys: window_ms (1000), alert_above (none), max_sensors (1024), idle_windows (10).
 * All state is static variables and arena memory, so it survives every recovery as is.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cessna.h"

#define NAME_MAX_LEN 31
#define SUB_BITS     4                          /* 2^4 buckets per power of two */
#define SUB          (1u << SUB_BITS)
#define BUCKETS      ((32 - SUB_BITS + 1) * SUB) /* covers every 32-bit value */
#define REPORT_BYTES(n) (64 + (size_t)(n) * 160)     /* a header, then at most 160 per sensor */

struct sensor {
    char name[NAME_MAX_LEN + 1];
    uint32_t count, min, max;                  /* this window */
    uint64_t sum;
    int above;                                 /* the last reading was above alert_above */
    int idle;                                  /* windows in a row without a reading */
    uint32_t hist[BUCKETS];
};

static long long window_ms, alert_above, max_sensors, idle_windows;
static struct sensor **tab;                    /* max_sensors slots, sorted by name */
static int nsensors;
static char *report;                           /* a window's message, room for every sensor */
static uint64_t window_timer, window_no, refused;

/* Histogram bucket of v, and the value a bucket stands for (its midpoint). */
static unsigned bucket_of(uint32_t v)
{
    if (v < SUB)
        return v;
    unsigned m = 31 - (unsigned)__builtin_clz(v);         /* v is in [2^m, 2^(m+1)) */
    return (m - SUB_BITS + 1) * SUB + ((v >> (m - SUB_BITS)) - SUB);
}

static uint64_t bucket_mid(unsigned b)
{
    if (b < SUB)
        return b;
    unsigned m = b / SUB + SUB_BITS - 1, sub = b % SUB;
    uint64_t lo = (uint64_t)(SUB + sub) << (m - SUB_BITS), width = 1ull << (m - SUB_BITS);
    return lo + width / 2;
}

/* The value of rank ceil(count * pct / 100), clamped to [min, max] (closer to the truth). */
static uint64_t percentile(const struct sensor *s, unsigned pct)
{
    uint64_t rank = ((uint64_t)s->count * pct + 99) / 100, seen = 0;
    unsigned b = 0;

    while ((seen += s->hist[b]) < rank)
        b++;
    uint64_t v = bucket_mid(b);
    return v < s->min ? s->min : v > s->max ? s->max : v;
}

/* Where name is in tab, or where it would go: the first slot not below it. */
static int find(const char *name)
{
    int lo = 0, hi = nsensors;

    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (strcmp(tab[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The end of a window: report it upstream, reset, forget sensors idle for too long. */
static void end_window(void *arg)
{
    size_t cap = REPORT_BYTES(max_sensors), len = 0;
    int kept = 0, active = 0;

    (void)arg;
    window_timer = 0;
    for (int i = 0; i < nsensors; i++)
        active += tab[i]->count > 0;
    len += snprintf(report, cap, "window %llu sensors=%d refused=%llu\n",
                    (unsigned long long)++window_no, active, (unsigned long long)refused);
    for (int i = 0; i < nsensors; i++) {
        struct sensor *s = tab[i];
        if (s->count == 0) {
            if (++s->idle >= idle_windows) {
                cessna_log(CESSNA_LOG_INFO, "sensor %s forgotten after %d idle windows",
                           s->name, s->idle);
                cessna_free(s);
                continue;
            }
        } else {
            len += snprintf(report + len, cap - len,
                            "%s count=%u min=%u max=%u mean=%llu.%03llu p50=%llu p90=%llu p99=%llu\n",
                            s->name, s->count, s->min, s->max,
                            (unsigned long long)(s->sum / s->count),
                            (unsigned long long)(s->sum % s->count * 1000 / s->count),
                            (unsigned long long)percentile(s, 50),
                            (unsigned long long)percentile(s, 90),
                            (unsigned long long)percentile(s, 99));
            s->idle = 0;
            s->count = 0;
            s->sum = 0;
            memset(s->hist, 0, sizeof(s->hist));
        }
        tab[kept++] = s;
    }
    nsensors = kept;
    refused = 0;
    if (cessna_send_msg_to_server(report, len) < 0)
        cessna_log(CESSNA_LOG_ERROR, "window %llu (%zu bytes) exceeds max_message_bytes",
                   (unsigned long long)window_no, len);
}

static void reading(const char *name, uint32_t v)
{
    int i = find(name);
    struct sensor *s;

    if (i < nsensors && strcmp(tab[i]->name, name) == 0) {
        s = tab[i];
    } else if (nsensors == max_sensors) {
        char out[64];
        if (refused++ == 0)
            cessna_log(CESSNA_LOG_WARN, "sensor %s refused: max_sensors=%lld", name, max_sensors);
        cessna_send_msg_to_client(out, snprintf(out, sizeof(out), "REFUSED %s max_sensors=%lld\n",
                                                name, max_sensors));
        return;
    } else {
        s = cessna_calloc(1, sizeof(*s));
        if (!s) {
            cessna_close_session(1, "iotagg: out of memory (max_session_memory)");
            return;
        }
        strcpy(s->name, name);
        memmove(&tab[i + 1], &tab[i], (size_t)(nsensors - i) * sizeof(*tab));
        tab[i] = s;
        nsensors++;
        cessna_log(CESSNA_LOG_INFO, "sensor %s first seen (%d of %lld)", name, nsensors,
                   max_sensors);
    }
    if (s->count == 0 || v < s->min)
        s->min = v;
    if (s->count == 0 || v > s->max)
        s->max = v;
    s->count++;
    s->sum += v;
    s->hist[bucket_of(v)]++;

    int above = alert_above >= 0 && v > alert_above;
    if (above && !s->above) {
        char out[80];
        int n = snprintf(out, sizeof(out), "ALERT %s %u above %lld\n", name, v, alert_above);
        cessna_send_msg_to_client(out, n);
        cessna_send_msg_to_server(out, n);
        cessna_log(CESSNA_LOG_INFO, "%.*s", n - 1, out);   /* without the newline */
    }
    s->above = above;
    if (!window_timer)
        window_timer = cessna_set_timeout(end_window, NULL, (uint64_t)window_ms);
}

/* Parse one line "SENSOR VALUE" into name and *v: 0, or -1. */
static int parse(const char *line, size_t n, char *name, uint32_t *v)
{
    const char *sp = memchr(line, ' ', n);
    size_t nl = sp ? (size_t)(sp - line) : 0, dl = sp ? n - nl - 1 : 0;
    uint64_t x = 0;

    if (nl == 0 || nl > NAME_MAX_LEN || dl == 0 || dl > 10)
        return -1;
    for (size_t i = 0; i < nl; i++)
        if (line[i] <= ' ' || line[i] > '~')
            return -1;
    for (size_t i = 0; i < dl; i++) {
        if (sp[1 + i] < '0' || sp[1 + i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(sp[1 + i] - '0');
    }
    if (x > UINT32_MAX)
        return -1;
    memcpy(name, line, nl);
    name[nl] = 0;
    *v = (uint32_t)x;
    return 0;
}

static void recv_client_msg(const void *data, size_t len)
{
    const char *p = data, *end = p + len;

    for (const char *next; p < end; p = next) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        char name[NAME_MAX_LEN + 1], why[200];
        uint32_t v;

        next = nl ? nl + 1 : end;
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n == 0)
            continue;                          /* an empty line */
        if (parse(p, n, name, &v) < 0) {
            snprintf(why, sizeof(why), "iotagg: bad reading \"%.*s\": expected SENSOR VALUE "
                     "(VALUE 0..4294967295)", n > 60 ? 60 : (int)n, p);
            cessna_close_session(2, why);
            return;
        }
        reading(name, v);
    }
}

static void recv_server_msg(const void *data, size_t len)
{
    cessna_send_msg_to_client(data, len);
}

/* The session ends (either side closed it): the open window is reported as it is. */
static void app_shutdown(void)
{
    if (window_timer)
        end_window(NULL);
}

/* An [app] integer between lo and hi, or dflt when the key is absent. A value that is not
 * a number makes cessna_config_int return its default: asking with two defaults tells. */
static int conf(const char *key, long long dflt, long long lo, long long hi, long long *out)
{
    *out = cessna_config_int(key, dflt);
    if (cessna_config(key) && (cessna_config_int(key, lo - 1) != *out || *out < lo || *out > hi)) {
        char why[200];
        snprintf(why, sizeof(why), "iotagg: [app] %s = %s: expected a whole number %lld..%lld",
                 key, cessna_config(key), lo, hi);
        cessna_close_session(3, why);
        return -1;
    }
    return 0;
}

static int app_init(void)
{
    if (conf("window_ms", 1000, 1, 86400000, &window_ms) < 0 ||
        conf("alert_above", -1, 0, UINT32_MAX, &alert_above) < 0 ||
        conf("max_sensors", 1024, 1, 65536, &max_sensors) < 0 ||
        conf("idle_windows", 10, 1, 1000000, &idle_windows) < 0)
        return 0;                              /* the session is closing with the reason */
    tab = cessna_calloc((size_t)max_sensors, sizeof(*tab));
    report = cessna_malloc(REPORT_BYTES(max_sensors));
    return tab && report ? 0 : -1;
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "iotagg",
    .init = app_init,
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
    .shutdown = app_shutdown,
};
