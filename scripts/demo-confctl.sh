#!/usr/bin/env bash
# make demo-confctl: apps/confctl.so, a conferencing control channel, on loopback.
#
#   confctl_driver gateway =CESSNA= cessna-supervisor (confctl.so) =CESSNA= confctl_driver backend
#
# The gateway (a room's members) joins, raises hands, takes the floor and leaves; the
# backend kicks mallory, mutes the room when someone speaks and ends the conference when
# the room is empty. Alice's hand is left up and expires (hand_timeout_ms = 1000, from
# [app]); the session's worker is SIGKILLed while that timer is pending: the events and
# the rosters go on as if nothing happened. Everything started here is stopped on exit.
. "$(dirname "$0")/demo-lib.sh"

backend=$(start backend "$BUILD/tools/confctl_driver" backend --listen 127.0.0.1:0)
edge=$(start_edge confctl "$backend" "hand_timeout_ms = 1000")
echo "backend (server side) $backend, edge (confctl.so) $edge"
echo
kill_worker_after 1.9 &
killer=$!
rc=0
"$BUILD/tools/confctl_driver" gateway --edge "$edge" || rc=$?
wait "$killer" || rc=1
sleep 0.2
echo
echo "what the backend saw and did:"
cat "$work/backend.out" | grep -v '^ready'
echo
echo "the edge's log lines from the app (cessna_log, once each despite the recovery):"
grep 'app=confctl' "$work/supervisor.log" | sed 's/.* msg=/  /'
[ "$rc" -eq 0 ] || { echo "demo: the gateway did not finish cleanly" >&2; exit 1; }
