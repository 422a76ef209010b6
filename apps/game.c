/* game.c - authoritative game state at the edge (one of the slides' four domains).
 *
 * One session is one player: the client is the player's device, the server the game's
 * backend (the rest of the world). The edge owns the player's state and runs the rules on
 * a fixed tick, a timer re-armed every [app] tick_ms (50), in integer arithmetic only, so a
 * replay after a recovery lands on exactly the same world.
 *
 *   from the client:  move DX DY   velocity in units per tick (clamped to max_speed, 10)
 *                     fire         a shot in the direction of the last move
 *   from the server:  spawn ID X Y coin|mine    remove ID
 *                     peer NAME X Y             another player's position
 *
 * Any command may start with "@T ": it applies at tick T (the lockstep style: inputs are
 * sent a little ahead, so when they arrive does not matter); without it, or when T has
 * passed, at the next tick. Within a tick the server's updates apply before the client's
 * inputs, each side in arrival order.
 *
 * Each tick: the player and the shots move, the world is world_size (1000) units square;
 * a coin within 10 units scores 1, a mine costs 1 of 3 hp; a shot within 15 units of a peer
 * scores 5. At 0 hp the player dies and respawns in the middle; after [app] lives (3)
 * deaths the game is over and the session ends. Each tick sends what changed:
 *
 *   to both:        "tick N\n", then the events: take ID | hit NAME | death | over score=S
 *   to the client:  pos X Y | hp H | score S | lives L (what changed in the player),
 *                   item+ ID X Y KIND | item- ID | peer NAME X Y | shot ID X Y | shot- ID
 *   to the server:  "state pos X Y vel VX VY hp H score S lives L" (the authoritative
 *                   state, when it changed)
 *
 * A side gets nothing on a tick where nothing changed for it; an input it sent that the
 * game does not know gets "error unknown input "TEXT"" at the tick it was due.
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags cessna) game.c -o game.so
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cessna.h"

#define MAX_ITEMS 64
#define MAX_PEERS 8
#define MAX_SHOTS 16
#define MAX_PENDING 256                /* inputs waiting for their tick, per side */

struct player { int x, y, vx, vy, fx, fy, hp, lives, score; };
struct item { int id, x, y, live; char kind[8]; };
struct peer { char name[16]; int x, y, live; };
struct shot { int id, x, y, vx, vy, live; };
struct input { uint64_t tick; char text[80]; };
struct out { char buf[8192]; size_t len, head; };  /* one tick's message to one side */

static struct player me, told;         /* now, and as the last tick told it */
static struct item items[MAX_ITEMS];
static struct peer peers[MAX_PEERS];
static struct shot shots[MAX_SHOTS];
static struct input pending[2][MAX_PENDING];   /* [0] the client's, [1] the server's */
static int npending[2], next_shot = 1;
static uint64_t tick;
static int tick_ms, size, max_speed, lives;
static struct out oc, os;              /* this tick's messages to the client, the server */

static void say(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct out *o, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0 && o->len + (size_t)n < sizeof(o->buf))
        o->len += (size_t)n;           /* a full buffer drops the line, never half of it */
}

#define event(...) (say(&oc, __VA_ARGS__), say(&os, __VA_ARGS__))   /* news for both */

static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static int near(int x, int y, int x2, int y2, int r)
{
    return abs(x - x2) <= r && abs(y - y2) <= r;
}

static void respawn(void)
{
    me.x = me.y = size / 2;
    me.vx = me.vy = 0;
    me.hp = 3;
}

static void on_tick(void *arg);

