// Package sinkapi is the vocabulary Sluice and its sink plugins share: batching limits, the failure classes a
// Send answers with, and the attempt report. Sluice's package sinks and plugins/sdk both re-export it, so a
// built-in sink and a plugin return the very same types and the plugin wire carries them without
// translation.
//
// It imports only the standard library: a plugin pulls nothing of the gateway in through it.
package sinkapi

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limits says how the dispatcher may batch for a sink. Zero values mean "no limit beyond the default".
type Limits struct {
	MaxBatch      int // most events in one Send; 0 or 1 means one event per Send
	MaxBatchBytes int // most bytes of event data in one Send (the dispatcher counts the data's length)
	MaxEventBytes int // an event whose data is larger fails permanently without a Send
	// Linger is how long the dispatcher may hold a first event waiting for more to fill a batch (e.g. a bucket
	// object's max_age). 0 sends whatever is ready at once.
	Linger time.Duration
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
