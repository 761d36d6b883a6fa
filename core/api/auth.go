package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/core/api/authz"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/intake"
)

// Principal is the key a request was made with (the one type authz decides on).
type Principal = authz.Principal

// Keys authenticates bearer keys. Keys are compared as SHA-256 digests in constant time, so neither the
// comparison time nor a timing side channel tells how much of a guess was right.
type Keys struct {
	keys []keyEntry
}

type keyEntry struct {
	sum [32]byte
	p   Principal
}

// NewKeys indexes the configured keys.
func NewKeys(ks []config.Key) *Keys {
	out := &Keys{}
	for _, k := range ks {
		out.keys = append(out.keys, keyEntry{sum: sha256.Sum256([]byte(k.Key)), p: Principal{Name: k.Name, Role: k.Role, Tenant: k.Tenant}})
	}
	return out
}

// Lookup returns the principal of a presented key.
func (k *Keys) Lookup(key string) (Principal, bool) {
	sum := sha256.Sum256([]byte(key))
	var found Principal
	ok := false
	for _, e := range k.keys {
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 {
			found, ok = e.p, true
		}
	}
	return found, ok
}

// require wraps h: a missing or unknown key is 401, a key whose role may not do this is 403. Authorization
// runs before any validation of the request.
func (s *Server) require(need string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		token, found := strings.CutPrefix(auth, "Bearer ")
		if !found || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeError(w, &problem{Status: http.StatusUnauthorized, Code: "unauthorized",
				Message: "missing API key: send Authorization: Bearer <key>"})
			return
		}
		p, ok := s.keys().Lookup(strings.TrimSpace(token))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`)
			writeError(w, &problem{Status: http.StatusUnauthorized, Code: "unauthorized",
				Message: "unknown API key"})
			return
		}
		if err := authz.Authorize(p, need); err != nil {
			writeError(w, &problem{Status: http.StatusForbidden, Code: "forbidden",
				Message: err.Error()})
			return
		}
		ctx := r.Context()
		if p.Tenant != "" {
			ctx = intake.WithTenant(ctx, p.Tenant)
		}
		h(w, r.WithContext(withPrincipal(ctx, p)))
	}
}
