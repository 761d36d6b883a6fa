package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk/internal/proto"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/plugins/sdk/sinkapi"
)

// Event is an event as it crosses the wire. The host fills it from its own event type; the SDK turns it into
// sdk.Event.
type Event struct {
	ID            string
	Topic         string
	Time          time.Time
	Tenant        string
	Metadata      map[string]string
	Scope         map[string]string
	CorrelationID string
	Data          []byte
	Body          []byte
}

// EventsToProto converts a batch for SendRequest.
func EventsToProto(batch []Event) []*proto.Event {
	out := make([]*proto.Event, len(batch))
	for i := range batch {
		e := &batch[i]
		var t int64
		if !e.Time.IsZero() {
			t = e.Time.UnixNano()
		}
		out[i] = &proto.Event{
			Id: e.ID, Topic: e.Topic, TimeUnixNano: t, Tenant: e.Tenant, Metadata: e.Metadata,
			Scope: e.Scope, CorrelationId: e.CorrelationID, Data: e.Data, Body: e.Body,
		}
	}
	return out
}

// EventsFromProto converts a SendRequest's events back.
func EventsFromProto(in []*proto.Event) []Event {
	out := make([]Event, len(in))
	for i, e := range in {
		var t time.Time
		if e.GetTimeUnixNano() != 0 {
			t = time.Unix(0, e.GetTimeUnixNano()).UTC()
		}
		out[i] = Event{
			ID: e.GetId(), Topic: e.GetTopic(), Time: t, Tenant: e.GetTenant(), Metadata: e.GetMetadata(),
			Scope: e.GetScope(), CorrelationID: e.GetCorrelationId(), Data: e.GetData(), Body: e.GetBody(),
		}
	}
	return out
}

// LimitsToProto converts limits; nil for none.
func LimitsToProto(l sinkapi.Limits) *proto.Limits {
	if l == (sinkapi.Limits{}) {
		return nil
	}
	return &proto.Limits{
		MaxBatch: int64(l.MaxBatch), MaxBatchBytes: int64(l.MaxBatchBytes), MaxEventBytes: int64(l.MaxEventBytes),
		LingerMs: l.Linger.Milliseconds(),
	}
}

// LimitsFromProto converts limits; nil is no limits.
func LimitsFromProto(l *proto.Limits) sinkapi.Limits {
	return sinkapi.Limits{
		MaxBatch: int(l.GetMaxBatch()), MaxBatchBytes: int(l.GetMaxBatchBytes()), MaxEventBytes: int(l.GetMaxEventBytes()),
		Linger: time.Duration(l.GetLingerMs()) * time.Millisecond,
	}
}

// FieldsToProto converts a config description.
func FieldsToProto(fs []schema.Field) []*proto.Field {
	out := make([]*proto.Field, len(fs))
	for i, f := range fs {
		out[i] = &proto.Field{Name: f.Name, Type: f.Type, Default: f.Default, Required: f.Required, Secret: f.Secret,
			SecretUrl: f.SecretURL, Description: f.Description}
	}
	return out
}

// FieldsFromProto converts a config description back.
func FieldsFromProto(in []*proto.Field) []schema.Field {
	out := make([]schema.Field, len(in))
	for i, f := range in {
		out[i] = schema.Field{Name: f.GetName(), Type: f.GetType(), Default: f.GetDefault(), Required: f.GetRequired(),
			Secret: f.GetSecret(), SecretURL: f.GetSecretUrl(), Description: f.GetDescription()}
	}
	return out
}

// FieldErrorsToProto flattens a validation error (errors.Join of *schema.FieldError, or any error) for the
// wire. A problem without a path applies to the whole block.
func FieldErrorsToProto(err error) []*proto.FieldError {
	var out []*proto.FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *schema.FieldError
		if errors.As(err, &fe) {
			out = append(out, &proto.FieldError{Path: fe.Path, Message: fe.Msg})
			return
		}
		out = append(out, &proto.FieldError{Message: err.Error()})
	}
	walk(err)
	return out
}

