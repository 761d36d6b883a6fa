package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// Case names, as subtests and as keys of Features.Reasons.
const (
	CaseEmpty           = "Empty"
	CaseSingle          = "Single"
	CaseBatch           = "Batch"
	CaseConcurrent      = "Concurrent"
	CasePartialFailure  = "PartialFailure"
	CaseOversized       = "Oversized"
	CaseCancel          = "Cancel"
	CaseCloseDuringSend = "CloseDuringSend"
	CaseBadCredentials  = "BadCredentials"
	CaseOutage          = "Outage"
)

// Features says what the sink under test can do; the cases for abilities it lacks are skipped.
type Features struct {
	// MaxBatch is the most events per Send the Batch and PartialFailure cases use. 0 asks the sink's Limits
	// (1 when it has none); with 1 the batching cases are skipped.
	MaxBatch int
	// Ordered: the far side holds a batch's events in the order they were sent (checked in Batch).
	Ordered bool
	// Oversized is a size in bytes of event data the sink must refuse as a permanent failure, because it is
	// over the sink's (or the service's) message limit. 0 skips the Oversized case.
	Oversized int
	// BadCredentials: Harness.BadCredentials builds a sink whose Send fails permanently.
	BadCredentials bool
	// Outage: Target.Stop and Target.Start cut the service off and bring it back.
	Outage bool
	// Reasons explains, by case name (CaseOutage, …), why a sink lacks a feature; t.Skip shows it.
	Reasons map[string]string
}

// Received is one message as the far side holds it.
type Received struct {
	ID    string // the event id as carried beside the body (attribute, header, message id)
	Topic string // the topic as carried beside the body
	Body  []byte // the message body; nil when the harness cannot see it
}

// Target is one fresh destination: a sink and a reader of what it delivered.
type Target struct {
	Sink sinks.Sink
	// Read returns the messages that reached the far side since the previous call (a queue consumer drains; a
	// harness over a store that keeps everything, like a bucket, remembers what it already returned). It must
	// not block for long when there is nothing new.
	Read func(ctx context.Context) ([]Received, error)
	// Stop makes the service unreachable for this target's sink (connections cut, new ones refused) and Start
	// brings it back. Both are needed for the Outage case; Start is called once per Stop.
	Stop, Start func(t *testing.T)
}

// Harness builds what the suite runs against.
type Harness struct {
	// New returns a sink bound to a fresh, empty queue/topic/bucket that nothing else uses, and removes it with
	// t.Cleanup. The suite closes the sink itself.
	New func(t *testing.T) Target
	// BadCredentials returns a sink whose credentials the service refuses (needed when Features.BadCredentials).
	BadCredentials func(t *testing.T) sinks.Sink
	// CheckBody checks a received message against the event sent. Nil checks that the body is the event
	// envelope of DESIGN "Queue, bucket and plugin messages" (see CheckEnvelope).
	CheckBody func(t testing.TB, want *event.Event, got Received)
	// Poison changes an event so the sink fails that one event permanently while delivering the rest of its
	// batch. Nil makes the event's data Features.Oversized bytes long.
	Poison func(ev *event.Event)
	// Secrets are strings (passwords, keys) that must never appear in an error the sink returns.
	Secrets []string
	// Timeout bounds each Send (its context deadline); 0 means 10s.
	Timeout time.Duration
	// Wait is how long delivered events may take to show up in Read; 0 means 20s.
	Wait time.Duration
}

// Run runs every case against the sink the harness builds.
func Run(t *testing.T, f Features, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("sinktest: Harness.New is required")
	}
	if h.Timeout <= 0 {
		h.Timeout = 10 * time.Second
	}
	if h.Wait <= 0 {
		h.Wait = 20 * time.Second
	}
	s := &suite{f: f, h: h}
	for _, c := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{CaseEmpty, s.empty},
		{CaseSingle, s.single},
		{CaseBatch, s.batch},
		{CaseConcurrent, s.concurrent},
		{CasePartialFailure, s.partialFailure},
		{CaseOversized, s.oversized},
		{CaseCancel, s.cancel},
		{CaseCloseDuringSend, s.closeDuringSend},
		{CaseBadCredentials, s.badCredentials},
		{CaseOutage, s.outage},
	} {
		t.Run(c.name, c.run)
	}
}

type suite struct {
	f Features
	h Harness
}

