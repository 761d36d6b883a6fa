package webhook

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// rawReceiver accepts connections and answers each request read on them with answer, written as is; after
// answering, close says whether it closes the connection (without announcing it, as an idle timeout does).
// It counts the connections it accepted.
type rawReceiver struct {
	ln    net.Listener
	conns atomic.Int32
}

func newRawReceiver(t *testing.T, answer string, closeAfter bool) *rawReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rr := &rawReceiver{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rr.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(c, answer); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return rr
}

func (rr *rawReceiver) url() string { return "http://" + rr.ln.Addr().String() + "/hook" }

// A receiver that closes a kept-alive connection after each answer (an idle timeout shorter than the gap
// between events) costs a new connection, never a failed attempt.
func TestIdleCloseIsNotAFailure(t *testing.T) {
	rr := newRawReceiver(t, "HTTP/1.1 204 No Content\r\n\r\n", true)
	s := newSink(t, rr.url(), nil, sinks.Env{})
	for i := range 5 {
		if _, err := sendOne(t, s, testEvent()); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if n := rr.conns.Load(); n != 5 {
		t.Fatalf("5 sends over connections closed after each answer used %d connections, want 5", n)
	}
}

// hiddenConn hides the socket, so an idle connection cannot be checked before it is used again.
type hiddenConn struct{ net.Conn }

// When a closed idle connection is only found out by using it, the request is made once more on a new one;
// a new connection that breaks is the attempt's failure, not tried again.
func TestClosedConnectionRetriedOnce(t *testing.T) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return hiddenConn{c}, nil
	}
	rr := newRawReceiver(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true)
	s := newSink(t, rr.url(), nil, sinks.Env{Dial: dial})
	for i := range 3 {
		rep, err := sendOne(t, s, testEvent())
		if err != nil || rep.StatusCode != 200 || string(rep.Response) != "ok" {
			t.Fatalf("send %d: status %d, %q, %v", i, rep.StatusCode, rep.Response, err)
		}
	}
	if n := rr.conns.Load(); n != 3 {
		t.Fatalf("3 sends used %d connections, want 3 (each reused one was found closed)", n)
	}

	mute := newRawReceiver(t, "", true) // reads the request, closes without answering
	s = newSink(t, mute.url(), nil, sinks.Env{Dial: dial})
	_, err := sendOne(t, s, testEvent())
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassRetryable {
		t.Fatalf("no answer on a new connection: %v (class %v), want a retryable failure", err, class)
	}
	if n := mute.conns.Load(); n != 1 {
		t.Fatalf("a new connection closed without an answer was tried %d times, want 1", n)
	}
}

// Informational answers before the real one are skipped, and the connection carries the next request.
func TestInformationalAnswersSkipped(t *testing.T) {
	rr := newRawReceiver(t, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"+
		"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone", false)
	s := newSink(t, rr.url(), nil, sinks.Env{})
	for i := range 2 {
		rep, err := sendOne(t, s, testEvent())
		if err != nil || rep.StatusCode != 201 || string(rep.Response) != "done" {
			t.Fatalf("send %d: status %d, %q, %v", i, rep.StatusCode, rep.Response, err)
		}
	}
	if n := rr.conns.Load(); n != 1 {
		t.Fatalf("2 sends used %d connections, want 1", n)
	}
}

