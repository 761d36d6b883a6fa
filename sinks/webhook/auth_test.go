package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// tokenServer is an OAuth2 authorization server on loopback: it checks the client credentials and issues
// numbered tokens that expire after lifetime, counting requests.
type tokenServer struct {
	*httptest.Server
	lifetime time.Duration
	requests atomic.Int32
	fail     atomic.Bool // answer 500 instead of a token
	mu       sync.Mutex
	forms    []map[string]string
}

func newTokenServer(t *testing.T, lifetime time.Duration) *tokenServer {
	ts := &tokenServer{lifetime: lifetime}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := ts.requests.Add(1)
		if ts.fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		_ = r.ParseForm()
		form := map[string]string{}
		for k := range r.PostForm {
			form[k] = r.PostForm.Get(k)
		}
		ts.mu.Lock()
		ts.forms = append(ts.forms, form)
		ts.mu.Unlock()
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != "sluice" || secret != "s3cret" || r.PostForm.Get("grant_type") != "client_credentials" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("tok-%d", n), "token_type": "Bearer",
			"expires_in": int(ts.lifetime / time.Second)})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func oauthConfig(tokenURL string) func(c *Config) {
	return func(c *Config) {
		c.Auth = &Auth{OAuth2: &OAuth2{TokenURL: tokenURL, ClientID: "sluice", ClientSecret: "s3cret",
			Scopes: []string{"events"}, Audience: "https://partner.example", ExtraParams: map[string]string{"resource": "hooks"}}}
	}
}

// bearerReceiver accepts requests whose bearer token is in valid.
func bearerReceiver(t *testing.T, valid func(tok string) bool) *receiver {
	return newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !valid(tok) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func TestOAuth2TokenCachedUntilShortlyBeforeExpiry(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	rc := bearerReceiver(t, func(string) bool { return true })
	s := newSink(t, rc.URL, oauthConfig(ts.URL), sinks.Env{})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }

	for i := 0; i < 3; i++ {
		if _, err := sendOne(t, s, testEvent()); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if n := ts.requests.Load(); n != 1 {
		t.Fatalf("token requests after 3 sends: %d, want 1 (cached)", n)
	}
	if got := rc.last(t).Header.Get("Authorization"); got != "Bearer tok-1" {
		t.Fatalf("Authorization %q", got)
	}
	ts.mu.Lock()
	form := ts.forms[0]
	ts.mu.Unlock()
	if form["scope"] != "events" || form["audience"] != "https://partner.example" || form["resource"] != "hooks" {
		t.Fatalf("token request form %v: want scope, audience and extra params", form)
	}

	// Shortly before expiry (inside the margin) the token is replaced before use.
	clock.Add(int64(time.Hour - tokenMargin/2))
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Fatalf("token requests after expiry: %d, want 2", n)
	}
	if got := rc.last(t).Header.Get("Authorization"); got != "Bearer tok-2" {
		t.Fatalf("Authorization after expiry %q", got)
	}
}

