/* appapi.c - a test app for cessna_close_session, cessna_config and cessna_log
 * (tests/it_appapi.c). Client messages are commands:
 *
 *   M k           -> "R k n=N greeting=G" (N: messages so far; G: [app] greeting); logs
 *                    "got k" at info and "debug k" at debug
 *   CFG key       -> "CFG key=value" or "CFG key absent"
 *   INT key       -> "INT key=N" (cessna_config_int, default -1)
 *   LOG text      -> logs text as it is, answers "LOGGED"
 *   LOGCFG        -> logs "cfg greeting=G", answers "LOGGED"
 *   CLOSE c text  -> "BYE" to both sides, then cessna_close_session(c, text); a second
 *                    call answers "AGAIN rc" (it must be -EALREADY)
 *   SCLOSE c text -> the same, with a shutdown() that spins for a while (a window for a
 *                    kill between the close's outputs and the end)
 *   TCLOSE ms c   -> closes with code c from a timer after ms
 * Server messages are only counted. With [app] refuse = CODE, init() refuses the session:
 * "NO" to the client, then cessna_close_session(CODE, "refused at init"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cessna.h"

static int msgs, slow_close;
static char cmd[4096];

static void reply(const char *fmt, long long a, const char *s)
{
    char out[2048];
    int n = snprintf(out, sizeof(out), fmt, a, s);
    cessna_send_msg_to_client(out, (size_t)n < sizeof(out) ? (size_t)n : sizeof(out) - 1);
}

static void timed_close(void *arg)
{
    cessna_send_msg_to_client("BYE", 3);
    cessna_close_session((int)(long)arg, "timer");
}

static void on_client(const void *data, size_t len)
{
    if (len >= sizeof(cmd))
        len = sizeof(cmd) - 1;
    memcpy(cmd, data, len);
    cmd[len] = 0;
    msgs++;
    if (strncmp(cmd, "M ", 2) == 0) {
        const char *g = cessna_config("greeting");
        char out[256];
        int n = snprintf(out, sizeof(out), "R %s n=%d greeting=%s", cmd + 2, msgs, g ? g : "-");
        cessna_send_msg_to_client(out, (size_t)n);
        cessna_log(CESSNA_LOG_INFO, "got %s", cmd + 2);
        cessna_log(CESSNA_LOG_DEBUG, "debug %s", cmd + 2);
    } else if (strncmp(cmd, "CFG ", 4) == 0) {
        const char *v = cessna_config(cmd + 4);
        char out[1200];
        int n = v ? snprintf(out, sizeof(out), "CFG %s=%s", cmd + 4, v)
                  : snprintf(out, sizeof(out), "CFG %s absent", cmd + 4);
        cessna_send_msg_to_client(out, (size_t)n);
    } else if (strncmp(cmd, "INT ", 4) == 0) {
        char out[200];
        int n = snprintf(out, sizeof(out), "INT %s=%lld", cmd + 4,
                         cessna_config_int(cmd + 4, -1));
        cessna_send_msg_to_client(out, (size_t)n);
    } else if (strcmp(cmd, "LOGCFG") == 0) {
        const char *g = cessna_config("greeting");
        cessna_log(CESSNA_LOG_INFO, "cfg greeting=%s", g ? g : "-");
        cessna_send_msg_to_client("LOGGED", 6);
    } else if (strncmp(cmd, "LOG ", 4) == 0) {
        cessna_log(CESSNA_LOG_WARN, "%s", cmd + 4);
        cessna_send_msg_to_client("LOGGED", 6);
    } else if (strncmp(cmd, "CLOSE ", 6) == 0 || strncmp(cmd, "SCLOSE ", 7) == 0) {
        char *text;
        slow_close = cmd[0] == 'S';
        int code = (int)strtol(cmd + 6 + slow_close, &text, 10);
        cessna_send_msg_to_client("BYE", 3);
        cessna_send_msg_to_server("BYE", 3);
        cessna_close_session(code, *text ? text + 1 : NULL);
        reply("AGAIN %lld%s", cessna_close_session(1, "twice"), "");
    } else if (strncmp(cmd, "TCLOSE ", 7) == 0) {
        char *rest;
        long ms = strtol(cmd + 7, &rest, 10);
        cessna_set_timeout(timed_close, (void *)(long)atoi(rest), (uint64_t)ms);
        reply("ARMED %lld%s", ms, "");
    } else {
        reply("? %lld %s", (long long)len, cmd);
    }
}

static int init(void)
{
    long long code = cessna_config_int("refuse", 0);

    if (code) {
        cessna_send_msg_to_client("NO", 2);
        cessna_close_session((int)code, "refused at init");
    }
    return 0;
}

static void shutdown(void)
{
    for (volatile long i = 0; slow_close && i < 40000000; i++)
        ;
}

static void on_server(const void *data, size_t len)
{
    (void)data;
    (void)len;
    msgs++;
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "appapi",
    .init = init,
    .recv_client_msg = on_client,
    .recv_server_msg = on_server,
    .shutdown = shutdown,
};
