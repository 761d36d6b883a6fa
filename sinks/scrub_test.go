package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

type scrubCfg struct {
	URL    string `yaml:"url" secret:"url"`
	Secret string `yaml:"secret" secret:"true"`
}

func (*scrubCfg) Validate() error { return nil }

type echoSink struct{ err error }

func (s echoSink) Send(context.Context, []event.Event) error { return s.err }
func (echoSink) Close(context.Context) error                 { return nil }
func (echoSink) Limits() sinks.Limits                        { return sinks.Limits{MaxBatch: 7} }

func TestScrubAttemptErrors(t *testing.T) {
	cfg := &scrubCfg{URL: "https://hookuser:hookpass-1@h.example/x?token=qtoken-secret", Secret: "s3cr3t-value-xyz"}
	inner := sinks.Permanent(fmt.Errorf("post %q: refused; auth %s; token qtoken-secret", cfg.URL, cfg.Secret))
	for name, err := range map[string]error{
		"single": inner,
		"batch":  &sinks.BatchError{Errs: []error{nil, inner}},
	} {
		s := sinks.Scrub(echoSink{err: err}, cfg)
		got := s.Send(context.Background(), nil)
		for _, leak := range []string{"hookuser", "hookpass-1", "qtoken-secret", "s3cr3t-value-xyz"} {
			if strings.Contains(got.Error(), leak) {
				t.Errorf("%s: error shows %q: %v", name, leak, got)
			}
		}
		if !strings.Contains(got.Error(), "h.example/x?token=") {
			t.Errorf("%s: the masked URL is unreadable: %v", name, got)
		}
		if name == "single" {
			if c, _ := sinks.Classify(got); c != sinks.ClassPermanent {
				t.Errorf("class lost: %v", c)
			}
		} else {
			var be *sinks.BatchError
			if !errors.As(got, &be) || be.Errs[0] != nil || be.Errs[1] == nil {
				t.Errorf("per-event results lost: %v", got)
			} else if c, _ := sinks.Classify(be.Errs[1]); c != sinks.ClassPermanent {
				t.Errorf("per-event class lost: %v", c)
			}
		}
		if l, ok := s.(sinks.Limiter); !ok || l.Limits().MaxBatch != 7 {
			t.Errorf("%s: Limits lost", name)
		}
	}
	canceled := sinks.Scrub(echoSink{err: context.Canceled}, cfg).Send(context.Background(), nil)
	if !errors.Is(canceled, context.Canceled) {
		t.Errorf("cancellation = %v", canceled)
	}
}
