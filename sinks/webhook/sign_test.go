package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Fixed secrets so failures are reproducible; each is whsec_ + base64 of 32 bytes.
const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="
	secretB = "whsec_c2x1aWNlLXRlc3Qtc2Vjb25kLXNlY3JldC0zMmJ5dGU="
)

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret()
	if a == b {
		t.Fatal("two secrets are equal")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	if !strings.HasPrefix(a, "whsec_") || err != nil || len(key) != 32 {
		t.Fatalf("secret %q: want whsec_ + base64 of 32 bytes (err %v, %d bytes)", a, err, len(key))
	}
	// The official library must accept it as a key.
	if _, err := standardwebhooks.NewWebhook(a); err != nil {
		t.Fatal(err)
	}
}

func TestValidateSecret(t *testing.T) {
	for _, tt := range []struct{ secret, msg string }{
		{secretA, ""},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 24)), ""},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 64)), ""},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)), "decodes to 23 bytes, not 24–64"},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)), "decodes to 65 bytes"},
		{"whsec_" + base64.RawStdEncoding.EncodeToString(make([]byte, 32)), "not valid base64"},
		{"", "is empty"},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=", "does not start with whsec_"},
	} {
		err := ValidateSecret(tt.secret)
		if tt.msg == "" && err != nil || tt.msg != "" && (err == nil || !strings.Contains(err.Error(), tt.msg)) {
			t.Errorf("ValidateSecret(%q) = %v, want %q", tt.secret, err, tt.msg)
		}
	}
}

func TestFixtureSecretsAreValid(t *testing.T) {
	for _, s := range []string{secretA, secretB} {
		if _, err := decodeSecret(s); err != nil {
			t.Fatalf("fixture secret: %v", err)
		}
	}
}

func officialHeaders(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	return h
}

// The official Standard Webhooks library is the independent verifier: with one secret, and with two where
// each secret alone must verify (the rotation overlap).
func TestSignStandardOfficialLibrary(t *testing.T) {
	body := []byte(`{"type":"case.created","timestamp":"2026-01-02T03:04:05Z","data":{"a":1}}`)
	ts := time.Now().Unix()
	for _, tt := range []struct {
		name    string
		secrets []string
	}{
		{"one secret", []string{secretA}},
		{"two secrets", []string{secretA, secretB}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := SignStandard(tt.secrets, "evt_1", ts, body)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(strings.Fields(sig)); got != len(tt.secrets) {
				t.Fatalf("signature %q has %d entries, want %d", sig, got, len(tt.secrets))
			}
			for _, s := range tt.secrets {
				wh, err := standardwebhooks.NewWebhook(s)
				if err != nil {
					t.Fatal(err)
				}
				if err := wh.Verify(body, officialHeaders("evt_1", ts, sig)); err != nil {
					t.Fatalf("official library rejects the signature for one of the secrets: %v", err)
				}
				// A changed body, id or timestamp must not verify.
				if wh.Verify(append(body, ' '), officialHeaders("evt_1", ts, sig)) == nil ||
					wh.Verify(body, officialHeaders("evt_2", ts, sig)) == nil ||
					wh.Verify(body, officialHeaders("evt_1", ts+1, sig)) == nil {
					t.Fatal("official library accepts a tampered request")
				}
			}
			other, _ := NewSecret()
			wh, _ := standardwebhooks.NewWebhook(other)
			if wh.Verify(body, officialHeaders("evt_1", ts, sig)) == nil {
				t.Fatal("an unrelated secret verifies")
			}
		})
	}
}

