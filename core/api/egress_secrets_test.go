package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Webhook headers values and URL query values are secrets: masked for every key, sealed in the
// store, and kept when a client sends the masked form back.
func TestURLAndHeaderSecrets(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	var got []*http.Request
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Clone(context.Background()))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	const (
		pass, token, bearer = "hookpass-9c1e", "qtoken-5d2b", "Bearer hdr-secret-81f0"
	)
	// Userinfo is refused in a webhook url (auth.basic carries credentials); the query holds the secrets here.
	url := rcv.URL + "/x?token=" + token + "&sig=" + pass
	plain := []string{pass, token, "hdr-secret-81f0"}
	noPlain := func(what string, b []byte) {
		t.Helper()
		for _, s := range plain {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("%s shows %q: %s", what, s, b)
			}
		}
	}
	d := h.must(http.StatusCreated, "POST", "/v1/destinations", adminKey, map[string]any{"name": "u", "type": "webhook",
		"topics": []string{"case.*"}, "config": map[string]any{"url": url, "signing": "none",
			"headers": map[string]any{"Authorization": bearer}}}).json(t)
	id := d["id"].(string)

	r := h.must(http.StatusOK, "GET", "/v1/destinations/"+id, readerKey, nil)
	noPlain("reader GET", r.body)
	cfg := r.json(t)["config"].(map[string]any)
	maskedURL, _ := cfg["url"].(string)
	maskedHeader, _ := cfg["headers"].(map[string]any)["Authorization"].(string)
	if !strings.Contains(maskedURL, "/x?token=") || !strings.HasPrefix(maskedURL, rcv.URL+"/x?") || !strings.HasSuffix(maskedHeader, "81f0") {
		t.Fatalf("masked url %q, header %q", maskedURL, maskedHeader)
	}
	noPlain("list", h.must(http.StatusOK, "GET", "/v1/destinations", readerKey, nil).body)

	// The store row holds them sealed.
	recs, err := h.st.Destinations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Name == "u" {
			noPlain("the stored spec", rec.Spec)
			if !bytes.Contains(rec.Spec, []byte("sealed:v1:")) {
				t.Fatalf("the stored spec is not sealed: %s", rec.Spec)
			}
		}
	}

	// A PATCH that sends the masked forms back keeps the stored values: the receiver gets the originals.
	pr := h.must(http.StatusOK, "PATCH", "/v1/destinations/"+id, adminKey, map[string]any{
		"config": map[string]any{"url": maskedURL, "headers": map[string]any{"Authorization": maskedHeader}}})
	noPlain("patch", pr.body)
	// Had the masked form been stored, masking it again would show "****" where the user's last four were.
	if again := pr.json(t)["config"].(map[string]any)["url"]; again != maskedURL {
		t.Fatalf("after the PATCH the url shows %q, want %q", again, maskedURL)
	}
	h.publish(adminKey, caseEvent(nil))
	waitFor(t, "the delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	q := got[0]
	if q.URL.Query().Get("token") != token || q.URL.Query().Get("sig") != pass || q.Header.Get("Authorization") != bearer {
		t.Fatalf("after the PATCH the receiver got %s with Authorization %q", q.URL, q.Header.Get("Authorization"))
	}
}
