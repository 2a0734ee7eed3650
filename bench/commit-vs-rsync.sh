#!/usr/bin/env bash
# Time to commit a 20,000-file tree with 1% of files changed, against `rsync -a` of the same
# change. Run as root from the repository root after `npm install`: bash bench/commit-vs-rsync.sh
set -euo pipefail
CLI="node $(pwd)/dist/builder/cli.js"
W=$(mktemp -d /var/tmp/overpack-commit-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/seed"
for d in $(seq 0 199); do
  mkdir -p "$W/seed/d$d"
  for f in $(seq 0 99); do head -c $(( (d * 100 + f) % 8192 + 100 )) /dev/urandom > "$W/seed/d$d/f$f"; done
done
# the change: 200 files rewritten (1%), as an upper and as a plain copy
mkdir -p "$W/upper" && cp -a "$W/seed" "$W/changed"
for d in $(seq 0 199); do
  mkdir -p "$W/upper/d$d"
  echo "changed $d" > "$W/upper/d$d/f7"; cp -a "$W/upper/d$d/f7" "$W/changed/d$d/f7"
done
ms() { local s=$(date +%s%N); "$@" > /dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000000 )); }
for i in 1 2 3; do
  rm -rf "$W/l1" "$W/l2" "$W/l3" "$W/u1" "$W/u2"
  cp -a "$W/seed" "$W/l1"; cp -a "$W/seed" "$W/l2"; cp -a "$W/seed" "$W/l3"
  cp -a "$W/upper" "$W/u1"; cp -a "$W/upper" "$W/u2"
  sync
  c=$(ms $CLI commit "$W/l1" --upper "$W/u1")
  a=$(ms $CLI commit "$W/l2" --upper "$W/u2" --atomic)
  r=$(ms rsync -a "$W/changed/" "$W/l3/")
  echo "run $i: commit ${c} ms, commit-atomic ${a} ms, rsync -a ${r} ms"
done
