#!/usr/bin/env bash
# Models, with pgbench against Sluice's real PostgreSQL schema, what PostgreSQL spends per fanned-out event in
# two layouts of the delivery queue (see README.md here). Interleaves the two and prints events/s for each.
#
#   bench/pgmodel/run.sh [-d DSN] [-r ROUNDS] [-t SECONDS] [-c CLIENTS]
#
# Needs pgbench and psql (Debian's postgresql-client) and Go (it builds ./cmd/sluice to migrate the schema).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
cd "$(dirname "$0")/../.."
dsn="${SLUICE_TEST_PG_DSN:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
rounds=3 secs=20 clients=8
while getopts d:r:t:c: o; do
  case $o in d) dsn=$OPTARG ;; r) rounds=$OPTARG ;; t) secs=$OPTARG ;; c) clients=$OPTARG ;; *) exit 2 ;; esac
done
work=$(mktemp -d)
trap 'psql "$dsn" -qc "DROP SCHEMA IF EXISTS pgmodel CASCADE" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

psql "$dsn" -qc "DROP SCHEMA IF EXISTS pgmodel CASCADE" -c "CREATE SCHEMA pgmodel"
sep='?'; [[ $dsn == *\?* ]] && sep='&'
cat > "$work/sluice.yaml" <<YAML
store: {driver: postgres, dsn: "${dsn}${sep}search_path=pgmodel"}
auth: {keys: [{name: admin, key: "pgmodel-0123456789abcdef0123456789", role: admin}]}
YAML
go build -o "$work/sluice" ./cmd/sluice
"$work/sluice" migrate --config "$work/sluice.yaml" >/dev/null
# The layout modelled against today's: one row per event for the deliveries it leases at birth.
psql "$dsn" -qc "CREATE TABLE pgmodel.fanouts (event_seq bigint PRIMARY KEY, node bigint NOT NULL,
  token bigint NOT NULL, lease_until bigint NOT NULL, dests text[] NOT NULL, remaining int NOT NULL)"

run() { # script label
  # The leader's vacuum of the churned tables, as a node does it with autovacuum off.
  (while sleep 2; do psql "$dsn" -qc "VACUUM (ANALYZE) pgmodel.deliveries, pgmodel.fanouts, pgmodel.pending_counts" >/dev/null 2>&1; done) &
  local vac=$!
  local tps w0 w1
  w0=$(psql "$dsn" -Atc "SELECT wal_bytes FROM pg_stat_wal")
  tps=$(pgbench "$dsn" -n -M prepared -c "$clients" -j 2 -T "$secs" -f "bench/pgmodel/$1" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  w1=$(psql "$dsn" -Atc "SELECT wal_bytes FROM pg_stat_wal")
  kill $vac; wait $vac 2>/dev/null || true
  # Each transaction of the scripts is 8 events fanned out to 10 destinations.
  awk -v t="$tps" -v l="$2" -v s="$secs" -v w="$((w1 - w0))" \
    'BEGIN { printf "%-8s %8.0f events/s %8.0f WAL bytes/event\n", l, t * 8, w / (t * 8 * s) }'
}
for r in $(seq "$rounds"); do
  echo "round $r"
  run rows.sql rows
  run fanout.sql fanout
done
