package intake

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// TestInlineSecretSealedAtRest: a per-run subscription's signing secret is stored sealed when a key is
// configured, and a restart opens it for the subscription's sink.
func TestInlineSecretSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	box, err := seal.New([][]byte{bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var gotSecret string
	sealing := func(o *Options) {
		o.Inline.Enabled = true
		o.Inline.Seal = box.Seal
		o.Inline.Open = func(s string) (string, error) { pt, _, err := box.Open(s); return pt, err }
		next := o.Inline.NewSink
		o.Inline.NewSink = func(sub store.Subscription) (sinks.Sink, error) {
			gotSecret = sub.Secret
			return next(sub)
		}
	}
	f := newFixture(t, dir, testConfig, sealing)
	ctx := context.Background()
	if err := f.in.StartInline(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := publishJSON(ctx, f.in, `{"topic":"case.created","correlation_id":"run-1","data":{},`+
		`"subscriptions":[{"url":"https://example.com/run","topics":["case.*"],"secret":"`+secret+`"}]}`); err != nil {
		t.Fatalf("register: %v", err)
	}
	subs, err := f.st.Subscriptions(ctx)
	if err != nil || len(subs) != 1 {
		t.Fatalf("stored subscriptions: %v %v", subs, err)
	}
	if !seal.IsSealed(subs[0].Secret) || strings.Contains(subs[0].Secret, strings.TrimPrefix(secret, "whsec_")) {
		t.Fatalf("the stored secret is not sealed: %q", subs[0].Secret)
	}
	f.stop()

	gotSecret = ""
	f2 := newFixture(t, dir, testConfig, sealing)
	if err := f2.in.StartInline(ctx); err != nil {
		t.Fatal(err)
	}
	if gotSecret != secret {
		t.Fatalf("after restart the subscription's sink got secret %q, want the original", gotSecret)
	}
}
