#!/usr/bin/env bash
# Binary-size impact of each engine: builds 4 tiny programs (a net/http+JSON
# baseline, and the baseline plus one engine that is actually opened and
# written to) in a throwaway module under .tmp/binsize, CGO_ENABLED=0.
set -euo pipefail
cd "$(dirname "$0")"
root=.tmp/binsize
rm -rf "$root" && mkdir -p "$root"
sed 's#^module .*#module binsize#' go.mod > "$root/go.mod"
cp go.sum "$root/go.sum"
base='package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
)

func serve() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(map[string]string{"ok": "1"}) })
	if len(os.Args) > 5 {
		slog.Info("listening")
		_ = http.ListenAndServe("127.0.0.1:0", nil)
	}
}
'
mk() { mkdir -p "$root/$1"; printf '%s\n' "$base" > "$root/$1/base.go"; printf 'package main\n\nimport (\n\t"os"\n%s\n)\n\n%s\n' "$2" "$3" > "$root/$1/main.go"; }
mk base '' 'func main() { serve(); _ = os.Args }'
mk sqlite '"database/sql"; _ "modernc.org/sqlite"' \
  'func main() { serve(); db, _ := sql.Open("sqlite", os.Args[1]); _, _ = db.Exec("create table if not exists t(x)"); db.Close() }'
mk bbolt 'bolt "go.etcd.io/bbolt"' \
  'func main() { serve(); db, err := bolt.Open(os.Args[1], 0o600, nil); if err == nil { _ = db.Update(func(tx *bolt.Tx) error { _, e := tx.CreateBucketIfNotExists([]byte("b")); return e }); db.Close() } }'
mk pebble '"github.com/cockroachdb/pebble/v2"' \
  'func main() { serve(); db, err := pebble.Open(os.Args[1], &pebble.Options{}); if err == nil { _ = db.Set([]byte("k"), []byte("v"), pebble.Sync); db.Close() } }'
cd "$root"
for v in base sqlite bbolt pebble; do
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$v.bin" "./$v"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -ldflags="-s -w" -o "$v.stripped" "./$v"
done
b=$(stat -c %s base.bin); bs=$(stat -c %s base.stripped)
printf '%-8s %12s %12s %14s %14s\n' variant "bytes" "+vs base" "stripped" "+vs base"
for v in base sqlite bbolt pebble; do
  s=$(stat -c %s $v.bin); t=$(stat -c %s $v.stripped)
  printf '%-8s %9.1f MiB %+9.1f MiB %11.1f MiB %+11.1f MiB\n' $v $(echo "$s/1048576" | bc -l) $(echo "($s-$b)/1048576" | bc -l) $(echo "$t/1048576" | bc -l) $(echo "($t-$bs)/1048576" | bc -l)
done
