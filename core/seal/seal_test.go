package seal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestSealOpenAndRotate(t *testing.T) {
	old, err := New([][]byte{key(1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := old.Seal("whsec_secret")
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(s) || strings.Contains(s, "whsec_secret") {
		t.Fatalf("sealed value %q shows the secret or lacks the prefix", s)
	}
	if s2, _ := old.Seal("whsec_secret"); s2 == s {
		t.Fatal("two seals of the same secret are equal: the nonce is not random")
	}
	pt, stale, err := old.Open(s)
	if err != nil || pt != "whsec_secret" || stale {
		t.Fatalf("Open = %q, %v, %v", pt, stale, err)
	}
	// Rotation: the new key first, the old one still listed.
	rotated, _ := New([][]byte{key(2), key(1)})
	pt, stale, err = rotated.Open(s)
	if err != nil || pt != "whsec_secret" || !stale {
		t.Fatalf("after rotation Open = %q, stale %v, %v", pt, stale, err)
	}
	// Without the old key the value cannot be opened, and the error says what to do.
	only, _ := New([][]byte{key(2)})
	if _, _, err := only.Open(s); err == nil || !strings.Contains(err.Error(), "previous_encryption_keys") {
		t.Fatalf("Open with the wrong key: %v", err)
	}
	// Tampering is detected.
	b := []byte(s)
	b[len(b)-3] ^= 1
	if _, _, err := old.Open(string(b)); err == nil {
		t.Fatal("a tampered value opened")
	}
}

func TestNoKey(t *testing.T) {
	b, _ := New(nil)
	if _, err := b.Seal("x"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Seal without a key: %v", err)
	}
	if _, err := New([][]byte{[]byte("short")}); err == nil {
		t.Fatal("a short key was accepted")
	}
}
