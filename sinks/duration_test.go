package sinks

import (
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDuration(t *testing.T) {
	for in, want := range map[string]string{"5m": "5m", "2h": "2h", "90m": "1h30m", "100ms": "100ms", "1h0m30s": "1h0m30s", "0s": "0s"} {
		var d Duration
		if err := yaml.Unmarshal([]byte(in), &d); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if d.String() != want {
			t.Errorf("%s printed as %s, want %s", in, d, want)
		}
	}
	var d Duration
	for _, bad := range []string{"15", "-1s", "soon", "[1s]"} {
		if err := yaml.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := d.UnmarshalText([]byte("250ms")); err != nil || d.D() != 250*time.Millisecond {
		t.Fatalf("text: %v %v", d, err)
	}
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": "whsec_…LaSw",
		"a-long-admin-key-1234":                  "…1234",
		"short":                                  "****",
		"":                                       "",
	} {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}
