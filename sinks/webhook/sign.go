package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SecretPrefix starts every Standard Webhooks secret.
const SecretPrefix = "whsec_"

// Header names of the Standard Webhooks wire format.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Secret key sizes accepted for `signing: standard`, in decoded bytes (the Standard Webhooks spec's range).
const (
	minKeyBytes = 24
	maxKeyBytes = 64
)

// Verification failures. The errors VerifyStandard and VerifyHex return wrap one of these.
var (
	ErrMissingHeader = errors.New("missing header")
	ErrTooOld        = errors.New("timestamp too old")
	ErrTooNew        = errors.New("timestamp too new")
	ErrNoMatch       = errors.New("no matching signature")
)

// NewSecret returns a new signing secret: "whsec_" + base64 of 32 random bytes.
func NewSecret() (string, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return "", fmt.Errorf("webhook: random source: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key[:]), nil
}

// ValidateSecret reports whether secret is a usable `signing: standard` secret: "whsec_" + standard base64 of
// 24–64 bytes. The error says what is wrong and never contains the secret.
func ValidateSecret(secret string) error {
	if secret == "" {
		return errors.New("is empty")
	}
	_, err := decodeSecret(secret)
	return err
}

// decodeSecret returns the HMAC key of a standard secret. Its errors never contain the secret.
func decodeSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, errors.New("does not start with " + SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("the part after " + SecretPrefix + " is not valid base64")
	}
	if len(key) < minKeyBytes || len(key) > maxKeyBytes {
		return nil, fmt.Errorf("decodes to %d bytes, not %d–%d", len(key), minKeyBytes, maxKeyBytes)
	}
	return key, nil
}

func decodeSecrets(secrets []string) ([][]byte, error) {
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := decodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secrets[%d]: %w", i, err)
		}
		keys[i] = k
	}
	return keys, nil
}

// SignStandard returns the webhook-signature header value: "v1,<base64 HMAC-SHA256(key, id.ts.body)>" for each
// secret, newest first, separated by spaces. Each secret is "whsec_" + base64 of the key.
func SignStandard(secrets []string, id string, ts int64, body []byte) (string, error) {
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return "", fmt.Errorf("webhook: sign: %w", err)
	}
	return string(appendStandard(nil, keys, id, ts, body)), nil
}

// appendStandard is SignStandard with the keys already decoded.
func appendStandard(dst []byte, keys [][]byte, id string, ts int64, body []byte) []byte {
	for i, key := range keys {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = appendV1(dst, hmac.New(sha256.New, key), id, ts, body)
	}
	return dst
}

