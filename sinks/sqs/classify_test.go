package sqs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// fakeSQS answers SendMessageBatch in the SQS JSON protocol the way SQS does, from a handler the test gives, so
// the error paths that a real (or emulated) server cannot be made to take are covered: throttling, 5xx, bad
// credentials, a missing queue, per-entry failures, missing results.
type fakeSQS struct {
	t      *testing.T
	srv    *httptest.Server
	handle func(req batchRequest) (status int, body any)

	mu    sync.Mutex
	calls []batchRequest
}

type batchRequest struct {
	QueueURL string `json:"QueueUrl"`
	Entries  []struct {
		ID                     string `json:"Id"`
		MessageBody            string
		MessageGroupID         string `json:"MessageGroupId"`
		MessageDeduplicationID string `json:"MessageDeduplicationId"`
		MessageAttributes      map[string]struct {
			DataType    string
			StringValue string
		}
	}
}

type resultEntry struct {
	ID          string `json:"Id"`
	MessageID   string `json:"MessageId,omitempty"`
	Code        string `json:",omitempty"`
	Message     string `json:",omitempty"`
	SenderFault bool   `json:",omitempty"`
}

func newFakeSQS(t *testing.T, handle func(req batchRequest) (int, any)) *fakeSQS {
	f := &fakeSQS{t: t, handle: handle}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("X-Amz-Target"); got != "AmazonSQS.SendMessageBatch" {
			t.Errorf("unexpected operation %q", got)
			w.WriteHeader(400)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req batchRequest
		if err := json.Unmarshal(body, &req); err != nil {
			t.Errorf("request body: %v", err)
		}
		f.mu.Lock()
		f.calls = append(f.calls, req)
		f.mu.Unlock()
		status, out := f.handle(req)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(status)
		if s, ok := out.(string); ok {
			_, _ = io.WriteString(w, s)
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSQS) requests() []batchRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]batchRequest(nil), f.calls...)
}

// allOK answers every entry as sent.
func allOK(req batchRequest) (int, any) {
	var ok []resultEntry
	for _, e := range req.Entries {
		ok = append(ok, resultEntry{ID: e.ID, MessageID: "m-" + e.ID})
	}
	return 200, map[string]any{"Successful": ok}
}

func apiError(typ, msg string) string {
	return fmt.Sprintf(`{"__type":"com.amazonaws.sqs#%s","message":%q}`, typ, msg)
}

