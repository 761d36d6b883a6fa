package netguard

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// proxy is a small real forward proxy on loopback: CONNECT tunnels and plain-http forwarding, recording what
// it was asked.
type proxy struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "CONNECT host:port", "GET http://..."
	auth []string
}

func newProxy(t *testing.T) *proxy {
	p := &proxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) URL() *url.URL { u, _ := url.Parse(p.srv.URL); return u }

func (p *proxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	target := r.Host
	if r.Method != http.MethodConnect {
		target = r.URL.String()
	}
	p.seen = append(p.seen, r.Method+" "+target)
	p.auth = append(p.auth, r.Header.Get("Proxy-Authorization"))
	p.mu.Unlock()
	if r.Method != http.MethodConnect {
		out, _ := http.NewRequest(r.Method, r.URL.String(), r.Body)
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
	w.(http.Flusher).Flush()
	down, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	// The handler returns at once so that closing the proxy does not wait for idle tunnels.
	go func() { _, _ = io.Copy(up, rw); up.Close() }()
	go func() { _, _ = io.Copy(down, up); down.Close() }()
}

func allowOnly(t *testing.T, cidrs ...string) *Guard {
	allow, errs := ParseCIDRs(cidrs)
	if errs != nil {
		t.Fatal(errs)
	}
	return New(allow)
}

// The receiver listens on 127.0.0.1, which the allow list admits: it stands for a public address.
func TestTransportThroughProxy(t *testing.T) {
	p := newProxy(t)
	pu := p.URL()
	pu.User = url.UserPassword("u", "pw")
	g := allowOnly(t, "127.0.0.1/32")
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls ok") }))
	defer tlsSrv.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain ok") }))
	defer plain.Close()

	base := tlsSrv.Client().Transport.(*http.Transport)
	client := &http.Client{Transport: NewDialer(g, pu).Transport(base)}
	for _, tt := range []struct{ url, body, seen string }{
		{tlsSrv.URL, "tls ok", "CONNECT " + strings.TrimPrefix(tlsSrv.URL, "https://")},
		{plain.URL + "/x", "plain ok", "GET " + plain.URL + "/x"},
	} {
		resp, err := client.Get(tt.url)
		if err != nil {
			t.Fatalf("GET %s through the proxy: %v", tt.url, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tt.body {
			t.Fatalf("GET %s = %q", tt.url, b)
		}
		seen := p.requests()
		if len(seen) == 0 || seen[len(seen)-1] != tt.seen {
			t.Fatalf("proxy saw %q, want last %q", seen, tt.seen)
		}
	}
	if p.auth[0] != "Basic dTpwdw==" {
		t.Fatalf("Proxy-Authorization = %q", p.auth[0])
	}
}

func TestTransportRefusesBeforeAskingProxy(t *testing.T) {
	p := newProxy(t)
	client := &http.Client{Transport: NewDialer(allowOnly(t, "127.0.0.1/32"), p.URL()).Transport(nil)}
	for _, target := range []string{"https://127.0.0.2:8443/", "http://127.0.0.2:8080/", "http://169.254.169.254/latest/"} {
		_, err := client.Get(target)
		var be *BlockedError
		if !errors.As(err, &be) {
			t.Fatalf("GET %s: %v, want a *BlockedError", target, err)
		}
	}
	if seen := p.requests(); len(seen) != 0 {
		t.Fatalf("the proxy was asked %q for refused targets", seen)
	}
}

func TestEnvironmentProxyIgnored(t *testing.T) {
	p := newProxy(t)
	t.Setenv("HTTPS_PROXY", p.srv.URL)
	t.Setenv("HTTP_PROXY", p.srv.URL)
	t.Setenv("ALL_PROXY", p.srv.URL)
	t.Setenv("NO_PROXY", "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "direct") }))
	defer srv.Close()
	g := allowOnly(t, "127.0.0.1/32")
	base := http.DefaultTransport.(*http.Transport) // its Proxy is ProxyFromEnvironment: Transport must drop it
	resp, err := (&http.Client{Transport: NewDialer(g, nil).Transport(base)}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := NewDialer(g, nil).DialContext(context.Background(), "tcp", strings.TrimPrefix(srv.URL, "http://")); err != nil {
		t.Fatal(err)
	}
	if seen := p.requests(); len(seen) != 0 {
		t.Fatalf("the environment's proxy was used: %q", seen)
	}
	// And a refused target stays refused although a proxy in the environment could reach it.
	_, err = (&http.Client{Transport: NewDialer(New(nil), nil).Transport(base)}).Get(srv.URL)
	var be *BlockedError
	if !errors.As(err, &be) {
		t.Fatalf("GET %s = %v, want a *BlockedError", srv.URL, err)
	}
}

// DialContext tunnels any TCP protocol, to the judged address, and keeps what a server says first.
func TestDialThroughProxy(t *testing.T) {
	p := newProxy(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "INFO hello\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "echo "+line)
	}()
	d := NewDialer(allowOnly(t, "127.0.0.1/32"), p.URL())
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", port))
	if err != nil {
		var be *BlockedError
		if errors.As(err, &be) && be.Addr == netip.MustParseAddr("::1") {
			t.Skip("localhost resolves to ::1 too here, which the allow list refuses")
		}
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); l != "INFO hello\n" {
		t.Fatalf("first line %q", l)
	}
	io.WriteString(c, "ping\n")
	if l, _ := r.ReadString('\n'); l != "echo ping\n" {
		t.Fatalf("second line %q", l)
	}
	if seen := p.requests(); len(seen) != 1 || seen[0] != "CONNECT 127.0.0.1:"+port {
		t.Fatalf("proxy saw %q, want a CONNECT to the judged address", seen)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "10.0.0.1:4222"); err == nil {
		t.Fatal("a private target was dialled through the proxy")
	}
	if seen := p.requests(); len(seen) != 1 {
		t.Fatalf("the proxy was asked for a refused target: %q", seen)
	}
}

func TestParseProxy(t *testing.T) {
	for _, ok := range []string{"http://proxy:3128", "http://u:p@10.0.0.5:8080/"} {
		if u, err := ParseProxy(ok); err != nil || u == nil {
			t.Errorf("ParseProxy(%q) = %v, %v", ok, u, err)
		}
	}
	for _, bad := range []string{"proxy:3128", "https://proxy:3128", "http://proxy", "socks5://p:1080", "http://p:1/x", "http://u:secret@p/x"} {
		_, err := ParseProxy(bad)
		if err == nil {
			t.Errorf("ParseProxy(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
