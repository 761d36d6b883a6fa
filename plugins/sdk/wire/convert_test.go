package wire

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/plugins/sdk/sinkapi"
)

// roundTrip is what a Send's error becomes on the host: through the wire's results and back.
func roundTrip(err error, n int) error { return ErrorFromResults(ResultsFromError(err, n), n) }

func TestContextErrorsCrossAsTheSentinels(t *testing.T) {
	for _, want := range []error{context.Canceled, context.DeadlineExceeded} {
		// A plugin wraps the context's error, as sinks do; the host gets the sentinel itself.
		got := roundTrip(fmt.Errorf("nats: publish: %w", want), 3)
		if got != want {
			t.Errorf("%v came back as %#v", want, got)
		}
	}
}

func TestClassesCrossTyped(t *testing.T) {
	got := roundTrip(sinkapi.Retryable(errors.New("busy"), 1500*time.Millisecond), 2)
	if c, after := sinkapi.Classify(got); c != sinkapi.ClassRetryable || after != 1500*time.Millisecond {
		t.Errorf("retryable came back as %v (%v, %v)", got, c, after)
	}
	for _, tc := range []struct {
		err  error
		want sinkapi.Class
	}{{sinkapi.Permanent(errors.New("no")), sinkapi.ClassPermanent}, {sinkapi.Gone(errors.New("gone")), sinkapi.ClassGone}} {
		if c, _ := sinkapi.Classify(roundTrip(tc.err, 1)); c != tc.want {
			t.Errorf("%v came back as class %v", tc.err, c)
		}
	}
	batch := &sinkapi.BatchError{Errs: []error{nil, sinkapi.Permanent(errors.New("bad")), context.Canceled}}
	var be *sinkapi.BatchError
	if err := roundTrip(batch, 3); !errors.As(err, &be) || be.Errs[0] != nil || be.Errs[2] != context.Canceled {
		t.Fatalf("batch came back as %v", err)
	}
	if c, _ := sinkapi.Classify(be.Errs[1]); c != sinkapi.ClassPermanent {
		t.Errorf("event 1 came back as %v", be.Errs[1])
	}
}

func TestFieldErrorsCrossWithPaths(t *testing.T) {
	in := errors.Join(schema.Errorf("url", "is required"), schema.Errorf("tls.ca", "no such file"), errors.New("whole block"))
	out := FieldErrorsFromProto(FieldErrorsToProto(in))
	var paths []string
	for _, e := range out.(interface{ Unwrap() []error }).Unwrap() {
		var fe *schema.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		paths = append(paths, fe.Path)
	}
	if fmt.Sprint(paths) != "[url tls.ca ]" {
		t.Errorf("paths %q", paths)
	}
}
