/* it_apps_game.c - apps/game.c, authoritative game state at the edge, from both ends: the
 * player's device (client) and the game backend (server) on native endpoints, each sending
 * its whole script at the start, stamped with the ticks it applies at ("@T move 5 0"), so
 * the world depends on the ticks alone and not on when messages arrive. The game runs on a
 * 20 ms tick until the player's last life is lost, and the app ends the session. The same
 * game without faults, with workers SIGKILLed at random ticks (cold and hot standby), and
 * with the edge node killed again and again (remote recovery, the tick timer re-armed at
 * the new edge): the deltas each side received must equal the run without faults, byte for
 * byte. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "t_duplex.h"

#define GAME_CFG "tick_ms = 20\nlives = 2\n"

TestSuite(game, .timeout = 120);

/* The backend: items and another player, zed. */
static const char *const world[] = {
    "@25 spawn 1 560 500 coin", "@25 spawn 2 620 500 mine", "@25 spawn 3 680 500 mine",
    "@25 spawn 4 740 500 mine", "@25 peer zed 500 700", "@26 spawn 8 100 100 coin",
    "@60 remove 99", "@70 remove 8", "@90 peer zed 520 720", "@95 peer zed 500 740",
    "@130 spawn 5 500 900 mine", "@130 spawn 6 500 950 mine", "@131 spawn 7 500 990 mine",
    "@131 spawn 9 480 1000 coin", "@133 peer ann 900 100", "@134 gone ann",
};
/* The player: east through the coin and three mines (a death), a shot, then north through
 * zed (shot at on the way) and three more mines: game over. */
static const char *const inputs[] = {
    "@30 move 5 0", "@40 fire", "@41 fire", "@60 move 12 -12", "@61 move -3 0", "@80 move 0 0",
    "@100 move 0 10", "@101 fire", "@103 move 0 10", "@110 fire", "@112 move 0 10",
    "@120 move 1 10", "@121 move 0 10",
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
    return &clean;
}

static void faulty_run(const char *extra, enum dx_fault f, int nedges, int gap_min, int gap_max,
                       int min_faults)
{
    static struct dx faulty;
    struct dx *a = clean_run();

    dx_start(&faulty, t_app("game"), GAME_CFG, extra, nedges);
    int faults = dx_run(&faulty, script, f, gap_min, gap_max);
    cr_assert_str_empty(faulty.script_why, "%s", faulty.script_why);
    dx_finish(&faulty);
    dx_stop(&faulty);
    cr_expect(faults >= min_faults, "only %d faults landed", faults);
    dx_compare(a, &faulty);
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

Test(game, edge_node_lost_again_and_again)
{
    faulty_run("standby = cold", DX_KILL_EDGE, 2, 250, 500, 3);
}
