package destinations_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// TestTenantDestinationOverBudget: a tenant creates destinations whose transform and filter cost grows with
// the square of an event's array. Creating them (a validation dry-run) is fine; events with a large array fail
// the transform's delivery permanently and skip the filter's, with the budget as the reason, without
// disturbing the process, the breaker or auto-disable (3 here: 25 failures would disable a destination if they
// counted, and open its breaker); small events are delivered as usual.
func TestTenantDestinationOverBudget(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rcv := newReceiver(t, 204)
	s := start(t, dir, conf(t, dir, "10ms", 3, "1h"))
	create := func(name, extra string) string {
		t.Helper()
		v, err := s.mgr.Create(ctx, []byte(fmt.Sprintf(`{"name":%q,"type":"webhook","topics":["case.*"],%s,"config":{"url":%q,"signing":"none"}}`,
			name, extra, rcv.URL)), "acme")
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return v.ID
	}
	// A flatten of the whole array per element: n² elements.
	costly := create("costly", `"transform":"data.a[*].[$.data.a, $.data.a][][]"`)
	// 2,000 conditions each scanning the whole array.
	var conds []string
	for i := range 2000 {
		conds = append(conds, fmt.Sprintf(`{"data":{"a":{"$eq":%d}}}`, -1-i))
	}
	picky := create("picky", `"filter":{"$or":[`+strings.Join(conds, ",")+`]}`)

	items := make([]string, 3000)
	for i := range items {
		items[i] = fmt.Sprintf(`{"id":%d,"tags":["x","y"]}`, i)
	}
	big := json.RawMessage(`{"a":[` + strings.Join(items, ",") + `]}`)
	var ids []string
	for range 25 {
		res, err := s.in.Publish(ctx, []event.Event{{Topic: "case.big", Tenant: "acme", Data: big}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("publish: %v %v", err, res)
		}
		ids = append(ids, res[0].ID)
	}
	delivery := func(id, dest string) store.DeliveryRecord {
		rec, err := s.st.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range rec.Deliveries {
			if d.Destination == dest {
				return d
			}
		}
		t.Fatalf("event %s has no delivery to %s", id, dest)
		return store.DeliveryRecord{}
	}
	for _, id := range ids {
		waitFor(t, "the over-budget transform's delivery to fail", func() bool { return s.statusOf(id, costly) == store.Failed })
		if d := delivery(id, costly); len(d.AttemptLog) != 1 || !strings.Contains(d.LastError, "budget") {
			t.Fatalf("costly: %d attempts, last error %q; want one, failed for its budget", len(d.AttemptLog), d.LastError)
		}
		if d := delivery(id, picky); d.Status != store.Skipped || !strings.Contains(d.LastError, "budget") {
			t.Fatalf("picky: %s %q, want skipped for the filter's budget", d.Status, d.LastError)
		}
	}
	for _, id := range []string{costly, picky} {
		v, err := s.mgr.Get(id, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if !v.Enabled || v.BreakerOpen || s.disp.BreakerOpen(id) {
			t.Fatalf("%s after 25 over-budget events: enabled %v (%s), breaker open %v", v.Name, v.Enabled, v.DisabledReason, v.BreakerOpen)
		}
	}
	// Small events still go through both.
	res, err := s.in.Publish(ctx, []event.Event{{Topic: "case.small", Tenant: "acme", Data: json.RawMessage(`{"a":[-1,{"id":1}]}`)}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("publish: %v %v", err, res)
	}
	waitFor(t, "the small event delivered to both", func() bool {
		return s.statusOf(res[0].ID, costly) == store.Delivered && s.statusOf(res[0].ID, picky) == store.Delivered
	})
}