static int app_init(void)
{
    tick_ms = (int)cessna_config_int("tick_ms", 50);
    size = (int)cessna_config_int("world_size", 1000);
    max_speed = (int)cessna_config_int("max_speed", 10);
    lives = (int)cessna_config_int("lives", 3);
    if (tick_ms < 1 || tick_ms > 60000 || size < 100 || size > 1000000 || max_speed < 1 ||
        max_speed > size || lives < 1 || lives > 1000) {
        cessna_log(CESSNA_LOG_ERROR, "bad [app] settings: tick_ms=%d world_size=%d "
                   "max_speed=%d lives=%d", tick_ms, size, max_speed, lives);
        return -1;
    }
    respawn();
    me.fx = 1;                         /* facing +x until the first move */
    me.lives = lives;
    told.lives = -1;                   /* so the first tick tells everything */
    cessna_set_timeout(on_tick, NULL, (uint64_t)tick_ms);
    return 0;
}

/* ---- inputs: queued until their tick ---- */

static void enqueue(int side, const void *data, size_t len)
{
    char line[80];
    char *text = line;
    uint64_t at = tick + 1;

    if (len >= sizeof(line))
        len = sizeof(line) - 1;
    memcpy(line, data, len);
    line[len] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (line[0] == '@') {
        at = strtoull(line + 1, &text, 10);
        text += strspn(text, " ");
        if (at <= tick)
            at = tick + 1;             /* late: as soon as possible */
    }
    if (npending[side] == MAX_PENDING) {
        cessna_log(CESSNA_LOG_WARN, "more than %d inputs ahead, dropped: %s", MAX_PENDING, text);
        return;
    }
    struct input *in = &pending[side][npending[side]++];
    in->tick = at;
    snprintf(in->text, sizeof(in->text), "%s", text);
}

/* 1 when t was understood. */
static int client_input(const char *t)
{
    int dx, dy;

    if (sscanf(t, "move %d %d", &dx, &dy) == 2) {
        me.vx = clamp(dx, -max_speed, max_speed);
        me.vy = clamp(dy, -max_speed, max_speed);
        if (me.vx || me.vy) {
            me.fx = me.vx;
            me.fy = me.vy;
        }
    } else if (strcmp(t, "fire") == 0) {
        for (int i = 0; i < MAX_SHOTS; i++)
            if (!shots[i].live) {
                shots[i] = (struct shot){ next_shot++, me.x, me.y, me.fx * 2, me.fy * 2, 1 };
                break;
            }
    } else {
        return 0;
    }
    return 1;
}

static int server_input(const char *t)
{
    char name[16], kind[8];
    int id, x, y;

    /* Positions from the server are put inside the world, whatever they were. */
    if (sscanf(t, "spawn %d %d %d %7s", &id, &x, &y, kind) == 4) {
        for (int i = 0; i < MAX_ITEMS; i++)
            if (!items[i].live) {
                struct item *it = &items[i];
                *it = (struct item){ id, clamp(x, 0, size), clamp(y, 0, size), 1, "" };
                snprintf(it->kind, sizeof(it->kind), "%s", kind);
                say(&oc, "item+ %d %d %d %s\n", id, it->x, it->y, it->kind);
                break;
            }
    } else if (sscanf(t, "remove %d", &id) == 1) {
        for (int i = 0; i < MAX_ITEMS; i++)
            if (items[i].live && items[i].id == id) {
                items[i].live = 0;
                say(&oc, "item- %d\n", id);
            }
    } else if (sscanf(t, "peer %15s %d %d", name, &x, &y) == 3) {
        struct peer *p = NULL;
        for (int i = 0; i < MAX_PEERS; i++)     /* this one, or else the first free slot */
            if ((peers[i].live && strcmp(peers[i].name, name) == 0) ||
                (!peers[i].live && !p))
                p = &peers[i];
        if (p) {
            *p = (struct peer){ "", clamp(x, 0, size), clamp(y, 0, size), 1 };
            snprintf(p->name, sizeof(p->name), "%s", name);
            say(&oc, "peer %s %d %d\n", name, p->x, p->y);
        }
    } else {
        return 0;
    }
    return 1;
}

