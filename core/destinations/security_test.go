package destinations_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/store"
)

// TestBrokenStoredDestinationLoadsDisabled: a stored API destination that no longer parses does not stop the
// server: it loads disabled with the reason shown, the others run, and it can be deleted.
func TestBrokenStoredDestinationLoadsDisabled(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, 204)
	key := bytes.Repeat([]byte{1}, 32)
	s := start(t, dir, conf(t, dir, "1h", 0, "1h", yamlDest("yaml-d", rcv.URL, "*")), key)
	if err := s.st.PutDestination(context.Background(), store.DestinationRecord{ID: "dst_broken", Name: "broken",
		Type: "webhook", Spec: []byte(`{"name":"broken","type":"webhook","config":{"url":"not a url"}}`)}); err != nil {
		t.Fatal(err)
	}
	s.close()

	s = start(t, dir, conf(t, dir, "1h", 0, "1h", yamlDest("yaml-d", rcv.URL, "*")), key)
	v, err := s.mgr.Get("dst_broken", "")
	if err != nil {
		t.Fatal(err)
	}
	if v.Enabled || v.DisabledReason == "" {
		t.Fatalf("broken destination: enabled=%v reason=%q, want disabled with a reason", v.Enabled, v.DisabledReason)
	}
	if _, err := s.mgr.SetEnabled(context.Background(), "dst_broken", "", true, ""); err == nil {
		t.Fatal("enabling a broken destination succeeded")
	}
	s.publish("case.status_updated")
	waitFor(t, "the healthy destination's delivery", func() bool { return rcv.count("") == 1 })
	if err := s.mgr.Delete(context.Background(), "dst_broken", ""); err != nil {
		t.Fatalf("delete a broken destination: %v", err)
	}
}

// TestReusedNameStartsWithEmptyHistory: a new API destination with a deleted one's name has a new id and
// sees none of its predecessor's deliveries, which ended skipped when it was deleted.
func TestReusedNameStartsWithEmptyHistory(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, 503)
	s := start(t, dir, conf(t, dir, "1h", 0, "1h"), bytes.Repeat([]byte{1}, 32))
	body := []byte(fmt.Sprintf(`{"name":"hook","type":"webhook","topics":["*"],"config":{"url":%q}}`, rcv.URL))
	old, err := s.mgr.Create(context.Background(), body, "")
	if err != nil {
		t.Fatal(err)
	}
	ev := s.publish("case.status_updated")
	waitFor(t, "the first attempt", func() bool { return rcv.count("") == 1 })
	if err := s.mgr.Delete(context.Background(), old.ID, ""); err != nil {
		t.Fatal(err)
	}
	rec, err := s.st.Event(context.Background(), ev)
	if err != nil || len(rec.Deliveries) != 1 || rec.Deliveries[0].Status != store.Skipped || rec.Deliveries[0].Destination != old.ID {
		t.Fatalf("the deleted destination's delivery: %+v %v, want skipped under its id", rec, err)
	}
	reborn, err := s.mgr.Create(context.Background(), body, "")
	if err != nil {
		t.Fatal(err)
	}
	if reborn.ID == old.ID {
		t.Fatalf("the new destination reuses the old id %s", old.ID)
	}
	mine, err := s.st.ListDeliveries(context.Background(), store.DeliveryFilter{Destinations: []string{reborn.ID}})
	if err != nil || len(mine) != 0 {
		t.Fatalf("the new destination's history: %+v %v, want empty", mine, err)
	}
	if _, err := s.mgr.Retry(context.Background(), rec.Deliveries[0].ID, ""); err == nil {
		t.Fatal("retry of the predecessor's delivery succeeded")
	}
	if n, err := s.mgr.Replay(context.Background(), reborn.ID, "", store.ReplayFilter{}); err != nil || n != 0 {
		t.Fatalf("replay on the new destination requeued %d (%v), want 0", n, err)
	}
}

// TestTenantCannotExhaustInlineSubscriptionsOrShareCorrelationIDs: acme's subscriptions under a correlation id
// neither count against globex's under the same id, nor receive globex's events; one tenant may hold at most
// half of max_active, and beyond the cap registrations answer ErrBusy (429).
func TestTenantCannotExhaustInlineSubscriptionsOrShareCorrelationIDs(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t, 204)
	cfg := parse(t, dir, "intake: {inline_subscriptions: {enabled: true, ttl: 1h, max_per_correlation: 1, max_active: 4}}\n"+
		fmt.Sprintf(base, testKey, "1h", 0, "1h", ""))
	s := start(t, dir, cfg)
	sub := func(tenant, path string) string {
		return fmt.Sprintf(`{"topic":"case.x","tenant":%q,"correlation_id":"run","data":{},"subscriptions":[{"url":%q,"topics":["*"]}]}`,
			tenant, rcv.URL+path)
	}
	if _, err := publishJSON(s, sub("acme", "/acme-1")); err != nil {
		t.Fatal(err)
	}
	// globex's first subscription under the same correlation id is its own first, not acme's second.
	if _, err := publishJSON(s, sub("globex", "/globex-1")); err != nil {
		t.Fatalf("globex under acme's correlation id: %v", err)
	}
	// acme may take half of max_active (2): a second run, then no more.
	if _, err := publishJSON(s, strings.Replace(sub("acme", "/acme-2"), `"run"`, `"run-2"`, 1)); err != nil {
		t.Fatal(err)
	}
	_, err := publishJSON(s, strings.Replace(sub("acme", "/acme-3"), `"run"`, `"run-3"`, 1))
	if !errors.Is(err, intake.ErrBusy) {
		t.Fatalf("acme's third live subscription: %v, want ErrBusy", err)
	}
	// A globex event of run reaches globex's subscription only.
	if _, err := publishJSON(s, `{"id":"g-ev","topic":"case.x","tenant":"globex","correlation_id":"run","data":{}}`); err != nil {
		t.Fatal(err)
	}
	rec, err := s.st.TenantEvent(context.Background(), "globex", "g-ev")
	if err != nil {
		t.Fatal(err)
	}
	want := destinations.SubscriptionName("run", "globex", rcv.URL+"/globex-1", []string{"*"})
	if len(rec.Deliveries) != 1 || rec.Deliveries[0].Destination != want {
		t.Fatalf("globex's event went to %+v, want only globex's subscription %s", rec.Deliveries, want)
	}
}

// TestPerRunDestinationsShareOneMetricsLabel: per-run subscriptions, which come and go by the thousand, all
// label their metrics "inline"; other destinations by their name, found from their id.
func TestPerRunDestinationsShareOneMetricsLabel(t *testing.T) {
	dir := t.TempDir()
	s := start(t, dir, conf(t, dir, "1h", 0, "1h", yamlDest("yaml-d", "http://127.0.0.1:1/h", "*")), bytes.Repeat([]byte{1}, 32))
	d, err := s.mgr.Create(context.Background(), []byte(`{"name":"api-d","type":"webhook","topics":["*"],"config":{"url":"http://127.0.0.1:1/h"}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{
		destinations.SubscriptionName("run-1", "acme", "http://x/h", []string{"*"}): "inline",
		destinations.SubscriptionName("run-2", "", "http://y/h", []string{"*"}):     "inline",
		d.ID:     "api-d",
		"yaml-d": "yaml-d",
	} {
		if got := s.mgr.MetricLabel(id); got != want {
			t.Errorf("MetricLabel(%s) = %q, want %q", id, got, want)
		}
	}
}
