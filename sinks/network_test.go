package sinks_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// Every sink's HTTP transport drops the environment's proxy (http.DefaultTransport's ProxyFromEnvironment),
// uses only a configured one, and bounds response headers.
func TestHTTPTransportPolicy(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://env-proxy.invalid:3128")
	base := http.DefaultTransport.(*http.Transport)
	guard := netguard.New(nil)
	req, _ := http.NewRequest("GET", "https://93.184.216.34/x", nil)
	for name, env := range map[string]sinks.Env{
		"bare dial": {}, "no proxy": {Network: netguard.NewDialer(guard, nil)},
	} {
		tr := env.HTTPTransport(base, nil)
		if tr.Proxy != nil {
			if u, _ := tr.Proxy(req); u != nil {
				t.Errorf("%s: proxy %s from the environment is used", name, u)
			}
		}
		if tr.MaxResponseHeaderBytes != sinks.MaxResponseHeaderBytes {
			t.Errorf("%s: MaxResponseHeaderBytes = %d", name, tr.MaxResponseHeaderBytes)
		}
	}
	global, _ := url.Parse("http://global-proxy.invalid:3128")
	own, _ := url.Parse("http://own-proxy.invalid:3128")
	env := sinks.Env{Network: netguard.NewDialer(guard, global)}
	for want, tr := range map[string]*http.Transport{
		global.Host: env.HTTPTransport(base, nil), own.Host: env.HTTPTransport(base, own),
	} {
		u, err := tr.Proxy(req)
		if err != nil || u == nil || u.Host != want {
			t.Errorf("proxy = %v, %v; want %s", u, err, want)
		}
	}
	// The target is judged before the proxy is named.
	private, _ := http.NewRequest("GET", "https://10.0.0.1/x", nil)
	if u, err := env.HTTPTransport(base, nil).Proxy(private); err == nil {
		t.Errorf("a private target got proxy %v", u)
	}
}
