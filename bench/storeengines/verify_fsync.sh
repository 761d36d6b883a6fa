#!/usr/bin/env bash
# Independent durability check: counts the fsync-family syscalls each engine
# really issues (strace), next to the commit counts the benchmark reports.
# Usage: ./verify_fsync.sh [events]   (needs strace; small runs, strace is slow)
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-2000}
mkdir -p .tmp
go build -o .tmp/storeengines .
for m in sqlite-writer bbolt-batch bbolt-writer pebble-sync pebble-writer; do
  echo "=== $m ($n events, 1/call, 32 publishers; batch phase $n events; mark 1000) ==="
  strace -f -qq -c -e trace=fsync,fdatasync,sync_file_range,msync,syncfs \
    -o ".tmp/strace-$m.txt" ./.tmp/storeengines -engine "$m" -events "$n" -mark 1000 \
    | grep -E "^ +(single|batch|mark) *:" | sed -E 's/, p50.*(commits)/, \1/'
  grep -E "fsync|fdatasync|sync_file_range|msync|total" ".tmp/strace-$m.txt" | awk '{print "    strace: " $NF " calls=" $4}'
done
