package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// concurrent: publishers append while workers claim and complete the same destination and readers list:
// no delivery is claimed while another worker holds its lease, none is lost, every one ends delivered.
// Run it with -race.
func (s *suite) concurrent(t *testing.T) {
	e := s.store(t)
	publishers, each, workers := 8, 40, 4
	if s.f.Short || testing.Short() {
		publishers, each = 4, 20
	}
	now := e.clock.Now() // the clock stands still: every delivery is due at once, and no lease ever ends
	dests := []string{"c", "c2"}

	var (
		mu       sync.Mutex
		leased   = map[int64]bool{} // held by a worker right now
		claims   = map[int64]int{}
		appended = map[int64]bool{}
	)
	kick := make(chan struct{}, 1)
	appendDone := make(chan struct{})
	var pubs, rest sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := 0; i < each; i += 2 {
				res, err := e.st.Append(ctx, to(dests, fmt.Sprintf("p%d-%d", p, i), fmt.Sprintf("p%d-%d", p, i+1)), opts)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				for _, r := range res {
					if r.Err != nil || r.Duplicate {
						t.Errorf("Append %s: %+v", r.ID, r)
					}
					for _, d := range r.Deliveries {
						appended[d.ID] = true
					}
				}
				mu.Unlock()
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	// work claims and completes until nothing is claimable; it reports whether it claimed anything.
	work := func(dest string, rnd *rand.Rand) (bool, error) {
		jobs, err := e.st.Claim(ctx, dest, now, time.Hour, 1+rnd.IntN(7))
		if err != nil {
			return false, err
		}
		var outs []store.Outcome
		var retried []int64
		mu.Lock()
		for _, j := range jobs {
			id := j.Delivery.ID
			if leased[id] {
				mu.Unlock()
				return false, fmt.Errorf("delivery %d claimed while a worker holds its lease or after it was delivered", id)
			}
			if j.Delivery.Destination != dest || j.Event.ID != j.Delivery.EventID {
				mu.Unlock()
				return false, fmt.Errorf("claim of %s answered %+v", dest, j)
			}
			claims[id]++
			leased[id] = true // a delivered one stays so: claiming it again is as wrong
			// The first attempt of every other delivery fails retryably, due at once: it is claimed again.
			if claims[id] == 1 && id%2 == 0 {
				outs = append(outs, retryAt(id, 1, now, now))
				retried = append(retried, id)
			} else {
				outs = append(outs, delivered(id, claims[id], now))
			}
		}
		mu.Unlock()
		if len(jobs) == 0 {
			return false, nil
		}
		// A retried delivery's lease is given up before Complete: once Complete returns another worker may
		// claim it.
		mu.Lock()
		for _, id := range retried {
			leased[id] = false
		}
		mu.Unlock()
		return true, e.st.Complete(ctx, outs)
	}
	for w := range workers {
		rest.Add(1)
		go func() {
			defer rest.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			dest := dests[w%len(dests)]
			for {
				more, err := work(dest, rnd)
				if err != nil {
					t.Error(err)
					return
				}
				if more {
					continue
				}
				select {
				case <-kick:
				case <-appendDone:
					// Drain: what is left is claimable, and this worker's neighbours drain beside it.
					for {
						more, err := work(dest, rnd)
						if err != nil {
							t.Error(err)
							return
						}
						if !more {
							return
						}
					}
				}
			}
		}()
	}
	stopReads := make(chan struct{})
	rest.Add(1)
	go func() { // readers beside the writers
		defer rest.Done()
		for {
			select {
			case <-stopReads:
				return
			default:
			}
			if _, err := e.st.ListDeliveries(ctx, store.DeliveryFilter{Destinations: dests, Limit: 50}); err != nil {
				t.Errorf("ListDeliveries: %v", err)
				return
			}
			if _, err := e.st.PendingCounts(ctx); err != nil {
				t.Errorf("PendingCounts: %v", err)
				return
			}
			if _, _, err := e.st.NextDue(ctx, "c"); err != nil {
				t.Errorf("NextDue: %v", err)
				return
			}
		}
	}()
	pubs.Wait()
	close(appendDone)
	close(stopReads)
	rest.Wait()
	if t.Failed() {
		return
	}

	want := publishers * each * len(dests)
	if len(appended) != want {
		t.Fatalf("%d deliveries appended, want %d", len(appended), want)
	}
	counts, err := e.st.PendingCounts(ctx)
	if err != nil || len(counts) != 0 {
		t.Fatalf("pending after every worker drained: %v %v", counts, err)
	}
	all := e.walkDeliveries(store.DeliveryFilter{Limit: 1000})
	if len(all) != want {
		t.Fatalf("%d deliveries stored, want %d", len(all), want)
	}
	for _, d := range all {
		wantAttempts := 1 + int(1-d.ID%2)
		if !appended[d.ID] || d.Status != store.Delivered || d.Attempts != wantAttempts || claims[d.ID] != wantAttempts {
			t.Fatalf("delivery %+v: claimed %d times, want delivered after %d attempts", d, claims[d.ID], wantAttempts)
		}
	}
}

// concurrentDedupe: many callers appending the same ids at once store each event once; every caller is
// answered the same delivery rows, and exactly one of them is told it is not a duplicate.
func (s *suite) concurrentDedupe(t *testing.T) {
	e := s.store(t)
	const callers, events = 12, 20
	var idList []string
	for i := range events {
		idList = append(idList, seqID("dup", i))
	}
	results := make([][]store.AppendResult, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := slices.Clone(idList)
			rand.New(rand.NewPCG(uint64(c), 1)).Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
			res, err := e.st.Append(ctx, to([]string{"d"}, mine...), opts)
			if err != nil {
				t.Errorf("Append: %v", err)
			}
			results[c] = res
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	firsts := map[string]int{}
	rows := map[string]int64{}
	for _, res := range results {
		for _, r := range res {
			if r.Err != nil || len(r.Deliveries) != 1 {
				t.Fatalf("result %+v", r)
			}
			if !r.Duplicate {
				firsts[r.ID]++
			}
			if id, ok := rows[r.ID]; ok && id != r.Deliveries[0].ID {
				t.Fatalf("event %s answered deliveries %d and %d", r.ID, id, r.Deliveries[0].ID)
			}
			rows[r.ID] = r.Deliveries[0].ID
		}
	}
	for _, id := range idList {
		if firsts[id] != 1 {
			t.Fatalf("event %s was answered as new %d times, want once", id, firsts[id])
		}
	}
	if all := e.walkDeliveries(store.DeliveryFilter{}); len(all) != events {
		t.Fatalf("%d deliveries stored, want %d", len(all), events)
	}
}

// pingClose: Ping answers nil on a working store; after Close (which may be called again) calls fail.
func (s *suite) pingClose(t *testing.T) {
	e := s.store(t)
	if err := e.st.Ping(ctx); err != nil {
		t.Fatalf("Ping on a fresh store: %v", err)
	}
	e.append(to([]string{"d"}, "x"))
	if err := e.st.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := e.st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.st.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if err := e.st.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed store succeeded")
	}
	if _, err := e.st.Append(ctx, to([]string{"d"}, "y"), opts); err == nil {
		t.Fatal("Append on a closed store succeeded")
	}
}
