#!/bin/bash
# W7 through `overpack mount` of the bench's w4 data, a switch of the engine off then on,
# interleaved: bench/w7-ab.sh REPS [mount args, e.g. --writeback]. SWITCH names the variable
# (default OVERPACK_FUSE_DIRECT, the addon's direct READ/WRITE; OVERPACK_FUSE_PASSTHROUGH for
# passthrough); STATS=1 prints request counts.
reps=$1; shift
switch=${SWITCH:-OVERPACK_FUSE_DIRECT}
here=$(cd "$(dirname "$0")" && pwd)
CLI=$here/../dist/builder/cli.js
for i in $(seq $reps); do for mode in 0 1; do
  d=/tmp/w7ab; rm -rf $d; mkdir -p $d/u $d/m
  env $switch=$mode OVERPACK_FUSE_STATS=${STATS:-0} node $CLI mount /var/tmp/overpack-bench/w4 --upper $d/u --mountpoint $d/m --on-exit discard "$@" > $d.out 2>&1 &
  pid=$!
  for t in $(seq 50); do grep -q "$d/m" /proc/mounts && break; sleep 0.1; done
  s=$(date +%s%N); (cd $d/m && python3 $here/w7-sqlite.py run state 4000 >/dev/null); e=$(date +%s%N)
  kill $pid; wait $pid 2>/dev/null
  echo "$switch=$mode $(( (e-s)/1000000 ))"
  [ "${STATS:-0}" = 1 ] && grep -E "FUSE requests|write |read |addon|passthrough" $d.out
done; done
