package webhook

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// Auth is a destination's `auth` block: exactly one of its three ways to authenticate to the receiver.
type Auth struct {
	OAuth2 *OAuth2 `yaml:"oauth2_client_credentials,omitempty"`
	Basic  *Basic  `yaml:"basic,omitempty"`
	Bearer *Bearer `yaml:"bearer,omitempty"`
}

// OAuth2 is the OAuth 2.0 client-credentials grant (RFC 6749 §4.4): Sluice fetches an access token from
// token_url, caches it until shortly before it expires, and sends it as `Authorization: Bearer`.
type OAuth2 struct {
	TokenURL     string            `yaml:"token_url" secret:"url" desc:"the authorization server's token endpoint (http or https URL; required)"`
	ClientID     string            `yaml:"client_id" desc:"the client id Sluice authenticates as (required)"`
	ClientSecret string            `yaml:"client_secret" secret:"true" desc:"the client secret (required)"`
	Scopes       []string          `yaml:"scopes,omitempty" desc:"scopes to ask for"`
	Audience     string            `yaml:"audience,omitempty" desc:"audience parameter of the token request (Auth0, Okta and others need it)"`
	ExtraParams  map[string]string `yaml:"extra_params,omitempty" desc:"more form parameters of the token request"`
}

// Basic is HTTP basic authentication.
type Basic struct {
	Username string `yaml:"username" desc:"basic auth user name (required)"`
	Password string `yaml:"password" secret:"true" desc:"basic auth password"`
}

// Bearer is a static bearer token.
type Bearer struct {
	Token string `yaml:"token" secret:"true" desc:"sent as Authorization: Bearer TOKEN (required)"`
}