func (s *suite) skip(t *testing.T, name, lack string) {
	t.Helper()
	if why := s.f.Reasons[name]; why != "" {
		t.Skipf("the sink lacks this: %s", why)
	}
	t.Skipf("the sink lacks this: %s", lack)
}

// target builds a fresh target and closes its sink at the end of the test.
func (s *suite) target(t *testing.T) Target {
	t.Helper()
	tg := s.h.New(t)
	if tg.Sink == nil || tg.Read == nil {
		t.Fatal("sinktest: Harness.New returned a Target without Sink or Read")
	}
	t.Cleanup(func() { closeSink(t, tg.Sink) })
	return tg
}

// closeSink closes sink, failing the test if Close does not return within 15s.
func closeSink(t *testing.T, sink sinks.Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = sink.Close(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("Close did not return within 15s")
	}
}

func (s *suite) maxBatch(sink sinks.Sink) int {
	n := s.f.MaxBatch
	if n <= 0 {
		if l, ok := sink.(sinks.Limiter); ok {
			n = l.Limits().MaxBatch
		}
	}
	return max(n, 1)
}

// send calls Send with the harness timeout and fails the test if it does not return soon after it.
func (s *suite) send(t *testing.T, sink sinks.Sink, batch []event.Event) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	defer cancel()
	return s.sendCtx(t, ctx, sink, batch, s.h.Timeout+5*time.Second)
}

func (s *suite) sendCtx(t *testing.T, ctx context.Context, sink sinks.Sink, batch []event.Event, bound time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sink.Send(ctx, batch) }()
	select {
	case err := <-done:
		s.checkSecrets(t, err)
		return err
	case <-time.After(bound):
		t.Fatalf("Send of %d events did not return within %v", len(batch), bound)
		return nil
	}
}

func (s *suite) checkSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	var be *sinks.BatchError
	if errors.As(err, &be) {
		for _, e := range be.Errs {
			if e != nil {
				msg += "\n" + e.Error()
			}
		}
	}
	for _, sec := range s.h.Secrets {
		if sec != "" && strings.Contains(msg, sec) {
			t.Errorf("an error shows a secret: %q", msg)
		}
	}
}

// PerEvent spreads Send's answer over the n events of the batch: nil for a delivered event, else its error.
// A *BatchError must have exactly n entries.
func PerEvent(err error, n int) ([]error, error) {
	out := make([]error, n)
	if err == nil {
		return out, nil
	}
	var be *sinks.BatchError
	if errors.As(err, &be) {
		if len(be.Errs) != n {
			return nil, fmt.Errorf("BatchError has %d entries for a batch of %d", len(be.Errs), n)
		}
		copy(out, be.Errs)
		return out, nil
	}
	for i := range out {
		out[i] = err
	}
	return out, nil
}

func perEvent(t *testing.T, err error, n int) []error {
	t.Helper()
	out, perr := PerEvent(err, n)
	if perr != nil {
		t.Fatal(perr)
	}
	return out
}

func isPermanent(err error) bool {
	if err == nil {
		return false
	}
	c, _ := sinks.Classify(err)
	return c == sinks.ClassPermanent || c == sinks.ClassGone
}

// deliver sends batch the way the dispatcher does until every event is delivered or failed permanently,
// re-sending only the entries that failed retryably. It returns each event's final error (nil = delivered).
// Permanent failures are allowed only for indexes in mayFail.
func (s *suite) deliver(t *testing.T, sink sinks.Sink, batch []event.Event, within time.Duration, mayFail map[int]bool) []error {
	t.Helper()
	final := make([]error, len(batch))
	pending := make([]int, len(batch))
	for i := range pending {
		pending[i] = i
	}
	deadline := time.Now().Add(within)
	var last error
	for attempt := 0; len(pending) > 0; attempt++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events still not delivered after %v; last error: %v", len(pending), len(batch), within, last)
		}
		if attempt > 0 {
			time.Sleep(min(50*time.Millisecond*time.Duration(attempt), time.Second))
		}
		sub := make([]event.Event, len(pending))
		for j, i := range pending {
			sub[j] = batch[i]
		}
		errs := perEvent(t, s.send(t, sink, sub), len(sub))
		var next []int
		for j, err := range errs {
			i := pending[j]
			switch {
			case err == nil:
			case isPermanent(err):
				if !mayFail[i] {
					t.Fatalf("event %d (%s) failed permanently: %v", i, batch[i].ID, err)
				}
				final[i] = err
			default:
				last = err
				next = append(next, i)
			}
		}
		pending = next
	}
	return final
}

