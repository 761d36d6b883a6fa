package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// Batch formats.
const (
	BatchJSON   = "json"
	BatchNDJSON = "ndjson"
)

// Batch defaults and bounds.
const (
	DefaultBatchEvents = 100
	DefaultBatchBytes  = 1 << 20
	DefaultBatchWait   = 200 * time.Millisecond
	maxBatchEvents     = 10000
	maxBatchBytes      = 64 << 20
	maxBatchWait       = time.Minute
	// resultsBytes bounds how much of a 207 answer is read for its per-event results.
	resultsBytes = 4 << 20
)

// Batch is a destination's `batch` block: several events in one signed request.
type Batch struct {
	MaxEvents int            `yaml:"max_events,omitempty" default:"100" desc:"most events in one request"`
	MaxBytes  Size           `yaml:"max_bytes,omitempty" default:"1MB" desc:"most bytes of event data in one request: a number of bytes or 512KB, 1MB (KB and MB are 1024-based)"`
	MaxWait   sinks.Duration `yaml:"max_wait,omitempty" default:"200ms" desc:"how long the first event may wait for more to fill a request"`
	Format    string         `yaml:"format,omitempty" default:"json" desc:"json (a JSON array) or ndjson (one event per line); each element is the event's standard body plus its id"`
}

// filled returns b with its defaults in place of zero values.
func (b Batch) filled() Batch {
	if b.MaxEvents == 0 {
		b.MaxEvents = DefaultBatchEvents
	}
	if b.MaxBytes == 0 {
		b.MaxBytes = DefaultBatchBytes
	}
	if b.MaxWait == 0 {
		b.MaxWait = sinks.Duration(DefaultBatchWait)
	}
	if b.Format == "" {
		b.Format = BatchJSON
	}
	return b
}

func (c *Config) validateBatch(add func(path, format string, args ...any)) {
	b := c.Batch.filled()
	if b.MaxEvents < 1 || b.MaxEvents > maxBatchEvents {
		add("batch.max_events", "must be between 1 and %d", maxBatchEvents)
	}
	if b.MaxBytes < 1 || b.MaxBytes > maxBatchBytes {
		add("batch.max_bytes", "must be between 1 and 64MB: a batch is held in memory while it is sent")
	}
	if b.MaxWait.D() > maxBatchWait {
		add("batch.max_wait", "must be at most 1m: events wait that long before their first attempt")
	}
	if b.Format != BatchJSON && b.Format != BatchNDJSON {
		add("batch.format", "%q is not a batch format; use json or ndjson", b.Format)
	}
	if c.Format != FormatStandard {
		add("batch", "needs format standard (each element is the standard body plus the event id); "+
			"remove batch or set format: standard")
	}
}

// Size is a byte count written as a number or with a unit: 512KB, 1MB, 1GB (1024-based; KiB, MiB, GiB too).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}}

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size: write it like 1048576, 512KB or 1MB", s)
	}
	return Size(n * mult), nil
}

