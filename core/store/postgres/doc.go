// Package postgres is the store driver for several Sluice nodes sharing one PostgreSQL database (DESIGN §5).
//
// It keeps the embedded driver's semantics and adds what sharing needs: versioned migrations applied under an
// advisory lock, group-committed multi-row writes, claims with FOR UPDATE SKIP LOCKED and a claim token per
// claim, leases that this process renews while it holds them (so a dead node's leases run out in seconds, not
// in the hour the dispatcher asks for), LISTEN/NOTIFY change hints with a polling backstop, and one leader for
// maintenance. Events and attempts are partitioned by day (partitions.go): retention drops whole days.
//
// It imports core/store and core/event only (and pgx).
//
// May import: core/event, core/store.
// Must not import: net/http.
package postgres
