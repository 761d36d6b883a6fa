package webhook

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/core/event"
)

// Each attempt is a client span on the global tracer provider (core/telemetry installs one when OTEL_* turn
// tracing on; otherwise it is a no-op). A single event's attempt is a child of the trace context it was
// published with; a batch's attempt links to each event's. The receiver gets the attempt span's traceparent, or
// the stored one when no span is recorded, so one trace spans publisher, Sluice and receiver.

const tracerName = "github.com/sluicehq/sluice/sinks/webhook"

var traceContext = propagation.TraceContext{}

// remote returns the span context of a stored traceparent (invalid when there is none).
func remote(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	ctx := traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
	return trace.SpanContextFromContext(ctx)
}

// offProvider is the global tracer provider as it is before anything installs one: it hands out spans that
// record nothing. While it is still the global one, an attempt starts no span at all: building a span's
// attributes and context costs allocations on every delivery, for a span nobody sees.
var offProvider = otel.GetTracerProvider()

// noSpan is the span of an attempt while tracing is off: it records nothing.
var noSpan = trace.SpanFromContext(context.Background())

// tracingOff reports whether no tracer provider has been installed.
func tracingOff() bool { return otel.GetTracerProvider() == offProvider }

func (s *Sink) startAttempt(ctx context.Context, evs []*event.Event) (context.Context, trace.Span) {
	if tracingOff() {
		return ctx, noSpan
	}
	attrs := []attribute.KeyValue{attribute.String("sluice.destination", s.dest),
		attribute.String("http.request.method", s.method)}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	if len(evs) == 1 {
		attrs = append(attrs, attribute.String("sluice.event_id", evs[0].ID))
		if sc := remote(evs[0].Traceparent); sc.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	} else {
		attrs = append(attrs, attribute.Int("sluice.batch.events", len(evs)))
		var links []trace.Link
		for _, e := range evs {
			if sc := remote(e.Traceparent); sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc,
					Attributes: []attribute.KeyValue{attribute.String("sluice.event_id", e.ID)}})
			}
		}
		opts = append(opts, trace.WithLinks(links...))
	}
	opts = append(opts, trace.WithAttributes(attrs...))
	return otel.Tracer(tracerName).Start(ctx, "sluice.webhook.attempt", opts...)
}

// setTraceparent puts the trace context on a request: the attempt span's when it is recorded, else the one
// stored with the event.
func setTraceparent(ctx context.Context, span trace.Span, h http.Header, stored string) {
	if span.IsRecording() {
		traceContext.Inject(ctx, propagation.HeaderCarrier(h))
		return
	}
	if stored != "" {
		h.Set("Traceparent", stored)
	}
}

func endAttempt(span trace.Span, resp *http.Response, err error) {
	if !span.IsRecording() {
		return
	}
	if resp != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}
