package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestLoggedDeliveryStaysTenantConfined: a finished delivery leaves the queue table for the delivery log; its
// tenant still reads and retries it by id, another tenant's key gets 404 for it, as for any id it may not see.
func TestLoggedDeliveryStaysTenantConfined(t *testing.T) {
	dsn := pgSchema(t)
	rc := newReceiver(t, "acme", 0)
	rc.start(t)
	nd := &pgNode{t: t, name: "node1", addr: freeAddr(t)}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`server:
  listen: %s
auth:
  keys:
    - {name: admin, key: e2e-key, role: admin}
    - {name: acme, key: acme-key, role: admin, tenant: acme}
    - {name: evil, key: evil-key, role: admin, tenant: evil}
store:
  driver: postgres
  dsn: %q
  max_conns: 8
  encryption_key: %q
delivery:
  network:
    allow_cidrs: [127.0.0.0/8]
telemetry:
  log: {level: warn}
destinations:%s
`, nd.addr, dsn, testEncryptionKey, pgWebhookDest("acme-hooks", rc, "\n    tenant: acme"))
	nd.cfg = filepath.Join(dir, "node1.yaml")
	if err := os.WriteFile(nd.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if nd.log, err = os.Create(filepath.Join(dir, "node1.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nd.kill)
	nd.start()

	as := func(key, method, path string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+nd.addr+path, strings.NewReader(`{"id": "ev-1", "topic": "case.opened", "tenant": "acme", "data": {"case": {"id": "c-1"}}}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	if code := as("acme-key", "POST", "/v1/events", nil); code != http.StatusAccepted {
		t.Fatalf("publish as acme: %d", code)
	}
	var ev struct {
		Deliveries []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"deliveries"`
	}
	waitFor(t, "the delivery to end", func() bool {
		as("acme-key", "GET", "/v1/events/ev-1", &ev)
		return len(ev.Deliveries) == 1 && ev.Deliveries[0].Status == "delivered"
	})
	id := ev.Deliveries[0].ID

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var hot, logged int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM delivery_log)`).Scan(&hot, &logged); err != nil {
		t.Fatal(err)
	}
	if hot != 0 || logged != 1 {
		t.Fatalf("deliveries %d, delivery_log %d; want the finished delivery in the log only", hot, logged)
	}

	if code := as("evil-key", "GET", "/v1/deliveries/"+id, nil); code != http.StatusNotFound {
		t.Fatalf("another tenant reading the logged delivery: %d, want 404", code)
	}
	if code := as("evil-key", "POST", "/v1/deliveries/"+id+"/retry", nil); code != http.StatusNotFound {
		t.Fatalf("another tenant retrying the logged delivery: %d, want 404", code)
	}
	var list struct {
		Data []any `json:"data"`
	}
	if code := as("evil-key", "GET", "/v1/deliveries", &list); code != http.StatusOK || len(list.Data) != 0 {
		t.Fatalf("another tenant's delivery list: %d %v, want none", code, list.Data)
	}
	var d struct {
		Status   string `json:"status"`
		Attempts []any  `json:"attempts"`
	}
	if code := as("acme-key", "GET", "/v1/deliveries/"+id, &d); code != http.StatusOK || d.Status != "delivered" || len(d.Attempts) != 1 {
		t.Fatalf("acme reading its logged delivery: %d %+v", code, d)
	}
	if code := as("acme-key", "POST", "/v1/deliveries/"+id+"/retry", nil); code != http.StatusAccepted {
		t.Fatalf("acme retrying its logged delivery: %d, want 202", code)
	}
	waitFor(t, "the retried delivery to be delivered again", func() bool {
		_, total, _ := rc.count()
		as("acme-key", "GET", "/v1/deliveries/"+id, &d)
		return total == 2 && d.Status == "delivered" && len(d.Attempts) == 2
	})
}
