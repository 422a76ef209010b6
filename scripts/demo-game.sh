#!/usr/bin/env bash
# make demo-game: apps/game.so, authoritative game state at the edge, on loopback.
#
#   game_driver player =CESSNA= cessna-supervisor (game.so) =CESSNA= game_driver backend
#
# The backend puts a coin, mines and another player into the world; the player moves,
# shoots and runs into the mines until the last of its two lives is lost; the edge runs the
# rules on a 30 ms tick ([app] tick_ms) and sends each side what changed. Its worker is
# SIGKILLed twice mid-game: the game goes on from the same world, tick for tick.
# Everything started here is stopped on exit.
. "$(dirname "$0")/demo-lib.sh"

backend=$(start backend "$BUILD/tools/game_driver" backend --listen 127.0.0.1:0)
edge=$(start_edge game "$backend" "tick_ms = 30
lives = 2")
echo "backend (server side) $backend, edge (game.so, 30 ms ticks) $edge"
echo
( kill_worker_after 1.5 && kill_worker_after 1.0 ) &
killer=$!
rc=0
"$BUILD/tools/game_driver" player --edge "$edge" || rc=$?
wait "$killer" || rc=1
sleep 0.2
echo
echo "what the backend saw (the player's authoritative state every 25 ticks, and events):"
grep -v '^ready' "$work/backend.out"
echo
echo "the edge's log lines from the app (cessna_log, once each despite the recoveries):"
grep 'app=game' "$work/supervisor.log" | sed 's/.* msg=/  /'
[ "$rc" -eq 0 ] || { echo "demo: the player did not finish cleanly" >&2; exit 1; }
