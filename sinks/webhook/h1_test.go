package webhook

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
