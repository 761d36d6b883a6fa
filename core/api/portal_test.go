package api_test

import (
	"net/http"
	"testing"
)

// TestPortalLinkAuthorization: only an admin key without a tenant makes portal links; the answers match the
// OpenAPI document (the harness checks each). The harness serves no console, so a valid request is refused
// with 409 rather than minting a link to nothing (the console's own tests open real links).
func TestPortalLinkAuthorization(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		key, body string
		status    int
		code      string
	}{
		{"", `{"tenant": "acme"}`, http.StatusUnauthorized, "unauthorized"},
		{readerKey, `{"tenant": "acme"}`, http.StatusForbidden, "forbidden"},
		{publisherKey, `{"tenant": "acme"}`, http.StatusForbidden, "forbidden"},
		{acmeKey, `{"tenant": "acme"}`, http.StatusForbidden, "forbidden"},
		{adminKey, `{}`, http.StatusBadRequest, "invalid_body"},
		{adminKey, `{"tenant": "acme", "ttl": "forever"}`, http.StatusBadRequest, "invalid_body"},
		{adminKey, `{"tenant": "acme", "colour": "red"}`, http.StatusBadRequest, ""},
		{adminKey, `{"tenant": "acme"}`, http.StatusConflict, "console_disabled"},
	} {
		r := h.do(http.MethodPost, "/v1/portal-links", c.key, c.body)
		if r.status != c.status {
			t.Errorf("key %q body %s: %d, want %d: %s", c.key, c.body, r.status, c.status, r.body)
			continue
		}
		if code, _ := r.err(t); c.code != "" && code != c.code {
			t.Errorf("key %q body %s: code %q, want %q", c.key, c.body, code, c.code)
		}
	}
}
