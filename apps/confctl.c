/* confctl.c - a video-conferencing control channel (one of the slides' four domains).
 *
 * One session is one room: the client side is the room's gateway (the members' devices
 * talk to it), the server side is the conference backend that keeps the authoritative
 * roster. Every message is one text command (a trailing "\n" or "\r\n" is ignored):
 *
 *   from the client:  JOIN name | LEAVE name | MUTE name | UNMUTE name
 *                     RAISE name   hand up: joins the speaker queue; it expires after
 *                                  [app] hand_timeout_ms (30000) unless lowered first
 *                     LOWER name   hand down, out of the queue
 *                     SPEAK        the head of the queue gets the floor
 *                     ROSTER       the whole state, answered to the client only
 *   from the server:  KICK name | MUTEALL | END (ends the session)
 *
 * Each change is an event, numbered, sent to BOTH sides ("7 RAISED bob 2\n": bob is second
 * in the queue), so the gateway and the backend see the same roster changes in the same
 * order; the sender of a command that changes nothing gets "ERR ..." instead. So every
 * command gets exactly one answer on the side that sent it.
 *
 * The state is an arena array of members plus a few counters in statics; a raised hand's
 * expiry is an app timer. All of it is in every snapshot, so after a recovery the roster,
 * the numbering and the pending expiries are exactly what they were.
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags cessna) confctl.c -o confctl.so
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cessna.h"

#define NAME_MAX_LEN 31

struct member {
    char name[NAME_MAX_LEN + 1];
    int muted;
    uint64_t hand;                     /* 0: down; else when it went up (queue order) */
    uint64_t timer;                    /* the hand's expiry timer, 0: none */
};

static struct member *members;         /* in join order, cessna_calloc'ed */
static int nmembers, max_members;
static uint64_t events, hands;         /* event numbers; hand raise counter */
static uint64_t hand_timeout_ms;
static char speaker[NAME_MAX_LEN + 1]; /* who has the floor, "" for nobody */

static int app_init(void)
{
    long long room = cessna_config_int("max_members", 64);
    long long hand = cessna_config_int("hand_timeout_ms", 30000);

    if (room < 1 || room > 10000 || hand < 1 || hand > 86400000) {
        cessna_log(CESSNA_LOG_ERROR, "bad [app] settings: max_members=%lld (1 to 10000), "
                   "hand_timeout_ms=%lld (1 to 86400000)", room, hand);
        return -1;                     /* the session fails at its start */
    }
    max_members = (int)room;
    hand_timeout_ms = (uint64_t)hand;
    members = cessna_calloc((size_t)max_members, sizeof(*members));
    return members ? 0 : -1;
}

static void to_client(const char *s) { cessna_send_msg_to_client(s, strlen(s)); }
static void to_server(const char *s) { cessna_send_msg_to_server(s, strlen(s)); }

/* A numbered event, to both sides. */
static void event(const char *what, const char *name, int pos)
{
    char line[96];

    if (pos > 0)
        snprintf(line, sizeof(line), "%" PRIu64 " %s %s %d\n", ++events, what, name, pos);
    else
        snprintf(line, sizeof(line), "%" PRIu64 " %s%s%s\n", ++events, what,
                 name ? " " : "", name ? name : "");
    to_client(line);
    to_server(line);
}

static struct member *find(const char *name)
{
    for (int i = 0; i < nmembers; i++)
        if (strcmp(members[i].name, name) == 0)
            return &members[i];
    return NULL;
}

/* 1 + how many hands went up before m's: its place in the speaker queue. */
static int queue_pos(const struct member *m)
{
    int pos = 1;

    for (int i = 0; i < nmembers; i++)
        pos += members[i].hand && members[i].hand < m->hand;
    return pos;
}

static void hand_down(struct member *m)
{
    if (m->timer)
        cessna_cancel_timeout(m->timer);
    m->hand = m->timer = 0;
}

/* The expiry timer's argument is the raise's number: a hand lowered and raised again has a
 * new one, so an old expiry can never take the new hand down (it is cancelled anyway). */
static void hand_expired(void *arg)
{
    uint64_t hand = (uint64_t)(uintptr_t)arg;

    for (int i = 0; i < nmembers; i++)
        if (members[i].hand == hand) {
            members[i].hand = members[i].timer = 0;
            event("EXPIRED", members[i].name, 0);
        }
}

static void remove_member(struct member *m, const char *what)
{
    char name[NAME_MAX_LEN + 1];

    hand_down(m);
    snprintf(name, sizeof(name), "%s", m->name);
    if (strcmp(speaker, name) == 0)
        speaker[0] = 0;
    memmove(m, m + 1, (size_t)(members + nmembers - (m + 1)) * sizeof(*m));
    nmembers--;
    event(what, name, 0);
    cessna_log(CESSNA_LOG_INFO, "%s %s, %d left", what, name, nmembers);
}

