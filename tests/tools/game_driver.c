/* game_driver - both ends of apps/game.c for `make demo-game`, on libcessna-endpoint.
 *
 *   game_driver backend --listen HOST:PORT   the game's backend (the server side): prints
 *       "ready listen=ADDR", takes one session, sends the world (items, another player)
 *       stamped with the ticks it applies at, and prints what the edge reports: the
 *       player's state every 25 ticks and every event. Exits when the session ends.
 *   game_driver player --edge HOST:PORT      the player's device (the client side): sends
 *       its inputs stamped the same way and prints the deltas' notable lines (items,
 *       events; the position every 25 ticks). Exits 0 when the game is over and the edge
 *       closed the session.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "cessna_endpoint.h"

static const char *const world[] = {
    "@25 spawn 1 560 500 coin", "@25 spawn 2 620 500 mine", "@25 spawn 3 680 500 mine",
    "@25 spawn 4 740 500 mine", "@90 peer zed 520 720", "@130 spawn 5 520 900 mine",
    "@130 spawn 6 520 950 mine", "@131 spawn 7 520 990 mine",
};
static const char *const inputs[] = {
    "@30 move 5 0", "@40 fire", "@80 move 12 -12", "@84 move -3 0", "@90 move 0 0",
    "@100 move 0 10", "@101 fire", "@110 fire",
};

/* Print the lines of one message worth reading: the position or state every 25 ticks. */
static void show(const char *who, const char *msg, long n)
{
    char line[160];
    unsigned long tick = 0;

    for (const char *s = msg, *end = msg + n, *nl; s < end; s = nl + 1) {
        nl = memchr(s, '\n', (size_t)(end - s));
        if (!nl)
            nl = end;
        snprintf(line, sizeof(line), "%.*s", (int)(nl - s), s);
        if (sscanf(line, "tick %lu", &tick) == 1 || strncmp(line, "shot", 4) == 0)
            continue;                  /* the noisy ones */
        if ((strncmp(line, "pos ", 4) == 0 || strncmp(line, "state ", 6) == 0) && tick % 25)
            continue;
        printf("%s <- tick %lu: %s\n", who, tick, line);
    }
    fflush(stdout);
}

static int run(struct cessna_ep *ep, const char *who, const char *const *script, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        printf("%s -> %s\n", who, script[i]);
        if (cessna_ep_send(ep, script[i], strlen(script[i])) < 0)
            break;
    }
    fflush(stdout);
    for (;;) {
        const void *msg;
        long len = cessna_ep_recv(ep, &msg);
        if (len < 0) {
            printf("%s: session ended (%s)\n", who, len == CESSNA_EP_CLOSED ? "CLOSE" :
                   cessna_ep_error(ep));
            cessna_ep_free(ep);
            return len == CESSNA_EP_CLOSED ? 0 : 1;
        }
        show(who, msg, len);
    }
}

int main(int argc, char **argv)
{
    char err[256];
    struct cessna_ep *ep = NULL;

    if (argc == 4 && strcmp(argv[1], "backend") == 0 && strcmp(argv[2], "--listen") == 0) {
        int lfd = cessna_ep_listen(argv[3], err, sizeof(err));
        if (lfd >= 0) {
            printf("ready listen=127.0.0.1:%d\n", addr_local_port(lfd));
            fflush(stdout);
            ep = cessna_ep_accept(lfd, err, sizeof(err));
        }
        if (!ep) {
            fprintf(stderr, "backend: %s\n", err);
            return 1;
        }
        return run(ep, "backend", world, sizeof(world) / sizeof(world[0]));
    }
    if (argc == 4 && strcmp(argv[1], "player") == 0 && strcmp(argv[2], "--edge") == 0) {
        if (!(ep = cessna_ep_connect(argv[3], err, sizeof(err)))) {
            fprintf(stderr, "player: %s\n", err);
            return 1;
        }
        return run(ep, "player ", inputs, sizeof(inputs) / sizeof(inputs[0]));
    }
    fprintf(stderr, "usage: game_driver backend --listen HOST:PORT\n"
                    "       game_driver player --edge HOST:PORT\n");
    return 2;
}
