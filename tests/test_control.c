/* test_control.c - the control socket's command parser (common/ctlcmd.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctlcmd.h"

static int parse(const char *line, struct ctl_cmd *cmd, char *err, size_t errlen)
{
    return ctl_parse(line, strlen(line), cmd, err, errlen);
}

Test(control, plain_commands)
{
    struct ctl_cmd c;
    char err[256];

    cr_assert_eq(parse("sessions", &c, err, sizeof(err)), 0);
    cr_assert_eq(c.verb, CTL_SESSIONS);
    cr_assert_eq(parse("stats\n", &c, err, sizeof(err)), 0);
    cr_assert_eq(c.verb, CTL_STATS);
    cr_assert_eq(parse("stats\r\n", &c, err, sizeof(err)), 0);
    cr_assert_eq(c.verb, CTL_STATS);
}

Test(control, commands_with_a_session_id)
{
    struct ctl_cmd c;
    char err[256];

    cr_assert_eq(parse("kill-worker 42\n", &c, err, sizeof(err)), 0);
    cr_assert_eq(c.verb, CTL_KILL_WORKER);
    cr_assert_eq(c.id, 42);
    cr_assert_eq(parse("snapshot 9223372036854775807", &c, err, sizeof(err)), 0);
    cr_assert_eq(c.verb, CTL_SNAPSHOT);
    cr_assert_eq(c.id, 9223372036854775807ull);
    cr_assert_eq(parse("snapshot 18446744073709551615", &c, err, sizeof(err)), 0);
    cr_assert_eq(c.id, UINT64_MAX);
}

Test(control, bad_session_ids_are_refused_with_a_reason)
{
    static const char *bad[] = {
        "kill-worker ", "kill-worker abc", "kill-worker 12x", "kill-worker -1",
        "kill-worker +1", "kill-worker  1", "kill-worker 1 ", "kill-worker 0x10",
        "snapshot 18446744073709551616", "snapshot 99999999999999999999999",
    };
    struct ctl_cmd c;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        cr_assert_eq(parse(bad[i], &c, err, sizeof(err)), -EINVAL, "'%s' accepted", bad[i]);
        cr_assert(strncmp(err, "error: bad session id", 21) == 0, "'%s': %s", bad[i], err);
        cr_assert(err[strlen(err) - 1] == '\n');
    }
}

Test(control, unknown_and_malformed_commands)
{
    static const char *bad[] = {
        "", "\n", "session", "sessionsX", "sessions now", "STATS", " stats", "kill-worker",
        "kill-workers 1", "snapshot", "reboot", "stats\n\n", "stats\nsessions",
    };
    struct ctl_cmd c;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        cr_assert_eq(parse(bad[i], &c, err, sizeof(err)), -EINVAL, "'%s' accepted", bad[i]);
        cr_assert(strncmp(err, "error: ", 7) == 0, "'%s': %s", bad[i], err);
    }
    cr_assert_eq(parse("reboot", &c, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "unknown command 'reboot'") && strstr(err, "kill-worker ID"), "%s", err);
}

Test(control, embedded_nul_and_overlong_lines)
{
    struct ctl_cmd c;
    char err[256], line[CTL_LINE_MAX + 10];

    cr_assert_eq(ctl_parse("stats\0x", 7, &c, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ctl_parse("stats\0", 6, &c, err, sizeof(err)), -EINVAL);
    memset(line, 'a', sizeof(line));
    cr_assert_eq(ctl_parse(line, sizeof(line), &c, err, sizeof(err)), -EINVAL);
    /* a long id in a line that fits is only a bad id */
    snprintf(line, sizeof(line), "snapshot %0200d", 1);
    cr_assert_eq(parse(line, &c, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "bad session id"), "%s", err);
    /* a tiny error buffer is not overrun */
    char tiny[8];
    cr_assert_eq(parse("reboot", &c, tiny, sizeof(tiny)), -EINVAL);
    cr_assert_eq(strlen(tiny), 7);
}
