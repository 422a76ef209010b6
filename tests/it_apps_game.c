/* it_apps_game.c - apps/game.c, authoritative game state at the edge, from both ends: the
 * player's device (client) and the game backend (server) on native endpoints, each sending
 * its whole script at the start, stamped with the ticks it applies at ("@T move 5 0"), so
 * the world depends on the ticks alone and not on when messages arrive. The game runs on a
 * 20 ms tick until the player's last life is lost, and the app ends the session. The same
 * game without faults, with workers SIGKILLed at random ticks (cold and hot standby, and
 * without snapshots), and with the edge node killed again and again (remote recovery, the
 * tick timer re-armed at the new edge): the deltas each side received must equal the run
 * without faults, byte for byte. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cessna_endpoint.h"
#include "t_duplex.h"

#define GAME_CFG "tick_ms = 20\nlives = 2\n"

TestSuite(game, .timeout = 120);

/* The backend: items and two other players. */
static const char *const world[] = {
    "@25 spawn 1 560 500 coin", "@25 spawn 2 620 500 mine", "@25 spawn 3 680 500 mine",
    "@25 spawn 4 740 500 mine", "@25 peer zed 500 700", "@26 spawn 8 100 100 coin",
    "@60 remove 99", "@70 remove 8", "@90 peer zed 520 720", "@130 spawn 5 520 900 mine",
    "@130 spawn 6 520 950 mine", "@131 spawn 7 520 990 mine", "@131 spawn 9 600 1000 coin",
    "@133 peer ann 900 100", "@134 peer ann 890 110", "@135 rain 3",
};
/* The player: east through a coin and three mines (death 1), two shots into the void,
 * a zigzag after the respawn, then north: two shots hit zed, three mines (death 2) end the
 * game at tick 151. "jump" and the backend's "rain" are not in the game. */
static const char *const inputs[] = {
    "@30 move 5 0", "@40 fire", "@41 fire", "@80 move 12 -12", "@84 move -3 0", "@90 move 0 0",
    "@100 move 0 10", "@101 fire", "@110 fire", "@120 move 1 10", "@121 move 0 10", "@122 jump",
};

static void script(struct dx *d)
{
    for (size_t i = 0; i < sizeof(world) / sizeof(world[0]); i++)
        if (dx_send(d, DX_SERVER, world[i]))
            return;
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
        if (dx_send(d, DX_CLIENT, inputs[i]))
            return;
    /* The game ends by itself: wait for its last words. */
    dx_wait_text(d, DX_CLIENT, "over score=", 60000);
}

static struct dx clean;

static struct dx *clean_run(void)
{
    dx_start(&clean, t_app("game"), GAME_CFG, "", 1);
    dx_run(&clean, script, DX_NONE, 0, 0);
    cr_assert_str_empty(clean.script_why, "%s", clean.script_why);
    dx_finish(&clean);
    dx_stop(&clean);
    /* What the rules say, worked out by hand from the scripts above. */
    const char *c = clean.side[DX_CLIENT].buf, *s = clean.side[DX_SERVER].buf;
    cr_assert(strstr(c, "tick 39\ntake 1\npos 550 500\nscore 1\n"), "the coin: %s", c);
    cr_assert(strstr(c, "take 4\ndeath\npos 500 500\nhp 3\nlives 1\n"), "death 1: %s", c);
    cr_assert(strstr(c, "peer zed 520 720\n") && strstr(c, "hit zed\nshot- 3\n"), "zed: %s", c);
    cr_assert(strstr(c, "shot 3 522 510\npos 522 490\n"), "shot 3: %s", c);
    cr_assert(strstr(c, "tick 134\npeer ann 890 110\n") && strstr(c, "tick 70\nitem- 8\n") &&
              !strstr(c, "item- 99"), "%s", c);
    cr_assert(strstr(c, "tick 151\ntake 7\ndeath\n"), "death 2: %s", c);
    cr_assert(strstr(c, "tick 122\nerror unknown input \"jump\"\n"), "bad input: %s", c);
    cr_assert(strstr(s, "tick 135\nerror unknown input \"rain 3\"\n"), "bad input: %s", s);
    cr_assert(strcmp(c + strlen(c) - 14, "over score=11\n") == 0, "the end: %s", c);
    cr_assert(strstr(s, "tick 30\nstate pos 505 500 vel 5 0 hp 3 score 0 lives 2\n"), "%s", s);
    cr_assert(strcmp(strstr(s, "tick 151\n"), "tick 151\ntake 7\ndeath\nstate pos 500 500 "
                     "vel 0 0 hp 3 score 11 lives 0\nover score=11\n") == 0, "server: %s", s);
    return &clean;
}

static void faulty_run(const char *extra, enum dx_fault f, int nedges, int gap_min, int gap_max,
                       int min_faults)
{
    dx_compare_faulty(clean_run(), t_app("game"), GAME_CFG, extra, script, f, nedges, gap_min, gap_max,
                      min_faults);
}

Test(game, rules_without_faults)
{
    struct dx *a = clean_run();
    cr_log_info("client:\n%s\nserver:\n%s", a->side[DX_CLIENT].buf, a->side[DX_SERVER].buf);
}

Test(game, worker_kills_at_random_ticks_cold_standby)
{
    faulty_run("standby = cold", DX_KILL_WORKER, 1, 10, 60, 10);
}

Test(game, worker_kills_at_random_ticks_hot_standby)
{
    faulty_run("standby = hot", DX_KILL_WORKER, 1, 10, 60, 10);
}

/* No snapshot at all: every replacement replays the session from its first event. */
Test(game, worker_kills_at_random_ticks_without_snapshots)
{
    faulty_run("snapshot_interval_ms = 0", DX_KILL_WORKER, 1, 10, 60, 10);
}

Test(game, edge_node_lost_again_and_again)
{
    faulty_run("standby = cold", DX_KILL_EDGE, 2, 250, 500, 3);
}

/* A setting out of range fails the session at its start, and the log says which. */
Test(game, bad_setting_fails_the_session_naming_it)
{
    dx_bad_setting("game", "tick_ms = 0", "bad [app] settings: tick_ms=0 ");
}
