package netguard

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ParseProxy parses a proxy setting (delivery.network.proxy, a destination's proxy): an http:// URL of a host
// and port, optionally with user:password for Proxy-Authorization. "" is no proxy (nil, nil).
func ParseProxy(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q is not a proxy URL; write it like http://proxy.internal:3128", redactURL(raw))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q has a path or query; a proxy URL is only http://host:port", redactURL(raw))
	}
	return &url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host}, nil
}

// redactURL hides the userinfo of a URL for an error message.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = url.User("****")
		return u.String()
	}
	return raw
}

// Dialer is one network policy: the guard, and the proxy the operator configured (nil: connect directly).
// A Dialer is safe for concurrent use.
type Dialer struct {
	guard  *Guard
	proxy  *url.URL
	direct net.Dialer
}

// NewDialer returns a Dialer that checks every target with g and, when proxy is set, reaches targets through it.
func NewDialer(g *Guard, proxy *url.URL) *Dialer {
	return &Dialer{guard: g, proxy: proxy, direct: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}
}

// Guard returns the guard of d.
func (d *Dialer) Guard() *Guard { return d.guard }

// Proxy returns the proxy of d, nil when it connects directly.
func (d *Dialer) Proxy() *url.URL { return d.proxy }

// WithProxy returns a Dialer with d's guard and proxy p (a destination's own proxy); nil p keeps d's.
func (d *Dialer) WithProxy(p *url.URL) *Dialer {
	if p == nil {
		return d
	}
	return NewDialer(d.guard, p)
}

// DialContext connects to address under the policy. Without a proxy it is the guard's DialContext. With one,
// a TCP target is resolved and every address judged first; then the proxy is asked to CONNECT to the judged
// address (never the name, so the proxy cannot resolve it to somewhere else). It suits non-HTTP clients
// (AMQP, gRPC, NATS); HTTP clients use Transport, which forwards plain http and tunnels https.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if d.proxy == nil || !strings.HasPrefix(network, "tcp") {
		return d.guard.DialContext(ctx, network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: dialAddr(address), Err: err}
	}
	target := net.JoinHostPort(ips[0].Unmap().String(), port)
	conn, err := d.direct.DialContext(ctx, "tcp", d.proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", d.proxy.Host, err)
	}
	tc, err := d.connect(ctx, conn, target)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// resolve returns the addresses of host, refusing all of them if any is blocked: a proxy or a client may try
// any of them, so one blocked answer makes the name unusable.
func (d *Dialer) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := d.guard.Check(ip); err != nil {
			return nil, err
		}
		return []netip.Addr{ip}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("netguard: %s has no address", host)
	}
	for _, ip := range ips {
		if err := d.guard.Check(ip); err != nil {
			var be *BlockedError
			if errors.As(err, &be) {
				be.Host = host
			}
			return nil, err
		}
	}
	return ips, nil
}

// connect asks the proxy on conn for a tunnel to target (an ip:port).
func (d *Dialer) connect(ctx context.Context, conn net.Conn, target string) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if auth := proxyAuth(d.proxy); auth != "" {
		fmt.Fprintf(&b, "Proxy-Authorization: %s\r\n", auth)
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", d.proxy.Host, target, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", d.proxy.Host, target, err)
	}
	// The body is not read: after a 200 the bytes that follow are the tunnel's, whatever framing the proxy
	// announced (as net/http's own CONNECT does).
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("proxy %s refused CONNECT %s: %s", d.proxy.Host, target, resp.Status)
	}
	// A server that speaks first (NATS, SMTP) may already have sent bytes the reader buffered.
	return &bufConn{Conn: conn, r: br}, nil
}

func proxyAuth(p *url.URL) string {
	if p.User == nil {
		return ""
	}
	pw, _ := p.User.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(p.User.Username()+":"+pw))
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Transport returns an HTTP transport under the policy, with the settings of base (nil: a fresh one). Proxy
// variables from the environment are never used. With a proxy, each request's target host is resolved and
// judged before the proxy is asked; plain http is forwarded and https tunnelled with CONNECT, by the proxy
// named in the config — the only address reached without the guard.
func (d *Dialer) Transport(base *http.Transport) *http.Transport {
	var t *http.Transport
	if base != nil {
		t = base.Clone()
	} else {
		t = &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second}
	}
	t.Proxy = nil
	t.OnProxyConnectResponse = nil
	t.DialContext = d.guard.DialContext
	if d.proxy == nil {
		return t
	}
	proxy := d.proxy
	t.Proxy = func(req *http.Request) (*url.URL, error) {
		if _, err := d.resolve(req.Context(), req.URL.Hostname()); err != nil {
			return nil, err
		}
		return proxy, nil
	}
	proxyHost := canonicalHostPort(proxy)
	t.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
		// With Proxy always answering the proxy, the transport dials nothing else; anything else is judged.
		if address == proxyHost {
			return d.direct.DialContext(ctx, network, address)
		}
		return d.guard.DialContext(ctx, network, address)
	}
	return t
}

// canonicalHostPort is the address http.Transport dials for proxy p.
func canonicalHostPort(p *url.URL) string {
	port := p.Port()
	if _, err := strconv.Atoi(port); err != nil || port == "" {
		port = "80"
	}
	return net.JoinHostPort(p.Hostname(), port)
}
