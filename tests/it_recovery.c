/* it_recovery.c - fault injection: workers killed with SIGKILL at random moments while 20
 * sessions run with timers, cancels, PRNG draws and slow readers (tests/t_storm.c); every
 * byte each side receives must equal a run without kills. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "t_storm.h"

Test(recovery, random_kills_cold_standby, .timeout = 180)
{
    t_storm_compare("standby = cold\nsnapshot_interval_ms = 20\n");
}

Test(recovery, random_kills_hot_standby, .timeout = 180)
{
    t_storm_compare("standby = hot\nsnapshot_interval_ms = 20\n");
}

/* Without snapshots the replacement replays every event from the start. */
Test(recovery, random_kills_without_snapshots, .timeout = 180)
{
    t_storm_compare("snapshot_interval_ms = 0\n");
}

/* Faults combined with operations: SIGHUP reloads every 30-80 ms change the snapshot
 * interval (5 ms to none), the held caps, the snapshot timeout (2 ms: snapshots in flight
 * fail and their children are killed) and hibernation, while workers are killed. */
Test(recovery, random_kills_with_reloads_cold_standby, .timeout = 180)
{
    t_storm_compare_reloads("standby = cold\n");
}

Test(recovery, random_kills_with_reloads_hot_standby, .timeout = 180)
{
    t_storm_compare_reloads("standby = hot\n");
}

/* The same with the sessions' sockets as plain descriptors, as on a kernel before 6.7
 * (supervisor/connfd.c): shutdowns, resets and closes then go straight to the kernel. */
Test(recovery, random_kills_cold_standby_plain_socket_descriptors, .timeout = 180)
{
    setenv("CESSNA_NO_DIRECT_FILES", "1", 1);
    t_storm_compare("standby = cold\nsnapshot_interval_ms = 20\n");
}
