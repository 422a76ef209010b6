/* it_remote.c - sessions that outlive their edge node (issue 7, docs/protocol.md).
 *
 * Three supervisors behind one client proxy (--edge A,B,C) and one server proxy (--store,
 * --edge-secret-file); plain TCP client programs (threads here) run lockstep sessions through
 * sequencer.so (every output carries a hash of the exact event order), with timers, cancels
 * and PRNG draws; a plain TCP server program answers each message. The edge holding the
 * sessions is killed with SIGKILL to its whole process group (or stopped with SIGSTOP past the
 * client proxy's heartbeat), again and again, and restarted with an empty state_dir. Every
 * byte each program received must equal a run without faults. */
#include <criterion/criterion.h>
#include <signal.h>
#include <unistd.h>

#include "t_world.h"

TestSuite(remote, .timeout = 240);

enum fault { NONE, KILL, STOP };

/* One run: returns the number of node faults injected. */
static int run(struct world *w, enum fault fault)
{
    struct w_clients c;
    int faults = 0;

    run_clients(w, &c);
    if (fault != NONE) {
        usleep(300 * 1000);
        for (int k = 0; k < 40; k++) {
            int i = busiest_edge(w);
            if (i < 0)
                break;   /* every session ended */
            if (fault == KILL) {
                edge_kill(w, i);
                edge_start(w, i);
            } else {
                /* A hang longer than the heartbeat: the sessions move on; the stale node,
                 * continued, must change nothing and end its copies quietly. */
                kill(-w->edge[i].pid, SIGSTOP);
                usleep(900 * 1000);
                kill(-w->edge[i].pid, SIGCONT);
            }
            faults++;
            usleep((useconds_t)(60 + (k * 37) % 100) * 1000);
        }
    }
    join_clients(w, &c);
    wait_server_transcripts(w);
    return faults;
}

static void node_losses(const char *standby, enum fault fault, int min_faults)
{
    static struct world clean, faulty;
    struct w_opts o = { .standby = standby };

    world_start(&clean, &o);
    run(&clean, NONE);
    world_stop(&clean);

    world_start(&faulty, &o);
    int faults = run(&faulty, fault);
    world_stop(&faulty);
    cr_log_info("node faults: %d", faults);
    cr_expect(faults >= min_faults, "only %d node faults landed", faults);
    compare(&clean, &faulty);
}
Test(remote, edge_node_killed_again_and_again)
{
    node_losses("cold", KILL, 20);
}

Test(remote, edge_node_hangs_past_the_heartbeat)
{
    node_losses("cold", STOP, 5);
}
