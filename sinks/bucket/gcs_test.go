package bucket

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"gocloud.dev/blob/gcsblob"
	"google.golang.org/api/option"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// The gs:// scheme runs against fake-gcs-server in-process: it needs no service, so these tests always run.

func fakeGCS(t *testing.T) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

var gcsSeq atomic.Int64

// gcsReader is a storage client straight to srv (not through the proxy), with the JSON reads fake-gcs-server
// needs.
func gcsReader(t *testing.T, srv *fakestorage.Server) *storage.Client {
	t.Helper()
	c, err := storage.NewClient(context.Background(), option.WithEndpoint(srv.URL()+"/storage/v1/"),
		option.WithoutAuthentication(), storage.WithJSONReads())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// gcsTarget makes a fresh bucket on srv and a sink that reaches it through a proxy (named by
// STORAGE_EMULATOR_HOST, which the storage client reads when the sink is built).
func gcsTarget(t *testing.T, srv *fakestorage.Server, mod func(c *Config)) (sinktest.Target, string) {
	t.Helper()
	name := fmt.Sprintf("sluice-%d", gcsSeq.Add(1))
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name})
	u, _ := url.Parse(srv.URL())
	proxy := sinktest.NewProxy(t, u.Host)
	t.Setenv("STORAGE_EMULATOR_HOST", proxy.Addr())
	c := NewConfig()
	c.URL = "gs://" + name
	if mod != nil {
		mod(c)
	}
	s, err := New(context.Background(), c, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := gcsblob.OpenBucket(context.Background(), nil, name, &gcsblob.Options{Client: gcsReader(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rb.Close() })
	tg := target(s, rb)
	tg.Stop = func(*testing.T) { proxy.Stop() }
	tg.Start = func(*testing.T) { proxy.Start() }
	return tg, name
}

func TestGCSConformance(t *testing.T) {
	srv := fakeGCS(t)
	f := features()
	f.Outage = true
	f.Reasons[sinktest.CaseBadCredentials] = "fake-gcs-server does not check credentials; TestClassify covers " +
		"401 and 403 answers"
	sinktest.Run(t, f, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			tg, _ := gcsTarget(t, srv, nil)
			return tg
		},
		Poison: poison,
	})
}

func TestGCSGzipAndMissingBucket(t *testing.T) {
	srv := fakeGCS(t)
	tg, _ := gcsTarget(t, srv, func(c *Config) { c.Gzip = true })
	defer tg.Sink.Close(context.Background())
	evs := sinktest.Events("gcsgzip", 20)
	if err := tg.Sink.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	got, err := tg.Read(context.Background())
	if err != nil || len(got) != len(evs) {
		t.Fatalf("read back %d events (%v)", len(got), err)
	}

	// A bucket that does not exist is a configuration error, not an outage.
	c := NewConfig()
	c.URL = "gs://sluice-no-such-bucket"
	s, err := New(context.Background(), c, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Send(ctx, evs[:1])
	if cl, _ := sinks.Classify(err); cl != sinks.ClassPermanent || !strings.Contains(err.Error(), "does not create buckets") {
		t.Fatalf("missing bucket: %v", err)
	}
}
