#!/bin/sh
# A shell app: greets, counts its runs in a file inside its own directory (kept between runs
# because the overlay preserves what the app writes), and exits with a status of its choosing.
set -e
count_file="$APPDIR/state/runs"
runs=$(cat "$count_file" 2>/dev/null || echo 0)
runs=$((runs + 1))
echo "$runs" > "$count_file"
echo "hello from the shell template (run $runs), args: $*"
[ "${1:-}" = "--fail" ] && exit "${2:-3}"
exit 0
