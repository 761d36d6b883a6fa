package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// regionDial sends connections for <region>.partner.test to that region's loopback receiver, as DNS would.
func regionDial(t *testing.T, regions map[string]*receiver) sinks.DialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(address)
		region, ok := strings.CutSuffix(host, ".partner.test")
		rc := regions[region]
		if !ok || rc == nil {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, rc.Listener.Addr().String())
	}
}

func regionEvent(id, region string) event.Event {
	e := testEvent()
	e.ID = id
	e.Tenant = "acme"
	e.Metadata = map[string]string{"source": "crm"}
	if region != "" {
		e.Data = json.RawMessage(`{"account":{"region":"` + region + `"}}`)
	} else {
		e.Data = json.RawMessage(`{"account":{}}`)
	}
	return e
}

func TestTemplatedURLAndHeaders(t *testing.T) {
	eu, us := newReceiver(t, nil), newReceiver(t, nil)
	edit := func(c *Config) {
		c.URL = "http://{data.account.region}.partner.test/hooks/{tenant}"
		c.Headers = map[string]string{"X-Source": "{metadata.source}", "X-Plan": "{metadata.plan:-free}", "X-Static": "s"}
	}
	s := newSink(t, "", edit, sinks.Env{Dial: regionDial(t, map[string]*receiver{"eu": eu, "us": us})})
	for _, e := range []event.Event{regionEvent("e1", "eu"), regionEvent("u1", "us"), regionEvent("e2", "eu")} {
		if _, err := sendOne(t, s, e); err != nil {
			t.Fatalf("%s: %v", e.ID, err)
		}
	}
	if n := len(eu.requests()); n != 2 {
		t.Fatalf("eu receiver got %d requests, want 2", n)
	}
	u := us.last(t)
	if len(us.requests()) != 1 || u.Header.Get("webhook-id") != "u1" || u.Path != "/hooks/acme" {
		t.Fatalf("us receiver: %d requests, last %s %s", len(us.requests()), u.Header.Get("webhook-id"), u.Path)
	}
	if u.Header.Get("X-Source") != "crm" || u.Header.Get("X-Plan") != "free" || u.Header.Get("X-Static") != "s" {
		t.Fatalf("templated headers: %v", u.Header)
	}

	// A path the event lacks is a permanent failure naming it; nothing is sent.
	_, err := sendOne(t, s, regionEvent("x1", ""))
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent || !strings.Contains(err.Error(), "data.account.region") {
		t.Fatalf("unresolvable url: %v, want permanent naming data.account.region", err)
	}
	// Data cannot reshape the host: a value with URL syntax is refused after rendering.
	for _, bad := range []string{"evil.example#", "evil.example/x?", "u@evil.example"} {
		_, err := sendOne(t, s, regionEvent("x2", bad))
		if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent {
			t.Fatalf("region %q: %v, want a permanent refusal", bad, err)
		}
	}
	if n := len(eu.requests()) + len(us.requests()); n != 3 {
		t.Fatalf("receivers got %d requests in all, want 3", n)
	}
}

func TestTemplatedURLBatchesPerRoute(t *testing.T) {
	eu, us := newReceiver(t, nil), newReceiver(t, nil)
	s := newSink(t, "", func(c *Config) {
		c.URL = "http://{data.account.region}.partner.test/hooks"
		c.Batch = &Batch{}
	}, sinks.Env{Dial: regionDial(t, map[string]*receiver{"eu": eu, "us": us})})
	batch := []event.Event{regionEvent("e1", "eu"), regionEvent("u1", "us"), regionEvent("e2", "eu"), regionEvent("x", "")}
	err := s.Send(context.Background(), batch)
	var be *sinks.BatchError
	if !errors.As(err, &be) || be.Errs[0] != nil || be.Errs[1] != nil || be.Errs[2] != nil || be.Errs[3] == nil {
		t.Fatalf("send: %v, want only the unresolvable event failed", err)
	}
	if class, _ := sinks.Classify(be.Errs[3]); class != sinks.ClassPermanent {
		t.Fatalf("unresolvable event: %v", be.Errs[3])
	}
	var got []map[string]any
	if err := json.Unmarshal(eu.last(t).Body, &got); err != nil || len(eu.requests()) != 1 || len(got) != 2 {
		t.Fatalf("eu receiver: %d requests, body %s", len(eu.requests()), eu.last(t).Body)
	}
	if len(us.requests()) != 1 {
		t.Fatalf("us receiver: %d requests", len(us.requests()))
	}
}

func TestTemplatedURLPassesTheGuard(t *testing.T) {
	rc := newReceiver(t, nil)
	g := netguard.New(nil) // nothing on loopback is allowed
	s := newSink(t, "", func(c *Config) { c.URL = "http://{data.host}/hooks" }, sinks.Env{Dial: g.DialContext})
	e := testEvent()
	e.Data = json.RawMessage(`{"host":"` + rc.Listener.Addr().String() + `"}`)
	_, err := sendOne(t, s, e)
	var blocked *netguard.BlockedError
	if class, _ := sinks.Classify(err); !errors.As(err, &blocked) || class != sinks.ClassPermanent {
		t.Fatalf("templated url to loopback: %v, want the guard's permanent refusal", err)
	}
	if len(rc.requests()) != 0 {
		t.Fatal("the receiver was reached past the guard")
	}
}
