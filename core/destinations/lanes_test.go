package destinations_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/core/store"
)

// Per-run subscription URLs come from publishers, not the operator: delivery.network.allow_cidrs does not
// open the guard for them; only intake.inline_subscriptions.allow_cidrs does.
func TestSubscriptionsHaveTheirOwnAllowList(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	loopback, _ := netguard.ParseCIDRs([]string{"127.0.0.0/8"})
	sub := store.Subscription{Name: "run", URL: srv.URL + "/hook?token=t"}
	pol := dispatch.Policy{Timeout: 5 * time.Second}
	ev := []event.Event{{ID: "e1", Topic: "t", Time: time.Now(), Data: []byte(`{}`)}}

	l := destinations.NewLanes(netguard.New(loopback), "")
	_, err := l.SubscriptionSink(context.Background(), sub, pol)
	var be *netguard.BlockedError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "intake.inline_subscriptions.allow_cidrs") {
		t.Fatalf("SubscriptionSink with only delivery.network.allow_cidrs = %v, want a refusal naming intake.inline_subscriptions.allow_cidrs", err)
	}
	// A name (not an IP literal) is judged when dialled.
	byName := sub
	byName.URL = strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	s, err := l.SubscriptionSink(context.Background(), byName, pol)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), ev); !errors.As(err, &be) {
		t.Fatalf("send to localhost = %v, want a *BlockedError", err)
	}

	l.SetNetwork(netguard.NewDialer(netguard.New(nil), nil), netguard.NewDialer(netguard.New(loopback), nil))
	s, err = l.SubscriptionSink(context.Background(), sub, pol)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), ev); err != nil || hits.Load() != 1 {
		t.Fatalf("send with the runs allow list = %v (hits %d)", err, hits.Load())
	}
}
