/* cessna.h - the API of a CESSNA edge application.
 *
 * An app is a shared object that defines one symbol:
 *
 *     const struct cessna_app cessna_app = { CESSNA_ABI_VERSION, "name", ... };
 *
 * and is built out of tree with:  cc -shared -fPIC $(pkg-config --cflags cessna) app.c -o app.so
 * (after make install; from a source tree: -I CESSNA_SOURCE/include instead).
 *
 * The runtime calls the app's functions one event at a time, in the order the edge
 * supervisor assigned. The app must be deterministic: the same events must give the same
 * state and the same outputs. So it must not use sockets, threads, files or sleeps (the
 * worker's sandbox fails the session, naming the call); it uses cessna_now_ms(),
 * cessna_random(), cessna_set_timeout() and cessna_cache_read() instead (libc's clocks
 * and random functions give the same answers). Its state lives in the arena
 * (cessna_malloc and friends) or in the module's static variables: both are part of every
 * snapshot.
 */
#ifndef CESSNA_H
#define CESSNA_H

#include <stddef.h>
#include <stdint.h>

#define CESSNA_ABI_VERSION 1u

struct cessna_app {
    unsigned abi_version;                                  /* CESSNA_ABI_VERSION */
    const char *name;
    int  (*init)(void);                                    /* optional; nonzero fails the session */
    void (*accept_client_connection)(void);                /* optional */
    void (*recv_client_msg)(const void *data, size_t len); /* required */
    void (*recv_server_msg)(const void *data, size_t len); /* required */
    void (*shutdown)(void);                                /* optional */
};

#ifdef __cplusplus
extern "C" {
#endif

/* Queue one message to the client / server. 0, or -EMSGSIZE when len exceeds the edge's
 * max_message_bytes, or -EINVAL after shutdown. */
int         cessna_send_msg_to_client(const void *data, size_t len);
int         cessna_send_msg_to_server(const void *data, size_t len);

/* An immutable object from the edge's cache directory (cache_dir/NAME), or NULL when absent.
 * The content stays valid for the whole session. What came back is recorded in the event
 * order, so replay sees the same thing. */
const void *cessna_cache_read(const char *name, size_t *len);

/* Call fn(arg) after delay_ms; the firing is an ordered event. Returns a timer id (> 0),
 * or 0 when the timer table is full. cessna_cancel_timeout: 0, or -ENOENT. */
uint64_t    cessna_set_timeout(void (*fn)(void *arg), void *arg, uint64_t delay_ms);
int         cessna_cancel_timeout(uint64_t id);

uint64_t    cessna_now_ms(void);    /* the current event's time (ms since the Unix epoch) */
uint64_t    cessna_random(void);    /* deterministic per session */

/* The arena allocator: like malloc and friends; memory is part of every snapshot. */
void       *cessna_malloc(size_t n);
void       *cessna_calloc(size_t k, size_t n);
void       *cessna_realloc(void *p, size_t n);
void        cessna_free(void *p);

/* The session id (the same on every edge that runs this session). */
uint64_t    cessna_session_id(void);

/* End the session once the outputs queued so far are delivered. The current callback
 * finishes, shutdown() runs (what it sends is delivered too), then code 0 closes both
 * connections cleanly (CLOSE); a nonzero code sends both endpoints an ERROR reading
 * "app error CODE: TEXT" (text at most 200 bytes, may be NULL; control characters become
 * spaces). Deterministic like any output: a replay ends the session at the same event, and
 * the edge acts on it once. No app callback runs afterwards except shutdown(); events that
 * arrive later are dropped. Returns 0, -EALREADY when the session is already closing (a
 * second call, or from shutdown()), -EINVAL outside a callback. */
int         cessna_close_session(int code, const char *text);

/* The value of KEY in the [app] section of the edge's config file, or NULL when absent.
 * The values are taken when the session starts and kept with the session (its snapshots and
 * its recovery), so they never change under a running session, even if the config is edited
 * and reloaded, or the session moves to an edge configured otherwise. The string stays valid
 * for the session. cessna_config_int: the value as a decimal integer (a sign is allowed), or
 * dflt when absent or not one. */
const char *cessna_config(const char *key);
long long   cessna_config_int(const char *key, long long dflt);

/* A line in the edge node's log, tagged with the app's name and the session id:
 *   ... prog=cessna-supervisor pid=P level=info session=ID app=NAME msg="TEXT"
 * (the worker hands the line to the supervisor, which writes it)
 * TEXT is escaped (quotes, backslashes, newlines and control bytes), so it cannot add fields
 * or lines, and cut at 600 bytes (the line then ends in truncated=1). The edge's log_level
 * applies. Each line appears once per session: a recovery that replays events does not write
 * again what was written before (cessna-replay writes them to its stderr, marked replay=1).
 * Never use stderr in an app: it repeats on replay. */
enum cessna_log_level { CESSNA_LOG_ERROR = 0, CESSNA_LOG_WARN, CESSNA_LOG_INFO, CESSNA_LOG_DEBUG };
void        cessna_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
