// Package embedded is Sluice's default store: one SQLite database (pure Go, modernc.org/sqlite) in WAL mode
// with synchronous=FULL under store.path, needing no server.
//
// All writes go through one writer goroutine that commits whatever is queued in a single transaction: that is
// the group commit, so concurrent publishers share one fsync. Reads use a separate pool of read-only
// connections, which WAL lets run beside the writer.
//
// May import: core/event, core/store.
// Must not import: net/http.
package embedded
