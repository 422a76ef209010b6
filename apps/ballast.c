/* ballast.c - a relay that carries as much state as you ask it to: for measuring snapshots
 * and recovery against the size of an app's memory (cessna-bench uses it).
 *
 * Messages are forwarded unchanged, like passthrough.c, except two client commands, which
 * are answered "ok" to the client (or "error: ...") and not forwarded:
 *
 *     "BALLAST <bytes>"  replace the ballast with <bytes> bytes from cessna_malloc, filled
 *                        with a deterministic pattern: every page is resident and
 *                        different, and the pattern does not compress (a worst case for
 *                        the snapshot writer)
 *     "TOUCH <n>"        change one word in each of n pages spread evenly over the ballast,
 *                        so the next delta snapshot has those n pages to write
 *
 * The ballast lives in the arena, its address and size in static variables: both are
 * part of every snapshot, so a recovered worker has the same ballast.
 *
 * Build: cc -shared -fPIC -I include ballast.c -o ballast.so
 */
#include <string.h>

#include "cessna.h"

#define PAGE 4096u

static uint64_t *ballast;      /* in the arena */
static size_t    words;        /* ballast size in 8-byte words */
static uint64_t  touches;      /* TOUCH commands so far: what a touched word becomes */

/* splitmix64: a fixed function of the word's index, so the same on every replay. */
static uint64_t pattern(uint64_t i)
{
    uint64_t z = i * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void reply(const char *text)
{
    cessna_send_msg_to_client(text, strlen(text));
}

/* The decimal number after `cmd ` in the message, or -1 if the message is not that command. */
static long long command_arg(const char *cmd, const char *data, size_t len)
{
    size_t n = strlen(cmd), i = n + 1;
    long long v = 0;

    if (len <= n + 1 || memcmp(data, cmd, n) != 0 || data[n] != ' ')
        return -1;
    for (; i < len && data[i] >= '0' && data[i] <= '9'; i++) {
        if (v > (1ll << 40))
            return -1;                     /* far beyond any arena */
        v = v * 10 + (data[i] - '0');
    }
    while (i < len && (data[i] == '\r' || data[i] == '\n'))
        i++;
    return i == len ? v : -1;
}

static void set_ballast(long long bytes)
{
    cessna_free(ballast);
    ballast = NULL;
    words = (size_t)bytes / sizeof(uint64_t);
    if (words) {
        ballast = cessna_malloc(words * sizeof(uint64_t));
        if (!ballast) {
            words = 0;
            reply("error: cessna_malloc failed (the arena is full)");
            return;
        }
    }
    for (size_t i = 0; i < words; i++)
        ballast[i] = pattern(i);
    reply("ok");
}

/* Page k of n goes at k * pages / n: distinct pages while n <= pages. The ballast is
 * 16-byte aligned, so a word at a multiple of PAGE from its start lies in one page. */
static void touch(long long n)
{
    size_t pages = words * sizeof(uint64_t) / PAGE;

    if ((size_t)n > pages) {
        reply("error: TOUCH asks for more pages than the ballast has");
        return;
    }
    touches++;
    for (long long k = 0; k < n; k++) {
        size_t page = (size_t)k * pages / (size_t)n;
        ballast[page * (PAGE / sizeof(uint64_t))] ^= touches;
    }
    reply("ok");
}

static void recv_client_msg(const void *data, size_t len)
{
    long long v;

    if ((v = command_arg("BALLAST", data, len)) >= 0)
        set_ballast(v);
    else if ((v = command_arg("TOUCH", data, len)) >= 0)
        touch(v);
    else
        cessna_send_msg_to_server(data, len);
}

static void recv_server_msg(const void *data, size_t len)
{
    cessna_send_msg_to_client(data, len);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "ballast",
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
