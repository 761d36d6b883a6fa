package sinks

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/plugins/sdk/netguard"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/plugins/sdk/sinkapi"
)

// Sink delivers batches of events to one destination.
//
// Send returns nil when every event was accepted by the far side, a classified error (Permanent, Retryable,
// Gone) that applies to the whole batch, or a *BatchError with one entry per event. An unclassified error is
// retryable. context.Canceled is never a failed delivery: the dispatcher retries it later.
type Sink interface {
	Send(ctx context.Context, batch []event.Event) error
	// Close releases connections. It must be safe to call while a Send is running, more than once, and on a
	// sink whose New succeeded but that never sent (connections a sink dials lazily may not exist yet).
	Close(ctx context.Context) error
}

// The shared vocabulary is defined once, in the plugin SDK's sinkapi and schema packages, so built-in sinks
// and plugins return the very same types and the plugin wire carries them without translation.
type (
	// Limits says how the dispatcher may batch for a sink. Zero values mean "no limit beyond the default".
	Limits = sinkapi.Limits
	// Class is how a failed delivery attempt is treated.
	Class = sinkapi.Class
	// Error is a classified delivery failure.
	Error = sinkapi.Error
	// BatchError reports a batch in which some events failed: Errs has one entry per event of the batch, in
	// order; a nil entry means that event was delivered.
	BatchError = sinkapi.BatchError
	// Report is what the far side answered to one attempt, kept in the delivery log.
	Report = sinkapi.Report
	// FieldError is one problem in a sink's config block. Path is relative to the block (e.g. "url",
	// "headers.X-Foo"); the config loader prefixes it and points at the YAML line.
	FieldError = schema.FieldError
	// Field describes one config field, derived from the config struct's tags: `yaml:"name"`, `desc:"..."`,
	// `default:"..."`, `required:"true"`, `secret:"true"`.
	Field = schema.Field
	// Secrets says where a config's secrets are (dotted paths, "[]" for each list element).
	Secrets = schema.Secrets
)

// Failure classes.
const (
	// ClassRetryable failures are tried again on the retry schedule.
	ClassRetryable = sinkapi.ClassRetryable
	// ClassPermanent failures end the delivery as failed at once.
	ClassPermanent = sinkapi.ClassPermanent
	// ClassGone failures end the delivery as failed and disable the destination (an HTTP 410).
	ClassGone = sinkapi.ClassGone
)

// Limiter is implemented by sinks that batch or bound event size.
type Limiter interface {
	Limits() Limits
}

// Permanent marks err as a failure that retrying cannot fix (bad request, unknown queue, oversized event).
func Permanent(err error) error { return sinkapi.Permanent(err) }

// EventError marks err as caused by the event itself (a transform that fails on it, a value the sink cannot
// encode): the delivery fails permanently, and the failure says nothing about the destination's health — it
// never counts toward the breaker or auto-disable, so one tenant's poison events cannot disable a destination
// others share.
func EventError(err error) error { return eventError{Permanent(err)} }

type eventError struct{ error }

func (e eventError) Unwrap() error { return e.error }

// IsEventError reports whether err (or an error it wraps) was marked by EventError.
func IsEventError(err error) bool { return errors.As(err, new(eventError)) }

// Retryable marks err as transient; after > 0 asks for at least that delay before the next attempt.
func Retryable(err error, after time.Duration) error { return sinkapi.Retryable(err, after) }

// Gone marks err as "this destination no longer exists": the delivery fails and the destination is disabled.
func Gone(err error) error { return sinkapi.Gone(err) }

// Classify returns the class of err and any delay it asks for. nil errors have no class; callers check nil
// first. Unclassified errors are retryable.
func Classify(err error) (Class, time.Duration) { return sinkapi.Classify(err) }

// Outcome turns per-event results (nil = delivered) into Send's answer: nil when all were delivered, the one
// error when every event failed with the same error (or the batch held one event), else a *BatchError.
func Outcome(errs []error) error { return sinkapi.Outcome(errs) }

// WithReport returns a context in which a sink's Note calls fill r.
func WithReport(ctx context.Context, r *Report) context.Context { return sinkapi.WithReport(ctx, r) }

// Note records the far side's answer for the attempt log. A sink calls it for successes and failures alike;
// it does nothing when the caller did not ask for a report.
func Note(ctx context.Context, statusCode int, response []byte) {
	if a, ok := ctx.(*Attempt); ok && a.rep != nil {
		a.rep.StatusCode, a.rep.Response = statusCode, response
		return
	}
	sinkapi.Note(ctx, statusCode, response)
}

// DialFunc opens network connections. Sinks that reach user-given addresses must dial through the one in Env,
// which enforces the SSRF guard at connect time.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Env is what Sluice hands a sink at construction.
type Env struct {
	Destination string // the destination's name, for logs and errors
	// Dial connects under the network policy: the SSRF guard, and through the configured proxy (CONNECT to
	// the judged address) when there is one. Non-HTTP clients use it; HTTP clients use HTTPTransport.
	Dial DialFunc
	// Network is the policy behind Dial (guard and proxy); nil only in tests that pass a bare Dial.
	Network   *netguard.Dialer
	UserAgent string
	Timeout   time.Duration // per-attempt timeout for the destination
}

// Errorf returns a *FieldError for path.
func Errorf(path, format string, args ...any) error { return schema.Errorf(path, format, args...) }

// Mask shows a secret as its kind and last four characters: "whsec_…abcd", "…abcd", or "****" when short.
func Mask(secret string) string { return schema.Mask(secret) }