// A chunked answer read to its end leaves the connection reusable; one cut off after the excerpt (larger
// than the drain) closes it rather than reading on.
func TestAnswerFramingAndReuse(t *testing.T) {
	rr := newRawReceiver(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", false)
	s := newSink(t, rr.url(), nil, sinks.Env{})
	for i := range 3 {
		rep, err := sendOne(t, s, testEvent())
		if err != nil || string(rep.Response) != "abcde" {
			t.Fatalf("send %d: %q, %v", i, rep.Response, err)
		}
	}
	if n := rr.conns.Load(); n != 1 {
		t.Fatalf("3 chunked answers used %d connections, want 1", n)
	}

	big := strings.Repeat("z", excerptBytes+drainBytes+1)
	huge := newRawReceiver(t, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big, false)
	s = newSink(t, huge.url(), nil, sinks.Env{})
	for i := range 2 {
		rep, err := sendOne(t, s, testEvent())
		if err != nil || len(rep.Response) != excerptBytes {
			t.Fatalf("send %d: %d bytes, %v", i, len(rep.Response), err)
		}
	}
	if n := huge.conns.Load(); n != 2 {
		t.Fatalf("2 answers larger than the drain used %d connections, want 2", n)
	}
}

// Connections idle longer than the transport would keep them are closed by the sweep, newest kept.
func TestIdleConnectionsExpire(t *testing.T) {
	rr := newRawReceiver(t, "HTTP/1.1 204 No Content\r\n\r\n", false)
	h := newH1(&http.Transport{DialContext: (&net.Dialer{}).DialContext})
	addr := rr.ln.Addr().String()
	var pcs []*h1Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		pc := newH1Conn(c)
		h.put(addr, pc)
		pcs = append(pcs, pc)
	}
	pcs[0].idleAt = time.Now().Add(-2 * h1IdleTimeout)
	h.expire()
	if _, err := pcs[0].conn.Write([]byte("x")); err == nil {
		t.Fatal("a connection idle past the timeout is still open")
	}
	got, reused := h.get(addr)
	if got != pcs[1] || !reused {
		t.Fatalf("get = %p (reused %v), want the connection idle for less than the timeout", got, reused)
	}
	if got, _ := h.get(addr); got != nil {
		t.Fatal("a closed connection was handed out")
	}
	h.put(addr, got)
	h.closeIdle()
}

// The check before reusing a connection idle for a while tells an open one from one the receiver closed.
func TestPeekTellsClosedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	p := newPeeker(c)
	if p == nil {
		t.Skip("no socket to look at on this platform")
	}
	if !p.open() {
		t.Fatal("an open, quiet connection was taken as closed")
	}
	srv.Close()
	waitFor(t, func() bool { return !p.open() })
}

// h1 writes the bytes Request.Write writes, up to the order of the header lines (HTTP leaves it free).
func TestWriteRequestMatchesRequestWrite(t *testing.T) {
	mk := func(method, url, body string, hdr map[string][]string) *http.Request {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, url, r)
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		return req
	}
	cases := map[string]func() *http.Request{
		"signed event": func() *http.Request {
			return mk("POST", "http://127.0.0.1:8080/hook", `{"a":1}`, map[string][]string{
				"Content-Type": {"application/json"}, "User-Agent": {"Sluice/1"}, "webhook-id": {"evt_1"},
				"webhook-timestamp": {"1700000000"}, "webhook-signature": {"v1,abc= v1,def="}})
		},
		"query and escaped path": func() *http.Request {
			return mk("PUT", "http://example.test/a%20b/c?x=1&y=%2F", "x", map[string][]string{"X-Multi": {"1", "2"}})
		},
		"empty POST":          func() *http.Request { return mk("POST", "http://h:1/", "", nil) },
		"GET without body":    func() *http.Request { return mk("GET", "http://h/p", "", nil) },
		"DELETE with body":    func() *http.Request { return mk("DELETE", "http://h/p", "gone", nil) },
		"no user agent":       func() *http.Request { return mk("POST", "http://h/p", "b", map[string][]string{"User-Agent": {""}}) },
		"padded values":       func() *http.Request { return mk("PATCH", "http://h/p", "b", map[string][]string{"X-Pad": {" \tv \t"}}) },
		"no path":             func() *http.Request { return mk("POST", "http://h:9", "b", nil) },
		"host header":         func() *http.Request { r := mk("POST", "http://127.0.0.1:9/p", "b", nil); r.Host = "api.test"; return r },
		"excluded header set": func() *http.Request { return mk("POST", "http://h/p", "b", map[string][]string{"Trailer": {"x"}}) },
	}
	for name, build := range cases {
		var want bytes.Buffer
		if err := build().Write(&want); err != nil {
			t.Fatalf("%s: Request.Write: %v", name, err)
		}
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		if err := writeRequest(bw, build()); err != nil {
			t.Fatalf("%s: writeRequest: %v", name, err)
		}
		bw.Flush()
		if a, b := sortedHead(want.String()), sortedHead(got.String()); a != b {
			t.Errorf("%s: h1 wrote\n%q\nRequest.Write wrote\n%q", name, got.String(), want.String())
		}
	}
}

