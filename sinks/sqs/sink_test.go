package sqs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

const (
	testKeyID  = "AKIAIOSFODNN7EXAMPLE"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

func TestSpec(t *testing.T) {
	if Spec.Type != "sqs" || Spec.Doc == "" {
		t.Fatalf("spec %q %q", Spec.Type, Spec.Doc)
	}
	if _, ok := Spec.Config().(*Config); !ok {
		t.Fatalf("Spec.Config returns %T", Spec.Config())
	}
	fields := map[string]sinks.Field{}
	for _, f := range sinks.Describe(NewConfig()) {
		fields[f.Name] = f
	}
	for _, name := range []string{"queue_url", "region", "endpoint", "access_key_id", "secret_access_key", "message_group"} {
		if fields[name].Description == "" {
			t.Errorf("field %s missing or undescribed: %+v", name, fields[name])
		}
	}
	if !fields["queue_url"].Required || !fields["secret_access_key"].Secret || !fields["access_key_id"].Secret {
		t.Errorf("tags not as described: %+v", fields)
	}
}

func TestMaskSecrets(t *testing.T) {
	c := &Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/123456789012/q", AccessKeyID: testKeyID, SecretAccessKey: testSecret}
	printed := fmt.Sprint(sinks.MaskSecrets(c))
	if strings.Contains(printed, testSecret[:20]) || strings.Contains(printed, testKeyID[:12]) {
		t.Fatalf("masked config shows a secret: %s", printed)
	}
}

func TestValidate(t *testing.T) {
	const q = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // "path: substring"
	}{
		{"minimal", Config{QueueURL: q}, nil},
		{"fifo with group", Config{QueueURL: q + ".fifo", MessageGroup: "{data.case.id}"}, nil},
		{"compatible server", Config{QueueURL: "http://127.0.0.1:9324/000000000000/q", Endpoint: "http://127.0.0.1:9324", Region: "elasticmq"}, nil},
		{"static credentials", Config{QueueURL: q, AccessKeyID: testKeyID, SecretAccessKey: testSecret}, nil},
		{"group on a standard queue", Config{QueueURL: q, MessageGroup: "{tenant:-none}"}, nil},
		{"missing url", Config{}, []string{"queue_url: required"}},
		{"not a URL", Config{QueueURL: "http://[::1"}, []string{"queue_url: not a URL"}},
		{"wrong scheme", Config{QueueURL: "sqs://eu-west-1/orders"}, []string{"queue_url: must be an https URL"}},
		{"no host", Config{QueueURL: "https:///123/orders"}, []string{"queue_url: has no host"}},
		{"userinfo", Config{QueueURL: "https://a:b@sqs.eu-west-1.amazonaws.com/1/q"}, []string{"queue_url: must not carry user:password"}},
		{"query", Config{QueueURL: q + "?x=1"}, []string{"queue_url: must not have a query"}},
		{"no queue name", Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/"}, []string{"queue_url: \"\" does not end in a queue name"}},
		{"bad queue name", Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/1/or$ders"}, []string{"queue_url: \"or$ders\" does not end"}},
		{"fifo needs a group", Config{QueueURL: q + ".fifo"}, []string{"message_group: required for a FIFO queue"}},
		{"bad template", Config{QueueURL: q, MessageGroup: "{nope}"}, []string{"message_group: unknown placeholder {nope}"}},
		{"batch id group", Config{QueueURL: q, MessageGroup: "{batch_id}"}, []string{"message_group: {batch_id} changes"}},
		{"bad region", Config{QueueURL: q, Region: "EU West"}, []string{"region: \"EU West\" is not an AWS region"}},
		{"bad endpoint", Config{QueueURL: q, Endpoint: "tcp://127.0.0.1:9324"}, []string{"endpoint: must be an absolute http or https URL"}},
		{"key without secret", Config{QueueURL: q, AccessKeyID: testKeyID}, []string{"secret_access_key: required when access_key_id is set"}},
		{"secret without key", Config{QueueURL: q, SecretAccessKey: testSecret}, []string{"access_key_id: required when secret_access_key is set"}},
		{"several at once", Config{QueueURL: q + ".fifo", Region: "?", AccessKeyID: testKeyID},
			[]string{"region:", "secret_access_key:", "message_group:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			var got []string
			for _, e := range unjoin(err) {
				var fe *sinks.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is %T, want *sinks.FieldError", e, e)
				}
				got = append(got, fe.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d errors %q, want %d %q", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("error %d: %q does not contain %q", i, got[i], tc.want[i])
				}
				if strings.Contains(got[i], testSecret) || strings.Contains(got[i], testKeyID) {
					t.Errorf("error shows a credential: %q", got[i])
				}
			}
		})
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestRegionAndEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url, region, endpoint string
		wantRegion, wantEP    string
	}{
		{"https://sqs.eu-west-1.amazonaws.com/1/q", "", "", "eu-west-1", ""},
		{"https://sqs.cn-north-1.amazonaws.com.cn/1/q", "", "", "cn-north-1", ""},
		{"https://ap-southeast-2.queue.amazonaws.com/1/q", "", "", "ap-southeast-2", ""},
		{"https://queue.amazonaws.com/1/q", "", "", "us-east-1", ""},
		{"https://sqs.eu-west-1.amazonaws.com/1/q", "us-west-2", "", "us-west-2", ""},
		{"http://127.0.0.1:9324/000000000000/q", "", "", "us-east-1", "http://127.0.0.1:9324"},
		{"http://sqs.us-east-1.localhost:9324/000000000000/q", "", "http://127.0.0.1:9324", "us-east-1", "http://127.0.0.1:9324"},
	} {
		s, err := New(context.Background(), &Config{QueueURL: tc.url, Region: tc.region, Endpoint: tc.endpoint,
			AccessKeyID: testKeyID, SecretAccessKey: testSecret}, sinks.Env{})
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		o := s.client.Options()
		if o.Region != tc.wantRegion || aws.ToString(o.BaseEndpoint) != tc.wantEP {
			t.Errorf("%s: region %q endpoint %q; want %q %q", tc.url, o.Region, aws.ToString(o.BaseEndpoint), tc.wantRegion, tc.wantEP)
		}
		if _, ok := o.Retryer.(aws.NopRetryer); !ok {
			t.Errorf("the SDK retries (%T); the dispatcher owns retries", o.Retryer)
		}
	}
}

