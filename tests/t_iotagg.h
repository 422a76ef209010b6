/* t_iotagg.h - what the iotagg test and demo send, and what apps/iotagg.c must make of it,
 * worked out here independently of the app: exact sorted values instead of its histogram, a
 * plain list instead of its sorted table. Header only (static inline) so that both
 * tests/it_apps_iotagg.c and tests/tools/iotagg_driver.c include it.
 *
 * Batch b (0, 1, ...) is IOT_PER_BATCH readings from a seed: regular sensors t00..t39 and
 * a few names that appear in that batch only (x<b>.<k>), values over 22 powers of two with
 * rare spikes above IOT_ALERT. The batch goes out as messages of 1 to 4 lines (some without
 * the last newline, some with CRLF). Sent in lockstep (the next batch only after the window
 * of this one was acknowledged), window b+1 holds exactly batch b. */
#ifndef CESSNA_T_IOTAGG_H
#define CESSNA_T_IOTAGG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IOT_BASE        40          /* regular sensors t00 .. t39 */
#define IOT_TRANSIENT   4           /* one-batch names per batch, at most */
#define IOT_PER_BATCH   120
#define IOT_ALERT       3000000000u /* [app] alert_above */
#define IOT_MAX_SENSORS 44          /* [app] max_sensors: the one-batch names fill it up */
#define IOT_IDLE        2           /* [app] idle_windows */
#define IOT_APP_CONFIG  "[app]\nalert_above = 3000000000\nmax_sensors = 44\nidle_windows = 2\n"
#define IOT_SEP         '\x1e'      /* between messages in a transcript */

struct iot_reading {
    char name[16];
    uint32_t v;
};

static inline uint64_t iot_rand(uint64_t *s)   /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void iot_batch(uint64_t seed, int b, struct iot_reading *r)
{
    uint64_t s = seed * 1000003 + (uint64_t)b;

    for (int i = 0; i < IOT_PER_BATCH; i++) {
        uint64_t x = iot_rand(&s);
        unsigned who = (unsigned)(x % (IOT_BASE + IOT_TRANSIENT));
        if (who < IOT_BASE)
            snprintf(r[i].name, sizeof(r[i].name), "t%02u", who);
        else
            snprintf(r[i].name, sizeof(r[i].name), "x%d.%u", b, who - IOT_BASE);
        x = iot_rand(&s);
        if (x % 40 == 0)                    /* a spike */
            r[i].v = IOT_ALERT + (uint32_t)((x >> 8) % 1200000000u);
        else
            r[i].v = (uint32_t)(((x >> 8) % 1000) << ((who * 5) % 22)) + (uint32_t)(x >> 40) % 17;
    }
}

/* The batch as messages: text in buf, message k is buf[off[k]] .. buf[off[k + 1]]. */
static inline int iot_messages(uint64_t seed, int b, char *buf, size_t cap, size_t *off)
{
    struct iot_reading r[IOT_PER_BATCH];
    uint64_t s = seed * 7919 + (uint64_t)b;
    size_t len = 0;
    int n = 0;

    iot_batch(seed, b, r);
    for (int i = 0; i < IOT_PER_BATCH; n++) {
        int lines = 1 + (int)(iot_rand(&s) % 4);
        off[n] = len;
        for (int k = 0; k < lines && i < IOT_PER_BATCH; k++, i++) {
            uint64_t x = iot_rand(&s);
            int last = k == lines - 1 || i == IOT_PER_BATCH - 1;
            const char *eol = last && x % 3 == 0 ? "" : x % 5 == 0 ? "\r\n" : "\n";
            len += (size_t)snprintf(buf + len, cap - len, "%s %u%s", r[i].name, r[i].v, eol);
        }
    }
    off[n] = len;
    return n;
}

/* The app's state as the model keeps it, and this window's readings. */
struct iot_sensor {
    char name[16];
    int idle, above, n;
    uint32_t v[IOT_PER_BATCH];
};

struct iot_model {
    struct iot_sensor s[IOT_MAX_SENSORS];
    int n, refused, alerts, refusals;
};

static inline void iot_put(char *t, size_t cap, const char *msg)
{
    size_t l = strlen(t);
    snprintf(t + l, cap - l, "%s%c", msg, IOT_SEP);
}

/* Feed batch b: the messages the client must get for it (REFUSED, ALERT) are appended to
 * client, the ALERTs the server must get before the window's report to server. */
