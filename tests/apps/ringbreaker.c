/* ringbreaker.c - a test app that writes nonsense into its own session's output ring, as a
 * buggy or hostile app with a stray pointer could: the supervisor must fail this session
 * and nothing else. Echoes every client message, except:
 *   "BREAK"   a record whose length runs past the ring
 *   "PIECES"  a long record whose first piece announces 100000 bytes, then a whole record
 *             of the same type in the middle of it
 *   "SNAPBAD" a snapshot report (OUT_SNAP_DONE) of the wrong size
 * It finds the session memory through /proc/self/maps, so it needs `sandbox = off`
 * (the sandbox refuses the open, which is a defence of its own).
 * Build: cc -shared -fPIC -I include ringbreaker.c -o ringbreaker.so */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cessna.h"

/* The layout of the session memory (common/shm.h and common/ring.h), restated here on
 * purpose: this app attacks it from the outside. */
#define CTL_LEN      4096u
#define RING_HDR     192u     /* struct ring_shared */
#define OUT_CLIENT   16u
#define OUT_SNAP_DONE 25u
#define F_FIRST      1u

static char *session_memory(void)
{
    char line[512];
    char *base = NULL;
    FILE *f = fopen("/proc/self/maps", "r");

    while (f && !base && fgets(line, sizeof(line), f))
        if (strstr(line, "cessna-session"))
            base = (char *)(uintptr_t)strtoull(line, NULL, 16);
    if (f)
        fclose(f);
    return base;
}

/* A record header at p: u32 len, u16 type, u16 flags. Returns its space (padded to 8). */
static uint32_t put_rec(char *p, uint32_t len, uint16_t type, uint16_t flags)
{
    memcpy(p, &len, 4);
    memcpy(p + 4, &type, 2);
    memcpy(p + 6, &flags, 2);
    return (8 + len + 7) & ~7u;
}

/* The output ring's tail, where the next record goes. */
struct tail {
    char *out, *data;    /* the ring's shared header (tail first), its data */
    uint32_t size, off;  /* data bytes; the tail's offset in them */
    uint64_t tail;
};

/* Found, with room for `need` bytes before the ring's end (else padded to it). 0, or -1
 * (told to the client) when the session memory is not found. */
static int tail_find(struct tail *t, uint32_t need)
{
    char *base = session_memory();

    if (!base) {
        cessna_send_msg_to_client("no session memory found", 23);
        return -1;
    }
    memcpy(&t->size, base + 4, 4);
    t->out = base + CTL_LEN + RING_HDR + t->size;
    t->data = t->out + RING_HDR;
    t->tail = __atomic_load_n((uint64_t *)t->out, __ATOMIC_ACQUIRE);
    t->off = (uint32_t)(t->tail & (t->size - 1));
    if (need && t->size - t->off < need) {   /* pad to the end first */
        t->tail += put_rec(t->data + t->off, t->size - t->off - 8, 0, 0);
        t->off = 0;
    }
    return 0;
}

/* Publish what was written up to t->tail, and ring the supervisor's doorbell. */
static void tail_publish(const struct tail *t)
{
    __atomic_store_n((uint64_t *)t->out, t->tail, __ATOMIC_RELEASE);
    cessna_send_msg_to_client("broken", 6);
}

static void break_pieces(void)
{
    uint32_t first_len = 8 + 32 + 1000, whole_len = 32 + 40;
    struct tail t;

    if (tail_find(&t, 2048) < 0)   /* both records before the end */
        return;
    /* the first piece: 100000 bytes announced, an honest-looking shm_rec, 1000 bytes */
    uint64_t total = 100000;
    char *p = t.data + t.off;
    uint32_t n = put_rec(p, first_len, OUT_CLIENT, F_FIRST);
    memcpy(p + 8, &total, 8);
    memset(p + 16, 0, first_len - 8);
    t.off += n;
    t.tail += n;
    /* then a whole record in the middle of it */
    p = t.data + t.off;
    n = put_rec(p, whole_len, OUT_CLIENT, 0);
    memset(p + 8, 0, whole_len);
    t.tail += n;
    tail_publish(&t);
}

/* A whole record of `type` with `len` zero bytes, at the ring's tail. */
static void put_whole(uint16_t type, uint32_t len)
{
    struct tail t;

    if (tail_find(&t, len + 16) < 0)
        return;
    memset(t.data + t.off + 8, 0, len);
    t.tail += put_rec(t.data + t.off, len, type, 0);
    tail_publish(&t);
}

static void recv_client_msg(const void *data, size_t len)
{
    if (len == 7 && memcmp(data, "SNAPBAD", 7) == 0) {
        put_whole(OUT_SNAP_DONE, 32 + 10);
        return;
    }
    if (len == 5 && memcmp(data, "BREAK", 5) == 0) {
        struct tail t;   /* a record whose length runs past the ring */
        if (tail_find(&t, 0) < 0)
            return;
        put_rec(t.data + t.off, 0x7ffffff0u, OUT_CLIENT, 0);
        t.tail += 8;
        tail_publish(&t);
        return;
    }
    if (len == 6 && memcmp(data, "PIECES", 6) == 0) {
        break_pieces();
        return;
    }
    cessna_send_msg_to_client(data, len);
}

static void recv_server_msg(const void *data, size_t len)
{
    (void)data;
    (void)len;
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "ringbreaker",
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
};
