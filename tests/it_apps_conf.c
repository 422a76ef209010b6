/* it_apps_conf.c - apps/confctl.c, the conferencing control channel, from both ends: a
 * scripted room gateway (client) and conference backend (server) on native endpoints.
 * Members join, mute, raise hands, take the floor, leave and get kicked; hands expire on
 * their timer ([app] hand_timeout_ms) while the script waits. The same script runs without
 * faults, with the worker SIGKILLed at random moments (cold and hot standby, and without
 * snapshots; the expiry timers pending across kills), and with the edge node holding the
 * session killed again and again (remote recovery at another edge): every event line and
 * every ROSTER each side received must equal the run without faults, byte for byte. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cessna_endpoint.h"
#include "t_duplex.h"

#define HAND_TIMEOUT "hand_timeout_ms = 1000\n"   /* far above a recovery's stall */
#define LONG_NAME "abcdefghijklmnopqrstuvwxyz0123456789"   /* 36 bytes: too long */

TestSuite(confctl, .timeout = 120);

/* One command, then its answer: every command gets exactly one on the side that sent it,
 * and when that is an event (a numbered line), the other side gets it too: wait for both,
 * so the next command, from either side, is ordered after this one in every run. */
static int cmd(struct dx *d, int side, const char *fmt, int i)
{
    char text[64], answer[8];
    int n = dx_msgs(d, side), other = dx_msgs(d, !side);

    snprintf(text, sizeof(text), fmt, i);
    if (dx_send(d, side, text) || dx_wait_msgs(d, side, n + 1, 15000))
        return -1;
    dx_last(d, side, answer, sizeof(answer));
    return answer[0] >= '0' && answer[0] <= '9' ? dx_wait_msgs(d, !side, other + 1, 15000) : 0;
}

/* A hand raised and left up: its expiry reaches both sides (one event each). */
static int expire(struct dx *d, const char *name)
{
    char text[64];
    int c, s;

    snprintf(text, sizeof(text), "RAISE %s", name);
    c = dx_msgs(d, DX_CLIENT) + 2;     /* RAISED, then EXPIRED */
    s = dx_msgs(d, DX_SERVER) + 2;
    return dx_send(d, DX_CLIENT, text) || dx_wait_msgs(d, DX_CLIENT, c, 15000) ||
           dx_wait_msgs(d, DX_SERVER, s, 15000);
}

