// Package faults is Sluice's fault suite: it builds the real binary, runs it against loopback receivers and
// brokers, injects faults (kill -9, receiver outages, partial failure, broker restarts, a full disk, SIGTERM,
// crashing plugins, restarts across due times) under load, and counts what was acknowledged, delivered, lost
// and duplicated, and how long recovery took. The short form runs with `go test ./test/faults/...`; the full
// form with -faults.full or SLUICE_FAULTS_FULL=1 (`make faults`). It holds tests only.
package faults