/* Apply every input of one side that is due, in arrival order; keep the others. */
static void apply_due(int side)
{
    int kept = 0;

    for (int i = 0; i < npending[side]; i++) {
        struct input *in = &pending[side][i];
        if (in->tick > tick)
            pending[side][kept++] = *in;
        else if (!(side ? server_input(in->text) : client_input(in->text)))
            say(side ? &os : &oc, "error unknown input \"%s\"\n", in->text);
    }
    npending[side] = kept;
}

/* ---- the rules ---- */

static void step(void)
{
    me.x += me.vx;                     /* walls stop the player */
    me.y += me.vy;
    if (me.x != clamp(me.x, 0, size))
        me.vx = 0;
    if (me.y != clamp(me.y, 0, size))
        me.vy = 0;
    me.x = clamp(me.x, 0, size);
    me.y = clamp(me.y, 0, size);

    for (int i = 0; i < MAX_SHOTS; i++) {
        struct shot *s = &shots[i];
        if (!s->live)
            continue;
        s->x += s->vx;
        s->y += s->vy;
        for (int k = 0; k < MAX_PEERS && s->live; k++)
            if (peers[k].live && near(s->x, s->y, peers[k].x, peers[k].y, 15)) {
                s->live = 0;
                me.score += 5;
                event("hit %s\n", peers[k].name);
            }
        if (s->live && s->x == clamp(s->x, 0, size) && s->y == clamp(s->y, 0, size)) {
            say(&oc, "shot %d %d %d\n", s->id, s->x, s->y);
        } else {
            say(&oc, "shot- %d\n", s->id);
            s->live = 0;
        }
    }

    for (int i = 0; i < MAX_ITEMS; i++) {
        struct item *it = &items[i];
        if (!it->live || !near(me.x, me.y, it->x, it->y, 10))
            continue;
        it->live = 0;
        if (strcmp(it->kind, "mine") == 0)
            me.hp--;
        else
            me.score++;
        event("take %d\n", it->id);
    }

    if (me.hp <= 0) {
        me.lives--;
        event("death\n");
        cessna_log(CESSNA_LOG_INFO, "player died at tick %" PRIu64 ", %d lives left", tick,
                   me.lives);
        respawn();
    }
}

static void on_tick(void *arg)
{
    (void)arg;
    tick++;
    oc.len = os.len = 0;
    say(&oc, "tick %" PRIu64 "\n", tick);
    say(&os, "tick %" PRIu64 "\n", tick);
    oc.head = os.head = oc.len;

    apply_due(1);                      /* the world first, then the player's inputs */
    apply_due(0);
    step();
    /* To the client, what changed in its player; to the server, the whole state. */
    if (me.x != told.x || me.y != told.y)
        say(&oc, "pos %d %d\n", me.x, me.y);
    if (me.hp != told.hp)
        say(&oc, "hp %d\n", me.hp);
    if (me.score != told.score)
        say(&oc, "score %d\n", me.score);
    if (me.lives != told.lives)
        say(&oc, "lives %d\n", me.lives);
    if (memcmp(&me, &told, sizeof(me)) != 0)
        say(&os, "state pos %d %d vel %d %d hp %d score %d lives %d\n", me.x, me.y, me.vx,
            me.vy, me.hp, me.score, me.lives);
    told = me;
    if (me.lives == 0) {               /* game over: tell both, then end the session */
        event("over score=%d\n", me.score);
        cessna_log(CESSNA_LOG_INFO, "game over at tick %" PRIu64 ", score %d", tick, me.score);
    }
    if (oc.len > oc.head)              /* nothing is sent for a quiet tick */
        cessna_send_msg_to_client(oc.buf, oc.len);
    if (os.len > os.head)
        cessna_send_msg_to_server(os.buf, os.len);
    if (me.lives == 0)
        cessna_close_session(0, NULL);
    else
        cessna_set_timeout(on_tick, NULL, (uint64_t)tick_ms);
}

static void recv_client_msg(const void *data, size_t len) { enqueue(0, data, len); }
static void recv_server_msg(const void *data, size_t len) { enqueue(1, data, len); }

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "game",
    .init = app_init,
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