func TestAttributes(t *testing.T) {
	ev := event.Event{ID: "e-1", Topic: "case.updated", Tenant: "acme", Metadata: map[string]string{
		"z": "last", "a": "first", "bad key": "x", "empty": "", "ctl": "a\x01b",
	}}
	for i := range 10 {
		ev.Metadata[fmt.Sprintf("k%02d", i)] = "v"
	}
	attrs, size := attributes(&ev)
	if len(attrs) != MaxAttributes {
		t.Fatalf("%d attributes, want the cap of %d", len(attrs), MaxAttributes)
	}
	for _, name := range []string{"id", "topic", "tenant", "metadata.a", "metadata.k00", "metadata.k05"} {
		if _, ok := attrs[name]; !ok {
			t.Errorf("attribute %s missing: %v", name, keys(attrs))
		}
	}
	for _, name := range []string{"metadata.z", "metadata.bad key", "metadata.empty", "metadata.ctl"} {
		if _, ok := attrs[name]; ok {
			t.Errorf("attribute %s should be left out", name)
		}
	}
	want := 0
	for k, v := range attrs {
		want += len(k) + len(*v.DataType) + len(*v.StringValue)
	}
	if size != want {
		t.Errorf("size %d, want %d", size, want)
	}

	bare := event.Event{ID: "e-2", Topic: "t"}
	attrs, _ = attributes(&bare)
	if len(attrs) != 2 || *attrs["id"].StringValue != "e-2" || *attrs["topic"].StringValue != "t" {
		t.Errorf("bare event attributes: %v", keys(attrs))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSQSID(t *testing.T) {
	if got := sqsID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"); got != "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" {
		t.Errorf("a valid id changed: %q", got)
	}
	if got := sqsID(`!"#$%&'()*+,-./:;<=>?@[\]^_{|}~`); got != `!"#$%&'()*+,-./:;<=>?@[\]^_{|}~` {
		t.Errorf("punctuation changed: %q", got)
	}
	for _, in := range []string{"has space", "ünïcode", strings.Repeat("x", 129)} {
		got := sqsID(in)
		if len(got) != 64 || got != sqsID(in) || got == in {
			t.Errorf("sqsID(%q) = %q; want a stable 64-character hash", in, got)
		}
	}
	if sqsID("a b") == sqsID("a  b") {
		t.Error("different inputs hash alike")
	}
}

func TestEscapeNonCharacters(t *testing.T) {
	body := []byte(`{"data":"a` + "\uFFFE" + `b` + "\uFFFF" + `c ✓"}`)
	got := escapeNonCharacters(body)
	if !validText(string(got)) {
		t.Fatalf("still invalid for SQS: %q", got)
	}
	var a, b any
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatalf("escaped body is not JSON: %v", err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("escaping changed the value: %v vs %v", a, b)
	}
	plain := []byte(`{"x":"ünïcode ✓"}`)
	if got := escapeNonCharacters(plain); string(got) != string(plain) {
		t.Errorf("changed a body without non-characters: %s", got)
	}
}

func TestChunks(t *testing.T) {
	mk := func(sizes ...int) []entry {
		out := make([]entry, len(sizes))
		for i, s := range sizes {
			out[i] = entry{idx: i, size: s}
		}
		return out
	}
	count := func(cs [][]entry) []int {
		var out []int
		for _, c := range cs {
			out = append(out, len(c))
		}
		return out
	}
	const k = 1 << 10
	for _, tc := range []struct {
		name  string
		sizes []int
		want  []int
	}{
		{"none", nil, nil},
		{"ten small", repeat(10, k), []int{10}},
		{"eleven small", repeat(11, k), []int{10, 1}},
		{"bytes split", repeat(4, 100*k), []int{2, 2}},
		{"exactly full", []int{128 * k, 128 * k, 1}, []int{2, 1}},
		{"one max", []int{1, MaxMessageBytes, 1}, []int{1, 1, 1}},
	} {
		if got := count(chunks(mk(tc.sizes...))); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: chunks %v, want %v", tc.name, got, tc.want)
		}
	}
}