func TestOAuth2RefreshOnceOn401(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	var revoked sync.Map // tokens the receiver no longer accepts
	rc := bearerReceiver(t, func(tok string) bool { _, gone := revoked.Load(tok); return !gone })
	s := newSink(t, rc.URL, oauthConfig(ts.URL), sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	revoked.Store("tok-1", true)
	rep, err := sendOne(t, s, testEvent())
	if err != nil || rep.StatusCode != http.StatusNoContent {
		t.Fatalf("send after revocation: %v (status %d), want delivered after one refresh", err, rep.StatusCode)
	}
	reqs := rc.requests()
	if len(reqs) != 3 || reqs[1].Header.Get("Authorization") != "Bearer tok-1" || reqs[2].Header.Get("Authorization") != "Bearer tok-2" {
		t.Fatalf("receiver saw %d requests; want the 401 with tok-1 then tok-2", len(reqs))
	}
	if reqs[1].Header.Get("webhook-id") != reqs[2].Header.Get("webhook-id") {
		t.Fatal("the retried request must carry the same webhook-id")
	}

	// A receiver that refuses every token: refreshed once, then the 401 is the (permanent) outcome.
	revoked.Store("tok-2", true)
	revoked.Store("tok-3", true)
	_, err = sendOne(t, s, testEvent())
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent {
		t.Fatalf("refused after refresh: %v, want a permanent 401", err)
	}
	if n := ts.requests.Load(); n != 3 {
		t.Fatalf("token requests: %d, want 3 (one refresh per send, not a loop)", n)
	}
}

func TestOAuth2ConcurrentAttemptsShareOneFetch(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	rc := bearerReceiver(t, func(string) bool { return true })
	s := newSink(t, rc.URL, oauthConfig(ts.URL), sinks.Env{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := sendOne(t, s, testEvent())
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := ts.requests.Load(); n != 1 {
		t.Fatalf("token requests for 16 concurrent sends: %d, want 1", n)
	}
}

func TestOAuth2TokenEndpointFailureIsRetryable(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	ts.fail.Store(true)
	rc := bearerReceiver(t, func(string) bool { return true })
	s := newSink(t, rc.URL, oauthConfig(ts.URL), sinks.Env{})
	_, err := sendOne(t, s, testEvent())
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassRetryable {
		t.Fatalf("token endpoint down: %v, want a retryable error", err)
	}
	if !strings.HasPrefix(errors.Unwrap(err).Error(), "oauth2 token endpoint: ") {
		t.Fatalf("error %q must say it is the token endpoint's", err)
	}
	if len(rc.requests()) != 0 {
		t.Fatal("the receiver must not be called without a token")
	}
	// Wrong credentials are the endpoint's answer too: retryable, naming the fields to check.
	bad := newSink(t, rc.URL, func(c *Config) {
		oauthConfig(ts.URL)(c)
		c.Auth.OAuth2.ClientSecret = "wrong"
	}, sinks.Env{})
	ts.fail.Store(false)
	_, err = sendOne(t, bad, testEvent())
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassRetryable || !strings.Contains(err.Error(), "client_secret") {
		t.Fatalf("bad credentials: %v", err)
	}
	// Recovered: the next attempt fetches and delivers.
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
}

func TestOAuth2TokenEndpointBehindTheGuard(t *testing.T) {
	ts := newTokenServer(t, time.Hour)
	rc := bearerReceiver(t, func(string) bool { return true })
	// The guard allows nothing on loopback: the token endpoint is refused before any request.
	g := netguard.New(nil)
	s := newSink(t, rc.URL, oauthConfig(ts.URL), sinks.Env{Dial: g.DialContext})
	_, err := sendOne(t, s, testEvent())
	var blocked *netguard.BlockedError
	if !errors.As(err, &blocked) {
		t.Fatalf("token endpoint on loopback without allow_cidrs: %v, want the guard's refusal", err)
	}
	if ts.requests.Load() != 0 {
		t.Fatal("the token endpoint was reached past the guard")
	}
	// Allowed, it works through the same dialer.
	g = netguard.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	s = newSink(t, rc.URL, oauthConfig(ts.URL), sinks.Env{Dial: g.DialContext})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
}

func TestBasicAndBearer(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, func(c *Config) { c.Auth = &Auth{Basic: &Basic{Username: "u", Password: "p:w"}} }, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "/", nil)
	req.Header = rc.last(t).Header
	if u, p, ok := req.BasicAuth(); !ok || u != "u" || p != "p:w" {
		t.Fatalf("basic auth %q %q %v", u, p, ok)
	}
	s = newSink(t, rc.URL, func(c *Config) { c.Auth = &Auth{Bearer: &Bearer{Token: "abc"}} }, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	if got := rc.last(t).Header.Get("Authorization"); got != "Bearer abc" {
		t.Fatalf("bearer %q", got)
	}
}

// fieldPaths lists the paths of the *sinks.FieldError values in a joined error.
func fieldPaths(err error) map[string]bool {
	out := map[string]bool{}
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *sinks.FieldError
		if errors.As(err, &fe) {
			out[fe.Path] = true
		}
	}
	walk(err)
	return out
}

func TestValidateReceiverBlocks(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(c *Config)
		want []string
	}{
		{"no auth kind", func(c *Config) { c.Auth = &Auth{} }, []string{"auth"}},
		{"two auth kinds", func(c *Config) {
			c.Auth = &Auth{Basic: &Basic{Username: "u"}, Bearer: &Bearer{Token: "t"}}
		}, []string{"auth"}},
		{"oauth2 fields", func(c *Config) { c.Auth = &Auth{OAuth2: &OAuth2{TokenURL: "ftp://x"}} },
			[]string{"auth.oauth2_client_credentials.token_url", "auth.oauth2_client_credentials.client_id",
				"auth.oauth2_client_credentials.client_secret"}},
		{"oauth2 reserved param", func(c *Config) {
			oauthConfig("https://auth.example/token")(c)
			c.Auth.OAuth2.ExtraParams = map[string]string{"grant_type": "password"}
		}, []string{"auth.oauth2_client_credentials.extra_params.grant_type"}},
		{"basic user", func(c *Config) { c.Auth = &Auth{Basic: &Basic{}} }, []string{"auth.basic.username"}},
		{"bearer token", func(c *Config) { c.Auth = &Auth{Bearer: &Bearer{}} }, []string{"auth.bearer.token"}},
		{"authorization header with auth", func(c *Config) {
			c.Auth = &Auth{Bearer: &Bearer{Token: "t"}}
			c.Headers = map[string]string{"Authorization": "x"}
		}, []string{"headers.Authorization"}},
		{"tls pair", func(c *Config) { c.TLS = &TLS{ClientCert: "/x.pem", MinVersion: "1.1"} },
			[]string{"tls.client_key", "tls.min_version"}},
		{"batch", func(c *Config) {
			c.Format = FormatRaw
			c.Batch = &Batch{MaxEvents: -1, Format: "xml", MaxWait: sinks.Duration(time.Hour)}
		}, []string{"batch", "batch.max_events", "batch.format", "batch.max_wait"}},
		{"url template", func(c *Config) { c.URL = "https://{data.region.partner.example/hooks" }, []string{"url"}},
		{"url template unknown placeholder", func(c *Config) { c.URL = "https://{region}.partner.example/" }, []string{"url"}},
		{"url template scheme", func(c *Config) { c.URL = "{data.scheme}://partner.example/" }, []string{"url"}},
		{"header template", func(c *Config) { c.Headers = map[string]string{"X-Region": "{data.}"} }, []string{"headers.X-Region"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(c)
			got := fieldPaths(c.Validate())
			for _, p := range tt.want {
				if !got[p] {
					t.Errorf("want a problem at %s; got %v", p, got)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("problems at %v, want exactly %v", got, tt.want)
			}
		})
	}
	c := validConfig()
	oauthConfig("https://auth.example/token")(c)
	c.URL = "https://{data.account.region}.partner.example/hooks/{tenant:-none}"
	c.Headers = map[string]string{"X-Region": "{data.account.region:-eu}"}
	c.Batch = &Batch{}
	c.TLS = &TLS{CA: "/etc/ca.pem"}
	if err := c.Validate(); err != nil {
		t.Fatalf("a full receiver config: %v", err)
	}
}

func TestReceiverSecretsSealedAndMasked(t *testing.T) {
	secrets := sinks.SecretsOf(NewConfig())
	for _, want := range []string{"secrets", "auth.oauth2_client_credentials.client_secret", "auth.basic.password",
		"auth.bearer.token", "tls.client_key"} {
		found := false
		for _, p := range secrets {
			found = found || p == want
		}
		if !found {
			t.Errorf("%s is not secret (secrets: %v)", want, secrets)
		}
	}
	c := validConfig()
	oauthConfig("https://auth.example/token")(c)
	c.Auth.OAuth2.ClientSecret = "client-secret-value-1234"
	c.TLS = &TLS{ClientCert: "/etc/c.pem", ClientKey: "-----BEGIN PRIVATE KEY-----\nabcdefgh\n-----END PRIVATE KEY-----"}
	masked := sinks.MaskSecrets(c)
	b, _ := json.Marshal(masked)
	if strings.Contains(string(b), "client-secret-value") || strings.Contains(string(b), "abcdefgh") {
		t.Fatalf("masked config shows a secret: %s", b)
	}
	if !strings.Contains(string(b), "/etc/c.pem") {
		t.Fatalf("masked config hides a certificate path: %s", b)
	}
	vals := sinks.SecretValues(c)
	if len(vals) != 3 { // the signing secret, client_secret, client_key
		t.Fatalf("secret values %d, want 3", len(vals))
	}
}
