package sinktest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// memServer is an in-memory queue service: it holds messages, refuses bad keys and can be taken down.
type memServer struct {
	mu    sync.Mutex
	msgs  []sinktest.Received
	down  bool
	limit int
}

func (m *memServer) read(context.Context) ([]sinktest.Received, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.msgs
	m.msgs = nil
	return out, nil
}

// memSink is a correct sink over memServer. broken switches on one fault, for the tests that check the suite
// notices it.
type memSink struct {
	srv    *memServer
	key    string
	broken string

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

var _ sinks.Sink = (*memSink)(nil)

const goodKey = "k3y-s3cret-value"

func (s *memSink) Limits() sinks.Limits { return sinks.Limits{MaxBatch: 20} }

func (s *memSink) Send(ctx context.Context, batch []event.Event) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("mem: sink is closed")
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	if s.broken == "hang" {
		<-make(chan struct{})
	}
	if err := ctx.Err(); err != nil {
		if s.broken == "permanent-cancel" {
			return sinks.Permanent(err)
		}
		return err
	}
	if s.key != goodKey {
		msg := "mem: access refused"
		if s.broken == "leak" {
			msg += " for key " + s.key
		}
		return sinks.Permanent(errors.New(msg))
	}
	errs := make([]error, len(batch))
	failed := false
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	if s.srv.down {
		return sinks.Retryable(errors.New("mem: connection refused"), 0)
	}
	for i := range batch {
		ev := &batch[i]
		body, err := ev.Envelope()
		if err != nil {
			errs[i], failed = sinks.Permanent(err), true
			continue
		}
		if len(body) > s.srv.limit {
			errs[i], failed = sinks.Permanent(fmt.Errorf("mem: message of %d bytes is over %d", len(body), s.srv.limit)), true
			continue
		}
		if s.broken == "lies" && i%2 == 1 {
			continue
		}
		s.srv.msgs = append(s.srv.msgs, sinktest.Received{ID: ev.ID, Topic: ev.Topic, Body: body})
	}
	if failed {
		return &sinks.BatchError{Errs: errs}
	}
	return nil
}

func (s *memSink) Close(context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.broken != "hang" {
		s.wg.Wait()
	}
	return nil
}

func memHarness(broken string) sinktest.Harness {
	return sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			srv := &memServer{limit: 1 << 16}
			return sinktest.Target{
				Sink: &memSink{srv: srv, key: goodKey, broken: broken},
				Read: srv.read,
				Stop: func(*testing.T) { srv.mu.Lock(); srv.down = true; srv.mu.Unlock() },
				Start: func(*testing.T) {
					srv.mu.Lock()
					srv.down = false
					srv.mu.Unlock()
				},
			}
		},
		BadCredentials: func(t *testing.T) sinks.Sink {
			return &memSink{srv: &memServer{limit: 1 << 16}, key: "wrong-" + goodKey, broken: broken}
		},
		Secrets: []string{goodKey},
		Timeout: 2 * time.Second,
		Wait:    2 * time.Second,
	}
}

var memFeatures = sinktest.Features{Ordered: true, Oversized: 1 << 17, BadCredentials: true, Outage: true}

func TestMemSink(t *testing.T) {
	if v := os.Getenv("SINKTEST_BROKEN"); v != "" {
		sinktest.Run(t, memFeatures, memHarness(v))
		return
	}
	sinktest.Run(t, memFeatures, memHarness(""))
}

// The suite must fail sinks that are wrong, or it proves nothing: each broken variant runs in a child process
// and must fail with the message that names its fault.
func TestSuiteCatchesBrokenSinks(t *testing.T) {
	if os.Getenv("SINKTEST_BROKEN") != "" {
		t.Skip("child process")
	}
	tests := []struct{ broken, cases, want string }{
		{"lies", "Batch", "the far side holds"},
		{"permanent-cancel", "Cancel", "a cancelled Send is classified permanent"},
		{"leak", "BadCredentials", "an error shows a secret"},
		{"hang", "Single", "did not return within"},
	}
	for _, tt := range tests {
		t.Run(tt.broken, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestMemSink$/^"+tt.cases+"$", "-test.count=1", "-test.timeout=2m")
			cmd.Env = append(os.Environ(), "SINKTEST_BROKEN="+tt.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a sink that %s:\n%s", tt.broken, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("the suite failed the %s sink without saying %q:\n%s", tt.broken, tt.want, out)
			}
		})
	}
}

// Features a sink lacks are skipped with the reason, never passed silently.
func TestSkipsWithReason(t *testing.T) {
	if os.Getenv("SINKTEST_BROKEN") != "" {
		t.Skip("child process")
	}
	if os.Getenv("SINKTEST_SKIPS") != "" {
		sinktest.Run(t, sinktest.Features{MaxBatch: 1, Reasons: map[string]string{
			sinktest.CaseBadCredentials: "the emulator checks no credentials"}}, memHarness(""))
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSkipsWithReason$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SINKTEST_SKIPS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"--- SKIP: TestSkipsWithReason/Batch",
		"--- SKIP: TestSkipsWithReason/Outage",
		"the sink lacks this: the emulator checks no credentials",
		"the sink lacks this: it sends one event per Send (MaxBatch 1)",
		"--- PASS: TestSkipsWithReason/Single",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPerEvent(t *testing.T) {
	boom := errors.New("boom")
	if errs, err := sinktest.PerEvent(nil, 2); err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("nil: %v %v", errs, err)
	}
	if errs, _ := sinktest.PerEvent(boom, 2); errs[0] != boom || errs[1] != boom {
		t.Fatalf("whole-batch error not spread: %v", errs)
	}
	be := &sinks.BatchError{Errs: []error{nil, boom}}
	if errs, _ := sinktest.PerEvent(fmt.Errorf("wrapped: %w", be), 2); errs[0] != nil || errs[1] != boom {
		t.Fatalf("batch error: %v", errs)
	}
	if _, err := sinktest.PerEvent(be, 3); err == nil {
		t.Fatal("a BatchError of the wrong length was accepted")
	}
}

func TestProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	p := sinktest.NewProxy(t, ln.Addr().String())
	echo := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := c.Read(buf)
		if err == nil && string(buf) != "ping" {
			err = fmt.Errorf("echo %q", buf)
		}
		return err
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(c); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Stop()
	if err := echo(c); err == nil {
		t.Fatal("an open connection survived Stop")
	}
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		c2.Close()
		t.Fatal("a new connection was accepted while stopped")
	}
	p.Start()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("after Start: %v", err)
	}
	defer c3.Close()
	if err := echo(c3); err != nil {
		t.Fatalf("after Start: %v", err)
	}
}
