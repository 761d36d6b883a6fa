package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob/fileblob"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

func fileHarness(gz bool) sinktest.Harness {
	return sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			s, dir := fileSink(t, func(c *Config) { c.Gzip = gz })
			b, err := fileblob.OpenBucket(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return target(s, b)
		},
		Poison: poison,
	}
}

func fileFeatures() sinktest.Features {
	f := features()
	f.Reasons[sinktest.CaseBadCredentials] = "a local directory has no credentials"
	f.Reasons[sinktest.CaseOutage] = "a local directory cannot go away and come back the way a server does (a missing or " +
		"read-only directory is a configuration error, classified in TestClassifyFileErrors)"
	return f
}

func TestFileConformance(t *testing.T) {
	sinktest.Run(t, fileFeatures(), fileHarness(false))
}

func TestFileConformanceGzip(t *testing.T) {
	sinktest.Run(t, fileFeatures(), fileHarness(true))
}

// TestObjectsPerKey: a batch spanning two topics and two hours becomes one object per rendered key, each
// holding its events in batch order, and the attempt report names the objects.
func TestObjectsPerKey(t *testing.T) {
	s, dir := fileSink(t, nil)
	s.batchID = func() string { return "B" }
	base := time.Date(2026, 2, 3, 10, 59, 59, 0, time.UTC)
	var batch []event.Event
	for i, tc := range []struct {
		topic string
		at    time.Duration
	}{{"a.x", 0}, {"b.y", 0}, {"a.x", 0}, {"a.x", 2 * time.Second}, {"b.y", time.Millisecond}} {
		batch = append(batch, event.Event{ID: "e" + string(rune('0'+i)), Topic: tc.topic, Time: base.Add(tc.at), Data: json.RawMessage(`{}`)})
	}
	var rep sinks.Report
	if err := s.Send(sinks.WithReport(context.Background(), &rep), batch); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"a.x/2026/02/03/10/B.ndjson": {"e0", "e2"},
		"b.y/2026/02/03/10/B.ndjson": {"e1", "e4"},
		"a.x/2026/02/03/11/B.ndjson": {"e3"},
	}
	for key, ids := range want {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil {
			t.Fatalf("object %s: %v", key, err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(lines) != len(ids) {
			t.Fatalf("%s has %d lines, want %d", key, len(lines), len(ids))
		}
		for i, line := range lines {
			var env map[string]any
			if err := json.Unmarshal([]byte(line), &env); err != nil || env["id"] != ids[i] {
				t.Errorf("%s line %d: %s (want id %s)", key, i, line, ids[i])
			}
		}
		if !strings.Contains(string(rep.Response), key) {
			t.Errorf("report %s does not name %s", rep.Response, key)
		}
	}
	// Nothing else: no sidecar metadata files, no temporary files left behind.
	var files []string
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != len(want) {
		t.Errorf("directory holds %d files, want %d: %v", len(files), len(want), files)
	}
}

// TestBatchIDPerSend: every Send has its own batch id, so sending the same events twice never overwrites.
func TestBatchIDPerSend(t *testing.T) {
	s, dir := fileSink(t, func(c *Config) { c.Key = "{topic}/{batch_id}.ndjson" })
	evs := sinktest.Events("twice", 3)
	for range 2 {
		if err := s.Send(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, evs[0].Topic))
	if err != nil || len(entries) != 2 {
		t.Fatalf("%d objects (%v), want 2", len(entries), err)
	}
}

func TestInvalidDataIsPermanentAndLocal(t *testing.T) {
	s, _ := fileSink(t, nil)
	evs := sinktest.Events("invalid", 3)
	evs[1].Data = json.RawMessage(`{"not json`)
	err := s.Send(context.Background(), evs)
	var be *sinks.BatchError
	if !errors.As(err, &be) || be.Errs[0] != nil || be.Errs[2] != nil {
		t.Fatalf("got %v", err)
	}
	if c, _ := sinks.Classify(be.Errs[1]); c != sinks.ClassPermanent {
		t.Fatalf("invalid data: %v", be.Errs[1])
	}
}
