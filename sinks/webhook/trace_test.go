package webhook

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

const publisherTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// withTracing installs an in-memory tracer provider for one test (tests in this package do not run in
// parallel, so the global is theirs).
func withTracing(t *testing.T) *tracetest.InMemoryExporter {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev); _ = tp.Shutdown(context.Background()) })
	return exp
}

func TestTraceparentFromAttemptSpan(t *testing.T) {
	exp := withTracing(t)
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, nil, sinks.Env{Destination: "partner"})
	e := testEvent()
	e.Traceparent = publisherTP
	if _, err := sendOne(t, s, e); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want the attempt's", len(spans))
	}
	sp := spans[0]
	pub := remote(publisherTP)
	if sp.Name != "sluice.webhook.attempt" || sp.SpanKind != trace.SpanKindClient || sp.Parent.SpanID() != pub.SpanID() ||
		sp.SpanContext.TraceID() != pub.TraceID() {
		t.Fatalf("attempt span %s kind %v parent %s trace %s; want a client child of the publisher's span",
			sp.Name, sp.SpanKind, sp.Parent.SpanID(), sp.SpanContext.TraceID())
	}
	got := remote(rc.last(t).Header.Get("traceparent"))
	if got.TraceID() != pub.TraceID() || got.SpanID() != sp.SpanContext.SpanID() {
		t.Fatalf("receiver's traceparent %q: want trace %s, parent the attempt span %s", rc.last(t).Header.Get("traceparent"),
			pub.TraceID(), sp.SpanContext.SpanID())
	}

	// A batch's span links each event's context; with none stored it starts a trace of its own.
	exp.Reset()
	bs := newSink(t, rc.URL, func(c *Config) { c.Batch = &Batch{} }, sinks.Env{})
	evs := []event.Event{e, testEvent()}
	evs[1].ID = "other"
	if err := bs.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	spans = exp.GetSpans()
	if len(spans) != 1 || len(spans[0].Links) != 1 || spans[0].Links[0].SpanContext.TraceID() != pub.TraceID() {
		t.Fatalf("batch span: %+v", spans)
	}
	if got := remote(rc.last(t).Header.Get("traceparent")); got.SpanID() != spans[0].SpanContext.SpanID() {
		t.Fatal("the batch request must carry its attempt span's traceparent")
	}
}

func TestTraceparentForwardedWhenTracingIsOff(t *testing.T) {
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(noop.NewTracerProvider())
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, nil, sinks.Env{})
	e := testEvent()
	e.Traceparent = publisherTP
	if _, err := sendOne(t, s, e); err != nil {
		t.Fatal(err)
	}
	if got := rc.last(t).Header.Get("traceparent"); got != publisherTP {
		t.Fatalf("traceparent %q, want the stored %q", got, publisherTP)
	}
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	if got := rc.last(t).Header.Get("traceparent"); got != "" {
		t.Fatalf("an event without trace context sent traceparent %q", got)
	}
}
