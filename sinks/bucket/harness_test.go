package bucket

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"gocloud.dev/blob"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// store reads back what a sink wrote: every object once, split into NDJSON lines.
type store struct {
	b *blob.Bucket

	mu     sync.Mutex
	seen   map[string]bool
	shaped sync.Map // compact transform result → event.Event
}

func newStore(b *blob.Bucket) *store { return &store{b: b, seen: map[string]bool{}} }

// object is one object as stored.
type storedObject struct {
	Key   string
	Lines [][]byte
	Attrs *blob.Attributes
}

// objects returns the objects not returned before, in key order.
func (s *store) objects(ctx context.Context) ([]storedObject, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storedObject
	it := s.b.List(nil)
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if obj.IsDir || s.seen[obj.Key] || strings.HasSuffix(obj.Key, ".tmp") {
			continue
		}
		data, err := s.b.ReadAll(ctx, obj.Key)
		if err != nil {
			return out, err
		}
		attrs, err := s.b.Attributes(ctx, obj.Key)
		if err != nil {
			return out, err
		}
		if strings.HasSuffix(obj.Key, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				return out, fmt.Errorf("%s: %v", obj.Key, err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				return out, fmt.Errorf("%s: %v", obj.Key, err)
			}
		}
		s.seen[obj.Key] = true
		o := storedObject{Key: obj.Key, Attrs: attrs}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			o.Lines = append(o.Lines, bytes.Clone(sc.Bytes()))
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			return out, fmt.Errorf("%s does not end in a newline", obj.Key)
		}
		out = append(out, o)
	}
}

// read is sinktest's Target.Read: each line as a message, id and topic taken from the envelope. A bucket
// carries nothing beside the body, so a line that is a transform result rather than an envelope is identified
// by its content, from what the recording sink sent.
func (s *store) read(ctx context.Context) ([]sinktest.Received, error) {
	objs, err := s.objects(ctx)
	var out []sinktest.Received
	for _, o := range objs {
		for _, line := range o.Lines {
			var env struct{ ID, Topic string }
			if jerr := json.Unmarshal(line, &env); jerr != nil {
				return out, fmt.Errorf("%s: a line is not JSON: %v", o.Key, jerr)
			}
			if env.ID == "" {
				if v, ok := s.shaped.Load(string(line)); ok {
					ev := v.(event.Event)
					env.ID, env.Topic = ev.ID, ev.Topic
				}
			}
			out = append(out, sinktest.Received{ID: env.ID, Topic: env.Topic, Body: line})
		}
	}
	return out, err
}

// recordingSink remembers the transform results it sends, for store.read.
type recordingSink struct {
	*Sink
	st *store
}

func (r recordingSink) Send(ctx context.Context, batch []event.Event) error {
	for _, ev := range batch {
		if len(ev.Body) > 0 {
			var buf bytes.Buffer
			if json.Compact(&buf, ev.Body) == nil {
				r.st.shaped.Store(buf.String(), ev)
			}
		}
	}
	return r.Sink.Send(ctx, batch)
}

// target is a sinktest target over sink, reading back through b.
func target(sink *Sink, b *blob.Bucket) sinktest.Target {
	st := newStore(b)
	return sinktest.Target{Sink: recordingSink{Sink: sink, st: st}, Read: st.read}
}

// poison gives an event a topic no object key may hold, so the sink refuses that one event.
func poison(ev *event.Event) { ev.Topic = "poison\x01topic" }

// features are what every bucket store supports; Outage and BadCredentials are set per store.
func features() sinktest.Features {
	return sinktest.Features{
		Ordered: true, // one batch of one topic and hour is one object, in batch order
		Reasons: map[string]string{
			sinktest.CaseOversized: "objects have no practical size limit (the dispatcher bounds a batch by max_bytes)",
		},
	}
}
