#!/usr/bin/env bash
# The iotagg demo: a gateway of sensors and a collector, with apps/iotagg.c at the edge
# between them, all on loopback (both ends are tests/tools/iotagg_driver on
# libcessna-endpoint).
#
#   iotagg_driver client =CESSNA= cessna-supervisor (iotagg.so) =CESSNA= iotagg_driver server
#
# The gateway sends 12 batches of 120 readings; the edge sends per-sensor aggregates to the
# server once per window and alerts to both sides at once. Midway the session's worker is
# killed with SIGKILL; both ends check that what they got is what the readings make.
# Everything started here is stopped on exit.
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
work=$(mktemp -d /tmp/cessna-demo-iotagg.XXXXXX)

cleanup() {
    local pid
    for f in "$work"/*.pid; do
        [ -e "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$work"/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Start a program in the background and wait for its "ready listen=HOST:PORT" line.
start() {
    local name=$1; shift
    "$@" >"$work/$name.out" 2>"$work/$name.log" &
    echo $! >"$work/$name.pid"
    for _ in $(seq 100); do
        if grep -q '^ready listen=' "$work/$name.out" 2>/dev/null; then
            sed -n 's/^ready listen=//p' "$work/$name.out" | head -1
            return 0
        fi
        sleep 0.05
    done
    echo "demo: $name did not start; its log:" >&2
    cat "$work/$name.log" >&2
    exit 1
}

ctl() { "$BUILD/bin/cessna-ctl" --socket "$work/control.sock" "$@"; }

server=$(start server "$BUILD/tools/iotagg_driver" server --listen 127.0.0.1:0)
cat >"$work/edge.ini" <<INI
[edge]
listen = 127.0.0.1:0
server = $server
app = $BUILD/apps/iotagg.so
state_dir = $work/state
control = $work/control.sock
snapshot_interval_ms = 200

[app]
window_ms = 300
alert_above = 3000000000
max_sensors = 44
idle_windows = 2
INI
edge=$(start supervisor "$BUILD/bin/cessna-supervisor" -c "$work/edge.ini")
echo "server (collector)  $server"
echo "edge (iotagg)       $edge: window_ms=300 alert_above=3000000000 max_sensors=44 idle_windows=2"
echo

echo "1. the gateway sends 12 batches of 120 readings (40 sensors, plus a few new ones per"
echo "   batch that fill the table); each batch after the last window was acknowledged"
"$BUILD/tools/iotagg_driver" client --edge "$edge" --batches 12 >"$work/client.out" 2>&1 &
client=$!
sleep 1.5
id=$(ctl sessions | sed -n 's/^id=\([0-9]*\) .*state=live.*/\1/p' | head -1)
if [ -z "$id" ]; then
    echo "demo: no live session to kill" >&2
    exit 1
fi
timers=$(ctl sessions | grep "^id=$id " | sed -n 's/.* timers=\([0-9]*\).*/\1/p')
echo "2. edge:   $(ctl kill-worker "$id") (app timers pending: $timers)"
sleep 0.3
echo "   edge:   after the kill: $(ctl sessions | grep "^id=$id " | grep -o 'recoveries=[0-9]*\|recovery=[a-z]*\|recovery_us=[0-9]*' | tr '\n' ' ')"
rc=0
wait "$client" || rc=$?
sleep 0.3
echo
echo "3. what each end got:"
head -3 "$work/server.out" | grep -v '^ready' | sed 's/^/   /'
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
