package api

import (
	"net/http/httptest"
	"testing"

	"github.com/sluicehq/sluice/core/intake"
)

// The publish answer built by hand is byte for byte what writeJSON writes for the same result, whatever the id.
func TestWriteAcceptedMatchesWriteJSON(t *testing.T) {
	for _, res := range []intake.Result{
		{ID: "01936f6e-7a55-7cc6-9c2b-6f1c3a8f0a11", Deliveries: 3},
		{ID: "order-17", Duplicate: true},
		{ID: `quote"and\backslash`, Deliveries: 1},
		{ID: "<tag>&amp;", Deliveries: 12},
		{ID: "ünïcode", Deliveries: 0},
	} {
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		writeJSON(want, 202, res)
		writeAccepted(got, res)
		if got.Code != want.Code || got.Body.String() != want.Body.String() ||
			got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("id %q: got %d %s %q, want %d %s %q", res.ID, got.Code, got.Header().Get("Content-Type"),
				got.Body, want.Code, want.Header().Get("Content-Type"), want.Body)
		}
	}
}
