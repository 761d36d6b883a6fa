package event

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// FuzzValidTraceparent checks ValidTraceparent against OpenTelemetry's own W3C parser: whatever Sluice keeps,
// the propagator reads back as the same valid context.
func FuzzValidTraceparent(f *testing.F) {
	for _, s := range []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "00-xyz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidTraceparent(s) {
			return
		}
		ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": s})
		sc := trace.SpanContextFromContext(ctx)
		if !sc.IsValid() || sc.TraceID().String() != s[3:35] || sc.SpanID().String() != s[36:52] {
			t.Fatalf("kept %q, which OpenTelemetry reads as %v", s, sc)
		}
	})
}
