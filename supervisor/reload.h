/* reload.h - SIGHUP: read the configuration file again and apply what can change while
 * sessions run (reload.c). */
#ifndef CESSNA_RELOAD_H
#define CESSNA_RELOAD_H

/* Remember the file (made absolute) and the configuration it gave at start, before the
 * supervisor derives anything (max_sessions). */
void reload_init(const char *path);
/* Read the file again: apply the run-time keys that changed, log one line with what was
 * applied and one with what was not (keys that need a restart); a file that does not parse
 * is logged and the running configuration stays. */
void reload_config(void);

#endif