// And the other way round: what the official library signs, VerifyStandard accepts.
func TestVerifyStandardAcceptsOfficialSignature(t *testing.T) {
	wh, _ := standardwebhooks.NewWebhook(secretB)
	body := []byte(`{"x":true}`)
	now := time.Now()
	sig, err := wh.Sign("msg_1", now, body)
	if err != nil {
		t.Fatal(err)
	}
	// The receiver has rotated: secretA is new, secretB still accepted.
	if err := VerifyStandard([]string{secretA, secretB}, officialHeaders("msg_1", now.Unix(), sig), body,
		5*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// The pooled signer of the send path gives what SignStandard gives, also when used again.
func TestSignerMatchesSignStandard(t *testing.T) {
	keys, _ := decodeSecrets([]string{secretA, secretB})
	sg := newSigner(keys)
	for i := 0; i < 3; i++ {
		body := []byte(strconv.Itoa(i))
		want, _ := SignStandard([]string{secretA, secretB}, "id", int64(i), body)
		if got := string(sg.append(nil, "id", int64(i), body)); got != want {
			t.Fatalf("round %d: signer %s, SignStandard %s", i, got, want)
		}
	}
}

// Signers of the same secret share signatures through the cache; one whose keys, id, timestamp or body differ
// in any way gets its own. Every answer is what SignStandard computes.
func TestSignerCacheNeverMixesSignatures(t *testing.T) {
	keysA, _ := decodeSecrets([]string{secretA})
	keysAB, _ := decodeSecrets([]string{secretA, secretB})
	keysB, _ := decodeSecrets([]string{secretB})
	signers := map[string]*signer{"a1": newSigner(keysA), "a2": newSigner(keysA), "ab": newSigner(keysAB), "b": newSigner(keysB)}
	secrets := map[string][]string{"a1": {secretA}, "a2": {secretA}, "ab": {secretA, secretB}, "b": {secretB}}
	bodies := [][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`), bytes.Repeat([]byte("x"), sigCacheBody+1)}
	for round := 0; round < 2; round++ {
		for _, name := range []string{"a1", "a2", "ab", "b"} {
			for _, id := range []string{"evt_1", "evt_2"} {
				for ts := int64(100); ts < 102; ts++ {
					for _, body := range bodies {
						want, _ := SignStandard(secrets[name], id, ts, body)
						if got := signers[name].header(id, ts, body); got != want {
							t.Fatalf("%s %s %d body %.10q: got %s, want %s", name, id, ts, body, got, want)
						}
					}
				}
			}
		}
	}
}

func TestSignStandardBadSecret(t *testing.T) {
	_, err := SignStandard([]string{secretA, "whsec_%%%"}, "id", 1, nil)
	if err == nil || !strings.Contains(err.Error(), "secrets[1]") || strings.Contains(err.Error(), "%%%") {
		t.Fatalf("error %v: want one naming secrets[1] without the secret", err)
	}
}

func TestVerifyStandard(t *testing.T) {
	body := []byte(`{"a":1}`)
	now := time.Now().Unix()
	sign := func(ts int64, secrets ...string) http.Header {
		sig, err := SignStandard(secrets, "evt_1", ts, body)
		if err != nil {
			t.Fatal(err)
		}
		return officialHeaders("evt_1", ts, sig)
	}
	without := func(h http.Header, name string) http.Header { h.Del(name); return h }
	withSig := func(h http.Header, sig string) http.Header { h.Set(HeaderSignature, sig); return h }

	tests := []struct {
		name    string
		secrets []string
		headers http.Header
		body    []byte
		want    error  // errors.Is target; nil means verified
		msg     string // substring of the error
	}{
		{"valid", []string{secretA}, sign(now, secretA), body, nil, ""},
		{"second of two secrets", []string{secretA, secretB}, sign(now, secretB), body, nil, ""},
		{"signed with two, verify with older", []string{secretB}, sign(now, secretA, secretB), body, nil, ""},
		{"missing id", []string{secretA}, without(sign(now, secretA), HeaderID), body, ErrMissingHeader, "webhook-id"},
		{"missing timestamp", []string{secretA}, without(sign(now, secretA), HeaderTimestamp), body,
			ErrMissingHeader, "webhook-timestamp"},
		{"missing signature", []string{secretA}, without(sign(now, secretA), HeaderSignature), body,
			ErrMissingHeader, "webhook-signature"},
		{"too old", []string{secretA}, sign(now-600, secretA), body, ErrTooOld, "in the past"},
		{"too new", []string{secretA}, sign(now+600, secretA), body, ErrTooNew, "in the future"},
		{"wrong secret", []string{secretB}, sign(now, secretA), body, ErrNoMatch, "none of 1 v1 signatures"},
		{"tampered body", []string{secretA}, sign(now, secretA), []byte(`{"a":2}`), ErrNoMatch, ""},
		{"only other versions", []string{secretA}, withSig(sign(now, secretA), "v1a,abc v2,def"), body,
			ErrNoMatch, "no v1 entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyStandard(tt.secrets, tt.headers, tt.body, 5*time.Minute)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyStandard: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("VerifyStandard = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}

	if err := VerifyStandard([]string{secretA}, sign(now-3600, secretA), body, 0); err != nil {
		t.Fatalf("tolerance 0 should skip the timestamp check: %v", err)
	}
	h := sign(now, secretA)
	h.Set(HeaderTimestamp, "soon")
	if err := VerifyStandard([]string{secretA}, h, body, time.Minute); err == nil ||
		!strings.Contains(err.Error(), "not unix seconds") {
		t.Fatalf("bad timestamp: %v", err)
	}
}

func hexHMAC(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestSignHex(t *testing.T) {
	body := []byte(`{"a":1}`)
	if got, want := SignHex([]string{"s3cret"}, body), "v0="+hexHMAC("s3cret", body); got != want {
		t.Fatalf("SignHex = %s, want %s", got, want)
	}
	// The key is the secret exactly as configured, whsec_ prefix and all.
	got := SignHex([]string{secretA, "other"}, body)
	if want := "v0=" + hexHMAC(secretA, body) + "," + hexHMAC("other", body); got != want {
		t.Fatalf("SignHex two secrets = %s, want %s", got, want)
	}
	if got != strings.ToLower(got) {
		t.Fatal("hex is not lowercase")
	}
}

func TestVerifyHex(t *testing.T) {
	body := []byte("payload")
	sig := SignHex([]string{"new", "old"}, body)
	for _, secrets := range [][]string{{"new"}, {"old"}, {"x", "old"}} {
		if err := VerifyHex(secrets, sig, body); err != nil {
			t.Errorf("VerifyHex(%v): %v", secrets, err)
		}
	}
	if err := VerifyHex([]string{"new"}, strings.ToUpper(sig[3:]), body); !errors.Is(err, ErrNoMatch) {
		t.Errorf("no v0= prefix: %v", err)
	}
	if err := VerifyHex([]string{"new"}, "v0="+strings.ToUpper(sig[3:]), body); err != nil {
		t.Errorf("uppercase hex should still match: %v", err)
	}
	if err := VerifyHex([]string{"wrong"}, sig, body); !errors.Is(err, ErrNoMatch) {
		t.Errorf("wrong secret: %v", err)
	}
	if err := VerifyHex([]string{"new"}, "", body); !errors.Is(err, ErrMissingHeader) {
		t.Errorf("empty header: %v", err)
	}
	if err := VerifyHex([]string{"new"}, sig, []byte("other")); !errors.Is(err, ErrNoMatch) {
		t.Errorf("tampered body: %v", err)
	}
}

// Header parsing must never panic, whatever a sender puts in the three headers.
func FuzzVerifyStandard(f *testing.F) {
	body := []byte(`{"a":1}`)
	now := time.Now().Unix()
	sig, _ := SignStandard([]string{secretA}, "evt_1", now, body)
	f.Add("evt_1", strconv.FormatInt(now, 10), sig, body)
	f.Add("", "", "", []byte{})
	f.Add("x", "-9223372036854775808", "v1,", []byte("x"))
	f.Add("x", "9223372036854775807", "v1,,, v1 v1a,xyz ,", []byte(nil))
	f.Add("id", "12", "   \t v1,AAAA==  v2", []byte("{"))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		_ = VerifyStandard([]string{secretA, secretB}, h, body, 5*time.Minute)
		_ = VerifyStandard([]string{secretA}, h, body, 0)
		_ = VerifyHex([]string{"k"}, sig, body)
	})
}

func BenchmarkSignStandard(b *testing.B) {
	body := []byte(`{"type":"case.status_updated","timestamp":"2026-01-02T03:04:05Z","data":{"case":{"id":"c-1","status":"approved"}}}`)
	keys, err := decodeSecrets([]string{secretA})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("send path", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		sg := newSigner(keys)
		var buf []byte
		for b.Loop() {
			buf = sg.append(buf[:0], "01936f6e-7a55-7cc6-9c2b-6f1c3a8f0a11", 1767323045, body)
		}
	})
	b.Run("SignStandard", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := SignStandard([]string{secretA}, "01936f6e-7a55-7cc6-9c2b-6f1c3a8f0a11", 1767323045,
				body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
