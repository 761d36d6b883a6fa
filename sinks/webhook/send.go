package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// Response bodies are kept only as an excerpt for the attempt log; a little more is drained so the connection
// can be reused, and anything larger is cut off by closing it.
const (
	excerptBytes = 4 << 10
	drainBytes   = 64 << 10
)

// Send delivers each event as its own request. With one event it returns that request's classified error;
// with several (the dispatcher never batches more than Limits allows, but callers may) a *sinks.BatchError.
func (s *Sink) Send(ctx context.Context, batch []event.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch len(batch) {
	case 0:
		return nil
	case 1:
		return s.send(ctx, &batch[0])
	}
	errs := make([]error, len(batch))
	failed := false
	for i := range batch {
		if err := ctx.Err(); err != nil {
			// Not attempted: the cancellation, not a failure, is what the dispatcher must see for these.
			errs[i], failed = err, true
			continue
		}
		if err := s.send(ctx, &batch[i]); err != nil {
			errs[i], failed = err, true
		}
	}
	if !failed {
		return nil
	}
	return &sinks.BatchError{Errs: errs}
}

func (s *Sink) send(ctx context.Context, e *event.Event) error {
	body, err := s.body(e)
	if err != nil {
		return sinks.Permanent(err)
	}
	// The body and the response excerpt count against the process-wide in-flight budget until the answer
	// is read; past it, attempts wait here (a cancelled wait is not a failed delivery).
	held, err := s.budget.Acquire(ctx, int64(len(body))+excerptBytes)
	if err != nil {
		return err
	}
	defer s.budget.Release(held)
	attemptCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(attemptCtx, s.method, s.url, bytes.NewReader(body))
	if err != nil {
		return sinks.Permanent(fmt.Errorf("build request: %v", classify.URLErrMsg(err)))
	}
	req.Header = s.header(e, s.now().Unix(), body)

	resp, err := s.client.Do(req)
	if err != nil {
		return s.transportError(ctx, attemptCtx, err)
	}
	excerpt := readExcerpt(resp.Body)
	sinks.Note(ctx, resp.StatusCode, excerpt)
	return classifyResponse(resp, s.now())
}

// header returns the request headers for one attempt. The webhook-* names are written in the lowercase the
// Standard Webhooks spec uses (HTTP/1.1 sends map keys as given); Content-Type and User-Agent stay canonical
// because net/http looks them up that way and would otherwise add its own.
func (s *Sink) header(e *event.Event, ts int64, body []byte) http.Header {
	id := e.ID
	h := s.headers.Clone() // deep: the transport may add to a request's headers
	switch s.cfg.Format {
	case FormatCloudEvents:
		// Binary mode: the attributes travel as ce-* headers, lowercase as the HTTP binding writes them.
		h["ce-specversion"] = []string{ceSpecVersion}
		h["ce-id"] = []string{id}
		h["ce-source"] = []string{s.source(e)}
		h["ce-type"] = []string{e.Topic}
		h["ce-time"] = []string{e.Time.UTC().Format(time.RFC3339Nano)}
		if sub := e.Metadata[MetaSubject]; sub != "" {
			h["ce-subject"] = []string{sub}
		}
	}
	h[HeaderID] = []string{id}
	h[HeaderTimestamp] = []string{strconv.FormatInt(ts, 10)}
	switch s.cfg.Signing {
	case SigningStandard:
		h[HeaderSignature] = []string{string(s.signer.append(make([]byte, 0, 48*len(s.signer.pools)), id, ts, body))}
	case SigningHex:
		h.Set(s.cfg.SignatureHeader, SignHex(s.cfg.Secrets, body))
	}
	return h
}

var null = []byte("null")

// CloudEvents constants, and the metadata keys intake fills for events that arrived as CloudEvents.
const (
	ceSpecVersion    = "1.0"
	ceStructuredType = "application/cloudevents+json; charset=utf-8"
	// MetaSource and MetaSubject hold an incoming CloudEvent's source and subject.
	MetaSource  = "ce_source"
	MetaSubject = "ce_subject"
)

