/* compress.c - edge compression (the slides' CompressionApp).
 *
 * The client speaks plain bytes, the server speaks zlib. Two persistent zlib streams:
 *
 *   client -> server: each client message is deflated and flushed with Z_FULL_FLUSH,
 *                     and everything produced goes to the server as one message.
 *   server -> client: each server message is inflated; the plain bytes go to the client
 *                     as one message (or one per 64 KiB when the output is large).
 *
 * The streams' state is exactly what must survive a failure, so zlib allocates through
 * cessna_calloc/cessna_free: its internal state lives in the arena and the z_stream
 * structs are static variables; both are part of every snapshot.
 *
 * A server stream that ends (Z_STREAM_END) is reset, so a following zlib stream is
 * accepted. If the server sends data that is not zlib (Z_DATA_ERROR and the like), the
 * inflate stream cannot resynchronize: the plain bytes that came before go to the client,
 * then the session ends with an ERROR naming zlib's reason (cessna_close_session), and the
 * node's log says so (cessna_log).
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags cessna) compress.c -o compress.so -lz
 */
#include <string.h>
#include <zlib.h>

#include "cessna.h"

#define CHUNK (64 * 1024)              /* inflate output per message to the client */

static z_stream def, inf;              /* client->server deflate, server->client inflate */
static int def_live, inf_live;
static unsigned char *dbuf;            /* deflate output buffer (arena), grows as needed */
static size_t dbuf_len;
static unsigned char *ibuf;            /* inflate output buffer (arena), CHUNK bytes */

/* zlib's allocator hooks: all zlib memory comes from the arena. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return cessna_calloc(items, size);
}

static void z_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    cessna_free(p);
}

static void app_shutdown(void)
{
    if (def_live)
        deflateEnd(&def);
    if (inf_live)
        inflateEnd(&inf);
    def_live = inf_live = 0;
    cessna_free(dbuf);
    cessna_free(ibuf);
    dbuf = ibuf = NULL;
}

static int app_init(void)
{
    def.zalloc = inf.zalloc = z_alloc;
    def.zfree = inf.zfree = z_free;
    if (deflateInit(&def, Z_DEFAULT_COMPRESSION) != Z_OK)
        return -1;
    def_live = 1;
    if (inflateInit(&inf) != Z_OK)
        goto fail;
    inf_live = 1;
    dbuf_len = CHUNK;
    dbuf = cessna_malloc(dbuf_len);
    ibuf = cessna_malloc(CHUNK);
    if (!dbuf || !ibuf)
        goto fail;
    return 0;
fail:
    app_shutdown();
    return -1;
}

static void recv_client_msg(const void *data, size_t len)
{
    size_t have = 0;

    def.next_in = (Bytef *)data;       /* zlib's API is not const-correct */
    def.avail_in = (uInt)len;
    for (;;) {
        def.next_out = dbuf + have;
        def.avail_out = (uInt)(dbuf_len - have);
        deflate(&def, Z_FULL_FLUSH);   /* cannot fail on a valid stream with room */
        have = dbuf_len - def.avail_out;
        if (def.avail_out != 0)        /* all input consumed and everything flushed */
            break;
        unsigned char *bigger = cessna_realloc(dbuf, dbuf_len * 2);
        if (!bigger)
            break;                     /* arena full: send what we have */
        dbuf = bigger;
        dbuf_len *= 2;
    }
    def.next_in = NULL;                /* the message buffer is not ours to keep */
    if (have)
        cessna_send_msg_to_server(dbuf, have);
}

static void recv_server_msg(const void *data, size_t len)
{
    size_t have = 0;

    inf.next_in = (Bytef *)data;
    inf.avail_in = (uInt)len;
    for (;;) {
        if (have == CHUNK) {           /* large output: one message per full chunk */
            cessna_send_msg_to_client(ibuf, have);
            have = 0;
        }
        inf.next_out = ibuf + have;
        inf.avail_out = (uInt)(CHUNK - have);
        int rc = inflate(&inf, Z_SYNC_FLUSH);
        have = CHUNK - inf.avail_out;
        if (rc == Z_STREAM_END) {
            inflateReset(&inf);        /* the next bytes may start a new stream */
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            if (have)                  /* what inflated before the bad bytes */
                cessna_send_msg_to_client(ibuf, have);
            cessna_log(CESSNA_LOG_WARN, "server sent data that is not zlib: %s",
                       inf.msg ? inf.msg : "inflate failed");
            cessna_close_session(2, "the server's data is not zlib");
            inf.next_in = NULL;
            return;
        }
        if (inf.avail_in == 0 && inf.avail_out != 0)
            break;                     /* input consumed, nothing more pending */
    }
    inf.next_in = NULL;
    if (have)
        cessna_send_msg_to_client(ibuf, have);
}

const struct cessna_app cessna_app = {
    .abi_version = CESSNA_ABI_VERSION,
    .name = "compress",
    .init = app_init,
    .recv_client_msg = recv_client_msg,
    .recv_server_msg = recv_server_msg,
    .shutdown = app_shutdown,
};
