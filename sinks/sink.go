package sinks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/event"
)

// Sink delivers batches of events to one destination.
//
// Send returns nil when every event was accepted by the far side, a classified error (Permanent, Retryable,
// Gone) that applies to the whole batch, or a *BatchError with one entry per event. An unclassified error is
// retryable. context.Canceled is never a failed delivery: the dispatcher retries it later.
type Sink interface {
	Send(ctx context.Context, batch []event.Event) error
	// Close releases connections. It must be safe to call after a failed Open or while a Send is running.
	Close(ctx context.Context) error
}

// Limits says how the dispatcher may batch for a sink. Zero values mean "no limit beyond the default".
type Limits struct {
	MaxBatch      int // most events in one Send; 0 or 1 means one event per Send
	MaxBatchBytes int // most bytes of event data in one Send (the dispatcher counts len(Event.Data))
	MaxEventBytes int // an event whose data is larger fails permanently without a Send
	// Linger is how long the dispatcher may hold a first event waiting for more to fill a batch (e.g. a bucket
	// object's max_age). 0 sends whatever is ready at once.
	Linger time.Duration
}

// Limiter is implemented by sinks that batch or bound event size.
type Limiter interface {
	Limits() Limits
}

// Class is how a failed delivery attempt is treated.
type Class int

const (
	// ClassRetryable failures are tried again on the retry schedule.
	ClassRetryable Class = iota
	// ClassPermanent failures end the delivery as failed at once.
	ClassPermanent
	// ClassGone failures end the delivery as failed and disable the destination (an HTTP 410).
	ClassGone
)

func (c Class) String() string {
	switch c {
	case ClassPermanent:
		return "permanent"
	case ClassGone:
		return "gone"
	default:
		return "retryable"
	}
}

// Error is a classified delivery failure.
type Error struct {
	Class Class
	// After is the far side's requested delay before the next attempt (e.g. Retry-After); 0 means none.
	After time.Duration
	Err   error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Class.String()
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as a failure that retrying cannot fix (bad request, unknown queue, oversized event).
func Permanent(err error) error { return &Error{Class: ClassPermanent, Err: err} }

// Retryable marks err as transient; after > 0 asks for at least that delay before the next attempt.
func Retryable(err error, after time.Duration) error {
	return &Error{Class: ClassRetryable, After: after, Err: err}
}

// Gone marks err as "this destination no longer exists": the delivery fails and the destination is disabled.
func Gone(err error) error { return &Error{Class: ClassGone, Err: err} }

// Classify returns the class of err and any delay it asks for. nil errors have no class; callers check nil
// first. Unclassified errors are retryable.
func Classify(err error) (Class, time.Duration) {
	var e *Error
	if errors.As(err, &e) {
		return e.Class, e.After
	}
	return ClassRetryable, 0
}

// BatchError reports a batch in which some events failed. Errs has one entry per event of the batch, in order;
// a nil entry means that event was delivered.
type BatchError struct {
	Errs []error
}

func (b *BatchError) Error() string {
	n := 0
	var first error
	for _, err := range b.Errs {
		if err != nil {
			n++
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		return "batch: no failures"
	}
	return fmt.Sprintf("%d of %d events failed; first: %v", n, len(b.Errs), first)
}

// Outcome turns per-event results (nil = delivered) into Send's answer: nil when all were delivered, the one
// error when every event failed with the same error (or the batch held one event), else a *BatchError.
func Outcome(errs []error) error {
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	switch {
	case failed == 0:
		return nil
	case len(errs) == 1:
		return errs[0]
	case failed == len(errs):
		same := true
		for _, e := range errs[1:] {
			if e != errs[0] {
				same = false
				break
			}
		}
		if same {
			return errs[0]
		}
	}
	return &BatchError{Errs: errs}
}

// Report is what the far side answered to one attempt, kept in the delivery log.
type Report struct {
	StatusCode int
	Response   []byte
}

type reportKey struct{}

// WithReport returns a context in which a sink's Note calls fill r.
func WithReport(ctx context.Context, r *Report) context.Context {
	return context.WithValue(ctx, reportKey{}, r)
}

// Note records the far side's answer for the attempt log. A sink calls it for successes and failures alike;
// it does nothing when the caller did not ask for a report.
func Note(ctx context.Context, statusCode int, response []byte) {
	if r, ok := ctx.Value(reportKey{}).(*Report); ok {
		r.StatusCode = statusCode
		r.Response = response
	}
}

// DialFunc opens network connections. Sinks that reach user-given addresses must dial through the one in Env,
// which enforces the SSRF guard at connect time.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Env is what Sluice hands a sink at construction.
type Env struct {
	Destination string // the destination's name, for logs and errors
	Dial        DialFunc
	UserAgent   string
	Timeout     time.Duration // per-attempt timeout for the destination
}

// FieldError is one problem in a sink's config block. Path is relative to the block (e.g. "url",
// "headers.X-Foo"); the config loader prefixes it and points at the YAML line.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf returns a *FieldError for path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Mask shows a secret as its kind and last four characters: "whsec_…abcd", "…abcd", or "****" when short.
func Mask(secret string) string {
	const keep = 4
	prefix := ""
	if strings.HasPrefix(secret, "whsec_") {
		prefix, secret = "whsec_", strings.TrimPrefix(secret, "whsec_")
	}
	if secret == "" {
		return prefix
	}
	if len(secret) < 3*keep {
		return prefix + "****"
	}
	return prefix + "…" + secret[len(secret)-keep:]
}
