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
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

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

// Send delivers each event as its own request, or, with a batch block, the batch in one request per url
// (one, unless the url or headers are templates). With one event it returns that event's classified error;
// with several a *sinks.BatchError unless all share the outcome.
func (s *Sink) Send(ctx context.Context, batch []event.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case len(batch) == 0:
		return nil
	case s.batch != nil:
		return s.sendBatches(ctx, batch)
	case len(batch) == 1:
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

// sendBatches groups the events by route and sends each group as one request.
func (s *Sink) sendBatches(ctx context.Context, batch []event.Event) error {
	errs := make([]error, len(batch))
	type group struct {
		r   route
		evs []*event.Event
		idx []int
	}
	var groups []*group
	byKey := map[string]*group{}
	for i := range batch {
		r, err := s.route(&batch[i])
		if err != nil {
			errs[i] = err
			continue
		}
		g := byKey[r.key()]
		if g == nil {
			g = &group{r: r}
			byKey[r.key()] = g
			groups = append(groups, g)
		}
		g.evs, g.idx = append(g.evs, &batch[i]), append(g.idx, i)
	}
	for _, g := range groups {
		gerrs := make([]error, len(g.evs))
		if err := ctx.Err(); err != nil {
			for k := range gerrs {
				gerrs[k] = err
			}
		} else {
			s.sendBatch(ctx, g.r, g.evs, gerrs)
		}
		for k, i := range g.idx {
			errs[i] = gerrs[k]
		}
	}
	if len(batch) == 1 {
		return errs[0]
	}
	for _, err := range errs {
		if err != nil {
			return &sinks.BatchError{Errs: errs}
		}
	}
	return nil
}

func (s *Sink) send(ctx context.Context, e *event.Event) error {
	r, err := s.route(e)
	if err != nil {
		return err
	}
	body, err := s.body(e)
	if err != nil {
		return sinks.Permanent(err)
	}
	ctx, span := s.startAttempt(ctx, []*event.Event{e})
	defer span.End()
	resp, _, err := s.exchange(ctx, span, r, e, e.ID, body, e.Traceparent)
	if err == nil {
		err = classifyResponse(resp, s.now())
	}
	endAttempt(span, resp, err)
	return err
}

// exchange makes one request and reads the start of its answer (all of a 207's results). With OAuth2, a 401
// drops the token it was sent with and the request is made once more with a fresh one. e is nil for a batch.
// The response's body is closed; resp is nil when err is set.
func (s *Sink) exchange(ctx context.Context, span trace.Span, r route, e *event.Event, id string, body []byte,
	traceparent string) (*http.Response, []byte, error) {
	// The process-wide in-flight byte budget (sinks.InFlight) is held by the dispatcher for the whole attempt,
	// for every sink alike; it is not counted again here.
	c := s.client()
	for try := 0; ; try++ {
		attemptCtx, cancel := s.attemptContext(ctx)
		req, err := s.newRequest(attemptCtx, r, body)
		if err != nil {
			cancel()
			return nil, nil, sinks.Permanent(fmt.Errorf("build request: %v", classify.URLErrMsg(err)))
		}
		req.Header = s.header(e, id, s.now().Unix(), body)
		for _, h := range r.header {
			req.Header.Set(h[0], h[1])
		}
		setTraceparent(ctx, span, req.Header, traceparent)
		var used any
		if s.auth != nil {
			if used, err = s.auth.apply(attemptCtx, req); err != nil {
				cancel()
				if ctxErr := ctx.Err(); ctxErr != nil {
					return nil, nil, ctxErr
				}
				return nil, nil, err
			}
		}
		// The transport itself (or h1 for plain http), not c.http.Do: a client copies every request's headers
		// for redirects, which the sink never follows (c.http's CheckRedirect hands back the 3xx), and wraps
		// errors transportError unwraps again.
		var resp *http.Response
		if c.h1.use(req, len(body)) {
			resp, err = c.h1.RoundTrip(req)
		} else {
			resp, err = c.transport.RoundTrip(req)
		}
		if err != nil {
			defer cancel()
			return nil, nil, s.transportError(ctx, attemptCtx, r.origin, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && try == 0 && s.auth != nil && s.auth.invalidate(used) {
			// The token may have been revoked or expired early: fetch a new one and try once more.
			readExcerpt(resp.Body)
			cancel()
			continue
		}
		var excerpt []byte
		if resp.StatusCode == http.StatusMultiStatus && s.batch != nil {
			excerpt = readAll(resp.Body, resultsBytes)
			sinks.Note(ctx, resp.StatusCode, clipBytes(excerpt, excerptBytes))
		} else {
			excerpt = readExcerpt(resp.Body)
			sinks.Note(ctx, resp.StatusCode, excerpt)
		}
		cancel()
		return resp, excerpt, nil
	}
}

// newRequest makes one attempt's request, without headers. With the url parsed once for the sink (r.parsed) it
// is made here rather than by http.NewRequestWithContext, which parses the url again and makes a header map that
// header replaces at once. The body is the kind net/http knows to be in memory (a bytes.Reader), which its
// transport writes together with the request's head: with any other kind it flushes the head first, and an early
// answer (a refused client certificate) breaks the second write and hides behind a broken pipe.
func (s *Sink) newRequest(ctx context.Context, r route, body []byte) (*http.Request, error) {
	if r.parsed == nil {
		return http.NewRequestWithContext(ctx, s.method, r.url, bytes.NewReader(body))
	}
	req := http.Request{Method: s.method, URL: r.parsed, Host: r.parsed.Host, Proto: "HTTP/1.1", ProtoMajor: 1,
		ProtoMinor: 1, Body: http.NoBody, GetBody: noBody}
	if len(body) > 0 {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return req.WithContext(ctx), nil
}

func noBody() (io.ReadCloser, error) { return http.NoBody, nil }

// lastTimestamp is the webhook-timestamp text of the latest second asked for: every request within a second
// shares one string instead of formatting its own.
var lastTimestamp atomic.Pointer[timestamp]

type timestamp struct {
	unix int64
	text string
}

func timestampText(ts int64) string {
	if t := lastTimestamp.Load(); t != nil && t.unix == ts {
		return t.text
	}
	t := &timestamp{unix: ts, text: strconv.FormatInt(ts, 10)}
	lastTimestamp.Store(t)
	return t.text
}

// attemptContext bounds one request by the sink's timeout. When ctx already ends no later (the dispatcher gives
// each attempt the destination's timeout, which is usually this one), ctx is used as it is: a second deadline
// would cost a timer, a context and its registration with ctx on every request, and could never fire first.
// transportError reads ctx's own end before attemptCtx's either way, so the error is the same.
func (s *Sink) attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && !dl.After(time.Now().Add(s.timeout)) {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, s.timeout)
}

func noCancel() {}

// header returns the request headers for one attempt. The webhook-* names are written in the lowercase the
// Standard Webhooks spec uses (HTTP/1.1 sends map keys as given); Content-Type and User-Agent stay canonical
// because net/http looks them up that way and would otherwise add its own. e is nil for a batch, whose id is
// the batch's.
func (s *Sink) header(e *event.Event, id string, ts int64, body []byte) http.Header {
	// One map sized for everything this request carries, and one backing array for the values of this request:
	// the fixed headers are copied by reference (a header's value slice is never changed in place, only
	// replaced), so the transport adding to the map never touches s.headers. The size is exact: the webhook-*
	// three (or the hex signature), the ce-* six in binary mode, and what the send adds (traceparent,
	// tracestate, Authorization). A usual request's eight then fit one group of the map, a single allocation,
	// where a map sized for more than eight is a table of several.
	n := 3
	if e != nil && s.cfg.Format == FormatCloudEvents {
		n += 6
	}
	h := make(http.Header, len(s.headers)+len(s.headerT)+n+3)
	for k, v := range s.headers {
		h[k] = v[:len(v):len(v)]
	}
	vals := make([]string, 0, n)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if e != nil && s.cfg.Format == FormatCloudEvents {
		// Binary mode: the attributes travel as ce-* headers, lowercase as the HTTP binding writes them.
		set("ce-specversion", ceSpecVersion)
		set("ce-id", id)
		set("ce-source", s.source(e))
		set("ce-type", e.Topic)
		set("ce-time", e.Time.UTC().Format(time.RFC3339Nano))
		if sub := e.Metadata[MetaSubject]; sub != "" {
			set("ce-subject", sub)
		}
	}
	set(HeaderID, id)
	set(HeaderTimestamp, timestampText(ts))
	switch s.cfg.Signing {
	case SigningStandard:
		if e != nil {
			// A single event's body is its own (never a pooled buffer): sinks sharing the secret reuse the
			// signature.
			set(HeaderSignature, s.signer.header(id, ts, body))
		} else {
			var sig [2 * 48]byte
			set(HeaderSignature, string(s.signer.append(sig[:0], id, ts, body)))
		}
	case SigningHex:
		set(http.CanonicalHeaderKey(s.cfg.SignatureHeader), SignHex(s.cfg.Secrets, body))
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

// body encodes an event in the configured format. The data is sent byte for byte as published, so what the
// receiver verifies is what the publisher wrote; it is checked to be JSON unless intake already did
// (e.DataChecked: checking 1 KiB costs about what the rest of the body does, for each destination). A transform's
// result (e.Body) takes the data's place: it is the whole body with format raw (and cloudevents, whose body is
// the data).
func (s *Sink) body(e *event.Event) ([]byte, error) {
	data, checked := []byte(e.Data), e.DataChecked
	if len(e.Body) > 0 {
		data, checked = e.Body, false
	}
	if len(data) == 0 {
		data = null
	} else if !checked && !json.Valid(data) {
		return nil, errors.New("event data is not valid JSON")
	}
	switch s.cfg.Format {
	case FormatRaw, FormatCloudEvents:
		return data, nil
	case FormatCloudEventsStructured:
		return s.structured(e, data)
	}
	buf := make([]byte, 0, len(`{"type":"","timestamp":"","data":}`)+len(e.Topic)+len(time.RFC3339Nano)+len(data))
	buf = append(buf, `{"type":`...)
	if plainJSON(e.Topic) {
		buf = append(buf, '"')
		buf = append(buf, e.Topic...)
		buf = append(buf, '"')
	} else {
		topic, err := json.Marshal(e.Topic)
		if err != nil {
			return nil, fmt.Errorf("encode topic: %v", err)
		}
		buf = append(buf, topic...)
	}
	buf = append(buf, `,"timestamp":"`...)
	buf = e.Time.UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","data":`...)
	buf = append(buf, data...)
	buf = append(buf, '}')
	return buf, nil
}

// plainJSON reports whether s is written in a JSON string as it is: printable ASCII that encoding/json
// neither escapes nor replaces (it escapes <, > and & too).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
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
func (s *Sink) transportError(ctx, attemptCtx context.Context, origin string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The dispatcher cancelled or its deadline passed: not this destination's failure.
		return ctxErr
	}
	// url.Error repeats the whole URL, whose path or query often holds a token; name only the origin.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	where := s.method + " " + origin
	if refused := classify.Refused(where, err); refused != nil {
		return refused
	}
	if cert := certProblem(err); cert != nil {
		return sinks.Permanent(fmt.Errorf("%s: %w", where, cert))
	}
	if errors.Is(attemptCtx.Err(), context.DeadlineExceeded) {
		return sinks.Retryable(fmt.Errorf("%s: no answer within %v: %w", where, s.timeout,
			context.DeadlineExceeded), 0)
	}
	return sinks.Retryable(fmt.Errorf("%s: %w", where, err), 0)
}

// readAll reads up to max bytes of a response body and closes it.
func readAll(body io.ReadCloser, max int64) []byte {
	defer body.Close()
	b, _ := io.ReadAll(io.LimitReader(body, max))
	return b
}

func clipBytes(b []byte, n int) []byte {
	if len(b) > n {
		return bytes.Clone(b[:n])
	}
	return b
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
