package postgres

import (
	"fmt"
	"strconv"

	"github.com/sluicehq/sluice/core/store"
)

// A delivery's id is its event's seq shifted left by idShift, plus its place in the event's fan-out (migration
// 0008; appendSQL writes the shift as a literal). An event's deliveries are then one range of the primary key
// (idsOf), with no index of their own.
const (
	idShift = 16
	// MaxFanout is how many deliveries one event can have on this store.
	MaxFanout = 1 << idShift
)

// deliveryID is the id of the delivery at place pos of the fan-out of the event seq.
func deliveryID(seq int64, pos int) int64 { return seq<<idShift | int64(pos) }

// idsOf is the SQL condition "the delivery (columns id and event_seq, of the table alias t when it is not "")
// belongs to an event whose seq lies between the SQL expressions lo and hi": a range of the primary key, or,
// for events older than migration 0008 (before s.firstSeq), their partial index on event_seq.
func (s *Store) idsOf(t, lo, hi string) string {
	if t != "" {
		t += "."
	}
	shift := strconv.Itoa(idShift)
	c := "(" + t + "id BETWEEN (" + lo + ") << " + shift + " AND ((" + hi + ") << " + shift + ") + " + strconv.Itoa(MaxFanout-1) +
		" AND " + t + "id >= " + strconv.FormatInt(s.firstSeq<<idShift, 10) + ")"
	if s.firstSeq > 1 {
		c = "(" + c + " OR (" + t + "event_seq BETWEEN " + lo + " AND " + hi + " AND " + t + "event_seq < " +
			strconv.FormatInt(s.firstSeq, 10) + "))"
	}
	return c
}

// idsOfSeqs selects the ids of table's deliveries (table alias t) of the events whose seqs are in the array
// arr (an SQL expression).
func (s *Store) idsOfSeqs(table, arr string) string {
	return "SELECT t.id FROM (SELECT DISTINCT unnest(" + arr + "::bigint[]) AS qs) q JOIN " + table + " t ON " + s.idsOf("t", "q.qs", "q.qs")
}

// checkFanout refuses an event with more deliveries than its ids can number.
func checkFanout(id string, n int) error {
	if n > MaxFanout {
		return fmt.Errorf("%w: event %q matches %d destinations; the postgres store holds at most %d deliveries an event: narrow the destinations' topics or filters",
			store.ErrFanout, id, n, MaxFanout)
	}
	return nil
}
