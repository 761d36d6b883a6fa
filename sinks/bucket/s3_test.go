package bucket

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/awshttp"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// These tests run against a real S3-compatible server (MinIO in .ci/run) at $SLUICE_TEST_S3_ENDPOINT, with
// $SLUICE_TEST_S3_ACCESS_KEY_ID / $SLUICE_TEST_S3_SECRET_ACCESS_KEY (the .ci/services/s3.sh ones when unset).

type s3env struct {
	endpoint, host, keyID, secret string
	admin                         *s3.Client
}

func s3Env(tb testing.TB) s3env {
	tb.Helper()
	ep := os.Getenv("SLUICE_TEST_S3_ENDPOINT")
	if ep == "" {
		tb.Skip("SLUICE_TEST_S3_ENDPOINT is not set (.ci/services/s3.sh starts a server and sets it)")
	}
	e := s3env{endpoint: ep, keyID: os.Getenv("SLUICE_TEST_S3_ACCESS_KEY_ID"), secret: os.Getenv("SLUICE_TEST_S3_SECRET_ACCESS_KEY")}
	if e.keyID == "" {
		e.keyID, e.secret = "sluice-test", "sluice-test-secret"
	}
	u, err := url.Parse(ep)
	if err != nil {
		tb.Fatal(err)
	}
	e.host = u.Host
	e.admin = s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(ep), UsePathStyle: true,
		HTTPClient:                 awshttp.Client(http.DefaultTransport),
		Credentials:                credentials.NewStaticCredentialsProvider(e.keyID, e.secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired})
	return e
}

var bucketSeq atomic.Int64

// newBucket creates a fresh bucket, emptied and deleted at the end of the test.
func (e s3env) newBucket(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("sluice-%d-%d", time.Now().UnixNano(), bucketSeq.Add(1))
	if _, err := e.admin.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		tb.Fatalf("create bucket: %v", err)
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		out, err := e.admin.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(name)})
		if err == nil {
			for _, o := range out.Contents {
				_, _ = e.admin.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(name), Key: o.Key})
			}
		}
		_, _ = e.admin.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)})
	})
	return name
}

// sink builds a bucket sink for name reached at host (the server, or a proxy before it).
func (e s3env) sink(tb testing.TB, name, host string, mod func(c *Config)) *Sink {
	tb.Helper()
	c := NewConfig()
	c.URL = fmt.Sprintf("s3://%s?endpoint=http://%s&use_path_style=true&region=us-east-1", name, host)
	c.AccessKeyID, c.SecretAccessKey = e.keyID, e.secret
	if mod != nil {
		mod(c)
	}
	s, err := New(context.Background(), c, sinks.Env{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// reader opens the bucket directly on the server, to read back what the sink wrote.
func (e s3env) reader(tb testing.TB, name string) *blob.Bucket {
	tb.Helper()
	s := e.sink(tb, name, e.host, nil)
	tb.Cleanup(func() { _ = s.Close(context.Background()) })
	return s.bucket
}

func TestIntegrationS3Conformance(t *testing.T) {
	e := s3Env(t)
	f := features()
	f.BadCredentials, f.Outage = true, true
	sinktest.Run(t, f, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			name := e.newBucket(t)
			proxy := sinktest.NewProxy(t, e.host)
			tg := target(e.sink(t, name, proxy.Addr(), nil), e.reader(t, name))
			tg.Stop = func(*testing.T) { proxy.Stop() }
			tg.Start = func(*testing.T) { proxy.Start() }
			return tg
		},
		BadCredentials: func(t *testing.T) sinks.Sink {
			name := e.newBucket(t)
			return e.sink(t, name, e.host, func(c *Config) { c.SecretAccessKey = "not-the-secret-at-all" })
		},
		Poison:  poison,
		Secrets: []string{"not-the-secret-at-all", e.secret},
	})
}

func TestIntegrationS3Gzip(t *testing.T) {
	e := s3Env(t)
	name := e.newBucket(t)
	s := e.sink(t, name, e.host, func(c *Config) { c.Gzip = true })
	defer s.Close(context.Background())
	evs := sinktest.Events("gzip", 50)
	if err := s.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	objs, err := newStore(e.reader(t, name)).objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || !strings.HasSuffix(objs[0].Key, ".ndjson.gz") || len(objs[0].Lines) != 50 {
		t.Fatalf("objects %+v", objs)
	}
	if ct := objs[0].Attrs.ContentType; ct != ContentTypeGzip {
		t.Errorf("content type %q, want %q", ct, ContentTypeGzip)
	}
	for i, line := range objs[0].Lines {
		sinktest.CheckEnvelope(t, &evs[i], sinktest.Received{ID: evs[i].ID, Topic: evs[i].Topic, Body: line})
	}
}

func TestIntegrationS3MissingBucket(t *testing.T) {
	e := s3Env(t)
	s := e.sink(t, "sluice-no-such-bucket", e.host, nil)
	defer s.Close(context.Background())
	err := s.Send(context.Background(), sinktest.Events("missing", 3))
	if c, _ := sinks.Classify(err); c != sinks.ClassPermanent || !strings.Contains(err.Error(), "NoSuchBucket") ||
		!strings.Contains(err.Error(), "does not create buckets") {
		t.Fatalf("got %v", err)
	}
}

func TestIntegrationS3WrongKeyID(t *testing.T) {
	e := s3Env(t)
	name := e.newBucket(t)
	s := e.sink(t, name, e.host, func(c *Config) { c.AccessKeyID = "NOSUCHKEY" })
	defer s.Close(context.Background())
	err := s.Send(context.Background(), sinktest.Events("wrongkey", 1))
	if c, _ := sinks.Classify(err); c != sinks.ClassPermanent || !strings.Contains(err.Error(), "InvalidAccessKeyId") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), e.secret) && len(e.secret) > 6 {
		t.Fatalf("error shows the secret: %v", err)
	}
}

