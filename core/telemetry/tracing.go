package telemetry

// OpenTelemetry tracing. It is off by default and configured only by the standard OTEL_* variables, the way
// every OpenTelemetry SDK is: on when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
// or OTEL_TRACES_EXPORTER=otlp, off when OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true. Spans go over
// OTLP/HTTP (protobuf); the exporter itself reads the endpoint, headers, timeout and TLS variables, and the
// SDK reads OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
//
// Code elsewhere starts spans with otel.Tracer(...) on the global provider, so nothing needs this package to
// trace; with tracing off the global provider is a no-op and a span costs next to nothing.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TracerName names the spans Sluice's core starts (publish, store commit).
const TracerName = "github.com/sluicehq/sluice"

// TracingEnabled reports whether the OTEL_* variables (read through getenv) turn tracing on.
func TracingEnabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: Sluice exports traces with otlp (or none)", exp)
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

// SetupTracing installs a global tracer provider exporting over OTLP/HTTP when the environment asks for
// tracing, and the W3C trace-context propagator either way. The returned function flushes and stops the
// exporter (a no-op when tracing is off); call it on shutdown.
func SetupTracing(ctx context.Context, version string) (shutdown func(context.Context) error, enabled bool, err error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	noop := func(context.Context) error { return nil }
	on, err := TracingEnabled(os.Getenv)
	if err != nil || !on {
		return noop, false, err
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(name); p != "" && p != "http/protobuf" {
			return noop, false, fmt.Errorf("%s=%q is not supported: Sluice exports traces with http/protobuf", name, p)
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return noop, false, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	// The service name is a default: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read after it, win.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "sluice"), attribute.String("service.version", version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil && res == nil {
		return noop, false, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		return errors.Join(tp.Shutdown(ctx))
	}, true, nil
}

// offProvider is the global tracer provider as it is before anything installs one: its spans record nothing.
var offProvider = otel.GetTracerProvider()

// noSpan records nothing.
var noSpan = trace.SpanFromContext(context.Background())

// TracingOff reports whether no tracer provider has been installed (SetupTracing with tracing off, or nothing
// called otel.SetTracerProvider): a span would then record nothing, so the hot paths start none and save
// building its attributes and context.
func TracingOff() bool { return otel.GetTracerProvider() == offProvider }

// StartPublish starts the span of one intake request, a child of the publisher's span when the request
// carries a traceparent header.
func StartPublish(ctx context.Context, h http.Header, route string) (context.Context, trace.Span) {
	if TracingOff() {
		return ctx, noSpan
	}
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(h))
	return otel.Tracer(TracerName).Start(ctx, "sluice.publish", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.route", route)))
}