var testTime = time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)

// Events returns n new events on topic "sinktest.<name>" with unique ids, a tenant, metadata and nested data
// that exercise escaping.
func Events(name string, n int) []event.Event {
	out := make([]event.Event, n)
	for i := range out {
		data, _ := json.Marshal(map[string]any{
			"n":    i,
			"case": map[string]any{"id": fmt.Sprintf("c-%d", i), "note": `<b>"&"</b> ünïcode ✓`},
			"list": []any{1, 2.5, true, nil},
		})
		out[i] = event.Event{
			ID:       event.NewID(),
			Topic:    "sinktest." + strings.ToLower(name),
			Time:     testTime.Add(time.Duration(i) * time.Millisecond),
			Tenant:   "acme",
			Metadata: map[string]string{"source": "sinktest", "case": name},
			Data:     data,
		}
	}
	return out
}

// CheckEnvelope is the default body check: id and topic travel beside the body, and the body is the event's
// envelope {"id","topic","time","tenant"?,"metadata"?,"data"}, or its transform result (Event.Body) when it has
// one, compared as JSON values.
func CheckEnvelope(t testing.TB, want *event.Event, got Received) {
	t.Helper()
	if got.ID != want.ID || got.Topic != want.Topic {
		t.Errorf("message carries id %q topic %q beside the body; want id %q topic %q", got.ID, got.Topic, want.ID, want.Topic)
	}
	env, err := want.Envelope()
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal(env, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got.Body, &b); err != nil {
		t.Errorf("event %s: body is not JSON (%v): %.200q", want.ID, err, got.Body)
		return
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("event %s: body\n got %s\nwant %s", want.ID, got.Body, env)
	}
}

// collect reads from tg until every event of want arrived or the wait ends. It returns what arrived, in order.
func (s *suite) collect(t *testing.T, tg Target, want []event.Event) []Received {
	t.Helper()
	missing := make(map[string]bool, len(want))
	for i := range want {
		missing[want[i].ID] = true
	}
	var got []Received
	deadline := time.Now().Add(s.h.Wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, err := tg.Read(ctx)
		cancel()
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		for _, r := range rs {
			got = append(got, r)
			delete(missing, r.ID)
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var one string
			for id := range missing {
				one = id
				break
			}
			t.Fatalf("after %v the far side holds %d of %d events; missing e.g. %s", s.h.Wait, len(want)-len(missing), len(want), one)
		}
		time.Sleep(50 * time.Millisecond)
	}
	byID := make(map[string]*event.Event, len(want))
	for i := range want {
		byID[want[i].ID] = &want[i]
	}
	check := s.h.CheckBody
	if check == nil {
		check = CheckEnvelope
	}
	for _, r := range got {
		if ev := byID[r.ID]; ev != nil {
			check(t, ev, r)
		}
	}
	return got
}

func (s *suite) empty(t *testing.T) {
	tg := s.target(t)
	if err := s.send(t, tg.Sink, nil); err != nil {
		t.Fatalf("Send of an empty batch: %v", err)
	}
	if err := s.send(t, tg.Sink, []event.Event{}); err != nil {
		t.Fatalf("Send of an empty batch: %v", err)
	}
}

func (s *suite) single(t *testing.T) {
	tg := s.target(t)
	evs := Events("single", 1)
	if err := s.send(t, tg.Sink, evs); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := s.collect(t, tg, evs)
	if len(got) != 1 {
		t.Errorf("the far side holds %d messages for one event", len(got))
	}
	// An event without tenant, metadata or data is delivered too (the envelope leaves the optional keys out).
	bare := event.Event{ID: event.NewID(), Topic: "sinktest.single", Time: testTime}
	if err := s.send(t, tg.Sink, []event.Event{bare}); err != nil {
		t.Fatalf("Send of an event without data: %v", err)
	}
	s.collect(t, tg, []event.Event{bare})
	// A destination's transform result (Event.Body) replaces the envelope.
	shaped := Events("single", 1)
	shaped[0].Body = json.RawMessage(`{"shaped":true,"case":"c-0"}`)
	if err := s.send(t, tg.Sink, shaped); err != nil {
		t.Fatalf("Send of a transformed event: %v", err)
	}
	s.collect(t, tg, shaped)
}

