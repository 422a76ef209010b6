/* zygote.h - the app's zygotes and the workers they fork (zygote.c).
 *
 * One zygote per app module. A SIGHUP that changes `app` starts a second one: new sessions
 * get their workers from it, and each session keeps the zygote it started with (its
 * generation, s->zgen) for every later worker, since its snapshots restore only into the
 * module that wrote them. The old zygote stops once no session is bound to it. */
#ifndef CESSNA_ZYGOTE_H
#define CESSNA_ZYGOTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct session;

/* The first zygote, synchronously, before the loop runs. 0, or -errno with a reason. */
int  zygote_start(const char *app, const char *cache_dir, const char *state_dir, char *err,
                  size_t errlen);
/* Every zygote goes (they exit when their socket closes; wait: also reap them). */
void zygote_stop(int wait);
void zygote_watch(void);                 /* arm the first zygote's death watch */

/* A reload names another module: start its zygote (asynchronously). Once it reports ready,
 * new sessions get workers from it (logged); if it does not load, nothing changes (logged).
 * 0 when it is starting, or -errno with the reason it is refused (an older module still has
 * sessions, a change is already starting, the fork failed). */
int  zygote_change_app(const char *app, char *why, size_t whylen);
/* The app the newest zygote runs (what new sessions get, or are about to). */
const char *zygote_current_app(void);

/* The session belongs to zygote gen from now on (0: the current one); freed sessions are
 * unbound, and the last one of an old zygote stops it. */
void zygote_bind(struct session *s, uint32_t gen);
void zygote_unbind(struct session *s);
/* The zygote whose workers write snapshots of this layout, or 0: none here. */
uint32_t zygote_for_fingerprint(const uint8_t fp[32]);

/* Ask the session's zygote for a worker; the reply comes as a completion:
 * sess_worker_spawned() or sess_spawn_failed(). 0, or -errno with a reason in err;
 * -ENOBUFS: its socket is full of requests (a burst of new sessions), try again later. */
int  zygote_spawn(struct session *s, int memfd, int report_fd, uint64_t restore_pos, char *err,
                  size_t errlen);
/* Spawn requests the session's zygote has not answered yet; UINT32_MAX when it is down. */
uint32_t zygote_waiting(const struct session *s);
uint64_t zygote_last_answer_ms(void);    /* when a zygote last answered a spawn (tmo_now_ms) */
void zygote_check_spawns(void);          /* the periodic tick: answer timeouts */
int  zygote_tracked(pid_t pid);          /* a zygote's pid: the loop reaps it itself */

/* Completions; gen is the slot field of their user data (UD()). */
void zygote_on_reply(uint32_t gen, int res);
void zygote_on_death(uint32_t gen);      /* it died: restart it, with backoff */
void zygote_on_restart_timer(uint32_t gen);
void zygote_on_ready(uint32_t gen, int res);

/* cessna-ctl stats: the zygotes, their apps and how many sessions each has. */
size_t zygote_stats(char *out, size_t cap);

#endif
