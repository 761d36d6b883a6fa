package seal

import (
	"bytes"
	"strings"
	"testing"
)

func TestNumbersHideTheSequence(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ns := NewNumbers([][]byte{k1})
	a, b := ns.Hide(41, KindDelivery), ns.Hide(42, KindDelivery)
	if a == b || len(a) != 22 || strings.Contains(a, "41") {
		t.Fatalf("hidden 41 = %q, 42 = %q: want distinct 22-character tokens that do not show the number", a, b)
	}
	// Neighbours share no telling prefix: the whole block changes.
	same := 0
	for i := range a {
		if a[i] == b[i] {
			same++
		}
	}
	if same > 8 {
		t.Fatalf("hidden 41 and 42 agree in %d of 22 characters: %q %q", same, a, b)
	}
	if n, ok := ns.Reveal(a, KindDelivery); !ok || n != 41 {
		t.Fatalf("Reveal(Hide(41)) = %d, %v", n, ok)
	}
	if ns.Hide(41, KindDelivery) != a {
		t.Fatal("the same number hid differently twice: ids must be stable")
	}
	if _, ok := ns.Reveal(a, KindCursor); ok {
		t.Fatal("a delivery id revealed as a cursor")
	}
	for _, bad := range []string{"", "41", "not base64!", strings.Repeat("A", 22), a[:21]} {
		if _, ok := ns.Reveal(bad, KindDelivery); ok {
			t.Fatalf("Reveal(%q) accepted a token these keys never made", bad)
		}
	}
	// Another key cannot open it; a ring that still lists the old key can, after rotation.
	if _, ok := NewNumbers([][]byte{k2}).Reveal(a, KindDelivery); ok {
		t.Fatal("a token opened under another key")
	}
	if n, ok := NewNumbers([][]byte{k2, k1}).Reveal(a, KindDelivery); !ok || n != 41 {
		t.Fatalf("after rotation (old key second): %d, %v", n, ok)
	}
}

func TestNumbersWithoutAKeyArePlain(t *testing.T) {
	var nilNumbers *Numbers
	for _, ns := range []*Numbers{NewNumbers(nil), nilNumbers} {
		if got := ns.Hide(42, KindDelivery); got != "42" {
			t.Fatalf("plain Hide(42) = %q", got)
		}
		if n, ok := ns.Reveal("42", KindDelivery); !ok || n != 42 {
			t.Fatalf("plain Reveal(42) = %d, %v", n, ok)
		}
		for _, bad := range []string{"0", "-1", "x"} {
			if _, ok := ns.Reveal(bad, KindDelivery); ok {
				t.Fatalf("plain Reveal(%q) accepted", bad)
			}
		}
	}
}
