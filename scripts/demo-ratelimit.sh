#!/usr/bin/env bash
# The rate limiter demo (apps/ratelimit.c): redis-server behind a token bucket at the edge,
# both proxies cutting the byte streams into whole Redis commands and replies
# (--framing resp), all on loopback.
#
#   redis-cli -TCP- cessna-client-proxy =CESSNA= cessna-supervisor (ratelimit.so) =CESSNA= cessna-server-proxy -TCP- redis-server
#
# 1. redis-cli sends INCR one after the other: the first `burst` are answered at once, the
#    next one per token (rate_per_s).
# 2. a burst of pipelined INCRs in one write: `burst` at once, `queue` released at the rate,
#    the rest refused with "-ERR rate limited", every reply in the order of the commands.
# Everything started here is stopped on exit.
. "$(dirname "$0")/demo-lib.sh"
RATE=5 BURST=3 QUEUE=4 SENT=10
trap 'exec 3>&- 2>/dev/null || true; cleanup' EXIT

# redis-server on a free loopback port (a random one, again if it is taken), in the foreground
# of its own process so that cleanup() stops it.
for _ in $(seq 20); do
    rport=$((20000 + RANDOM % 40000))
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$work" >"$work/redis.log" 2>&1 &
    echo $! >"$work/redis.pid"
    for _ in $(seq 40); do
        [ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] && break 2
        kill -0 "$(cat "$work/redis.pid")" 2>/dev/null || break
        sleep 0.05
    done
    kill "$(cat "$work/redis.pid")" 2>/dev/null || true   # not up: another port
done
[ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] || { echo "demo: redis-server did not start" >&2; exit 1; }

sproxy=$(start server_proxy "$BUILD/bin/cessna-server-proxy" --listen 127.0.0.1:0 \
         --target "127.0.0.1:$rport" --framing resp)
edge=$(start_edge ratelimit "$sproxy" "rate_per_s = $RATE
burst = $BURST
queue = $QUEUE")
cproxy=$(start client_proxy "$BUILD/bin/cessna-client-proxy" --listen 127.0.0.1:0 \
         --edge "$edge" --framing resp)
cport=${cproxy##*:}

echo "redis-server          127.0.0.1:$rport"
echo "server proxy          $sproxy (--framing resp)"
echo "edge (ratelimit.so)   $edge: rate_per_s=$RATE burst=$BURST queue=$QUEUE"
echo "client proxy          $cproxy (--framing resp)"
echo

stamp() {   # prefix each line (at most $1) with the milliseconds since $t0
    local line n=0
    while [ "$n" -lt "${1:-1000000}" ] && IFS= read -r line; do
        printf '  %5d ms  %s\n' $(( $(date +%s%3N) - t0 )) "${line%$'\r'}"
        n=$((n + 1))
    done
}

echo "1. redis-cli -r 8 INCR hits (one command after the other):"
t0=$(date +%s%3N)
redis-cli -p "$cport" -r 8 INCR hits | stamp
echo
echo "2. a burst of $SENT pipelined INCRs in one write: $BURST at once, $QUEUE at $RATE/s, the rest refused:"
exec 3<>"/dev/tcp/127.0.0.1/$cport"
t0=$(date +%s%3N)
for _ in $(seq "$SENT"); do printf '*2\r\n$4\r\nINCR\r\n$5\r\nburst\r\n'; done >&3
stamp "$SENT" <&3
exec 3>&-
echo
echo "redis itself: hits=$(redis-cli -p "$rport" get hits) burst=$(redis-cli -p "$rport" get burst)"
