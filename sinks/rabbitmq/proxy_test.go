package rabbitmq

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// With delivery.network.proxy set, AMQP goes through it too: a CONNECT to the address the guard judged.
func TestIntegrationThroughProxy(t *testing.T) {
	b := newBroker(t, "topic")
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", r.Host)
		if r.Method != http.MethodConnect || err != nil {
			http.Error(w, "CONNECT only", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		down, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() { _, _ = io.Copy(up, rw); up.Close() }()
		go func() { _, _ = io.Copy(down, up); down.Close() }()
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	allow, _ := netguard.ParseCIDRs([]string{"127.0.0.1/32"})
	d := netguard.NewDialer(netguard.New(allow), pu)
	s, err := New(context.Background(), b.config(b.url), sinks.Env{Destination: "via-proxy", Timeout: 10 * time.Second,
		Dial: d.DialContext, Network: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if err := s.Send(context.Background(), sinktest.Events("proxy", 1)); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, 1)
	mu.Lock()
	if len(seen) == 0 || seen[0] != "CONNECT "+hostPort(t, b.url) {
		t.Fatalf("proxy saw %q, want a CONNECT to %s", seen, hostPort(t, b.url))
	}
	mu.Unlock()

	// A destination's own proxy, with no global one.
	c := b.config(b.url)
	c.Proxy = proxy.URL
	direct := netguard.NewDialer(netguard.New(allow), nil)
	own, err := New(context.Background(), c, sinks.Env{Destination: "own-proxy", Timeout: 10 * time.Second,
		Dial: direct.DialContext, Network: direct})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = own.Close(context.Background()) })
	if err := own.Send(context.Background(), sinktest.Events("own", 1)); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("proxy saw %q, want a second CONNECT for the destination's own proxy", seen)
	}
}
