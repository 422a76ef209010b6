/* appapi.c - a test app for cessna_close_session, cessna_config and cessna_log
 * (tests/it_appapi.c). Client messages are commands:
 *
 *   M k           -> "R k n=N greeting=G" (N: messages so far; G: [app] greeting); logs
 *                    "got k" at info and "debug k" at debug
 *   CFG key       -> "CFG key=value" or "CFG key absent"
 *   INT key       -> "INT key=N" (cessna_config_int, default -1)
 *   LOG text      -> logs text as it is, answers "LOGGED"
 *   CLOSE c text  -> "BYE" to both sides, then cessna_close_session(c, text); a second
 *                    call answers "AGAIN rc" (it must be -EALREADY)
 *   TCLOSE ms c   -> closes with code c from a timer after ms
 * Server messages are answered with "S n=N" to the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cessna.h"

static int msgs;
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
    } else if (strncmp(cmd, "LOG ", 4) == 0) {
        cessna_log(CESSNA_LOG_WARN, "%s", cmd + 4);
        cessna_send_msg_to_client("LOGGED", 6);
    } else if (strncmp(cmd, "CLOSE ", 6) == 0) {
        char *text;
        int code = (int)strtol(cmd + 6, &text, 10);
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

static void on_server(const void *data, size_t len)
{
    char out[64];
    int n = snprintf(out, sizeof(out), "S n=%d", ++msgs);
    (void)data;
    (void)len;
    cessna_send_msg_to_server(out, (size_t)n);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "appapi",
    .recv_client_msg = on_client,
    .recv_server_msg = on_server,
};
