package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// PortalClaims is what a portal link grants: a console session confined to Tenant (read-only if asked)
// opened before Expires.
type PortalClaims struct {
	Tenant   string    `json:"t"`
	ReadOnly bool      `json:"ro,omitempty"`
	Expires  time.Time `json:"-"`
	Exp      int64     `json:"exp"`
}

// Errors of OpenPortal.
var (
	ErrPortalMalformed = errors.New("the token is malformed")
	ErrPortalSignature = errors.New("the signature does not match (signed by another server, or before a restart)")
	ErrPortalExpired   = errors.New("the link has expired")
)

// PortalKey derives the portal link signing key from store.encryption_key, so links survive restarts and
// work on every node sharing that key. Without one the console makes a random key per process.
func PortalKey(encryptionKey []byte) []byte {
	m := hmac.New(sha256.New, encryptionKey)
	m.Write([]byte("sluice console portal links v1"))
	return m.Sum(nil)
}

// SignPortal returns the token of a portal link: base64url(JSON claims) "." base64url(HMAC-SHA256).
func SignPortal(secret []byte, c PortalClaims) string {
	c.Exp = c.Expires.Unix()
	body, _ := json.Marshal(c)
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac(secret, payload))
}

func mac(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// OpenPortal checks a portal token's signature and expiry and returns its claims.
func OpenPortal(secret []byte, token string, now time.Time) (PortalClaims, error) {
	payload, sig, ok := strings.Cut(token, ".")
	if !ok || payload == "" || len(token) > 4096 {
		return PortalClaims{}, ErrPortalMalformed
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return PortalClaims{}, ErrPortalMalformed
	}
	if !hmac.Equal(got, mac(secret, payload)) {
		return PortalClaims{}, ErrPortalSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return PortalClaims{}, ErrPortalMalformed
	}
	var c PortalClaims
	if err := json.Unmarshal(body, &c); err != nil || c.Tenant == "" {
		return PortalClaims{}, ErrPortalMalformed
	}
	c.Expires = time.Unix(c.Exp, 0)
	if !now.Before(c.Expires) {
		return PortalClaims{}, ErrPortalExpired
	}
	return c, nil
}