func appendV1(dst []byte, mac hash.Hash, id string, ts int64, body []byte) []byte {
	var sum [sha256.Size]byte
	var tsBuf [20]byte
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(tsBuf[:0], ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	dst = append(dst, "v1,"...)
	return base64.StdEncoding.AppendEncode(dst, mac.Sum(sum[:0]))
}

// signer signs on the send path. Keying an HMAC costs two SHA-256 blocks and several allocations; a keyed
// HMAC that is Reset starts again from its saved keyed state, so each secret keeps a pool of them, each with a
// scratch buffer for the signed prefix and the sum (a slice handed to hash.Hash escapes, so a local one would
// be allocated on every request).
type signer struct {
	pools []sync.Pool
	// fp identifies the keys (SHA-256 over them, in order) in the process-wide cache of recent signatures.
	fp [sha256.Size]byte
}

type keyedMAC struct {
	mac     hash.Hash
	scratch []byte
}

func newSigner(keys [][]byte) *signer {
	s := &signer{pools: make([]sync.Pool, len(keys))}
	fp := sha256.New()
	for _, k := range keys {
		fp.Write(strconv.AppendInt(nil, int64(len(k)), 10))
		fp.Write(k)
	}
	fp.Sum(s.fp[:0])
	for i, k := range keys {
		s.pools[i].New = func() any { return &keyedMAC{mac: hmac.New(sha256.New, k), scratch: make([]byte, 0, 128)} }
	}
	return s
}

func (s *signer) append(dst []byte, id string, ts int64, body []byte) []byte {
	for i := range s.pools {
		if i > 0 {
			dst = append(dst, ' ')
		}
		km := s.pools[i].Get().(*keyedMAC)
		km.mac.Reset()
		// id.ts. in one write, then the body; the same bytes appendV1 hashes.
		b := append(km.scratch[:0], id...)
		b = append(b, '.')
		b = strconv.AppendInt(b, ts, 10)
		b = append(b, '.')
		km.mac.Write(b)
		km.mac.Write(body)
		b = km.mac.Sum(b[:0])
		dst = append(dst, "v1,"...)
		dst = base64.StdEncoding.AppendEncode(dst, b)
		if cap(b) <= 1<<10 {
			km.scratch = b[:0]
		}
		s.pools[i].Put(km)
	}
	return dst
}

// Destinations that share a secret (a fan-out to several endpoints of one receiver) sign the same event id,
// timestamp and body alike: the signature is made once and the others find it in sigCache, a fixed table of
// recent signatures indexed by a hash of the id. A slot holds the body it was computed over and is used only
// on an exact match of keys, id, timestamp and body, so a collision or a stale slot costs a computation, never
// a wrong signature. Bodies up to sigCacheBody bytes are kept, which bounds what the table holds.
const (
	sigSlots     = 1024
	sigCacheBody = 4 << 10
)

type sigEntry struct {
	fp   [sha256.Size]byte
	id   string
	ts   int64
	body []byte
	sig  string
}

var (
	sigCache [sigSlots]atomic.Pointer[sigEntry]
	sigSeed  = maphash.MakeSeed()
)

// header returns the webhook-signature value for one request. body must not change afterwards (it is kept
// in the cache for comparison).
func (s *signer) header(id string, ts int64, body []byte) string {
	if len(body) > sigCacheBody {
		var buf [2 * 48]byte
		return string(s.append(buf[:0], id, ts, body))
	}
	slot := &sigCache[maphash.String(sigSeed, id)%sigSlots]
	if e := slot.Load(); e != nil && e.ts == ts && e.id == id && e.fp == s.fp && bytes.Equal(e.body, body) {
		return e.sig
	}
	var buf [2 * 48]byte
	sig := string(s.append(buf[:0], id, ts, body))
	slot.Store(&sigEntry{fp: s.fp, id: id, ts: ts, body: body, sig: sig})
	return sig
}

// SignHex returns the value for `signing: hmac-sha256-hex`: "v0=" followed by the lowercase hex
// HMAC-SHA256(secret, body) of each secret, comma separated. The key is the secret string exactly as
// configured (no whsec_ decoding), which is what such receivers compute.
func SignHex(secrets []string, body []byte) string {
	var sum [sha256.Size]byte
	dst := make([]byte, 0, 3+len(secrets)*(2*sha256.Size+1))
	dst = append(dst, "v0="...)
	for i, s := range secrets {
		if i > 0 {
			dst = append(dst, ',')
		}
		mac := hmac.New(sha256.New, []byte(s))
		mac.Write(body)
		dst = hex.AppendEncode(dst, mac.Sum(sum[:0]))
	}
	return string(dst)
}

// VerifyStandard checks a Standard Webhooks request: the webhook-id, webhook-timestamp and webhook-signature
// headers must be present, the timestamp within tolerance of now (tolerance <= 0 skips that check, for
// replaying stored requests), and one of the signatures must match one of the secrets. Comparisons are
// constant-time.
func VerifyStandard(secrets []string, headers http.Header, body []byte, tolerance time.Duration) error {
	id, tsText, sigs := headers.Get(HeaderID), headers.Get(HeaderTimestamp), headers.Get(HeaderSignature)
	for _, h := range [...]struct{ name, value string }{{HeaderID, id}, {HeaderTimestamp, tsText},
		{HeaderSignature, sigs}} {
		if h.value == "" {
			return fmt.Errorf("%w %s", ErrMissingHeader, h.name)
		}
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not unix seconds", HeaderTimestamp)
	}
	if tolerance > 0 {
		now := time.Now().Unix()
		tol := int64(tolerance / time.Second)
		switch {
		case ts < now-tol:
			return fmt.Errorf("%w: %s is %ds in the past, more than the %v allowed", ErrTooOld,
				HeaderTimestamp, now-ts, tolerance)
		case ts > now+tol:
			return fmt.Errorf("%w: %s is %ds in the future, more than the %v allowed", ErrTooNew,
				HeaderTimestamp, ts-now, tolerance)
		}
	}
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("no secret to verify with")
	}
	var want [][]byte
	for _, k := range keys {
		sig := appendStandard(nil, [][]byte{k}, id, ts, body)
		want = append(want, sig[len("v1,"):])
	}
	seen := 0
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			// Other versions (v1a: asymmetric) are not ours to check; the spec says to skip them.
			continue
		}
		seen++
		for _, w := range want {
			if hmac.Equal([]byte(sig), w) {
				return nil
			}
		}
	}
	if seen == 0 {
		return fmt.Errorf("%w: %s has no v1 entry", ErrNoMatch, HeaderSignature)
	}
	return fmt.Errorf("%w: none of %d v1 signatures matches any of %d secrets", ErrNoMatch, seen, len(keys))
}

// VerifyHex checks a `signing: hmac-sha256-hex` header value ("v0=<hex>[,<hex>…]") against the body with each
// secret used as is. Comparisons are constant-time.
func VerifyHex(secrets []string, header string, body []byte) error {
	if header == "" {
		return fmt.Errorf("%w: no signature", ErrMissingHeader)
	}
	rest, ok := strings.CutPrefix(header, "v0=")
	if !ok {
		return fmt.Errorf("%w: the signature does not start with v0=", ErrNoMatch)
	}
	if len(secrets) == 0 {
		return errors.New("no secret to verify with")
	}
	var sum [sha256.Size]byte
	want := make([][]byte, len(secrets))
	for i, s := range secrets {
		mac := hmac.New(sha256.New, []byte(s))
		mac.Write(body)
		want[i] = hex.AppendEncode(nil, mac.Sum(sum[:0]))
	}
	n := 0
	for sig := range strings.SplitSeq(rest, ",") {
		n++
		got := []byte(strings.ToLower(strings.TrimSpace(sig)))
		for _, w := range want {
			if hmac.Equal(got, w) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: none of %d signatures matches any of %d secrets", ErrNoMatch, n, len(secrets))
}
