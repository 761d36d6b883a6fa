package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/sluicehq/sluice/sinks/awshttp"
)

// The SQS and S3 outage test runs the real binary against private instances of the servers .ci/run installs
// (fauxqs and MinIO, both persisting to disk), kills both servers with SIGKILL while events are flowing,
// starts them again on the same data, and checks that every event Sluice acknowledged ends up in the queue and
// in the bucket. Private instances, because killing the shared ones would break tests running beside this one.
//
// Both servers keep what they accepted across the kill (fauxqs writes every change through to SQLite; MinIO
// keeps objects on disk and never exposes a partial one), so no allowance is made for data lost by the servers: every acknowledged event must
// be there. What a kill may cause is duplicates (the server took a message but the answer never reached Sluice,
// so Sluice sent it again): they are counted and logged, as at-least-once allows.

// testServer is one private server process, started by its .ci/services script in `run` mode.
type testServer struct {
	t                  *testing.T
	name, script, data string
	port               string
	logf               *os.File
	cmd                *exec.Cmd
}

func serviceScript(t *testing.T, env, file string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "..", ".ci", "services", file))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The private MinIO's credentials, passed to .ci/services/s3.sh run.
const s3TestUser, s3TestPassword = "sluice-outage", "sluice-outage-secret"

func newTestServer(t *testing.T, name, script string) *testServer {
	t.Helper()
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	s := &testServer{t: t, name: name, script: script, data: filepath.Join(dir, "data"), port: port}
	var err error
	if s.logf, err = os.Create(filepath.Join(dir, name+".log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			b, _ := os.ReadFile(s.logf.Name())
			t.Logf("%s server log (last 2 KiB):\n%s", name, tail(b, 2048))
		}
	})
	s.start()
	return s
}

func (s *testServer) endpoint() string { return "http://127.0.0.1:" + s.port }

func (s *testServer) start() {
	s.t.Helper()
	s.cmd = exec.Command("bash", s.script, "run", s.port, s.data)
	s.cmd.Stdout, s.cmd.Stderr = s.logf, s.logf
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s3TestUser, "MINIO_ROOT_PASSWORD="+s3TestPassword)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // kill the whole group: bash and the node it execs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start %s server: %v", s.name, err)
	}
	deadline := time.Now().Add(2 * time.Minute) // a cold machine installs the server first
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+s.port, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s server did not come up on port %s", s.name, s.port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the server at once (SIGKILL), as a crash or an OOM kill would.
func (s *testServer) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// tally counts, per event id, how many times it arrived.
type tally struct {
	mu  sync.Mutex
	got map[string]int
}

func (c *tally) add(id string) {
	c.mu.Lock()
	c.got[id]++
	c.mu.Unlock()
}

func (c *tally) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[id] > 0
}

func (c *tally) counts() (distinct, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.got {
		distinct++
		total += n
	}
	return distinct, total
}

// outageWait bounds how long the acknowledged events may take to arrive after the servers are back.
var outageWait = 2 * time.Minute

