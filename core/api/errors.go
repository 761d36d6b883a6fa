package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/store"
)

// problem is an error as the API answers it: {"error": {"code", "message", "field"?, "pointer"?}}.
type problem struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Pointer is the JSON pointer (RFC 6901) into data of the value that failed the topic's schema; "" is
	// data itself.
	Pointer *string `json:"pointer,omitempty"`
}

func (p *problem) Error() string { return p.Message }

// statusOf is the one table from the domain errors of the packages behind the API to HTTP statuses and
// error codes. The first row whose error the answer wraps wins.
var statusOf = []struct {
	err    error
	status int
	code   string
}{
	{intake.ErrInvalid, http.StatusBadRequest, "invalid_event"},
	{intake.ErrUnknownTopic, http.StatusBadRequest, "unknown_topic"},
	{intake.ErrForbidden, http.StatusForbidden, "forbidden"},
	{intake.ErrTooLarge, http.StatusRequestEntityTooLarge, "payload_too_large"},
	{intake.ErrUnsupportedMedia, http.StatusUnsupportedMediaType, "unsupported_media_type"},
	{intake.ErrSchemaMismatch, http.StatusUnprocessableEntity, "schema_mismatch"},
	{intake.ErrLimit, http.StatusUnprocessableEntity, "subscription_limit"},
	{intake.ErrBusy, http.StatusTooManyRequests, "too_many_subscriptions"},
	{intake.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
	{intake.ErrClosed, http.StatusServiceUnavailable, "unavailable"},
	{store.ErrIDReused, http.StatusConflict, "conflict"},
	{store.ErrFanout, http.StatusUnprocessableEntity, "fanout_limit"},

	{destinations.ErrMalformed, http.StatusBadRequest, "invalid_json"},
	{destinations.ErrForbidden, http.StatusForbidden, "forbidden"},
	{destinations.ErrNotFound, http.StatusNotFound, "not_found"},
	{destinations.ErrConflict, http.StatusConflict, "conflict"},
	{destinations.ErrReadOnly, http.StatusConflict, "read_only"},
	{destinations.ErrDisabled, http.StatusConflict, "disabled"},
	{destinations.ErrGone, http.StatusConflict, "gone"},
	{destinations.ErrInFlight, http.StatusConflict, "in_flight"},
	{destinations.ErrInvalid, http.StatusUnprocessableEntity, "invalid_destination"},
	{destinations.ErrInvalidSecret, http.StatusUnprocessableEntity, "invalid_secret"},
	{destinations.ErrNoSecret, http.StatusUnprocessableEntity, "no_secret"},
	{destinations.ErrNoExample, http.StatusUnprocessableEntity, "no_example"},
	{destinations.ErrEncryptionKeyRequired, http.StatusUnprocessableEntity, "encryption_key_required"},
}

// problemOf turns any error into the API's answer: the API's own problems as they are, domain errors by the
// statusOf table (with their field and message), anything else as a 500.
func problemOf(err error) *problem {
	var p *problem
	if errors.As(err, &p) {
		return p
	}
	out := &problem{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
	for _, row := range statusOf {
		if errors.Is(err, row.err) {
			out.Status, out.Code = row.status, row.code
			break
		}
	}
	var ie *intake.Error
	var de *destinations.Error
	switch {
	case errors.As(err, &ie):
		out.Field, out.Message, out.Pointer = ie.Field, ie.Msg, ie.Pointer
	case errors.As(err, &de):
		out.Field, out.Message = de.Field, de.Msg
	}
	return out
}

// writeError writes err as the API's error body.
func writeError(w http.ResponseWriter, err error) {
	p := problemOf(err)
	writeJSON(w, p.Status, map[string]any{"error": p})
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
