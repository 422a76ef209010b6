#!/usr/bin/env bash
# run-tests.sh TEST_BINARY [ARGS...] - run the Criterion tests; when some fail, list them
# again after the summary (with their assertion lines), so a log read from its end still
# names what failed. Exits with the tests' status.
set -uo pipefail
log=$(mktemp /tmp/cessna-tests-log.XXXXXX)
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    echo
    echo "==== what failed (the full lines are above) ===="
    grep -E '^\[(----|FAIL)\]' "$log" | tail -80
    grep -E 'Synthesis' "$log" | tail -1
fi
rm -f "$log"
exit "$rc"
