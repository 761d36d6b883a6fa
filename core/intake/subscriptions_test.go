package intake

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
)

// fakeSubs is a Subscriptions that records what intake hands over and routes a run's events to one lane.
type fakeSubs struct {
	got  [][]SubscriptionRequest
	lane string
	err  error
}

func (s *fakeSubs) Register(_ context.Context, ev *event.Event, reqs []SubscriptionRequest, prefix string) error {
	if s.err != nil {
		return s.err
	}
	s.got = append(s.got, reqs)
	return nil
}

func (s *fakeSubs) Match(ev *event.Event) []string {
	if ev.CorrelationID == "run-1" {
		return []string{s.lane}
	}
	return nil
}

// TestAdmitHandsOverSubscriptions: intake parses an event's subscriptions, hands them to its Subscriptions
// (it starts no lane itself), routes a run's events to what Match names, and refuses subscriptions when it
// has none to hand them to.
func TestAdmitHandsOverSubscriptions(t *testing.T) {
	ctx := context.Background()
	subs := &fakeSubs{lane: "inline-test"}
	f := newFixture(t, t.TempDir(), testConfig, func(o *Options) { o.Subscriptions = subs })
	f.disp.Add(dispatch.Destination{Name: "inline-test", Sink: nopSink{}, Policy: dispatch.Policy{Timeout: 1e9}})
	sub := `"subscriptions":[{"url":"https://example.com/run","topics":["case.*"],"secret":"s"}]`
	res, err := publishJSON(ctx, f.in, `{"topic":"case.created","correlation_id":"run-1","data":{},`+sub+`}`)
	if err != nil || res.Deliveries != 3 { // all, cases, the subscription
		t.Fatalf("register: %+v %v", res, err)
	}
	if fmt.Sprint(subs.got) != "[[{https://example.com/run [case.*] s}]]" {
		t.Fatalf("handed over %v", subs.got)
	}
	if res, err := publishJSON(ctx, f.in, `{"topic":"user.created","correlation_id":"run-2","data":{}}`); err != nil || res.Deliveries != 1 {
		t.Fatalf("another run: %+v %v", res, err)
	}

	for _, c := range []struct{ body, field string }{
		{`{"topic":"a","data":{},` + sub + `}`, "correlation_id"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://x.example.com","topics":["a*"]}]}`, "subscriptions[0].topics"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"topics":["*"]}]}`, "subscriptions[0].url"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://x.example.com","topics":["*"],"colour":1}]}`, "subscriptions"},
	} {
		if _, err := publishJSON(ctx, f.in, c.body); !errors.Is(err, ErrInvalid) || fieldOf(err) != c.field {
			t.Errorf("%s: %v, want invalid on %s", c.body, err, c.field)
		}
	}
	subs.err = &Error{Kind: ErrUnavailable, Field: "subscriptions[0]", Msg: "store down"}
	if _, err := publishJSON(ctx, f.in, `{"topic":"a","correlation_id":"r","data":{},`+sub+`}`); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a refusal of Subscriptions must come back as it is: %v", err)
	}

	// Without Subscriptions, subscriptions are refused.
	h := newFixture(t, t.TempDir(), testConfig, nil)
	if _, err := publishJSON(ctx, h.in, `{"topic":"a","correlation_id":"r","data":{},`+sub+`}`); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "inline_subscriptions.enabled") {
		t.Fatalf("off: %v", err)
	}
}
