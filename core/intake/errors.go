package intake

import (
	"errors"
	"fmt"
)

// What intake refuses an event for. Every refusal is an *Error whose Kind is one of these; core/api maps each
// kind to an HTTP status, and the AMQP consumer dead-letters or requeues by it.
var (
	// ErrInvalid: the event (or its body) is malformed or breaks a rule; fix the field named.
	ErrInvalid = errors.New("invalid event")
	// ErrForbidden: the publisher may not publish this (another tenant's event).
	ErrForbidden = errors.New("forbidden")
	// ErrUnknownTopic: the topic is not in the catalog, and the server accepts catalog topics only.
	ErrUnknownTopic = errors.New("unknown topic")
	// ErrSchemaMismatch: the data does not match its topic's JSON Schema.
	ErrSchemaMismatch = errors.New("schema mismatch")
	// ErrTooLarge: the body is larger than intake.http.max_body_bytes.
	ErrTooLarge = errors.New("too large")
	// ErrUnsupportedMedia: a content type Sluice cannot relay.
	ErrUnsupportedMedia = errors.New("unsupported media type")
	// ErrLimit: a per-run subscription would exceed a configured cap.
	ErrLimit = errors.New("subscription limit")
	// ErrBusy: the live per-run subscriptions are at intake.inline_subscriptions.max_active; later, some expire.
	ErrBusy = errors.New("too many live subscriptions")
	// ErrUnavailable: not the event's fault (the store could not record something); retry later.
	ErrUnavailable = errors.New("unavailable")
)

// Error is a refused event: its kind, the field at fault ("events[3].topic", "" for the whole body) and a
// message that says what to do.
type Error struct {
	Kind  error
	Field string
	Msg   string
	// Pointer is the JSON pointer (RFC 6901) into data of the value that failed the topic's schema ("" is
	// data itself); set with ErrSchemaMismatch only.
	Pointer *string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Kind }

func refuse(kind error, field, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func invalid(field, format string, args ...any) *Error {
	return refuse(ErrInvalid, field, format, args...)
}

// TooLarge is the refusal of a body over max bytes (intake.http.max_body_bytes).
func TooLarge(max int64) error {
	return refuse(ErrTooLarge, "", "the body is larger than intake.http.max_body_bytes (%d bytes)", max)
}