func TestOutageSQSAndS3(t *testing.T) {
	if os.Getenv("SLUICE_TEST_SQS_ENDPOINT") == "" || os.Getenv("SLUICE_TEST_S3_ENDPOINT") == "" {
		t.Skip("SLUICE_TEST_SQS_ENDPOINT and SLUICE_TEST_S3_ENDPOINT are not set (.ci/services/sqs.sh and s3.sh set them)")
	}
	const events = 2000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sqsSrv := newTestServer(t, "sqs", serviceScript(t, "SLUICE_TEST_SQS_SERVER", "sqs.sh"))
	s3Srv := newTestServer(t, "s3", serviceScript(t, "SLUICE_TEST_S3_SERVER", "s3.sh"))

	sqsClient := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(sqsSrv.endpoint()),
		HTTPClient:  awshttp.Client(http.DefaultTransport),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})
	q, err := sqsClient.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("outage"),
		Attributes: map[string]string{"VisibilityTimeout": "5"}})
	if err != nil {
		t.Fatal(err)
	}
	const s3Key, s3Secret = s3TestUser, s3TestPassword
	s3Client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(s3Srv.endpoint()), UsePathStyle: true,
		HTTPClient:                 awshttp.Client(http.DefaultTransport),
		Credentials:                credentials.NewStaticCredentialsProvider(s3Key, s3Secret, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired})
	if _, err := s3Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("outage")}); err != nil {
		t.Fatal(err)
	}

	// Sluice, with one destination of each kind and a short retry schedule.
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`server:
  listen: %s
  shutdown_timeout: 10s
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store:
  path: %s
delivery:
  timeout: 5s
  retry:
    schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s]
    jitter: 0.1
  network:
    allow_cidrs: [127.0.0.0/8]
telemetry:
  log: {level: warn}
destinations:
  - name: queue
    type: sqs
    topics: ["case.*"]
    config:
      queue_url: %s
      endpoint: %s
      access_key_id: test
      secret_access_key: test
  - name: archive
    type: bucket
    topics: ["case.*"]
    config:
      url: "s3://outage?endpoint=%s&use_path_style=true&region=us-east-1"
      access_key_id: %s
      secret_access_key: %s
      max_events: 100
      max_age: 200ms
`, addr, filepath.Join(dir, "data"), aws.ToString(q.QueueUrl), sqsSrv.endpoint(), s3Srv.endpoint(), s3Key, s3Secret)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sluice.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBinary(t), "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sluice log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	waitFor(t, "sluice ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// A consumer drains the queue all along, as a real one would; it keeps trying while the server is down.
	fromSQS := &tally{got: map[string]int{}}
	go consumeSQS(ctx, sqsClient, aws.ToString(q.QueueUrl), fromSQS)

	var acked sync.Map
	var ackCount atomic.Int64
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishEvents(ctx, addr, "out", map[string]string{"run": "outage"}, events, 16, &acked, &ackCount)
	}()
	waitFor(t, "600 acknowledged events", func() bool { return ackCount.Load() >= 600 })
	sqsSrv.kill()
	s3Srv.kill()
	t.Logf("killed the SQS and S3 servers (SIGKILL) after %d acknowledged events", ackCount.Load())
	time.Sleep(2 * time.Second)
	sqsSrv.start()
	s3Srv.start()
	t.Logf("restarted both servers on their data after %d acknowledged events", ackCount.Load())
	<-published
	if n := ackCount.Load(); n != events {
		t.Fatalf("acknowledged %d of %d", n, events)
	}

	// Every acknowledged event reaches both. The bucket is read whole on every pass: an object the server is
	// still writing may be listed before it is complete.
	var ids []string
	acked.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
	deadline := time.Now().Add(outageWait)
	var fromS3 *tally
	var objects, torn int
	for {
		var err error
		fromS3, objects, torn, err = readBucket(ctx, s3Client, "outage")
		if err != nil {
			t.Logf("read bucket: %v", err)
		}
		var missSQS, missS3 []string
		for _, id := range ids {
			if !fromSQS.has(id) {
				missSQS = append(missSQS, id)
			}
			if !fromS3.has(id) {
				missS3 = append(missS3, id)
			}
		}
		if len(missSQS) == 0 && len(missS3) == 0 && err == nil {
			break
		}
		if time.Now().After(deadline) {
			for _, id := range head(append(missSQS, missS3...), 2) {
				t.Logf("event %s in sluice: %s", id, eventJSON(addr, id))
			}
			t.Fatalf("acknowledged events missing after %v: %d from the queue (e.g. %v), %d from the bucket (e.g. %v)",
				outageWait, len(missSQS), head(missSQS, 3), len(missS3), head(missS3, 3))
		}
		time.Sleep(500 * time.Millisecond)
	}
	d, total := fromSQS.counts()
	t.Logf("sqs:    %d distinct events, %d messages (%d duplicates)", d, total, total-d)
	d, total = fromS3.counts()
	t.Logf("bucket: %d distinct events, %d lines in %d objects (%d duplicates)", d, total, objects, total-d)
	if torn > 0 {
		t.Errorf("the bucket holds %d lines that are not whole envelopes", torn)
	}

	cancel()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sluice did not exit cleanly on SIGTERM: %v", err)
	}
}

// consumeSQS receives and deletes messages until ctx ends, counting them by their id attribute.
func consumeSQS(ctx context.Context, c *sqs.Client, queueURL string, got *tally) {
	for ctx.Err() == nil {
		r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(queueURL),
			MaxNumberOfMessages: 10, WaitTimeSeconds: 1, MessageAttributeNames: []string{"id"}})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var del []sqstypes.DeleteMessageBatchRequestEntry
		for i, m := range r.Messages {
			if v, ok := m.MessageAttributes["id"]; ok {
				got.add(aws.ToString(v.StringValue))
			}
			del = append(del, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
		}
		if len(del) > 0 {
			_, _ = c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: del})
		}
	}
}

// readBucket reads every object of a bucket and counts its NDJSON lines by event id. A line that is not a whole
// envelope is counted as torn: it would mean an object stored half-written.
func readBucket(ctx context.Context, c *s3.Client, bucket string) (got *tally, objects, torn int, err error) {
	got = &tally{got: map[string]int{}}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return got, objects, torn, err
		}
		for _, o := range page.Contents {
			out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				return got, objects, torn, err
			}
			data, err := io.ReadAll(out.Body)
			out.Body.Close()
			if err != nil {
				return got, objects, torn, err
			}
			objects++
			sc := bufio.NewScanner(bytes.NewReader(data))
			sc.Buffer(nil, 16<<20)
			for sc.Scan() {
				var env struct {
					ID string `json:"id"`
				}
				if json.Unmarshal(sc.Bytes(), &env) != nil || !strings.HasPrefix(env.ID, "out-") {
					torn++
					continue
				}
				got.add(env.ID)
			}
		}
	}
	return got, objects, torn, nil
}

// eventJSON is GET /v1/events/{id} (with its deliveries and attempts), for a failure's log.
func eventJSON(addr, id string) string {
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/events/"+id, nil)
	req.Header.Set("Authorization", "Bearer e2e-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	return string(b)
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