func (s *suite) batch(t *testing.T) {
	tg := s.target(t)
	n := s.maxBatch(tg.Sink)
	if n <= 1 {
		s.skip(t, CaseBatch, "it sends one event per Send (MaxBatch 1)")
	}
	evs := Events("batch", n)
	if err := s.send(t, tg.Sink, evs); err != nil {
		t.Fatalf("Send of a full batch of %d: %v", n, err)
	}
	got := s.collect(t, tg, evs)
	if s.f.Ordered {
		seen := map[string]bool{}
		var order []string
		for _, r := range got {
			if !seen[r.ID] {
				seen[r.ID] = true
				order = append(order, r.ID)
			}
		}
		for i := range evs {
			if order[i] != evs[i].ID {
				t.Fatalf("the far side holds the batch out of order: position %d has %s, want %s", i, order[i], evs[i].ID)
			}
		}
	}
	if len(got) != n {
		t.Logf("%d messages for %d events (duplicates are allowed, at least once)", len(got), n)
	}
}

func (s *suite) concurrent(t *testing.T) {
	tg := s.target(t)
	size := min(s.maxBatch(tg.Sink), 10)
	const senders = 8
	all := make([][]event.Event, senders)
	errs := make([]error, senders)
	var wg sync.WaitGroup
	for i := range all {
		all[i] = Events("concurrent", size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
			defer cancel()
			errs[i] = tg.Sink.Send(ctx, all[i])
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.h.Timeout + 5*time.Second):
		t.Fatalf("concurrent Sends did not return within %v", s.h.Timeout+5*time.Second)
	}
	var want []event.Event
	for i, err := range errs {
		s.checkSecrets(t, err)
		if err != nil {
			t.Fatalf("sender %d: %v", i, err)
		}
		want = append(want, all[i]...)
	}
	s.collect(t, tg, want)
}

func (s *suite) poison(t *testing.T, ev *event.Event) {
	t.Helper()
	if s.h.Poison != nil {
		s.h.Poison(ev)
		return
	}
	ev.Data = OversizedData(s.f.Oversized)
}

// OversizedData returns valid JSON of exactly n bytes (at least 16).
func OversizedData(n int) json.RawMessage {
	n = max(n, 16)
	b := make([]byte, 0, n)
	b = append(b, `{"blob":"`...)
	b = append(b, bytes.Repeat([]byte("x"), n-len(`{"blob":""}`))...)
	b = append(b, `"}`...)
	return b
}

func (s *suite) partialFailure(t *testing.T) {
	tg := s.target(t)
	n := min(s.maxBatch(tg.Sink), 5)
	if n <= 1 {
		s.skip(t, CasePartialFailure, "it sends one event per Send (MaxBatch 1)")
	}
	if s.h.Poison == nil && s.f.Oversized <= 0 {
		s.skip(t, CasePartialFailure, "no way to fail one event of a batch (set Features.Oversized or Harness.Poison)")
	}
	evs := Events("partial", n)
	bad := n / 2
	s.poison(t, &evs[bad])
	err := s.send(t, tg.Sink, evs)
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("Send of a batch with one bad event: got %v (%T), want a *sinks.BatchError", err, err)
	}
	errs := perEvent(t, err, n)
	if !isPermanent(errs[bad]) {
		t.Fatalf("the bad event (index %d) got %v; want a permanent error", bad, errs[bad])
	}
	var retry []event.Event
	for i, e := range errs {
		switch {
		case i == bad:
		case isPermanent(e):
			t.Fatalf("event %d failed permanently beside the bad one: %v", i, e)
		case e != nil:
			retry = append(retry, evs[i])
		}
	}
	if len(retry) > 0 {
		t.Logf("%d good events failed retryably beside the bad one; re-sending only those", len(retry))
		s.deliver(t, tg.Sink, retry, 30*time.Second, nil)
	}
	good := append(append([]event.Event(nil), evs[:bad]...), evs[bad+1:]...)
	got := s.collect(t, tg, good)
	for _, r := range got {
		if r.ID == evs[bad].ID {
			t.Fatalf("the event reported failed permanently reached the far side")
		}
	}
}