// cutProxy forwards TCP to target, except that the first connection carrying a PUT is cut after cutAfter bytes
// of the request have gone through: an upload that dies half way, as when the network or Sluice fails.
type cutProxy struct {
	target   string
	cutAfter int64
	cut      atomic.Bool
	ln       net.Listener
	wg       sync.WaitGroup
}

func newCutProxy(t *testing.T, target string, cutAfter int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{target: target, cutAfter: cutAfter, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.pipe(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) pipe(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(c, s); c.Close() }()
	br := bufio.NewReader(c)
	head, _ := br.Peek(4)
	if string(head) == "PUT " && p.cut.CompareAndSwap(false, true) {
		_, _ = io.CopyN(s, br, p.cutAfter)
		return // both sides closed mid-request
	}
	_, _ = io.Copy(s, br)
}

// TestIntegrationS3FailedUploadLeavesNothing: an upload cut off half way fails the Send retryably and leaves no
// object (not even a partial one); the retry writes every event, once, in one complete object. Together with the
// dispatcher marking events delivered only after Send returns nil, a crash between batching and upload loses
// nothing.
func TestIntegrationS3FailedUploadLeavesNothing(t *testing.T) {
	e := s3Env(t)
	name := e.newBucket(t)
	proxy := newCutProxy(t, e.host, 64<<10)
	s := e.sink(t, name, proxy.ln.Addr().String(), nil)
	defer s.Close(context.Background())
	evs := sinktest.Events("cut", 1000) // about 300 KiB of NDJSON
	ctx := context.Background()
	err := s.Send(ctx, evs)
	if err == nil {
		t.Fatal("Send through a connection cut mid-upload returned nil")
	}
	if c, _ := sinks.Classify(err); c != sinks.ClassRetryable {
		t.Fatalf("a cut upload is %v: %v", c, err)
	}
	st := newStore(e.reader(t, name))
	if objs, err := st.objects(ctx); err != nil || len(objs) != 0 {
		t.Fatalf("after the failed upload the bucket holds %d objects (%v)", len(objs), err)
	}
	if err := s.Send(ctx, evs); err != nil {
		t.Fatalf("retry: %v", err)
	}
	objs, err := st.objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || len(objs[0].Lines) != len(evs) {
		t.Fatalf("after the retry: %d objects, want 1 with %d lines", len(objs), len(evs))
	}
	for i, line := range objs[0].Lines {
		sinktest.CheckEnvelope(t, &evs[i], sinktest.Received{ID: evs[i].ID, Topic: evs[i].Topic, Body: line})
	}
}

// BenchmarkSend measures delivered events/s into the local S3 server: 1000-event objects of ~300-byte
// envelopes, one sender (Sequential) and 4 concurrent senders (Concurrent4).
func BenchmarkSend(b *testing.B) {
	e := s3Env(b)
	for _, par := range []int{1, 4} {
		name := "Sequential"
		if par > 1 {
			name = fmt.Sprintf("Concurrent%d", par)
		}
		b.Run(name, func(b *testing.B) {
			bucket := e.newBucket(b)
			s := e.sink(b, bucket, e.host, nil)
			defer s.Close(context.Background())
			batch := sinktest.Events("bench", 1000)
			var sent atomic.Int64
			start := time.Now()
			send := func() error {
				err := s.Send(context.Background(), batch)
				if err == nil {
					sent.Add(int64(len(batch)))
				}
				return err
			}
			if par == 1 {
				for b.Loop() {
					if err := send(); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				var next atomic.Int64
				n := int64(b.N)
				var wg sync.WaitGroup
				var firstErr atomic.Value
				for range par {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= n {
							if err := send(); err != nil {
								firstErr.CompareAndSwap(nil, err)
								return
							}
						}
					}()
				}
				wg.Wait()
				if err, _ := firstErr.Load().(error); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(sent.Load())/time.Since(start).Seconds(), "events/s")
		})
	}
}