static inline void iot_model_batch(struct iot_model *m, uint64_t seed, int b, char *client,
                                   size_t ccap, char *server, size_t scap)
{
    struct iot_reading r[IOT_PER_BATCH];
    char line[80];

    iot_batch(seed, b, r);
    for (int i = 0; i < IOT_PER_BATCH; i++) {
        struct iot_sensor *s = NULL;
        for (int k = 0; k < m->n && !s; k++)
            if (strcmp(m->s[k].name, r[i].name) == 0)
                s = &m->s[k];
        if (!s && m->n == IOT_MAX_SENSORS) {
            snprintf(line, sizeof(line), "REFUSED %s max_sensors=%d\n", r[i].name, IOT_MAX_SENSORS);
            iot_put(client, ccap, line);
            m->refused++;
            m->refusals++;
            continue;
        }
        if (!s) {
            s = &m->s[m->n++];
            memset(s, 0, sizeof(*s));
            strcpy(s->name, r[i].name);
        }
        s->v[s->n++] = r[i].v;
        if (r[i].v > IOT_ALERT && !s->above) {
            snprintf(line, sizeof(line), "ALERT %s %u above %u\n", r[i].name, r[i].v, IOT_ALERT);
            iot_put(client, ccap, line);
            iot_put(server, scap, line);
            m->alerts++;
        }
        s->above = r[i].v > IOT_ALERT;
    }
}

static inline int iot_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static inline int iot_cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct iot_sensor *)a)->name, ((const struct iot_sensor *)b)->name);
}

/* The end of a window: idle sensors age and go after IOT_IDLE windows. */
static inline void iot_model_end(struct iot_model *m)
{
    int kept = 0;

    for (int k = 0; k < m->n; k++) {
        struct iot_sensor *s = &m->s[k];
        s->idle = s->n ? 0 : s->idle + 1;
        s->n = 0;
        if (s->idle < IOT_IDLE)
            m->s[kept++] = *s;
    }
    m->n = kept;
    m->refused = 0;
}

/* Check the app's report of window no against the model (count, min, max and mean exactly;
 * percentiles within 1/32 of the value of that rank), then end the window in the model.
 * 0, or -1 with the first difference in why. */
static inline int iot_model_window(struct iot_model *m, int no, const char *rep, size_t len,
                                   char *why, size_t whylen)
{
    char *text = strndup(rep, len), *save = NULL, *line;
    int active = 0, rc = -1;

    qsort(m->s, (size_t)m->n, sizeof(m->s[0]), iot_cmp_name);
    for (int k = 0; k < m->n; k++)
        active += m->s[k].n > 0;
    char head[80];
    snprintf(head, sizeof(head), "window %d sensors=%d refused=%d", no, active, m->refused);
    line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, head) != 0) {
        snprintf(why, whylen, "expected \"%s\", got \"%.100s\"", head, line ? line : "");
        goto out;
    }
    for (int k = 0; k < m->n; k++) {
        struct iot_sensor *s = &m->s[k];
        if (s->n == 0)
            continue;
        uint64_t sum = 0, got[3];
        unsigned cnt, mn, mx;
        char name[32], mean[32], want_mean[32];
        int end = 0;
        qsort(s->v, (size_t)s->n, sizeof(s->v[0]), iot_cmp_u32);
        for (int i = 0; i < s->n; i++)
            sum += s->v[i];
        snprintf(want_mean, sizeof(want_mean), "%llu.%03llu", (unsigned long long)(sum / s->n),
                 (unsigned long long)(sum % s->n * 1000 / s->n));
        line = strtok_r(NULL, "\n", &save);
        if (!line || sscanf(line, "%31s count=%u min=%u max=%u mean=%31s p50=%lu p90=%lu p99=%lu%n",
                            name, &cnt, &mn, &mx, mean, &got[0], &got[1], &got[2], &end) != 8 ||
            line[end] != 0) {
            snprintf(why, whylen, "window %d: expected sensor %s, got \"%.100s\"", no, s->name,
                     line ? line : "");
            goto out;
        }
        if (strcmp(name, s->name) || cnt != (unsigned)s->n || mn != s->v[0] ||
            mx != s->v[s->n - 1] || strcmp(mean, want_mean)) {
            snprintf(why, whylen, "window %d: expected %s count=%d min=%u max=%u mean=%s, got "
                     "\"%.100s\"", no, s->name, s->n, s->v[0], s->v[s->n - 1], want_mean, line);
            goto out;
        }
        const unsigned pct[3] = { 50, 90, 99 };
        for (int p = 0; p < 3; p++) {
            uint64_t exact = s->v[((uint64_t)s->n * pct[p] + 99) / 100 - 1];
            uint64_t diff = got[p] > exact ? got[p] - exact : exact - got[p];
            if (diff * 32 > exact) {
                snprintf(why, whylen, "window %d: %s p%u=%llu, exact %llu: off by more than 1/32",
                         no, s->name, pct[p], (unsigned long long)got[p],
                         (unsigned long long)exact);
                goto out;
            }
        }
    }
    if ((line = strtok_r(NULL, "\n", &save))) {
        snprintf(why, whylen, "window %d: an extra line \"%.100s\"", no, line);
        goto out;
    }
    iot_model_end(m);
    rc = 0;
out:
    free(text);
    return rc;
}

#endif
