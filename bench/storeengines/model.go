package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Event models one Sluice event as appended by intake: the event record,
// its fan-out to destinations (2 delivery rows each) and a dedupe entry.
type Event struct {
	ID     string // UUIDv7 string (36 bytes)
	Seq    int64  // assigned by the store
	Topic  string
	Tenant string
	Time   int64  // unix nanoseconds
	Data   []byte // ~400 bytes of JSON
	Deliv  [2]Delivery
}

// Delivery models one pending delivery row.
type Delivery struct {
	ID       int64 // assigned by the store
	Dest     string
	Status   string
	NextAt   int64 // unix milliseconds
	Attempts int64
}

const (
	statusPending   = "pending"
	statusDelivered = "delivered"
	numDests        = 8
)

var (
	topics = []string{"orders.created", "orders.paid", "orders.shipped", "orders.cancelled",
		"customers.created", "customers.updated", "invoices.issued", "invoices.paid"}
	tenants = func() []string {
		t := make([]string, 16)
		for i := range t {
			t[i] = fmt.Sprintf("tenant-%02d", i)
		}
		return t
	}()
	dests = func() []string {
		d := make([]string, numDests)
		for i := range d {
			d[i] = fmt.Sprintf("dest-%d", i)
		}
		return d
	}()
)

// genEvent builds a realistic event. It is called outside the timed region.
func genEvent(r *rand.Rand) *Event {
	id := uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	d1 := r.IntN(numDests)
	d2 := (d1 + 1 + r.IntN(numDests-1)) % numDests
	ms := now.UnixMilli()
	return &Event{
		ID:     id,
		Topic:  topics[r.IntN(len(topics))],
		Tenant: tenants[r.IntN(len(tenants))],
		Time:   now.UnixNano(),
		Data:   genData(r, id),
		Deliv: [2]Delivery{
			{Dest: dests[d1], Status: statusPending, NextAt: ms + int64(r.IntN(1000))},
			{Dest: dests[d2], Status: statusPending, NextAt: ms + int64(r.IntN(1000))},
		},
	}
}

const letters = "abcdefghijklmnopqrstuvwxyz0123456789"

func randStr(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	return string(b)
}

// genData returns ~400 bytes of JSON payload.
func genData(r *rand.Rand, id string) []byte {
	b := make([]byte, 0, 448)
	b = fmt.Appendf(b, `{"order_id":"ord_%s","customer":{"id":"cus_%s","email":"%s@example.com","name":"%s %s"},`,
		randStr(r, 12), randStr(r, 12), randStr(r, 10), randStr(r, 7), randStr(r, 9))
	b = fmt.Appendf(b, `"items":[{"sku":"SKU-%s","qty":%d,"price_cents":%d},{"sku":"SKU-%s","qty":%d,"price_cents":%d}],`,
		randStr(r, 8), 1+r.IntN(5), r.IntN(100000), randStr(r, 8), 1+r.IntN(5), r.IntN(100000))
	b = fmt.Appendf(b, `"total_cents":%d,"currency":"EUR","shipping":{"method":"express","country":"DE","zip":"%05d"},"trace":"%s","note":"`,
		r.IntN(1000000), r.IntN(99999), id)
	for len(b) < 398 {
		b = append(b, letters[r.IntN(len(letters))])
	}
	b = append(b, `"}`...)
	return b
}

// ---- binary record encodings used by the KV engines (bbolt, pebble) ----
// A production KV store would need some encoding; a compact length-prefixed
// one keeps CPU cost low and comparable to SQLite's record format.

func putStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func getStr(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, errors.New("corrupt record")
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

func encodeEvent(e *Event) []byte {
	b := make([]byte, 0, 64+len(e.ID)+len(e.Topic)+len(e.Tenant)+len(e.Data))
	b = binary.AppendVarint(b, e.Seq)
	b = putStr(b, e.ID)
	b = putStr(b, e.Topic)
	b = putStr(b, e.Tenant)
	b = binary.AppendVarint(b, e.Time)
	b = binary.AppendVarint(b, e.Deliv[0].ID)
	b = binary.AppendVarint(b, e.Deliv[1].ID)
	b = append(b, e.Data...)
	return b
}

// decodeEventBody returns the payload part of an encoded event record.
func decodeEventBody(b []byte) ([]byte, error) {
	var err error
	_, k := binary.Varint(b)
	b = b[k:]
	for range 3 {
		if _, b, err = getStr(b); err != nil {
			return nil, err
		}
	}
	for range 3 {
		_, k = binary.Varint(b)
		b = b[k:]
	}
	return b, nil
}

type delivRec struct {
	EventID  string
	Dest     string
	Status   string
	NextAt   int64
	Attempts int64
}

func encodeDeliv(d delivRec) []byte {
	b := make([]byte, 0, 80)
	b = putStr(b, d.EventID)
	b = putStr(b, d.Dest)
	b = putStr(b, d.Status)
	b = binary.AppendVarint(b, d.NextAt)
	b = binary.AppendVarint(b, d.Attempts)
	return b
}

func decodeDeliv(b []byte) (delivRec, error) {
	var d delivRec
	var err error
	if d.EventID, b, err = getStr(b); err != nil {
		return d, err
	}
	if d.Dest, b, err = getStr(b); err != nil {
		return d, err
	}
	if d.Status, b, err = getStr(b); err != nil {
		return d, err
	}
	var k int
	d.NextAt, k = binary.Varint(b)
	b = b[k:]
	d.Attempts, _ = binary.Varint(b)
	return d, nil
}

func be8(b []byte, v int64) []byte { return binary.BigEndian.AppendUint64(b, uint64(v)) }

// dueKey is the secondary index key for "due deliveries of destination D":
// dest \x00 status \x00 next_at(8 bytes BE) delivery_id(8 bytes BE).
func dueKey(prefix []byte, dest, status string, nextAt, id int64) []byte {
	b := make([]byte, 0, len(prefix)+len(dest)+len(status)+18)
	b = append(b, prefix...)
	b = append(b, dest...)
	b = append(b, 0)
	b = append(b, status...)
	b = append(b, 0)
	b = be8(b, nextAt)
	b = be8(b, id)
	return b
}

func dueKeyPrefix(prefix []byte, dest, status string) []byte {
	b := make([]byte, 0, len(prefix)+len(dest)+len(status)+2)
	b = append(b, prefix...)
	b = append(b, dest...)
	b = append(b, 0)
	b = append(b, status...)
	b = append(b, 0)
	return b
}

// ---- single-writer group commit ----

// request is one caller's unit of work: either an append of events or a
// mark-delivered of delivery ids. done receives the commit result.
type request struct {
	evs   []*Event
	marks []int64
	done  chan error
}

// groupWriter is the "single writer goroutine" group-commit pattern: callers
// enqueue requests and block; the writer takes the first request, drains
// whatever else is already queued (up to max), applies all of them in ONE
// transaction / batch with ONE durable commit, then answers every waiter.
// No artificial linger: batching comes purely from requests that queue up
// while the previous commit (fsync) is in progress.
type groupWriter struct {
	ch      chan *request
	max     int
	apply   func([]*request) error
	commits atomic.Int64
	wg      sync.WaitGroup
	pool    sync.Pool
}

func newGroupWriter(max int, apply func([]*request) error) *groupWriter {
	g := &groupWriter{ch: make(chan *request, 4096), max: max, apply: apply}
	g.pool.New = func() any { return make(chan error, 1) }
	g.wg.Add(1)
	go g.loop()
	return g
}

func (g *groupWriter) loop() {
	defer g.wg.Done()
	batch := make([]*request, 0, g.max)
	for first := range g.ch {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < g.max {
			select {
			case r, ok := <-g.ch:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := g.apply(batch)
		g.commits.Add(1)
		for _, r := range batch {
			r.done <- err
		}
	}
}

func (g *groupWriter) submit(evs []*Event, marks []int64) error {
	done := g.pool.Get().(chan error)
	g.ch <- &request{evs: evs, marks: marks, done: done}
	err := <-done
	g.pool.Put(done)
	return err
}

func (g *groupWriter) close() {
	close(g.ch)
	g.wg.Wait()
}
