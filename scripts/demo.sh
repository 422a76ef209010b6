#!/usr/bin/env bash
# The CESSNA demo: an unmodified TCP client and a plain zlib server, with the compression
# app running at the edge between them, all on loopback.
#
#   demo_client -TCP- cessna-client-proxy =CESSNA= cessna-supervisor (compress.so) =CESSNA= cessna-server-proxy -TCP- zlib_server
#
# The client sends plain text; the edge deflates it toward the server; the server inflates,
# echoes and deflates its answer; the edge inflates that for the client. Then a second
# client sends slowly while the demo kills its session's worker with SIGKILL: the client
# sees a stall and the same bytes. Everything started here is stopped on exit.
# shellcheck source=scripts/demo-lib.sh
. "$(dirname "$0")/demo-lib.sh"   # work dir, start, ctl, cleanup of all it started
BYTES=${DEMO_BYTES:-4194304}

server=$(start zlib_server "$BUILD/tools/zlib_server" --listen 127.0.0.1:0)
sproxy=$(start server_proxy "$BUILD/bin/cessna-server-proxy" --listen 127.0.0.1:0 --target "$server")
cat >"$work/edge.ini" <<INI
[edge]
listen = 127.0.0.1:0
server = $sproxy
app = $BUILD/apps/compress.so
state_dir = $work/state
control = $work/control.sock
snapshot_interval_ms = 200
INI
edge=$(start supervisor "$BUILD/bin/cessna-supervisor" -c "$work/edge.ini")
cproxy=$(start client_proxy "$BUILD/bin/cessna-client-proxy" --listen 127.0.0.1:0 --edge "$edge")

echo "zlib server      $server"
echo "server proxy     $sproxy"
echo "edge (compress)  $edge"
echo "client proxy     $cproxy"
echo
echo "1. client: sending $BYTES bytes of text through the edge and reading the echo..."
"$BUILD/tools/demo_client" --connect "$cproxy" --bytes "$BYTES"
sleep 0.3
line=$(grep '^conn ' "$work/zlib_server.out" | tail -1 || true)
if [ -z "$line" ]; then
    echo "demo: the server reported no finished connection" >&2
    exit 1
fi
echo "server: $line"
plain=$(sed -n 's/.* plain=\([0-9]*\).*/\1/p' <<<"$line")
comp=$(sed -n 's/.*compressed_in=\([0-9]*\).*/\1/p' <<<"$line")
awk -v p="$plain" -v c="$comp" 'BEGIN { printf "compression ratio on the edge-server link: %.1fx (%d plain bytes became %d)\n", p / c, p, c }'

echo
echo "2. a slow client (1 MiB in 4 KiB pieces, 8 ms apart); its worker is killed with SIGKILL after 1 s..."
"$BUILD/tools/demo_client" --connect "$cproxy" --bytes 1048576 --pace-ms 8 >"$work/slow.out" 2>&1 &
slow=$!
sleep 1
id=$(ctl sessions | sed -n 's/^id=\([0-9]*\) .*state=live.*/\1/p' | head -1)
if [ -z "$id" ]; then
    echo "demo: no live session to kill" >&2
    exit 1
fi
echo "edge:   $(ctl kill-worker "$id")"
sleep 0.3
echo "edge:   session $id after the kill: $(ctl sessions | grep "^id=$id " | grep -o 'recoveries=[0-9]*\|recovery=[a-z]*\|recovery_us=[0-9]*' | tr '\n' ' ')"
rc=0
wait "$slow" || rc=$?
echo "client: $(cat "$work/slow.out")"
[ "$rc" -eq 0 ] || { echo "demo: the slow client did not get its bytes back" >&2; exit 1; }

echo
echo "edge node counters:"
ctl stats
cat <<EOF

Try next, with the edge from this demo's pattern (README "Running an edge"):
  cessna-ctl --socket STATE_DIR/control.sock sessions        one line per session
  cessna-ctl --socket STATE_DIR/control.sock kill-worker ID  kill a worker: the client stalls, nothing is lost
  kill -9 the supervisor with two edges in --edge            the client proxy resumes at the other one
  standby = hot in the config                                takeover in well under a millisecond
  make demo-confctl, demo-game, demo-iotagg, demo-ratelimit  the other example apps (README "Example apps")
  docs/tutorial.md                                           write your own app, test it under kills
EOF
