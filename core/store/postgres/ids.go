package postgres

import (
	"fmt"
	"strconv"

	"github.com/sluicehq/sluice/core/store"
)

// A delivery's id is its event's seq shifted left by idShift, plus its place in the event's fan-out (migration
// 0008). An event's deliveries are then one range of the primary key (eventIDs), with no index of their own.
const (
	idShift = 16
	// MaxFanout is how many deliveries one event can have on this store.
	MaxFanout = 1 << idShift
)

// deliveryID is the id of the delivery at place pos of the fan-out of the event seq.
func deliveryID(seq int64, pos int) int64 { return seq<<idShift | int64(pos) }

// idsOf is the SQL condition "the delivery (columns id and event_seq of table alias t, "" for none) belongs to an
// event whose seq is seqExpr", for one seq: a range of the primary key, or, for an event older than migration
// 0008 (before s.firstSeq), its partial index on event_seq.
func (s *Store) idsOf(t, seqExpr string) string {
	if t != "" {
		t += "."
	}
	c := "(" + t + "id BETWEEN (" + seqExpr + ") << " + strconv.Itoa(idShift) + " AND ((" + seqExpr + ") << " +
		strconv.Itoa(idShift) + ") + " + strconv.Itoa(MaxFanout-1) + " AND " + t + "id >= " + strconv.FormatInt(s.firstSeq<<idShift, 10) + ")"
	if s.firstSeq > 1 {
		c = "(" + c + " OR (" + t + "event_seq = (" + seqExpr + ") AND " + t + "event_seq < " + strconv.FormatInt(s.firstSeq, 10) + "))"
	}
	return c
}

// idsOfRange is idsOf for the events whose seqs lie between lo and hi (SQL expressions), both included.
func (s *Store) idsOfRange(lo, hi string) string {
	c := "(id BETWEEN (" + lo + ") << " + strconv.Itoa(idShift) + " AND ((" + hi + ") << " + strconv.Itoa(idShift) + ") + " +
		strconv.Itoa(MaxFanout-1) + " AND id >= " + strconv.FormatInt(s.firstSeq<<idShift, 10) + ")"
	if s.firstSeq > 1 {
		c = "(" + c + " OR (event_seq BETWEEN " + lo + " AND " + hi + " AND event_seq < " + strconv.FormatInt(s.firstSeq, 10) + "))"
	}
	return c
}

// idsOfSeqs selects the ids of table's deliveries (table alias t) of the events whose seqs are in the array
// arr (an SQL expression), each event's through idsOf.
func (s *Store) idsOfSeqs(table, arr string) string {
	return "SELECT t.id FROM (SELECT DISTINCT unnest(" + arr + "::bigint[]) AS qs) q JOIN " + table + " t ON " + s.idsOf("t", "q.qs")
}

// checkFanout refuses an event with more deliveries than its ids can number.
func checkFanout(id string, n int) error {
	if n > MaxFanout {
		return fmt.Errorf("%w: event %q matches %d destinations; the postgres store holds at most %d deliveries an event: narrow the destinations' topics or filters",
			store.ErrFanout, id, n, MaxFanout)
	}
	return nil
}
