/* sesslog.c - the session-end line (see sesslog.h). */
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "log.h"
#include "sup.h"

static const char *const end_names[] = {
    [END_NONE] = "ended",
    [END_CLIENT_CLOSE] = "client_close",
    [END_SERVER_CLOSE] = "server_close",
    [END_HELLO_TIMEOUT] = "hello_timeout",
    [END_CONNECT_TIMEOUT] = "connect_timeout",
    [END_IDLE_TIMEOUT] = "idle_timeout",
    [END_REFUSED] = "refused",
    [END_FAILED] = "failed",
    [END_CLIENT_LOST] = "client_lost",
    [END_SERVER_LOST] = "server_lost",
    [END_MOVED] = "moved",
    [END_DRAIN_TIMEOUT] = "drain_timeout",
    [END_RESUME_FAILED] = "resume_failed",
    [END_SUPERSEDED] = "superseded",
    [END_APP_CLOSE] = "app_close",
    [END_APP_ERROR] = "app_error",
};

const char *sesslog_end_name(enum sesslog_end cause)
{
    return (unsigned)cause < sizeof(end_names) / sizeof(end_names[0]) ? end_names[cause] : "ended";
}

void sesslog_accept(struct sesslog *l, int fd)
{
    memset(l, 0, sizeof(*l));
    l->start_ms = tmo_now_ms();
    addr_peer(fd, l->client, sizeof(l->client));
}

void sesslog_cause(struct sesslog *l, enum sesslog_end cause)
{
    if (l->cause == END_NONE)
        l->cause = cause;
}

void sesslog_end(const struct session *s, enum sesslog_end dflt, const char *reason)
{
    const struct sesslog *l = &s->log;
    enum sesslog_end cause = l->cause != END_NONE ? l->cause : dflt;
    /* A failure is a warning (HAProxy's log-separate-errors); a connection that said
     * nothing is debug (its dontlognull). */
    int level = l->quiet ? LOG_DEBUG : cause == END_FAILED ? LOG_WARN : LOG_INFO;
    char why[300] = "";

    if (level > log_threshold)
        return;
    if (reason && *reason) {
        char q[256];
        log_escape(q, sizeof(q), reason, strlen(reason));
        snprintf(why, sizeof(why), " reason=\"%s\"", q);
    }
    log_write(level, "event=session_end session=%llu client=%s server=%s duration_ms=%llu "
              "bytes_in=%llu bytes_out=%llu server_bytes_in=%llu server_bytes_out=%llu "
              "events=%llu recoveries=%u hibernations=%u end=%s%s",
              (unsigned long long)s->id, l->client[0] ? l->client : "?", S.cfg.server,
              (unsigned long long)(tmo_now_ms() - l->start_ms),
              (unsigned long long)l->bytes[0][0], (unsigned long long)l->bytes[0][1],
              (unsigned long long)l->bytes[1][0], (unsigned long long)l->bytes[1][1],
              (unsigned long long)(s->next_pos ? s->next_pos - 1 : 0), s->recoveries,
              l->hibernations, sesslog_end_name(cause), why);
}

void sesslog_refused(int fd, const char *reason)
{
    static uint64_t second;
    static unsigned lines;
    uint64_t now = tmo_now_ms();
    char client[56];

    if (LOG_INFO > log_threshold)
        return;
    if (now / 1000 != second) {
        second = now / 1000;
        lines = 0;
    }
    if (lines >= SESSLOG_REFUSED_PER_S)
        return;
    lines++;
    addr_peer(fd, client, sizeof(client));
    log_write(LOG_INFO, "event=session_end session=0 client=%s server=%s duration_ms=0 "
              "bytes_in=0 bytes_out=0 server_bytes_in=0 server_bytes_out=0 events=0 "
              "recoveries=0 hibernations=0 end=%s reason=\"%s\"", client, S.cfg.server,
              sesslog_end_name(END_REFUSED), reason);
}
