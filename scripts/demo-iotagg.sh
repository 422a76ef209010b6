#!/usr/bin/env bash
# make demo-iotagg: apps/iotagg.so, aggregation for IoT, on loopback.
#
#   iotagg_driver client =CESSNA= cessna-supervisor (iotagg.so) =CESSNA= iotagg_driver server
#
# The gateway sends 12 batches of 120 readings, each once the server acknowledged the
# window of the one before; the edge sends the server per-sensor aggregates once per window
# and alerts to both sides at once. Midway the session's worker is killed with SIGKILL
# while a window's timer is pending; both ends check that what they got is what the
# readings make. Everything started here is stopped on exit.
. "$(dirname "$0")/demo-lib.sh"

server=$(start server "$BUILD/tools/iotagg_driver" server --listen 127.0.0.1:0)
edge=$(start_edge iotagg "$server" "window_ms = 300
alert_above = 3000000000
max_sensors = 44
idle_windows = 2")
echo "server (collector) $server, edge (iotagg.so) $edge"
echo "[app] window_ms = 300, alert_above = 3000000000, max_sensors = 44, idle_windows = 2"
echo
echo "1. the gateway sends 12 batches of 120 readings (40 sensors, and a few new ones per"
echo "   batch that fill the table)"
"$BUILD/tools/iotagg_driver" client --edge "$edge" --batches 12 >"$work/client.out" 2>&1 &
client=$!
sleep 1.5
id=$(ctl sessions | sed -n 's/^id=\([0-9]*\) .*state=live.*/\1/p' | head -1)
[ -n "$id" ] || { echo "demo: no live session to kill" >&2; exit 1; }
timers() { ctl sessions | grep "^id=$id " | sed -n 's/.* timers=\([0-9]*\).*/\1/p'; }
for _ in $(seq 100); do [ "$(timers)" = 1 ] && break; sleep 0.01; done   # a window is open
echo "2. edge: $(ctl kill-worker "$id") (app timers pending: $(timers))"
sleep 0.3
echo "   edge: after the kill: $(ctl sessions | grep "^id=$id " |
    grep -o 'recoveries=[0-9]*\|recovery=[a-z]*\|recovery_us=[0-9]*' | tr '\n' ' ')"
rc=0
wait "$client" || rc=$?
sleep 0.3
echo
echo "3. what each end got:"
grep -v '^ready' "$work/server.out" | head -2 | sed 's/^/   /'
echo "   ..."
tail -2 "$work/server.out" | sed 's/^/   /'
grep '^client: [0-9]* batches' "$work/client.out" | sed 's/^/   /' || cat "$work/client.out" >&2
echo
echo "4. the app's own log lines (cessna_log), from the edge's log:"
for what in 'first seen' 'ALERT' 'refused'; do
    grep -m 1 "app=iotagg msg=\"[^\"]*$what" "$work/supervisor.log" | sed 's/^.* level=/   level=/' || true
done
[ "$rc" -eq 0 ] || { echo "demo: the client did not get what the readings make" >&2; exit 1; }
grep -q 'each one as computed' "$work/server.out" || { echo "demo: the server's windows differ" >&2; exit 1; }
