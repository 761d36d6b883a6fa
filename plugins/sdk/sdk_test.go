package sdk_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk"
	"github.com/sluicehq/sluice/plugins/sdk/sdktest"
)

type cfg struct {
	URL     string        `yaml:"url" required:"true" desc:"where"`
	Retries int           `yaml:"retries" default:"3"`
	Wait    time.Duration `yaml:"wait" default:"2s"`
	Key     string        `yaml:"key" secret:"true"`
	Tags    []string      `yaml:"tags" default:"[a, b]"`
	TLS     struct {
		CA string `yaml:"ca"`
	} `yaml:"tls"`
}

func (c *cfg) Validate() error {
	if c.URL == "bad" {
		return errors.Join(sdk.Errorf("url", "is bad"), sdk.Errorf("tls.ca", "is bad too"))
	}
	return nil
}

type recorder struct {
	cfg  cfg
	info sdk.Info
	got  [][]sdk.Event
}

func (r *recorder) Send(ctx context.Context, batch []sdk.Event) error {
	r.got = append(r.got, batch)
	switch batch[0].Topic {
	case "permanent":
		return sdk.Permanent(errors.New("no"))
	case "later":
		return sdk.Retryable(errors.New("busy"), 3*time.Second)
	case "mixed":
		return &sdk.BatchError{Errs: []error{nil, sdk.Permanent(errors.New("bad event"))}}
	case "panic":
		panic("boom")
	}
	return nil
}

func (r *recorder) Close(context.Context) error { return nil }

func start(t *testing.T) (*sdktest.Plugin, *recorder) {
	rec := &recorder{}
	p := sdktest.Start(t, sdk.New("rec", func(ctx context.Context, c cfg) (sdk.Sink, error) {
		rec.cfg, rec.info = c, sdk.InfoFrom(ctx)
		return rec, nil
	}, sdk.WithDoc("records"), sdk.WithLimits(sdk.Limits{MaxBatch: 7})))
	return p, rec
}

func TestDescribeFromTags(t *testing.T) {
	p, _ := start(t)
	d := p.Describe()
	if d.Name != "rec" || d.Doc != "records" || d.Limits.MaxBatch != 7 {
		t.Errorf("describe = %+v", d)
	}
	want := map[string]string{"url": "string", "retries": "integer", "wait": "duration", "key": "string",
		"tags": "list of string", "tls.ca": "string"}
	for _, f := range d.Fields {
		if want[f.Name] != f.Type {
			t.Errorf("field %s type %q, want %q", f.Name, f.Type, want[f.Name])
		}
		delete(want, f.Name)
	}
	if len(want) > 0 {
		t.Errorf("missing fields %v", want)
	}
}

func TestDecodeDefaultsAndErrors(t *testing.T) {
	p, rec := start(t)
	s, err := p.OpenDestination(context.Background(), "url: x\nretries: 5", sdk.Info{Destination: "d1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if rec.cfg.Retries != 5 || rec.cfg.Wait != 2*time.Second || strings.Join(rec.cfg.Tags, ",") != "a,b" {
		t.Errorf("decoded %+v", rec.cfg)
	}
	if rec.info.Destination != "d1" || rec.info.Timeout != time.Second {
		t.Errorf("info %+v", rec.info)
	}
	for block, want := range map[string][]string{
		"retries: 1":           {"url: is required: where"},
		"url: ''":              {"url: must not be empty"},
		"url: x\nretries: two": {`retries: must be an integer, got "two"`},
		"url: x\nwait: later":  {`wait: must be a duration such as 5s, got "later"`},
		"url: x\nextra: 1":     {`extra: unknown key "extra"; valid keys here: url, retries, wait, key, tags, tls`},
		"url: x\ntls: 3":       {"tls: must be a mapping of keys (ca)"},
		"url: bad":             {"url: is bad", "tls.ca: is bad too"},
		"- a":                  {"must be a mapping"},
	} {
		err := p.Validate(block)
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want %q", block, err, w)
			}
		}
		var fe *sdk.FieldError
		if err != nil && !errors.As(err, &fe) {
			t.Errorf("%q: %T is not a field error", block, err)
		}
	}
}

func TestOutcomesCrossTheBoundaryTyped(t *testing.T) {
	p, _ := start(t)
	s, err := p.Open(context.Background(), "url: x")
	if err != nil {
		t.Fatal(err)
	}
	ev := func(topic string, n int) []sdk.Event {
		out := make([]sdk.Event, n)
		for i := range out {
			out[i] = sdk.Event{ID: "e", Topic: topic, Time: time.Unix(1, 5), Metadata: map[string]string{"k": "v"}, Data: []byte(`{}`)}
		}
		return out
	}
	ctx := context.Background()
	if err := s.Send(ctx, ev("ok", 3)); err != nil {
		t.Errorf("ok: %v", err)
	}
	if c, _ := sdk.Classify(s.Send(ctx, ev("permanent", 2))); c != sdk.ClassPermanent {
		t.Errorf("permanent came back %v", c)
	}
	if c, after := sdk.Classify(s.Send(ctx, ev("later", 1))); c != sdk.ClassRetryable || after != 3*time.Second {
		t.Errorf("retryable came back %v after %v", c, after)
	}
	var be *sdk.BatchError
	if err := s.Send(ctx, ev("mixed", 2)); !errors.As(err, &be) || be.Errs[0] != nil || be.Errs[1] == nil {
		t.Errorf("mixed came back %v", err)
	}
	if c, _ := sdk.Classify(s.Send(ctx, ev("panic", 1))); c != sdk.ClassRetryable {
		t.Errorf("a panic came back %v", c)
	}
}