// fakeSink builds a sink against the fake, with the SDK's MD5 check of answers off (the fake does not compute
// message digests).
func fakeSink(t *testing.T, f *fakeSQS, mod func(*Config), env sinks.Env) *Sink {
	t.Helper()
	cfg := &Config{QueueURL: f.srv.URL + "/000000000000/orders", AccessKeyID: testKeyID, SecretAccessKey: testSecret}
	if mod != nil {
		mod(cfg)
	}
	s, err := New(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	o := s.client.Options()
	o.DisableMessageChecksumValidation = true
	s.client = sqs.New(o)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func events(n int) []event.Event {
	out := make([]event.Event, n)
	for i := range out {
		out[i] = event.Event{
			ID: fmt.Sprintf("evt-%d", i), Topic: "case.updated", Tenant: "acme",
			Time:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			Metadata: map[string]string{"source": "test"},
			Data:     json.RawMessage(fmt.Sprintf(`{"case":{"id":"c-%d"}}`, i%3)),
		}
	}
	return out
}

func classOf(err error) string {
	if err == nil {
		return "ok"
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "cancelled"
	}
	c, _ := sinks.Classify(err)
	return c.String()
}

func TestWholeCallErrors(t *testing.T) {
	for _, tc := range []struct {
		status      int
		body        string
		class, text string
	}{
		{400, apiError("QueueDoesNotExist", "The specified queue does not exist."), "permanent", "check queue_url"},
		{403, apiError("InvalidClientTokenId", "The security token included in the request is invalid."), "permanent", "check access_key_id"},
		{403, apiError("SignatureDoesNotMatch", "The request signature we calculated does not match"), "permanent", "check access_key_id"},
		{400, `{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"bad token"}`, "permanent", "check access_key_id"},
		{400, apiError("AccessDeniedException", "not authorized to perform sqs:sendmessage"), "permanent", "sqs:SendMessage"},
		{400, apiError("KmsAccessDenied", "kms"), "permanent", "KMS key"},
		{400, apiError("RequestThrottled", "slow down"), "retryable", "RequestThrottled"},
		{400, apiError("ThrottlingException", "Rate exceeded"), "retryable", "ThrottlingException"},
		{400, apiError("KmsThrottled", "kms busy"), "retryable", "KmsThrottled"},
		{500, apiError("InternalError", "oops"), "retryable", "InternalError"},
		{503, apiError("ServiceUnavailable", "later"), "retryable", "http 503"},
		{502, "<html>bad gateway</html>", "retryable", "http 502"},
		{400, apiError("SomethingNew", "unknown client error"), "permanent", "SomethingNew"},
	} {
		f := newFakeSQS(t, func(batchRequest) (int, any) { return tc.status, tc.body })
		s := fakeSink(t, f, nil, sinks.Env{})
		err := s.Send(context.Background(), events(3))
		if got := classOf(err); got != tc.class {
			t.Errorf("%d %s: class %s, want %s (%v)", tc.status, tc.body, got, tc.class, err)
			continue
		}
		var be *sinks.BatchError
		if errors.As(err, &be) {
			t.Errorf("%d %s: a whole-call error came back as a BatchError: %v", tc.status, tc.body, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.text) || !strings.Contains(msg, "queue orders") {
			t.Errorf("%d %s: message %q does not name the queue and %q", tc.status, tc.body, msg, tc.text)
		}
		if strings.Contains(msg, testSecret) || strings.Contains(msg, testKeyID) {
			t.Errorf("message shows a credential: %q", msg)
		}
	}
}

func TestPerEntryResults(t *testing.T) {
	f := newFakeSQS(t, func(req batchRequest) (int, any) {
		return 200, map[string]any{
			"Successful": []resultEntry{{ID: req.Entries[0].ID, MessageID: "m0"}},
			"Failed": []resultEntry{
				{ID: req.Entries[1].ID, Code: "InvalidMessageContents", Message: "Invalid characters", SenderFault: true},
				{ID: req.Entries[2].ID, Code: "InternalError", Message: "try again"},
			},
			// Entry 3 gets no answer at all.
		}
	})
	s := fakeSink(t, f, nil, sinks.Env{})
	var rep sinks.Report
	err := s.Send(sinks.WithReport(context.Background(), &rep), events(4))
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a BatchError", err)
	}
	want := []string{"ok", "permanent", "retryable", "retryable"}
	for i, e := range be.Errs {
		if got := classOf(e); got != want[i] {
			t.Errorf("entry %d: %s (%v), want %s", i, got, e, want[i])
		}
	}
	if !strings.Contains(be.Errs[1].Error(), "InvalidMessageContents") {
		t.Errorf("entry error does not say why: %v", be.Errs[1])
	}
	if rep.StatusCode != 200 || !strings.Contains(string(rep.Response), `"failed":2`) {
		t.Errorf("report %d %s", rep.StatusCode, rep.Response)
	}
}

func TestRequestShape(t *testing.T) {
	f := newFakeSQS(t, allOK)
	s := fakeSink(t, f, func(c *Config) {
		c.QueueURL += ".fifo"
		c.MessageGroup = "{tenant}-{data.case.id}"
	}, sinks.Env{})
	evs := events(3)
	evs[1].ID = "id with spaces"
	if err := s.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	calls := f.requests()
	if len(calls) != 1 || len(calls[0].Entries) != 3 {
		t.Fatalf("calls %+v", calls)
	}
	for i, e := range calls[0].Entries {
		env, _ := evs[i].Envelope()
		if e.MessageBody != string(env) {
			t.Errorf("entry %d body %s, want the envelope %s", i, e.MessageBody, env)
		}
		if e.ID != fmt.Sprint(i) {
			t.Errorf("entry %d id %q", i, e.ID)
		}
		if want := fmt.Sprintf("acme-c-%d", i%3); e.MessageGroupID != want {
			t.Errorf("entry %d group %q, want %q", i, e.MessageGroupID, want)
		}
		if e.MessageDeduplicationID != sqsID(evs[i].ID) {
			t.Errorf("entry %d dedup id %q", i, e.MessageDeduplicationID)
		}
		a := e.MessageAttributes
		if a["id"].StringValue != evs[i].ID || a["topic"].StringValue != "case.updated" ||
			a["tenant"].StringValue != "acme" || a["metadata.source"].StringValue != "test" || a["id"].DataType != "String" {
			t.Errorf("entry %d attributes %+v", i, a)
		}
	}
	if calls[0].Entries[1].MessageDeduplicationID == evs[1].ID {
		t.Error("an id SQS refuses as a deduplication id was sent as is")
	}
}

func TestEventErrorsArePermanentAndLocal(t *testing.T) {
	f := newFakeSQS(t, allOK)
	s := fakeSink(t, f, func(c *Config) { c.MessageGroup = "{data.region}" }, sinks.Env{})
	evs := events(4)
	for i := range evs {
		evs[i].Data = json.RawMessage(`{"region":"eu"}`)
	}
	evs[1].Data = json.RawMessage(`{"other":1}`)                                                           // group renders nothing
	evs[2].Data = json.RawMessage(`{"region":"eu","blob":"` + strings.Repeat("x", MaxMessageBytes) + `"}`) // too large
	err := s.Send(context.Background(), evs)
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a BatchError", err)
	}
	want := []string{"ok", "permanent", "permanent", "ok"}
	for i, e := range be.Errs {
		if got := classOf(e); got != want[i] {
			t.Errorf("event %d: %s (%v), want %s", i, got, e, want[i])
		}
	}
	if !strings.Contains(be.Errs[1].Error(), "message_group") || !strings.Contains(be.Errs[2].Error(), "256 KiB") {
		t.Errorf("errors do not say why: %v / %v", be.Errs[1], be.Errs[2])
	}
	if calls := f.requests(); len(calls) != 1 || len(calls[0].Entries) != 2 {
		t.Errorf("the refused events were sent anyway: %+v", calls)
	}
}

func TestSplitsLargeBatches(t *testing.T) {
	f := newFakeSQS(t, allOK)
	s := fakeSink(t, f, nil, sinks.Env{})
	evs := events(10)
	for i := range evs {
		evs[i].Data = json.RawMessage(`{"blob":"` + strings.Repeat("x", 100<<10) + `"}`)
	}
	if err := s.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	calls := f.requests()
	n := 0
	for _, c := range calls {
		size := 0
		for _, e := range c.Entries {
			size += len(e.MessageBody)
			n++
		}
		if size > MaxMessageBytes {
			t.Errorf("a call carries %d bytes", size)
		}
	}
	if len(calls) != 5 || n != 10 {
		t.Errorf("%d calls with %d entries; want 5 calls of 2", len(calls), n)
	}
}

func TestHalvesWhenTheServerLimitIsLower(t *testing.T) {
	f := newFakeSQS(t, func(req batchRequest) (int, any) {
		if len(req.Entries) > 2 {
			return 400, apiError("BatchRequestTooLong", "Batch requests cannot be longer than 1000 bytes")
		}
		for _, e := range req.Entries {
			if strings.Contains(e.MessageBody, "huge") {
				return 400, apiError("BatchRequestTooLong", "too long")
			}
		}
		return allOK(req)
	})
	s := fakeSink(t, f, nil, sinks.Env{})
	evs := events(7)
	evs[5].Data = json.RawMessage(`{"huge":true}`)
	err := s.Send(context.Background(), evs)
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a BatchError", err)
	}
	for i, e := range be.Errs {
		want := "ok"
		if i == 5 {
			want = "permanent"
		}
		if got := classOf(e); got != want {
			t.Errorf("event %d: %s (%v), want %s", i, got, e, want)
		}
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, err := New(context.Background(), &Config{QueueURL: "http://" + addr + "/000000000000/orders",
		AccessKeyID: testKeyID, SecretAccessKey: testSecret}, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(context.Background(), events(2))
	if classOf(err) != "retryable" || !strings.Contains(err.Error(), "no answer from http://"+addr) ||
		!strings.Contains(err.Error(), "refused") {
		t.Fatalf("got %v", err)
	}
}

func TestCancelDuringCall(t *testing.T) {
	release := make(chan struct{})
	f := newFakeSQS(t, func(req batchRequest) (int, any) {
		<-release
		return allOK(req)
	})
	defer close(release)
	s := fakeSink(t, f, nil, sinks.Env{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err := s.Send(ctx, events(3))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, events(3)); !errors.Is(err, context.Canceled) {
		t.Fatalf("already cancelled: got %v", err)
	}
}

func TestGuardRefusalIsPermanent(t *testing.T) {
	f := newFakeSQS(t, allOK)
	guard := netguard.New(nil) // loopback is not allowed
	s := fakeSink(t, f, nil, sinks.Env{Dial: guard.DialContext})
	err := s.Send(context.Background(), events(1))
	if classOf(err) != "permanent" || !strings.Contains(err.Error(), "allow_cidrs") {
		t.Fatalf("got %v", err)
	}
	if len(f.requests()) != 0 {
		t.Fatal("the guard let the request through")
	}
}

func TestClosedSinkFailsRetryably(t *testing.T) {
	f := newFakeSQS(t, allOK)
	s := fakeSink(t, f, nil, sinks.Env{})
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), events(1)); classOf(err) != "retryable" {
		t.Fatalf("Send after Close: %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
