# demo-lib.sh - shared by the demo-APP scripts (sourced): a work directory, start() for
# programs that print "ready listen=HOST:PORT", an edge running one app, and cleanup on
# exit of every process started here (pid files: start() runs in a command substitution,
# a subshell, so a shell array would not see its pids).
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
work=$(mktemp -d /tmp/cessna-demo.XXXXXX)

cleanup() {
    local f pid
    for f in "$work"/*.pid; do
        [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
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

# start NAME CMD...: run in the background, print its address once it is ready.
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

# start_edge APP SERVER_ADDR [APP_CFG_LINES]: a supervisor running build/apps/APP.so.
start_edge() {
    cat >"$work/edge.ini" <<INI
[edge]
listen = 127.0.0.1:0
server = $2
app = $BUILD/apps/$1.so
state_dir = $work/state
control = $work/control.sock
snapshot_interval_ms = 200

[app]
${3:-}
INI
    start supervisor "$BUILD/bin/cessna-supervisor" -c "$work/edge.ini"
}

ctl() { "$BUILD/bin/cessna-ctl" --socket "$work/control.sock" "$@"; }

# kill_worker_after SECONDS: SIGKILL the live session's worker, then say how it recovered.
kill_worker_after() {
    sleep "$1"
    local id
    id=$(ctl sessions | sed -n 's/^id=\([0-9]*\) .*state=live.*/\1/p' | head -1)
    if [ -z "$id" ]; then
        echo "demo: no live session to kill" >&2
        return 1
    fi
    echo "edge     : $(ctl kill-worker "$id")"
    sleep 0.2
    echo "edge     : after the kill: $(ctl sessions | grep "^id=$id " |
        grep -o 'recoveries=[0-9]*\|recovery=[a-z]*\|recovery_us=[0-9]*' | tr '\n' ' ')"
}