/* ROSTER: one message, a header line and one line per member in join order. */
static void roster(void)
{
    size_t cap = 128 + (size_t)nmembers * 64, len;   /* a member's line is under 64 */
    char *buf = cessna_malloc(cap);

    if (!buf)
        return;
    len = (size_t)snprintf(buf, cap, "ROSTER after=%" PRIu64 " members=%d speaker=%s\n",
                           events, nmembers, speaker[0] ? speaker : "-");
    for (int i = 0; i < nmembers; i++) {
        const struct member *m = &members[i];
        len += (size_t)snprintf(buf + len, cap - len, "%s %s queue=%d\n", m->name,
                                m->muted ? "muted" : "live", m->hand ? queue_pos(m) : 0);
    }
    cessna_send_msg_to_client(buf, len);
    cessna_free(buf);
}

static const char *client_cmd(const char *verb, const char *name)
{
    struct member *m = name[0] ? find(name) : NULL;

    if (strcmp(verb, "ROSTER") == 0) {
        roster();
    } else if (strcmp(verb, "SPEAK") == 0) {
        struct member *next = NULL;
        for (int i = 0; i < nmembers; i++)
            if (members[i].hand && (!next || members[i].hand < next->hand))
                next = &members[i];
        if (!next)
            return "nobody in the queue";
        hand_down(next);
        snprintf(speaker, sizeof(speaker), "%s", next->name);
        event("SPEAKER", speaker, 0);
    } else if (!name[0]) {
        return "a name is needed";
    } else if (strcmp(verb, "JOIN") == 0) {
        if (m)
            return "already a member";
        if (nmembers == max_members)
            return "the room is full";
        m = &members[nmembers++];
        memset(m, 0, sizeof(*m));
        snprintf(m->name, sizeof(m->name), "%s", name);
        event("JOINED", name, 0);
        cessna_log(CESSNA_LOG_INFO, "JOINED %s, %d in the room", name, nmembers);
    } else if (!m) {
        return "not a member";
    } else if (strcmp(verb, "LEAVE") == 0) {
        remove_member(m, "LEFT");
    } else if (strcmp(verb, "MUTE") == 0 || strcmp(verb, "UNMUTE") == 0) {
        int mute = verb[0] == 'M';
        if (m->muted == mute)
            return mute ? "already muted" : "not muted";
        m->muted = mute;
        event(mute ? "MUTED" : "UNMUTED", name, 0);
    } else if (strcmp(verb, "RAISE") == 0) {
        if (m->hand)
            return "hand already up";
        m->hand = ++hands;
        m->timer = cessna_set_timeout(hand_expired, (void *)(uintptr_t)m->hand, hand_timeout_ms);
        event("RAISED", name, queue_pos(m));
    } else if (strcmp(verb, "LOWER") == 0) {
        if (!m->hand)
            return "hand not up";
        hand_down(m);
        event("LOWERED", name, 0);
    } else {
        return "unknown command";
    }
    return NULL;
}

static const char *server_cmd(const char *verb, const char *name)
{
    if (strcmp(verb, "KICK") == 0) {
        struct member *m = find(name);
        if (!m)
            return "not a member";
        remove_member(m, "KICKED");
    } else if (strcmp(verb, "MUTEALL") == 0) {
        for (int i = 0; i < nmembers; i++)
            members[i].muted = 1;
        event("MUTEALL", NULL, 0);
    } else if (strcmp(verb, "END") == 0) {
        event("END", NULL, 0);
        cessna_log(CESSNA_LOG_INFO, "conference ended by the backend, %d members", nmembers);
        cessna_close_session(0, NULL);          /* CLOSE to both, after the END event */
    } else {
        return "unknown command";
    }
    return NULL;
}

/* Split "VERB [name]" out of a message (bytes, not a string) and run it. */
static void command(const void *data, size_t len, int from_server)
{
    char line[128], verb[16] = "", name[64] = "", err[200];
    const char *why;

    if (len >= sizeof(line))
        len = sizeof(line) - 1;
    memcpy(line, data, len);
    line[len] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (sscanf(line, "%15s %63s", verb, name) < 1)
        why = "empty command";
    else if (strlen(name) > NAME_MAX_LEN)
        why = "name longer than 31 bytes";
    else
        why = from_server ? server_cmd(verb, name) : client_cmd(verb, name);
    if (!why)
        return;
    snprintf(err, sizeof(err), "ERR %.60s: %s\n", line, why);
    if (from_server)
        to_server(err);
    else
        to_client(err);
}

static void recv_client_msg(const void *data, size_t len) { command(data, len, 0); }
static void recv_server_msg(const void *data, size_t len) { command(data, len, 1); }

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "confctl",
    .init = app_init,
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
