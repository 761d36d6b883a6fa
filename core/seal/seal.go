// Package seal encrypts secrets at rest (AES-256-GCM) under store.encryption_key.
//
// A sealed value is the text "sealed:v1:" followed by base64 of nonce||ciphertext, so it can sit in JSON where
// the plaintext was. A Box holds the current key and any previous keys: it seals with the current key and
// opens with whichever key sealed the value, which is how the key is rotated (see README, "Operating Sluice").
//
// May import: nothing of Sluice's.
// Must not import: net/http.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

const prefix = "sealed:v1:"

// ErrNoKey is returned by Seal when no store.encryption_key is configured.
var ErrNoKey = errors.New("store.encryption_key is not set: Sluice encrypts destination secrets at rest and needs a key (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)")

// Box seals and opens secrets.
type Box struct {
	aeads []cipher.AEAD // current first
}

// New returns a Box over 32-byte keys, the current one first. No keys gives a Box that can open nothing and
// refuses to seal (ErrNoKey).
func New(keys [][]byte) (*Box, error) {
	b := &Box{}
	for i, k := range keys {
		if len(k) != 32 {
			return nil, fmt.Errorf("encryption key %d is %d bytes; AES-256 needs 32", i, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		b.aeads = append(b.aeads, aead)
	}
	return b, nil
}

// HasKey reports whether the Box can seal.
func (b *Box) HasKey() bool { return b != nil && len(b.aeads) > 0 }

// IsSealed reports whether s is a sealed value.
func IsSealed(s string) bool { return strings.HasPrefix(s, prefix) }

// Seal encrypts plaintext under the current key.
func (b *Box) Seal(plaintext string) (string, error) {
	if !b.HasKey() {
		return "", ErrNoKey
	}
	aead := b.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := aead.Seal(nonce, nonce, []byte(plaintext), []byte(prefix))
	return prefix + base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts a sealed value. stale reports that it was sealed under a previous key (re-seal it).
func (b *Box) Open(sealed string) (plaintext string, stale bool, err error) {
	if !IsSealed(sealed) {
		return "", false, errors.New("not a sealed value")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, prefix))
	if err != nil {
		return "", false, fmt.Errorf("sealed value is corrupt: %w", err)
	}
	if !b.HasKey() {
		return "", false, ErrNoKey
	}
	for i, aead := range b.aeads {
		if len(raw) < aead.NonceSize() {
			break
		}
		pt, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(prefix))
		if err == nil {
			return string(pt), i > 0, nil
		}
	}
	return "", false, errors.New("no configured key opens this secret: was store.encryption_key changed without listing the old key in store.previous_encryption_keys?")
}