func repeat(n, v int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestResult(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	if sinks.Outcome([]error{nil, nil}) != nil {
		t.Error("all delivered is not nil")
	}
	if sinks.Outcome([]error{a}) != a {
		t.Error("one event's error is not returned as is")
	}
	if sinks.Outcome([]error{a, a}) != a {
		t.Error("an error shared by all is not returned as is")
	}
	var be *sinks.BatchError
	if !errors.As(sinks.Outcome([]error{a, b}), &be) || !errors.As(sinks.Outcome([]error{nil, a}), &be) || len(be.Errs) != 2 {
		t.Error("mixed outcomes are not a BatchError")
	}
}

func TestLimits(t *testing.T) {
	s, err := New(context.Background(), &Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/1/q",
		AccessKeyID: testKeyID, SecretAccessKey: testSecret}, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Limits()
	if l.MaxBatch != 10 || l.MaxBatchBytes <= 200<<10 || l.MaxBatchBytes >= MaxMessageBytes || l.MaxEventBytes != MaxMessageBytes {
		t.Errorf("limits %+v", l)
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	_, err := New(context.Background(), &Config{QueueURL: "https://sqs.eu-west-1.amazonaws.com/1/q.fifo"}, sinks.Env{})
	if err == nil || !strings.Contains(err.Error(), "message_group") {
		t.Fatalf("New with an invalid config: %v", err)
	}
	if _, err := New(context.Background(), nil, sinks.Env{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}
