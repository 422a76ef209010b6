/* check.h - what `cessna-supervisor --check` verifies beyond parsing (check.c). */
#ifndef CESSNA_CHECK_H
#define CESSNA_CHECK_H

#include <stddef.h>

struct config;

/* The directories: state_dir exists and is writable, or can be created; cache_dir, when
 * set, is a readable directory. 0, or -errno with "KEY PATH: cause" in err. */
int check_dirs(const struct config *c, char *err, size_t errlen);
/* The app module loads as a CESSNA app: a zygote is started on it, as at startup, and
 * stopped once it reported ready. 0, or -EINVAL with the zygote's reason in err. */
int check_app(char *err, size_t errlen);

#endif
