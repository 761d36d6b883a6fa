package sinks

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"time"
)

// MaxResponseHeaderBytes bounds the headers Sluice reads from any server it delivers to.
const MaxResponseHeaderBytes = 64 << 10

// HTTPTransport returns base (nil: a fresh transport) set up to reach the network under env's policy: dialling
// through the guard, through proxy when given (a destination's own proxy setting) or else the configured
// delivery.network.proxy, with response headers bounded. Proxy variables from the environment (HTTP_PROXY,
// HTTPS_PROXY) are never used: a proxy the guard does not know of would let a request reach what the guard
// refuses.
func (e Env) HTTPTransport(base *http.Transport, proxy *url.URL) *http.Transport {
	var t *http.Transport
	if e.Network != nil {
		t = e.Network.WithProxy(proxy).Transport(base)
	} else {
		if base != nil {
			t = base.Clone()
		} else {
			t = &http.Transport{ForceAttemptHTTP2: true}
		}
		t.Proxy = nil
		t.DialContext = e.dial()
	}
	t.MaxResponseHeaderBytes = MaxResponseHeaderBytes
	return t
}

// DialFor returns the dial function of env with proxy (a destination's own proxy) in place of the global one.
func (e Env) DialFor(proxy *url.URL) DialFunc {
	if proxy != nil && e.Network != nil {
		return e.Network.WithProxy(proxy).DialContext
	}
	return e.dial()
}

func (e Env) dial() DialFunc {
	if e.Dial != nil {
		return e.Dial
	}
	if e.Network != nil {
		return e.Network.DialContext
	}
	// Only tests build a sink without the guard; the server always passes one.
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		return d.DialContext(ctx, network, address)
	}
}
