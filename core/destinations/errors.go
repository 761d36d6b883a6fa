package destinations

import (
	"errors"
	"fmt"
)

// What a change or lookup of a destination is refused for. Every refusal is an *Error whose Kind is one of
// these; core/api maps each kind to an HTTP status.
var (
	// ErrMalformed: the body is not a JSON object.
	ErrMalformed = errors.New("malformed destination")
	// ErrInvalid: the destination (or a field of it) is not valid; the field is named.
	ErrInvalid = errors.New("invalid destination")
	// ErrForbidden: the caller's tenant may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no destination (or delivery) with this id that the caller may see.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the name (or event id) is taken.
	ErrConflict = errors.New("conflict")
	// ErrReadOnly: a YAML destination; change it in the file and reload.
	ErrReadOnly = errors.New("read-only")
	// ErrDisabled: the destination is disabled; enable it first.
	ErrDisabled = errors.New("disabled")
	// ErrGone: the delivery's destination no longer exists.
	ErrGone = errors.New("gone")
	// ErrInFlight: the delivery is being attempted right now.
	ErrInFlight = errors.New("in flight")
	// ErrNoSecret: the destination does not sign, so it has no secret to rotate.
	ErrNoSecret = errors.New("no secret")
	// ErrInvalidSecret: a given signing secret is not valid.
	ErrInvalidSecret = errors.New("invalid secret")
	// ErrNoExample: no catalog example to test with.
	ErrNoExample = errors.New("no example")
	// ErrEncryptionKeyRequired: the destination holds a secret and store.encryption_key is not set.
	ErrEncryptionKeyRequired = errors.New("encryption key required")
)

// Error is a refused change or lookup: its kind, the field at fault ("config.url", "" for none) and a
// message that says what to do.
type Error struct {
	Kind  error
	Field string
	Msg   string
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

func notFound() *Error { return refuse(ErrNotFound, "", "no destination with this id") }