static void script(struct dx *d)
{
    if (cmd(d, DX_CLIENT, "JOIN alice", 0) || cmd(d, DX_CLIENT, "JOIN bob", 0) ||
        cmd(d, DX_CLIENT, "RAISE bob", 0) || cmd(d, DX_CLIENT, "RAISE alice", 0) ||
        cmd(d, DX_CLIENT, "ROSTER", 0) || cmd(d, DX_CLIENT, "LOWER bob", 0) ||
        cmd(d, DX_CLIENT, "RAISE bob", 0) || cmd(d, DX_CLIENT, "SPEAK", 0) ||
        cmd(d, DX_CLIENT, "SPEAK", 0) || cmd(d, DX_CLIENT, "SPEAK", 0) ||
        cmd(d, DX_CLIENT, "MUTE alice", 0) || cmd(d, DX_CLIENT, "MUTE alice", 0) ||
        cmd(d, DX_CLIENT, "JOIN alice", 0) || cmd(d, DX_CLIENT, "WAVE bob", 0) ||
        cmd(d, DX_SERVER, "KICK zoe", 0) || cmd(d, DX_CLIENT, "JOIN " LONG_NAME, 0) ||
        expire(d, "bob"))
        return;
    /* Rounds: every hand raised is down again before the round ends (SPEAK, LOWER, LEAVE),
     * so no expiry races the script; the waits for expiries are the only timer firings. */
    for (int i = 0; i < 120; i++) {
        if (cmd(d, DX_CLIENT, "JOIN m%d", i) || cmd(d, DX_CLIENT, "RAISE m%d", i) ||
            cmd(d, DX_CLIENT, "RAISE m%d", i - 1) || cmd(d, DX_CLIENT, "SPEAK", 0) ||
            cmd(d, DX_CLIENT, i % 3 ? "LOWER m%d" : "LEAVE m%d", i) ||
            cmd(d, DX_CLIENT, "LOWER m%d", i - 1) || cmd(d, DX_CLIENT, "MUTE m%d", i - i % 2))
            return;
        if (i % 5 == 0 && cmd(d, DX_CLIENT, "ROSTER", 0))
            return;
        if (i % 7 == 3 && cmd(d, DX_SERVER, "KICK m%d", i - 2))
            return;
        if (i % 11 == 5 && cmd(d, DX_SERVER, "MUTEALL", 0))
            return;
        if (i % 4 == 0 && i >= 4 && cmd(d, DX_CLIENT, "LEAVE m%d", i - 4))
            return;
        if (i % 13 == 0 && cmd(d, DX_CLIENT, "UNMUTE m%d", i - 1))
            return;
        if (i % 40 == 20 && (expire(d, "alice") || cmd(d, DX_CLIENT, "ROSTER", 0)))
            return;
    }
    if (cmd(d, DX_CLIENT, "ROSTER", 0))
        return;
    dx_send(d, DX_SERVER, "END");      /* the app ends the session: CLOSE on both sides */
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static struct dx clean;
static int have_clean;

/* The run without faults, once per test process; checked against what the rules say. */
static struct dx *clean_run(void)
{
    if (have_clean)
        return &clean;
    dx_start(&clean, t_app("confctl"), HAND_TIMEOUT, "", 1);
    dx_run(&clean, script, DX_NONE, 0, 0);
    cr_assert_str_empty(clean.script_why, "%s", clean.script_why);
    dx_finish(&clean);
    dx_stop(&clean);
    const char *c = clean.side[DX_CLIENT].buf, *s = clean.side[DX_SERVER].buf;
    cr_assert(starts(c, "1 JOINED alice\n2 JOINED bob\n3 RAISED bob 1\n4 RAISED alice 2\n"
                      "ROSTER after=4 members=2 speaker=-\nalice live queue=2\nbob live queue=1\n"
                      "5 LOWERED bob\n6 RAISED bob 2\n7 SPEAKER alice\n8 SPEAKER bob\n"
                      "ERR SPEAK: nobody in the queue\n9 MUTED alice\n"
                      "ERR MUTE alice: already muted\nERR JOIN alice: already a member\n"
                      "ERR WAVE bob: unknown command\n"
                      "ERR JOIN " LONG_NAME ": name longer than 31 bytes\n"
                      "10 RAISED bob 1\n11 EXPIRED bob\n"),
              "client: %.400s", c);
    cr_assert(starts(s, "1 JOINED alice\n2 JOINED bob\n3 RAISED bob 1\n4 RAISED alice 2\n"
                      "5 LOWERED bob\n6 RAISED bob 2\n7 SPEAKER alice\n8 SPEAKER bob\n"
                      "9 MUTED alice\nERR KICK zoe: not a member\n10 RAISED bob 1\n"
                      "11 EXPIRED bob\n"), "server: %.200s", s);
    cr_assert(strstr(c, " KICKED m") && strstr(c, " MUTEALL\n") && strstr(c, " EXPIRED alice\n"),
              "client: %s", c);
    cr_assert(strstr(s, " END\n") && s + strlen(s) - strstr(s, " END\n") == 5, "no END last");
    have_clean = 1;
    return &clean;
}

static void faulty_run(const char *extra, enum dx_fault f, int nedges, int gap_min, int gap_max,
                       int min_faults)
{
    dx_compare_faulty(clean_run(), t_app("confctl"), HAND_TIMEOUT, extra, script, f, nedges, gap_min, gap_max,
                      min_faults);
}

Test(confctl, worker_kills_cold_standby)
{
    faulty_run("standby = cold", DX_KILL_WORKER, 1, 10, 60, 10);
}

Test(confctl, worker_kills_hot_standby)
{
    faulty_run("standby = hot", DX_KILL_WORKER, 1, 10, 60, 10);
}

/* No snapshot at all: every replacement replays the session from its first event. */
Test(confctl, worker_kills_without_snapshots)
{
    faulty_run("snapshot_interval_ms = 0", DX_KILL_WORKER, 1, 10, 60, 10);
}

Test(confctl, edge_node_lost_again_and_again)
{
    faulty_run("standby = cold", DX_KILL_EDGE, 2, 250, 500, 3);
}

/* A setting out of range fails the session at its start, and the log says which. */
Test(confctl, bad_setting_fails_the_session_naming_it)
{
    dx_bad_setting("confctl", "hand_timeout_ms = -5", "bad [app] settings: max_members=64 (1 to 10000), hand_timeout_ms=-5 ");
}