func (s *suite) oversized(t *testing.T) {
	if s.f.Oversized <= 0 {
		s.skip(t, CaseOversized, "no message size limit declared (Features.Oversized)")
	}
	tg := s.target(t)
	evs := Events("oversized", 1)
	evs[0].Data = OversizedData(s.f.Oversized)
	errs := perEvent(t, s.send(t, tg.Sink, evs), 1)
	if !isPermanent(errs[0]) {
		t.Fatalf("an event of %d bytes got %v; want a permanent error", s.f.Oversized, errs[0])
	}
	// The sink still works after refusing it.
	ok := Events("oversized", 1)
	if err := s.send(t, tg.Sink, ok); err != nil {
		t.Fatalf("Send after an oversized event: %v", err)
	}
	s.collect(t, tg, ok)
}

func (s *suite) cancel(t *testing.T) {
	tg := s.target(t)
	n := s.maxBatch(tg.Sink)

	// Already cancelled: an error at once, never a claim of delivery, never permanent.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := s.sendCtx(t, ctx, tg.Sink, Events("cancel", n), 2*time.Second)
	if err == nil {
		t.Fatal("Send with a cancelled context returned nil")
	}
	for i, e := range perEvent(t, err, n) {
		if e == nil {
			t.Fatalf("Send with a cancelled context reports event %d delivered", i)
		}
		if isPermanent(e) {
			t.Fatalf("a cancelled Send is classified permanent (event %d): %v", i, e)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Send with a cancelled context took %v", took)
	}

	// Cancelled while sending: back promptly; whatever failed is not permanent.
	for _, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(after, cancel)
		err := s.sendCtx(t, ctx, tg.Sink, Events("cancel", n), 5*time.Second)
		for i, e := range perEvent(t, err, n) {
			if isPermanent(e) {
				t.Fatalf("a Send cancelled after %v has event %d permanent: %v", after, i, e)
			}
		}
		cancel()
	}

	// The sink is still usable afterwards.
	evs := Events("cancel", 1)
	s.deliver(t, tg.Sink, evs, 30*time.Second, nil)
	s.collect(t, tg, evs)
}

func (s *suite) closeDuringSend(t *testing.T) {
	tg := s.h.New(t)
	if tg.Sink == nil {
		t.Fatal("sinktest: Harness.New returned a Target without Sink")
	}
	size := min(s.maxBatch(tg.Sink), 10)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
				err := tg.Sink.Send(ctx, Events("close", size))
				cancel()
				s.checkSecrets(t, err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- tg.Sink.Close(ctx)
	}()
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return within 15s while Sends were running")
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.h.Timeout + 5*time.Second):
		t.Fatal("Sends running during Close did not return")
	}
	// After Close, Send answers (an error, most likely) instead of hanging or panicking; Close again is safe.
	_ = s.send(t, tg.Sink, Events("close", 1))
	closeSink(t, tg.Sink)
}

func (s *suite) badCredentials(t *testing.T) {
	if !s.f.BadCredentials || s.h.BadCredentials == nil {
		s.skip(t, CaseBadCredentials, "no credentials to get wrong (Features.BadCredentials)")
	}
	sink := s.h.BadCredentials(t)
	t.Cleanup(func() { closeSink(t, sink) })
	for i, e := range perEvent(t, s.send(t, sink, Events("badcreds", 1)), 1) {
		if !isPermanent(e) {
			t.Fatalf("bad credentials: event %d got %v; want a permanent error", i, e)
		}
	}
}

func (s *suite) outage(t *testing.T) {
	if !s.f.Outage {
		s.skip(t, CaseOutage, "the harness cannot take the service away (Features.Outage)")
	}
	tg := s.target(t)
	if tg.Stop == nil || tg.Start == nil {
		t.Fatal("sinktest: Features.Outage needs Target.Stop and Target.Start")
	}
	n := min(s.maxBatch(tg.Sink), 10)
	warm := Events("outage", 1)
	s.deliver(t, tg.Sink, warm, 30*time.Second, nil)

	tg.Stop(t)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			tg.Start(t)
		}
	})
	down := Events("outage", n)
	err := s.send(t, tg.Sink, down)
	if err == nil {
		t.Fatal("Send while the service is down returned nil")
	}
	for i, e := range perEvent(t, err, n) {
		if isPermanent(e) {
			t.Fatalf("Send while the service is down: event %d is permanent: %v", i, e)
		}
	}
	tg.Start(t)
	stopped = false
	// The dispatcher re-sends what failed; the sink reconnects on its own.
	s.deliver(t, tg.Sink, down, 60*time.Second, nil)
	s.collect(t, tg, append(warm, down...))
}
