package webhook

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// connectProxy is a real forward proxy on loopback (CONNECT tunnels and plain forwarding) that records
// what it was asked.
type connectProxy struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newConnectProxy(t *testing.T) *connectProxy {
	p := &connectProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, r.Method+" "+r.Host)
		p.mu.Unlock()
		if r.Method != http.MethodConnect {
			out, _ := http.NewRequest(r.Method, r.URL.String(), r.Body)
			out.Header = r.Header.Clone()
			resp, err := (&http.Transport{}).RoundTrip(out)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
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
	t.Cleanup(p.Close)
	return p
}

func (p *connectProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// A destination's own proxy carries its deliveries; the target is still judged first, and HTTPS_PROXY from
// the environment is not used by destinations without one.
func TestDeliveryThroughProxy(t *testing.T) {
	p := newConnectProxy(t)
	envProxy := newConnectProxy(t)
	t.Setenv("HTTPS_PROXY", envProxy.URL)
	t.Setenv("HTTP_PROXY", envProxy.URL)
	var got int
	var mu sync.Mutex
	rc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()
	// 127.0.0.1 is allowed and stands for a public receiver; 127.0.0.2 is not.
	allow, _ := netguard.ParseCIDRs([]string{"127.0.0.1/32"})
	env := sinks.Env{Network: netguard.NewDialer(netguard.New(allow), nil)}
	withProxy := func(c *Config) { c.Proxy = p.URL }

	s := newSink(t, rc.URL+"/hooks", withProxy, env)
	s.cur.Load().transport.TLSClientConfig = rc.Client().Transport.(*http.Transport).TLSClientConfig
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatalf("delivery through the proxy: %v", err)
	}
	if seen := p.requests(); len(seen) != 1 || seen[0] != "CONNECT "+strings.TrimPrefix(rc.URL, "https://") {
		t.Fatalf("proxy saw %q", seen)
	}

	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rc.URL, "https://"))
	private := newSink(t, "https://127.0.0.2:"+port+"/hooks", withProxy, env)
	_, err := sendOne(t, private, testEvent())
	var be *netguard.BlockedError
	if !errors.As(err, &be) {
		t.Fatalf("private target through the proxy = %v, want a *BlockedError", err)
	}
	if seen := p.requests(); len(seen) != 1 {
		t.Fatalf("the proxy was asked for a refused target: %q", seen)
	}

	direct := newSink(t, rc.URL+"/hooks", nil, env)
	direct.cur.Load().transport.TLSClientConfig = rc.Client().Transport.(*http.Transport).TLSClientConfig
	if _, err := sendOne(t, direct, testEvent()); err != nil {
		t.Fatalf("direct delivery: %v", err)
	}
	if seen := envProxy.requests(); len(seen) != 0 {
		t.Fatalf("the environment's proxy was used: %q", seen)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != 2 {
		t.Fatalf("receiver got %d requests, want 2", got)
	}
}

func TestProxyValidated(t *testing.T) {
	c := NewConfig()
	c.URL, c.Signing, c.Proxy = "https://example.com/x", SigningNone, "socks5://u:hunter2@p:1080"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "proxy: ") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Validate = %v", err)
	}
}
