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

static void node_losses(const struct w_opts *o, enum fault fault, int min_faults)
{
    static struct world clean, faulty;

    world_start(&clean, o);
    run(&clean, NONE);
    world_stop(&clean);

    world_start(&faulty, o);
    int faults = run(&faulty, fault);
    uint64_t resumes = 0;
    for (int i = 0; i < faulty.o.edges; i++)
        resumes += edge_stat(&faulty, i, "resumes");
    world_stop(&faulty);
    cr_log_info("node faults: %d", faults);
    cr_expect(faults >= min_faults, "only %d node faults landed", faults);
    cr_expect(resumes > 0, "the edges up at the end resumed no session");
    compare(&clean, &faulty);
}

Test(remote, edge_node_killed_again_and_again)
{
    struct w_opts o = { .standby = "cold" };
    node_losses(&o, KILL, 20);
}

Test(remote, edge_node_hangs_past_the_heartbeat)
{
    struct w_opts o = { .standby = "cold" };
    node_losses(&o, STOP, 5);
}

/* No snapshot is ever taken, so none is shipped: each new edge replays the session from its
 * first event, from what the two endpoints kept. */
Test(remote, without_a_stored_snapshot_a_session_replays_from_its_start)
{
    struct w_opts o = { .standby = "cold", .rounds = 300, .snapshot_interval_ms = -1 };
    node_losses(&o, KILL, 8);
}
