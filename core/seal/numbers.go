package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// Numbers hides store positions (delivery ids, list cursors) from clients. The store numbers its rows in one
// sequence for every tenant, so a plain number would tell a tenant how many rows other tenants made between two
// of its own (DESIGN §9: nothing in an answer reveals another tenant's counts). With store.encryption_key set,
// a number travels as one AES block (the number and a check of its kind) under a key derived from it: 22
// characters of base64url that name the same row every time, on every node, and reveal nothing of the
// sequence. Every key of the ring opens what it hid, so rotating store.encryption_key keeps old ids working
// while the old key stays listed. Without a key, numbers stay plain decimals: an install without tenants
// has no one to hide them from, and multi-tenant installs need the key anyway (for sealed secrets and portal
// links).
type Numbers struct {
	blocks []cipher.Block // current first
}

// Kinds of hidden numbers: a number hidden as one kind never reveals as another.
const (
	KindDelivery byte = 'd'
	KindCursor   byte = 'c'
)

// numbersLabel derives the numbers' keys from the encryption keys, so they are never the sealing keys.
const numbersLabel = "sluice numbers v1"

// NewNumbers returns Numbers over the encryption keys (current first). No keys: numbers stay plain.
func NewNumbers(keys [][]byte) *Numbers {
	n := &Numbers{}
	for _, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(numbersLabel))
		block, err := aes.NewCipher(mac.Sum(nil)[:16])
		if err != nil {
			panic(err) // a 16-byte key never fails
		}
		n.blocks = append(n.blocks, block)
	}
	return n
}

// check fills a block's second half: the kind and a fixed text, which a block not hidden by these keys (or
// hidden as another kind) fails to decrypt to.
func check(b []byte, kind byte) {
	copy(b[8:], "sluice\x00")
	b[15] = kind
}

// Keyed reports whether numbers are hidden (an encryption key is set).
func (ns *Numbers) Keyed() bool { return ns != nil && len(ns.blocks) > 0 }

// Hide returns n as clients see it.
func (ns *Numbers) Hide(n int64, kind byte) string {
	if ns == nil || len(ns.blocks) == 0 {
		return strconv.FormatInt(n, 10)
	}
	var b [aes.BlockSize]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n))
	check(b[:], kind)
	ns.blocks[0].Encrypt(b[:], b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Reveal returns the number s hides; false when s is not a positive number of this kind that these keys hid
// (a client's guess is then simply an id that does not exist).
func (ns *Numbers) Reveal(s string, kind byte) (int64, bool) {
	if ns == nil || len(ns.blocks) == 0 {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n > 0
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) != aes.BlockSize {
		return 0, false
	}
	var want [aes.BlockSize]byte
	check(want[:], kind)
	var b [aes.BlockSize]byte
	for _, block := range ns.blocks {
		block.Decrypt(b[:], raw)
		if hmac.Equal(b[8:], want[8:]) {
			n := int64(binary.BigEndian.Uint64(b[:8]))
			return n, n > 0
		}
	}
	return 0, false
}
