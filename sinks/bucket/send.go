package bucket

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"gocloud.dev/blob"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// maxParallelWrites bounds the objects one Send writes at once (a batch spanning many topics has many keys).
const maxParallelWrites = 4

// Content types of the objects.
const (
	ContentTypeNDJSON = "application/x-ndjson"
	ContentTypeGzip   = "application/gzip"
)

// object is one object of a Send: its key, its NDJSON body and the batch indexes of the events in it.
type object struct {
	key  string
	body []byte
	idx  []int
}

// Send writes the batch as NDJSON, one envelope per line, in one object per distinct rendered key (the key's
// {batch_id} is new for every Send, so a retry never overwrites an earlier object). Events in an object count as
// delivered only once that object is completely written; an event whose key cannot be rendered fails
// permanently on its own. When some objects are written and others fail, the answer is a *sinks.BatchError so
// only the failed objects' events are sent again.
func (s *Sink) Send(ctx context.Context, batch []event.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	if s.closed.Load() {
		return sinks.Retryable(fmt.Errorf("bucket: %s: the sink is closed", s.where), 0)
	}
	batchID, now := s.batchID(), s.now()
	errs := make([]error, len(batch))
	var objects []*object
	byKey := map[string]*object{}
	for i := range batch {
		ev := &batch[i]
		key, err := s.objectKey(ev, batchID, now)
		if err != nil {
			errs[i] = sinks.Permanent(fmt.Errorf("bucket: %s: event %s: %w", s.where, ev.ID, err))
			continue
		}
		line, err := ev.Envelope()
		if err != nil {
			errs[i] = sinks.Permanent(fmt.Errorf("bucket: %s: event %s: encode the envelope: %v", s.where, ev.ID, err))
			continue
		}
		if len(ev.Body) > 0 {
			// A transform result may be indented; NDJSON needs it on one line.
			var buf bytes.Buffer
			if err := json.Compact(&buf, line); err != nil {
				errs[i] = sinks.Permanent(fmt.Errorf("bucket: %s: event %s: the transform result is not JSON: %v", s.where, ev.ID, err))
				continue
			}
			line = buf.Bytes()
		}
		o := byKey[key]
		if o == nil {
			o = &object{key: key}
			byKey[key] = o
			objects = append(objects, o)
		}
		o.idx = append(o.idx, i)
		o.body = append(append(o.body, line...), '\n')
	}

	sem := make(chan struct{}, maxParallelWrites)
	var wg sync.WaitGroup
	written := make([]bool, len(objects))
	for n, o := range objects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.write(ctx, o); err != nil {
				for _, i := range o.idx {
					errs[i] = err
				}
				return
			}
			written[n] = true
		}()
	}
	wg.Wait()

	var keys []string
	for n, o := range objects {
		if written[n] {
			keys = append(keys, o.key)
		}
	}
	if len(keys) > 0 {
		report, _ := json.Marshal(map[string]any{"objects": keys})
		sinks.Note(ctx, 200, report)
	}
	return sinks.Outcome(errs)
}

// objectKey renders the key for one event and checks what every store requires of it.
func (s *Sink) objectKey(ev *event.Event, batchID string, now time.Time) (string, error) {
	k, err := s.key.Render(ev, batchID, now)
	if err != nil {
		return "", fmt.Errorf("key: %v", err)
	}
	if s.gzip && !strings.HasSuffix(k, ".gz") {
		k += ".gz"
	}
	switch {
	case k == "" || k == ".gz":
		return "", fmt.Errorf("key %s renders empty for this event", s.key)
	case len(k) > MaxKeyBytes:
		return "", fmt.Errorf("key %s renders %d bytes; object keys take at most %d", s.key, len(k), MaxKeyBytes)
	case strings.HasPrefix(k, "/"):
		return "", fmt.Errorf("key %s renders %q, which starts with /; object keys are relative to the bucket", s.key, classify.Clip(k, 200))
	case !utf8.ValidString(k) || strings.IndexFunc(k, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return "", fmt.Errorf("key %s renders %q, which has control characters or invalid UTF-8", s.key, classify.Clip(k, 200))
	}
	return k, nil
}

// write writes one object and returns nil only once the store holds all of it. On any failure the write is
// aborted (its context cancelled before Close), so the store keeps no partial object under the key.
func (s *Sink) write(ctx context.Context, o *object) error {
	body, contentType := o.body, ContentTypeNDJSON
	if s.gzip {
		var buf bytes.Buffer
		buf.Grow(len(body) / 4)
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body) // writes to a bytes.Buffer do not fail
		_ = zw.Close()
		body, contentType = buf.Bytes(), ContentTypeGzip
	}
	sum := md5.Sum(body)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.bucket.NewWriter(wctx, o.key, &blob.WriterOptions{
		ContentType:                 contentType,
		ContentMD5:                  sum[:], // GCS checks it on arrival; S3 and files are checked by the blob layer
		DisableContentTypeDetection: true,
	})
	if err != nil {
		return s.classify(ctx, o.key, err)
	}
	if _, err := w.Write(body); err != nil {
		cancel()
		_ = w.Close()
		return s.classify(ctx, o.key, err)
	}
	if err := w.Close(); err != nil {
		return s.classify(ctx, o.key, err)
	}
	return nil
}