// UnmarshalYAML accepts a number of bytes or a size with a unit.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a size such as 1048576, 512KB or 1MB")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// String writes the size with the largest unit that divides it.
func (z Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}} {
		if z != 0 && int64(z)%u.mult == 0 {
			return strconv.FormatInt(int64(z)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(z), 10)
}

// MarshalYAML writes the size as String does.
func (z Size) MarshalYAML() (any, error) { return z.String(), nil }

// MarshalText writes the size as String does (JSON).
func (z Size) MarshalText() ([]byte, error) { return []byte(z.String()), nil }

// UnmarshalText parses a size (JSON bodies of the admin API).
func (z *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// BatchResults is what a receiver may answer with status 207 to a batch: one result per event, by id. A 2xx
// status delivers that event; any other is classified like the answer to a single request (408, 425, 429 and
// 5xx retry, other codes fail it; 410 fails it without disabling the destination). An event the results leave
// out is retried.
type BatchResults struct {
	Results []BatchResult `json:"results"`
}

// BatchResult is one event's outcome in a 207 answer.
type BatchResult struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}

// batchID is the webhook-id of a batch: derived from its event ids, so a retry of the same events carries the
// same id and a receiver can deduplicate it.
func batchID(evs []*event.Event) string {
	h := sha256.New()
	for _, e := range evs {
		h.Write([]byte(e.ID))
		h.Write([]byte{0})
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// batchBody encodes the events as a JSON array or NDJSON, each element the standard body plus the id.
func (s *Sink) batchBody(evs []*event.Event) ([]byte, []error) {
	errs := make([]error, len(evs))
	var buf bytes.Buffer
	if s.batch.Format == BatchJSON {
		buf.WriteByte('[')
	}
	n := 0
	for i, e := range evs {
		body, err := s.body(e)
		if err != nil {
			errs[i] = sinks.Permanent(err)
			continue
		}
		if n > 0 && s.batch.Format == BatchJSON {
			buf.WriteByte(',')
		}
		id, _ := json.Marshal(e.ID)
		buf.WriteString(`{"id":`)
		buf.Write(id)
		buf.WriteByte(',')
		buf.Write(body[1:]) // the standard body is an object: `{"type":…}` continues after the id
		if s.batch.Format == BatchNDJSON {
			buf.WriteByte('\n')
		}
		n++
	}
	if s.batch.Format == BatchJSON {
		buf.WriteByte(']')
	}
	if n == 0 {
		return nil, errs
	}
	return buf.Bytes(), errs
}

// sendBatch sends evs in one request. errs has one entry per event.
func (s *Sink) sendBatch(ctx context.Context, r route, evs []*event.Event, errs []error) {
	body, berrs := s.batchBody(evs)
	var sent []*event.Event
	var idx []int
	for i, err := range berrs {
		if err != nil {
			errs[i] = err
			continue
		}
		sent, idx = append(sent, evs[i]), append(idx, i)
	}
	if len(sent) == 0 {
		return
	}
	ctx, span := s.startAttempt(ctx, sent)
	defer span.End()
	resp, excerpt, err := s.exchange(ctx, span, r, nil, batchID(sent), body, sharedTraceparent(sent))
	var results []error
	switch {
	case err != nil:
	case resp.StatusCode == http.StatusMultiStatus:
		results = s.multiStatus(excerpt, sent)
	default:
		err = classifyResponse(resp, s.now())
	}
	endAttempt(span, resp, err)
	for k, i := range idx {
		if results != nil {
			errs[i] = results[k]
		} else {
			errs[i] = err
		}
	}
}

// multiStatus maps a 207 answer's per-event results onto the batch.
func (s *Sink) multiStatus(body []byte, evs []*event.Event) []error {
	out := make([]error, len(evs))
	var res BatchResults
	if err := json.Unmarshal(body, &res); err != nil {
		err := sinks.Retryable(fmt.Errorf("http 207: the body is not {\"results\":[{\"id\",\"status\"}]}: %v", err), 0)
		for i := range out {
			out[i] = err
		}
		return out
	}
	byID := make(map[string]BatchResult, len(res.Results))
	for _, r := range res.Results {
		byID[r.ID] = r
	}
	for i, e := range evs {
		r, ok := byID[e.ID]
		switch {
		case !ok:
			out[i] = sinks.Retryable(fmt.Errorf("http 207: the results do not mention event %s", e.ID), 0)
		case r.Status >= 200 && r.Status < 300:
		default:
			note := ""
			if r.Error != "" {
				note = ": " + classify.Clip(r.Error, 200)
			}
			err := fmt.Errorf("http 207: event result %w%s", statusError(r.Status, ""), note)
			switch c := r.Status; {
			case c == http.StatusRequestTimeout, c == http.StatusTooEarly, c == http.StatusTooManyRequests, c >= 500 && c < 600:
				out[i] = sinks.Retryable(err, 0)
			default:
				// 410 included: one event refused for good says nothing about the endpoint.
				out[i] = sinks.Permanent(err)
			}
		}
	}
	return out
}

// sharedTraceparent is the stored traceparent the batch's events share, if they all carry the same one.
func sharedTraceparent(evs []*event.Event) string {
	tp := evs[0].Traceparent
	for _, e := range evs[1:] {
		if e.Traceparent != tp {
			return ""
		}
	}
	return tp
}
