#!/usr/bin/env bash
# The CESSNA demo: an unmodified TCP client and a plain zlib server, with the compression
# app running at the edge between them, all on loopback.
#
#   demo_client -TCP- cessna-client-proxy =CESSNA= cessna-supervisor (compress.so) =CESSNA= cessna-server-proxy -TCP- zlib_server
#
# The client sends plain text; the edge deflates it toward the server; the server inflates,
# echoes and deflates its answer; the edge inflates that for the client.
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
BYTES=${DEMO_BYTES:-4194304}
work=$(mktemp -d /tmp/cessna-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Start a program in the background and wait for its "ready listen=HOST:PORT" line.
start() {
    local name=$1; shift
    "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
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

server=$(start zlib_server "$BUILD/tools/zlib_server" --listen 127.0.0.1:0)
sproxy=$(start server_proxy "$BUILD/bin/cessna-server-proxy" --listen 127.0.0.1:0 --target "$server")
cat >"$work/edge.ini" <<INI
[edge]
listen = 127.0.0.1:0
server = $sproxy
app = $BUILD/apps/compress.so
state_dir = $work/state
control = $work/control.sock
INI
edge=$(start supervisor "$BUILD/bin/cessna-supervisor" -c "$work/edge.ini")
cproxy=$(start client_proxy "$BUILD/bin/cessna-client-proxy" --listen 127.0.0.1:0 --edge "$edge")

echo "zlib server      $server"
echo "server proxy     $sproxy"
echo "edge (compress)  $edge"
echo "client proxy     $cproxy"
echo
echo "client: sending $BYTES bytes of text through the edge and reading the echo..."
"$BUILD/tools/demo_client" --connect "$cproxy" --bytes "$BYTES"
sleep 0.3
echo
echo "edge sessions while it ran:"
"$BUILD/bin/cessna-ctl" --socket "$work/control.sock" stats
line=$(grep '^conn ' "$work/zlib_server.out" | tail -1 || true)
if [ -z "$line" ]; then
    echo "demo: the server reported no finished connection" >&2
    exit 1
fi
echo "server: $line"
plain=$(sed -n 's/.* plain=\([0-9]*\).*/\1/p' <<<"$line")
comp=$(sed -n 's/.*compressed_in=\([0-9]*\).*/\1/p' <<<"$line")
awk -v p="$plain" -v c="$comp" 'BEGIN { printf "compression ratio on the edge-server link: %.1fx (%d plain bytes became %d)\n", p / c, p, c }'