// sortedHead is a request with its header lines sorted: the request line first, the body last.
func sortedHead(raw string) string {
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	slices.Sort(lines[1:])
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

// A host Request.Write would rewrite (an IDN, an IPv6 zone) goes by the transport, which does.
func TestH1LeavesUnusualHostsToTheTransport(t *testing.T) {
	h := &h1{}
	for _, url := range []string{"http://bücher.example/p", "http://[fe80::1%25eth0]:80/p"} {
		req, err := http.NewRequest("POST", url, strings.NewReader("b"))
		if err != nil {
			t.Fatal(err)
		}
		if h.use(req, 1) {
			t.Errorf("%s goes by h1", url)
		}
	}
	req, _ := http.NewRequest("POST", "http://[::1]:80/p", strings.NewReader("b"))
	if !h.use(req, 1) {
		t.Error("http://[::1]:80/p does not go by h1")
	}
}

// An attempt made by the dispatcher (sinks.NewAttempt) is interrupted when its parent is cancelled, though no
// request watches its own context: every request in flight ends at once with the cancellation, its connection is
// not reused, and a request that starts afterwards ends before it is sent.
func TestAttemptParentCancelInterruptsRequests(t *testing.T) {
	const inFlight = 3
	rc, started, release := holdingReceiver(t, inFlight)
	defer close(release)
	s := newSink(t, rc.URL, nil, sinks.Env{})
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Answered normally first: the report is filled through the attempt's context.
	ok := newReceiver(t, nil)
	okSink := newSink(t, ok.URL, nil, sinks.Env{})
	// The dispatcher's deadline is the sink's timeout (15 s here) or less, so the sink uses its context as is;
	// were the parent not watched, the requests below would end with that deadline instead.
	deadline := time.Now().Add(10 * time.Second)
	var rep sinks.Report
	a := sinks.NewAttempt(parent, &rep, deadline)
	if err := okSink.Send(a, []event.Event{testEvent()}); err != nil || rep.StatusCode != http.StatusNoContent {
		t.Fatalf("send: %v, report %+v", err, rep)
	}
	a.Release()

	errs := make(chan error, inFlight)
	for range inFlight {
		go func() {
			a := sinks.NewAttempt(parent, nil, deadline)
			defer a.Release()
			errs <- s.Send(a, []event.Event{testEvent()})
		}()
	}
	for range inFlight {
		<-started
	}
	h := s.cur.Load().h1
	if w := h.watched.Load(); w == nil || w.parent != parent {
		t.Fatal("the attempts' parent is not watched")
	}
	cancel()
	for range inFlight {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted send = %v, want context.Canceled", err)
		}
	}
	// Ended by the cancellation, not by their connections' deadline (after which the error is the same).
	if !time.Now().Before(deadline) {
		t.Fatal("the requests in flight ran to their deadline: the cancellation did not interrupt them")
	}
	h.mu.Lock()
	busy, idle := h.busy, h.total
	h.mu.Unlock()
	if busy != nil || idle != 0 {
		t.Fatalf("after the interruption: busy %v, %d idle (want none of either)", busy != nil, idle)
	}
	late := sinks.NewAttempt(parent, nil, deadline)
	defer late.Release()
	if err := s.Send(late, []event.Event{testEvent()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("send after the cancellation = %v", err)
	}
	if n := len(rc.requests()); n != inFlight {
		t.Fatalf("receiver got %d requests, want %d", n, inFlight)
	}
}

// The watch of the attempts' parent ends when the sink is closed, once no request is in flight: a sink
// replaced by a reload leaves nothing registered with the dispatcher's context.
func TestAttemptParentWatchEndsWithTheSink(t *testing.T) {
	rc, started, release := holdingReceiver(t, 1)
	s := newSink(t, rc.URL, nil, sinks.Env{})
	h := s.cur.Load().h1
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		a := sinks.NewAttempt(parent, nil, time.Now().Add(10*time.Second))
		defer a.Release()
		done <- s.Send(a, []event.Event{testEvent()})
	}()
	<-started
	if w := h.watched.Load(); w == nil || w.parent != parent {
		t.Fatal("the parent is not watched while a request is in flight")
	}
	_ = s.Close(context.Background())
	if h.watched.Load() == nil {
		t.Fatal("the watch ended while a request was still in flight")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h.watched.Load() != nil {
		t.Fatal("the watch outlived the closed sink's last request")
	}
}

// holdingReceiver answers no request until release is closed (or the request goes away); started receives a
// value as each request comes in, with room for n.
func holdingReceiver(t *testing.T, n int) (rc *receiver, started, release chan struct{}) {
	started, release = make(chan struct{}, n), make(chan struct{})
	rc = newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	return rc, started, release
}
