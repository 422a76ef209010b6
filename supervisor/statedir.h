/* statedir.h - the lock on state_dir (one supervisor per directory), and the session
 * directories: given back after a clean close, kept (the newest failed_sessions_keep) after
 * a failure; one given back is recycled (its files retired into empty spares, the directory
 * renamed into a pool of free ones that new sessions take) or, past the pool's cap, removed,
 * a few files per loop iteration so the loop never blocks on it; session_dirs_ahead free
 * directories are made ahead the same way. */
#ifndef CESSNA_STATEDIR_H
#define CESSNA_STATEDIR_H

#include <stddef.h>
#include <stdint.h>

/* Take STATE_DIR/supervisor.lock (flock, our pid in it). 0, or -errno with the reason in
 * err ("state_dir DIR is in use by pid N ..."). */
int  sdir_lock(char *err, size_t errlen);
void sdir_init(void);                    /* earlier runs' directories count as kept */
void sdir_session_ended(uint64_t id, int failed);
/* The session id is live here again (a resume): its directory is no longer to be removed. */
void sdir_reclaim(uint64_t id);
/* Rename the oldest free directory to STATE_DIR/ID for a new session: 0, and the number of
 * spare files in it (spare.0 up) in *spares; -EEXIST when STATE_DIR/ID exists already
 * (nothing taken); -ENOENT when the pool is empty; another -errno. Not 0: the caller makes
 * the directory (mkdir) as without a pool. */
int  sdir_take(uint64_t id, uint32_t *spares);
size_t sdir_free_dirs(void);             /* free directories in the pool now */
/* Directories still to be made ahead (session_dirs_ahead); 0 once made, or when that failed. */
size_t sdir_ahead_pending(void);
/* Files wait for removal, or directories to be made ahead: the loop must not sleep. */
int  sdir_busy(void);
/* Retire or remove at most a few files; else make a few free directories ahead. */
void sdir_step(void);

#endif
