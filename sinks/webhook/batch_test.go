package webhook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

func batchEvents(n int) []event.Event {
	out := make([]event.Event, n)
	for i := range out {
		e := testEvent()
		e.ID = fmt.Sprintf("ev-%d", i)
		e.Data = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		out[i] = e
	}
	return out
}

type batchElem struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// batchReceiver verifies each request's signature, decodes the batch and answers with answer(elements).
func batchReceiver(t *testing.T, ndjson bool, answer func(w http.ResponseWriter, elems []batchElem)) *receiver {
	var self atomic.Pointer[receiver]
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		// The receiver has read the body into its log already.
		body := bytes.NewBuffer(self.Load().last(t).Body)
		w.Header().Set("Content-Type", "application/json")
		if err := VerifyStandard([]string{secretA}, r.Header, body.Bytes(), time.Minute); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var elems []batchElem
		if ndjson {
			sc := bufio.NewScanner(body)
			for sc.Scan() {
				var el batchElem
				if err := json.Unmarshal(sc.Bytes(), &el); err != nil {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				elems = append(elems, el)
			}
		} else if err := json.Unmarshal(body.Bytes(), &elems); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		answer(w, elems)
	})
	self.Store(rc)
	return rc
}

func TestBatchedWebhookDeliversAll(t *testing.T) {
	for _, format := range []string{BatchJSON, BatchNDJSON} {
		t.Run(format, func(t *testing.T) {
			var got []batchElem
			rc := batchReceiver(t, format == BatchNDJSON, func(w http.ResponseWriter, elems []batchElem) {
				got = elems
				w.WriteHeader(http.StatusOK)
			})
			s := newSink(t, rc.URL, func(c *Config) { c.Batch = &Batch{Format: format} }, sinks.Env{})
			evs := batchEvents(3)
			if err := s.Send(context.Background(), evs); err != nil {
				t.Fatal(err)
			}
			reqs := rc.requests()
			if len(reqs) != 1 || len(got) != 3 {
				t.Fatalf("%d requests, %d elements; want one request with 3", len(reqs), len(got))
			}
			for i, el := range got {
				if el.ID != evs[i].ID || el.Type != evs[i].Topic || string(el.Data) != string(evs[i].Data) || el.Timestamp == "" {
					t.Fatalf("element %d: %+v", i, el)
				}
			}
			wantCT := map[string]string{BatchJSON: "application/json", BatchNDJSON: "application/x-ndjson"}[format]
			if ct := reqs[0].Header.Get("Content-Type"); ct != wantCT {
				t.Fatalf("content-type %q, want %q", ct, wantCT)
			}
			// The batch's webhook-id is the same for the same events, so a retried batch can be deduplicated.
			if err := s.Send(context.Background(), evs); err != nil {
				t.Fatal(err)
			}
			reqs = rc.requests()
			if id := reqs[0].Header.Get("webhook-id"); id == "" || id != reqs[1].Header.Get("webhook-id") || id == evs[0].ID {
				t.Fatalf("batch ids %q and %q", id, reqs[1].Header.Get("webhook-id"))
			}
		})
	}
}

func TestBatched207PartialFailure(t *testing.T) {
	rc := batchReceiver(t, false, func(w http.ResponseWriter, elems []batchElem) {
		status := map[string]int{"ev-0": 200, "ev-1": 500, "ev-2": 400, "ev-4": 410, "ev-5": 202}
		var res BatchResults
		for _, el := range elems {
			if st, ok := status[el.ID]; ok { // ev-3 is left out
				res.Results = append(res.Results, BatchResult{ID: el.ID, Status: st, Error: "because"})
			}
		}
		w.WriteHeader(http.StatusMultiStatus)
		_ = json.NewEncoder(w).Encode(res)
	})
	s := newSink(t, rc.URL, func(c *Config) { c.Batch = &Batch{} }, sinks.Env{})
	var rep sinks.Report
	err := s.Send(sinks.WithReport(context.Background(), &rep), batchEvents(6))
	var be *sinks.BatchError
	if !errors.As(err, &be) || len(be.Errs) != 6 {
		t.Fatalf("send: %v, want a BatchError of 6", err)
	}
	want := []struct {
		ok    bool
		class sinks.Class
	}{{true, 0}, {false, sinks.ClassRetryable}, {false, sinks.ClassPermanent}, {false, sinks.ClassRetryable},
		{false, sinks.ClassPermanent}, {true, 0}}
	for i, w := range want {
		err := be.Errs[i]
		if w.ok != (err == nil) {
			t.Fatalf("event %d: %v", i, err)
		}
		if err != nil {
			if class, _ := sinks.Classify(err); class != w.class {
				t.Fatalf("event %d: %v is %v, want %v", i, err, class, w.class)
			}
		}
	}
	if rep.StatusCode != http.StatusMultiStatus || len(rep.Response) == 0 {
		t.Fatalf("report %d %q", rep.StatusCode, rep.Response)
	}
	if len(rc.requests()) != 1 {
		t.Fatalf("%d requests, want 1", len(rc.requests()))
	}
}

func TestBatchedWholeAnswer(t *testing.T) {
	code := http.StatusServiceUnavailable
	rc := batchReceiver(t, false, func(w http.ResponseWriter, _ []batchElem) { w.WriteHeader(code) })
	s := newSink(t, rc.URL, func(c *Config) { c.Batch = &Batch{} }, sinks.Env{})
	err := s.Send(context.Background(), batchEvents(3))
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("503: %v", err)
	}
	for _, e := range be.Errs {
		if class, _ := sinks.Classify(e); class != sinks.ClassRetryable {
			t.Fatalf("503 for the batch: %v, want every event retryable", e)
		}
	}
	// A 207 the receiver garbles retries every event rather than guessing.
	rc2 := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusMultiStatus)
		_, _ = w.Write([]byte("not json"))
	})
	s = newSink(t, rc2.URL, func(c *Config) { c.Batch = &Batch{} }, sinks.Env{})
	if err := s.Send(context.Background(), batchEvents(1)); err == nil {
		t.Fatal("garbled 207 delivered")
	} else if class, _ := sinks.Classify(err); class != sinks.ClassRetryable {
		t.Fatalf("garbled 207: %v", err)
	}
}

func TestBatchLimits(t *testing.T) {
	s := newSink(t, "https://example.com/hooks", func(c *Config) {
		c.Batch = &Batch{MaxEvents: 50, MaxBytes: 512 << 10, MaxWait: sinks.Duration(time.Second)}
	}, sinks.Env{})
	if l := s.Limits(); l.MaxBatch != 50 || l.MaxBatchBytes != 512<<10 || l.Linger != time.Second {
		t.Fatalf("limits %+v", l)
	}
	s = newSink(t, "https://example.com/hooks", func(c *Config) { c.Batch = &Batch{} }, sinks.Env{})
	if l := s.Limits(); l.MaxBatch != DefaultBatchEvents || l.MaxBatchBytes != DefaultBatchBytes || l.Linger != DefaultBatchWait {
		t.Fatalf("default limits %+v", l)
	}
	for in, want := range map[string]Size{"1MB": 1 << 20, "512KB": 512 << 10, "2MiB": 2 << 20, "100": 100, "1GB": 1 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "-1", "1.5MB", "1TB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}