// validate reports the block's problems under "auth".
func (a *Auth) validate(add func(path, format string, args ...any)) {
	var set []string
	if a.OAuth2 != nil {
		set = append(set, "oauth2_client_credentials")
	}
	if a.Basic != nil {
		set = append(set, "basic")
	}
	if a.Bearer != nil {
		set = append(set, "bearer")
	}
	switch len(set) {
	case 0:
		add("auth", "give one of oauth2_client_credentials, basic or bearer (or remove auth)")
		return
	case 1:
	default:
		add("auth", "has %s: give exactly one of oauth2_client_credentials, basic or bearer", strings.Join(set, " and "))
		return
	}
	switch {
	case a.OAuth2 != nil:
		o, p := a.OAuth2, "auth.oauth2_client_credentials."
		switch u, err := url.Parse(o.TokenURL); {
		case o.TokenURL == "":
			add(p+"token_url", "is required: the token endpoint, such as https://auth.example.com/oauth2/token")
		case err != nil:
			add(p+"token_url", "not a URL (%v)", classify.URLErrMsg(err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "":
			add(p+"token_url", "must be an absolute http or https URL, such as https://auth.example.com/oauth2/token")
		}
		if o.ClientID == "" {
			add(p+"client_id", "is required")
		}
		if o.ClientSecret == "" {
			add(p+"client_secret", "is required; use ${NAME} to read it from the environment")
		}
		for _, k := range slices.Sorted(maps.Keys(o.ExtraParams)) {
			switch k {
			case "grant_type", "client_id", "client_secret", "scope":
				add(p+"extra_params."+k, "may not be set: Sluice sends it from the fields above")
			}
		}
	case a.Basic != nil:
		if a.Basic.Username == "" {
			add("auth.basic.username", "is required")
		}
		if strings.Contains(a.Basic.Username, ":") {
			add("auth.basic.username", "may not contain ':' (basic auth separates user and password with it)")
		}
	case a.Bearer != nil:
		if a.Bearer.Token == "" {
			add("auth.bearer.token", "is required; use ${NAME} to read it from the environment")
		} else if !validHeaderValue(a.Bearer.Token) {
			add("auth.bearer.token", "may not contain control characters such as newlines")
		}
	}
}

// authorizer sets a request's credentials. A refreshable one (OAuth2) can drop a token the receiver refused.
type authorizer interface {
	// apply sets the Authorization header; it returns the credential used, for invalidate.
	apply(ctx context.Context, req *http.Request) (used any, err error)
	// invalidate drops used if it is still the cached credential; it reports whether a retry may help.
	invalidate(used any) bool
}

type basicAuth struct{ user, pass string }

func (b basicAuth) apply(_ context.Context, req *http.Request) (any, error) {
	req.SetBasicAuth(b.user, b.pass)
	return nil, nil
}
func (basicAuth) invalidate(any) bool { return false }

type bearerAuth struct{ value string }

func (b bearerAuth) apply(_ context.Context, req *http.Request) (any, error) {
	req.Header.Set("Authorization", b.value)
	return nil, nil
}
func (bearerAuth) invalidate(any) bool { return false }

// tokenMargin is how long before its expiry a cached token is replaced, so a token never expires in flight.
const tokenMargin = 30 * time.Second

// tokenSource fetches client-credentials tokens through the sink's guarded client and caches one. Concurrent
// attempts that find no fresh token share one fetch; no lock is held while it runs.
type tokenSource struct {
	cfg     clientcredentials.Config
	client  *http.Client
	timeout time.Duration
	now     func() time.Time

	mu     sync.Mutex
	tok    *oauth2.Token
	flight *tokenFlight
}

type tokenFlight struct {
	done chan struct{}
	tok  *oauth2.Token
	err  error
}

func newTokenSource(o *OAuth2, client *http.Client, timeout time.Duration, now func() time.Time) *tokenSource {
	params := url.Values{}
	for k, v := range o.ExtraParams {
		params.Set(k, v)
	}
	if o.Audience != "" {
		params.Set("audience", o.Audience)
	}
	return &tokenSource{
		cfg: clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, TokenURL: o.TokenURL,
			Scopes: o.Scopes, EndpointParams: params},
		client: client, timeout: timeout, now: now,
	}
}

func (ts *tokenSource) apply(ctx context.Context, req *http.Request) (any, error) {
	tok, err := ts.token(ctx)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	return tok, nil
}

func (ts *tokenSource) invalidate(used any) bool {
	tok, ok := used.(*oauth2.Token)
	if !ok {
		return false
	}
	ts.mu.Lock()
	if ts.tok == tok {
		ts.tok = nil
	}
	ts.mu.Unlock()
	return true
}

// token returns the cached token while it is fresh, else fetches one.
func (ts *tokenSource) token(ctx context.Context) (*oauth2.Token, error) {
	ts.mu.Lock()
	if t := ts.tok; t != nil && (t.Expiry.IsZero() || ts.now().Before(t.Expiry.Add(-tokenMargin))) {
		ts.mu.Unlock()
		return t, nil
	}
	f := ts.flight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		ts.flight = f
		ts.mu.Unlock()
		f.tok, f.err = ts.fetch(ctx)
		ts.mu.Lock()
		if f.err == nil {
			ts.tok = f.tok
		}
		ts.flight = nil
		ts.mu.Unlock()
		close(f.done)
		return f.tok, f.err
	}
	ts.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fetch asks the token endpoint for a new token. Its failures are retryable attempt errors (the receiver was
// never asked), except a guard refusal, which no retry fixes.
func (ts *tokenSource) fetch(parent context.Context) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.WithValue(parent, oauth2.HTTPClient, ts.client), ts.timeout)
	defer cancel()
	tok, err := ts.cfg.Token(ctx)
	if err == nil {
		if tok.AccessToken == "" {
			return nil, sinks.Retryable(errors.New("oauth2 token endpoint: answered without an access_token"), 0)
		}
		return tok, nil
	}
	if perr := parent.Err(); perr != nil {
		return nil, perr // the dispatcher gave up on the attempt: not the endpoint's failure
	}
	if refused := classify.Refused("oauth2 token endpoint", err); refused != nil {
		return nil, refused
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("http %d", re.Response.StatusCode)
		if re.ErrorCode != "" {
			msg += " " + re.ErrorCode
		}
		if re.ErrorDescription != "" {
			msg += ": " + classify.Clip(re.ErrorDescription, 200)
		}
		if re.Response.StatusCode == http.StatusUnauthorized || re.ErrorCode == "invalid_client" {
			msg += "; check client_id and client_secret"
		}
		return nil, sinks.Retryable(fmt.Errorf("oauth2 token endpoint: %s", msg), 0)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return nil, sinks.Retryable(fmt.Errorf("oauth2 token endpoint: %w", err), 0)
}
