package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/store"
)

// TestProblemOf: domain errors become the API's answers by the one table, keeping their field, message and
// schema pointer, also when wrapped; anything else is a 500; the API's own problems pass as they are.
func TestProblemOf(t *testing.T) {
	ptr := "/case/status"
	cases := []struct {
		err                  error
		status               int
		code, field, message string
	}{
		{&intake.Error{Kind: intake.ErrInvalid, Field: "events[2].topic", Msg: "is required"}, 400, "invalid_event", "events[2].topic", "is required"},
		{&intake.Error{Kind: intake.ErrUnknownTopic, Field: "topic", Msg: "not in the catalog"}, 400, "unknown_topic", "topic", "not in the catalog"},
		{&intake.Error{Kind: intake.ErrForbidden, Field: "tenant", Msg: "tenant acme only"}, 403, "forbidden", "tenant", "tenant acme only"},
		{intake.TooLarge(10), 413, "payload_too_large", "", "the body is larger than intake.http.max_body_bytes (10 bytes)"},
		{&intake.Error{Kind: intake.ErrUnsupportedMedia, Field: "data", Msg: "png"}, 415, "unsupported_media_type", "data", "png"},
		{&intake.Error{Kind: intake.ErrLimit, Field: "subscriptions[0]", Msg: "cap"}, 422, "subscription_limit", "subscriptions[0]", "cap"},
		{&intake.Error{Kind: intake.ErrUnavailable, Field: "subscriptions[0]", Msg: "retry later"}, 503, "unavailable", "subscriptions[0]", "retry later"},
		{fmt.Errorf("append: %w", store.ErrIDReused), 409, "conflict", "", "append: " + store.ErrIDReused.Error()},
		{fmt.Errorf("%w: at most 65536", store.ErrFanout), 422, "fanout_limit", "", store.ErrFanout.Error() + ": at most 65536"},
		{&destinations.Error{Kind: destinations.ErrMalformed, Msg: "not JSON"}, 400, "invalid_json", "", "not JSON"},
		{&destinations.Error{Kind: destinations.ErrForbidden, Field: "tenant", Msg: "no"}, 403, "forbidden", "tenant", "no"},
		{fmt.Errorf("get: %w", &destinations.Error{Kind: destinations.ErrNotFound, Msg: "no destination with this id"}), 404, "not_found", "", "no destination with this id"},
		{&destinations.Error{Kind: destinations.ErrConflict, Field: "name", Msg: "taken"}, 409, "conflict", "name", "taken"},
		{&destinations.Error{Kind: destinations.ErrReadOnly, Msg: "in the file"}, 409, "read_only", "", "in the file"},
		{&destinations.Error{Kind: destinations.ErrDisabled, Msg: "disabled"}, 409, "disabled", "", "disabled"},
		{&destinations.Error{Kind: destinations.ErrGone, Msg: "gone"}, 409, "gone", "", "gone"},
		{&destinations.Error{Kind: destinations.ErrInFlight, Msg: "busy"}, 409, "in_flight", "", "busy"},
		{&destinations.Error{Kind: destinations.ErrInvalid, Field: "config.url", Msg: "bad"}, 422, "invalid_destination", "config.url", "bad"},
		{&destinations.Error{Kind: destinations.ErrInvalidSecret, Field: "secret", Msg: "short"}, 422, "invalid_secret", "secret", "short"},
		{&destinations.Error{Kind: destinations.ErrNoSecret, Msg: "unsigned"}, 422, "no_secret", "", "unsigned"},
		{&destinations.Error{Kind: destinations.ErrNoExample, Field: "topic", Msg: "none"}, 422, "no_example", "topic", "none"},
		{&destinations.Error{Kind: destinations.ErrEncryptionKeyRequired, Field: "config.secrets[0]", Msg: "key"}, 422, "encryption_key_required", "config.secrets[0]", "key"},
		{errors.New("disk on fire"), 500, "internal", "", "disk on fire"},
		{&problem{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "no"}, 405, "method_not_allowed", "", "no"},
	}
	for _, c := range cases {
		p := problemOf(c.err)
		if p.Status != c.status || p.Code != c.code || p.Field != c.field || p.Message != c.message {
			t.Errorf("%v: got %d %s %q %q, want %d %s %q %q", c.err, p.Status, p.Code, p.Field, p.Message, c.status, c.code, c.field, c.message)
		}
	}
	p := problemOf(&intake.Error{Kind: intake.ErrSchemaMismatch, Field: "data", Msg: "enum", Pointer: &ptr})
	if p.Status != 422 || p.Code != "schema_mismatch" || p.Pointer == nil || *p.Pointer != ptr {
		t.Errorf("schema mismatch: %+v", p)
	}
}