// source is the CloudEvents source of e: configured, else the one it arrived with, else sluice.
func (s *Sink) source(e *event.Event) string {
	if s.cfg.Source != "" {
		return s.cfg.Source
	}
	if src := e.Metadata[MetaSource]; src != "" {
		return src
	}
	return DefaultSource
}

// body encodes an event in the configured format. The data is sent byte for byte as published (intake checked
// it is JSON), so what the receiver verifies is what the publisher wrote. A transform's result (e.Body) takes
// the data's place: it is the whole body with format raw (and cloudevents, whose body is the data).
func (s *Sink) body(e *event.Event) ([]byte, error) {
	data := []byte(e.Data)
	if len(e.Body) > 0 {
		data = e.Body
	}
	if len(data) == 0 {
		data = null
	} else if !json.Valid(data) {
		return nil, errors.New("event data is not valid JSON")
	}
	switch s.cfg.Format {
	case FormatRaw, FormatCloudEvents:
		return data, nil
	case FormatCloudEventsStructured:
		return s.structured(e, data)
	}
	topic, err := json.Marshal(e.Topic)
	if err != nil {
		return nil, fmt.Errorf("encode topic: %v", err)
	}
	buf := make([]byte, 0, len(`{"type":,"timestamp":"","data":}`)+len(topic)+len(time.RFC3339Nano)+len(data))
	buf = append(buf, `{"type":`...)
	buf = append(buf, topic...)
	buf = append(buf, `,"timestamp":"`...)
	buf = e.Time.UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","data":`...)
	buf = append(buf, data...)
	buf = append(buf, '}')
	return buf, nil
}

// structured encodes e as one CloudEvents JSON document carrying data.
func (s *Sink) structured(e *event.Event, data []byte) ([]byte, error) {
	doc := struct {
		SpecVersion     string          `json:"specversion"`
		ID              string          `json:"id"`
		Source          string          `json:"source"`
		Type            string          `json:"type"`
		Time            string          `json:"time"`
		Subject         string          `json:"subject,omitempty"`
		DataContentType string          `json:"datacontenttype"`
		Data            json.RawMessage `json:"data"`
	}{ceSpecVersion, e.ID, s.source(e), e.Topic, e.Time.UTC().Format(time.RFC3339Nano), e.Metadata[MetaSubject],
		"application/json", data}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode cloudevent: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// transportError classifies a request that got no HTTP answer.
func (s *Sink) transportError(ctx, attemptCtx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The dispatcher cancelled or its deadline passed: not this destination's failure.
		return ctxErr
	}
	// url.Error repeats the whole URL, whose path or query often holds a token; name only the origin.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	where := s.method + " " + s.origin
	if refused := classify.Refused(where, err); refused != nil {
		return refused
	}
	if errors.Is(attemptCtx.Err(), context.DeadlineExceeded) {
		return sinks.Retryable(fmt.Errorf("%s: no answer within %v: %w", where, s.timeout,
			context.DeadlineExceeded), 0)
	}
	return sinks.Retryable(fmt.Errorf("%s: %w", where, err), 0)
}

// readExcerpt returns the start of a response body for the attempt log and drains a bounded amount more, so
// the connection goes back to the pool; a body larger than that is abandoned by closing it.
func readExcerpt(body io.ReadCloser) []byte {
	defer body.Close()
	bp := excerptPool.Get().(*[]byte)
	defer excerptPool.Put(bp)
	buf := *bp
	n, _ := io.ReadFull(body, buf)
	if n == len(buf) {
		_, _ = io.CopyN(io.Discard, body, drainBytes)
	}
	if n == 0 {
		return nil
	}
	// A copy sized to the answer: the excerpt lives on in the attempt log, the 4 KiB buffer does not.
	return bytes.Clone(buf[:n])
}

var excerptPool = sync.Pool{New: func() any { b := make([]byte, excerptBytes); return &b }}
