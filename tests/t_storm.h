/* t_storm.h - the random-kill harness (t_storm.c). */
#ifndef CESSNA_T_STORM_H
#define CESSNA_T_STORM_H

/* Run 20 sessions through the sequencer twice with the [edge] lines `extra`, the second
 * time with random worker kills, and assert both sides of every session received the same
 * bytes. Returns the number of kills that landed. */
int t_storm_compare(const char *extra);
/* The same, with the supervisor also reloading its configuration (SIGHUP) every 30-80 ms
 * during the kills, cycling the snapshot, hold, timeout and hibernation keys. */
int t_storm_compare_reloads(const char *extra);

#endif