// FieldErrorsFromProto joins wire field errors into one error of *schema.FieldError; nil when there are none.
func FieldErrorsFromProto(in []*proto.FieldError) error {
	if len(in) == 0 {
		return nil
	}
	errs := make([]error, len(in))
	for i, fe := range in {
		errs[i] = &schema.FieldError{Path: fe.GetPath(), Msg: fe.GetMessage()}
	}
	return errors.Join(errs...)
}

// ResultsFromError turns a Send's outcome for n events into one result per event.
func ResultsFromError(err error, n int) []*proto.Result {
	out := make([]*proto.Result, n)
	var be *sinkapi.BatchError
	if errors.As(err, &be) && len(be.Errs) == n {
		for i, e := range be.Errs {
			out[i] = result(e)
		}
		return out
	}
	if be != nil {
		err = fmt.Errorf("plugin answered %d results for a batch of %d events", len(be.Errs), n)
	}
	r := result(err)
	for i := range out {
		out[i] = r
	}
	return out
}

func result(err error) *proto.Result {
	if err == nil {
		return &proto.Result{Outcome: proto.Outcome_OUTCOME_DELIVERED}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return &proto.Result{Outcome: proto.Outcome_OUTCOME_CANCELED, Error: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &proto.Result{Outcome: proto.Outcome_OUTCOME_DEADLINE_EXCEEDED, Error: err.Error()}
	}
	class, after := sinkapi.Classify(err)
	r := &proto.Result{Error: err.Error(), RetryAfterMs: after.Milliseconds()}
	switch class {
	case sinkapi.ClassPermanent:
		r.Outcome = proto.Outcome_OUTCOME_PERMANENT
	case sinkapi.ClassGone:
		r.Outcome = proto.Outcome_OUTCOME_GONE
	default:
		r.Outcome = proto.Outcome_OUTCOME_RETRYABLE
	}
	return r
}

// ErrorFromResults turns a SendResponse back into what sinks.Sink.Send returns: nil when every event was
// delivered, one classified error when every event failed the same way, else a *sinkapi.BatchError.
func ErrorFromResults(results []*proto.Result, n int) error {
	if len(results) != n {
		return sinkapi.Retryable(fmt.Errorf("plugin answered %d results for a batch of %d events", len(results), n), 0)
	}
	errs := make([]error, n)
	failed, uniform := 0, true
	for i, r := range results {
		errs[i] = resultError(r)
		if errs[i] != nil {
			failed++
		}
		if i > 0 && (r.GetOutcome() != results[0].GetOutcome() || r.GetError() != results[0].GetError() ||
			r.GetRetryAfterMs() != results[0].GetRetryAfterMs()) {
			uniform = false
		}
	}
	switch {
	case failed == 0:
		return nil
	case uniform:
		return errs[0]
	}
	return &sinkapi.BatchError{Errs: errs}
}

func resultError(r *proto.Result) error {
	msg := r.GetError()
	if msg == "" {
		msg = "plugin reported a failure without a message"
	}
	err := errors.New(msg)
	switch r.GetOutcome() {
	case proto.Outcome_OUTCOME_DELIVERED:
		return nil
	case proto.Outcome_OUTCOME_PERMANENT:
		return sinkapi.Permanent(err)
	case proto.Outcome_OUTCOME_GONE:
		return sinkapi.Gone(err)
	case proto.Outcome_OUTCOME_RETRYABLE:
		return sinkapi.Retryable(err, time.Duration(r.GetRetryAfterMs())*time.Millisecond)
	case proto.Outcome_OUTCOME_CANCELED:
		return context.Canceled // the sentinel itself: errors.Is works on the host as it did in the plugin
	case proto.Outcome_OUTCOME_DEADLINE_EXCEEDED:
		return context.DeadlineExceeded
	}
	return sinkapi.Retryable(fmt.Errorf("plugin answered an unknown outcome %d: %s", r.GetOutcome(), msg), 0)
}
