package webhook

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sinks"
)

// h1 sends plain-http requests that reach their receiver directly (no proxy) over HTTP/1.1 on the calling
// goroutine: the request is written and its answer read by the attempt itself, on a kept-alive connection.
//
// Why not http.Transport: it hands every request to a connection's write goroutine and its answer back from a
// read goroutine, each through channels and a select, with a context, a cancel registration and a connection
// request per round trip. Under fan-out that machinery cost more CPU than the two system calls an exchange
// needs (a profile of fanout10: ~40% of Sluice's CPU in the client, under a third of it the syscalls).
//
// What stays the same: connections are made by the transport's own DialContext (the SSRF guard judges every
// address), response headers are bounded as the transport bounds them, the wire format is net/http's own
// (writeRequest writes what Request.Write would, ReadResponse reads the answer). Everything else — https (TLS, HTTP/2), a proxy, a body too large to be sure
// it is written before the answer, a header value the transport would refuse — goes through the transport as
// before (see use).
//
// Cancellation: an attempt's deadline is its connection's. An attempt made by the dispatcher (sinks.NewAttempt)
// is cancelled early only with its long-lived parent, which h1 watches once (watch): cancelling it moves the
// deadline of every connection in use (busy) into the past. Any other context is watched per request
// (context.AfterFunc), which costs its timer, channel and registration on every request.
type h1 struct {
	dial      func(ctx context.Context, network, address string) (net.Conn, error)
	maxHeader int64

	mu    sync.Mutex
	idle  map[string][]*h1Conn // by the URL's host, most recently used last
	total int                  // connections in idle
	sweep *time.Timer          // closes connections idle too long; nil while none is idle
	// busy lists the connections carrying a request (a ring through h1Conn.prev and next; nil when empty).
	busy *h1Conn
	// watched is the attempts' parent being watched, with the stop of its watch; nil when none is. Changed
	// with h.mu held.
	watched atomic.Pointer[h1Watch]
	// retired is set by closeIdle: the watch ends once no connection is busy.
	retired bool
}

type h1Watch struct {
	parent context.Context
	stop   func() bool
}

// h1MaxBody is the largest request body h1 sends: one that fits the socket's send buffer is written whole
// before any answer can matter. A larger one may meet an early answer (a 413) while it is still being written;
// the transport, which reads while it writes, reports that answer instead of the broken write.
const h1MaxBody = 64 << 10

// h1MaxIdle, h1MaxIdleTotal and h1IdleTimeout match the transport's MaxIdleConnsPerHost, MaxIdleConns and
// IdleConnTimeout (newTransport). A connection idle for less than h1FreshIdle is used without looking at it
// first (see get).
const (
	h1MaxIdle      = 64
	h1MaxIdleTotal = 256
	h1IdleTimeout  = 90 * time.Second
	h1FreshIdle    = time.Second
)

func newH1(t *http.Transport) *h1 {
	if t.Proxy != nil || t.DialContext == nil {
		return nil
	}
	return &h1{dial: t.DialContext, maxHeader: t.MaxResponseHeaderBytes, idle: map[string][]*h1Conn{}}
}

// use reports whether req goes by h1. Header names and values are checked as the transport checks them, so
// one it would refuse is refused by it, with its error.
func (h *h1) use(req *http.Request, bodyLen int) bool {
	if h == nil || req.URL.Scheme != "http" || bodyLen > h1MaxBody || req.Close || req.ContentLength != int64(bodyLen) ||
		len(req.TransferEncoding) > 0 || req.Trailer != nil || !plainHost(req.Host) || !plainHost(req.URL.Host) {
		return false
	}
	for k, vs := range req.Header {
		if !validHeaderName(k) {
			return false
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				return false
			}
		}
	}
	return true
}

type h1Conn struct {
	conn   net.Conn
	peek   *peeker
	lr     limitedConn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	// prev and next link the connection into h1.busy while it carries a request.
	prev, next *h1Conn
}

// limitedConn reads from conn, at most n bytes while n is not negative: the bound on response headers. got
// counts the bytes read, so a failed exchange knows whether any of an answer came.
type limitedConn struct {
	conn net.Conn
	n    int64
	got  int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n >= 0 {
		if l.n == 0 {
			return 0, errHeaderTooLarge
		}
		if int64(len(p)) > l.n {
			p = p[:l.n]
		}
	}
	n, err := l.conn.Read(p)
	l.got += int64(n)
	if l.n >= 0 {
		l.n -= int64(n)
	}
	return n, err
}

var errHeaderTooLarge = errors.New("response headers too large")

// h1Addr is where req goes: host:port, port 80 unless given.
func h1Addr(req *http.Request) string {
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(host, port)
}

// RoundTrip sends req (whose body is bytes already in memory; GetBody gives it again) and returns its answer.
// The response body must be closed: a body read to its end gives the connection back for the next request.
func (h *h1) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Idle connections are kept by the URL's host as written (the same receiver written two ways only gets two
	// pools); the address is worked out only to dial.
	addr := req.URL.Host
	for try := 0; ; try++ {
		pc, reused := h.get(addr)
		if pc == nil {
			conn, err := h.dial(ctx, "tcp", h1Addr(req))
			if err != nil {
				return nil, err
			}
			pc = newH1Conn(conn)
			h.mu.Lock()
			h.enter(pc)
			h.mu.Unlock()
		}
		if try > 0 {
			body, err := req.GetBody()
			if err != nil {
				h.drop(pc)
				return nil, err
			}
			req.Body = body
		}
		resp, answered, err := h.exchange(ctx, pc, req, addr)
		if err == nil {
			return resp, nil
		}
		h.drop(pc)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// A kept-alive connection the receiver closed just as it was taken: nothing of an answer came, so the
		// request is made once more on a new connection (net/http's transport does the same for a connection
		// that broke before the request was written, and its reader usually notices an idle close first).
		if !reused || answered || try > 0 || req.GetBody == nil {
			return nil, err
		}
	}
}

func newH1Conn(conn net.Conn) *h1Conn {
	pc := &h1Conn{conn: conn, peek: newPeeker(conn), lr: limitedConn{conn: conn, n: -1}}
	pc.br = bufio.NewReaderSize(&pc.lr, 4<<10)
	pc.bw = bufio.NewWriterSize(conn, 4<<10)
	return pc
}

// exchange writes req on pc and reads the answer's head. answered says some of an answer was read.
func (h *h1) exchange(ctx context.Context, pc *h1Conn, req *http.Request, addr string) (*http.Response, bool, error) {
	dl, hasDL := ctx.Deadline()
	if hasDL {
		pc.conn.SetDeadline(dl)
	} else {
		pc.conn.SetDeadline(time.Time{})
	}
	// Cancellation (shutdown) interrupts the connection's I/O at once; the deadline covers a timeout.
	var stop func() bool
	parent, watched := sinks.AttemptParent(ctx)
	if watched {
		h.watch(parent)
		// After the deadline is set: a cancellation that came before it, whose interruption the deadline may
		// have overwritten, is seen here.
		if parent.Err() != nil {
			return nil, false, ctx.Err()
		}
	} else {
		stop = context.AfterFunc(ctx, func() { pc.conn.SetDeadline(aLongTimeAgo) })
	}
	fail := func(answered bool, err error) (*http.Response, bool, error) {
		if stop != nil {
			stop()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && hasDL && ctx.Err() == nil && !time.Now().Before(dl) {
			// The connection's deadline is the context's: let the context say so, as the transport would.
			<-ctx.Done()
		}
		return nil, answered, err
	}
	if err := writeRequest(pc.bw, req); err != nil {
		return fail(false, err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(false, err)
	}
	var resp *http.Response
	pc.lr.got = int64(pc.br.Buffered())
	for informational := 0; ; informational++ {
		pc.lr.n = h.maxHeader
		if h.maxHeader <= 0 {
			pc.lr.n = -1
		}
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		pc.lr.n = -1
		if err != nil {
			if errors.Is(err, errHeaderTooLarge) {
				err = fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", h.maxHeader)
			}
			return fail(pc.lr.got > 0 || !isEOF(err), err)
		}
		// 1xx answers before the real one are skipped, as the transport skips them (101 would switch protocols:
		// it is returned, and the connection is not reused).
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if informational >= 5 {
			return fail(true, errors.New("net/http: too many 1xx informational responses"))
		}
	}
	resp.Body = &h1Body{rc: resp.Body, h: h, pc: pc, addr: addr, stop: stop, parent: parent,
		reuse: !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	return resp, true, nil
}

// isEOF reports whether a read ended because the receiver closed the connection without answering.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, errConnReset)
}

var aLongTimeAgo = time.Unix(1, 0)

// h1Body is an answer's body: read to its end, the connection goes back to the pool when closed; closed before
// that, the connection is closed too (rather than draining an unknown amount, as http's body would).
type h1Body struct {
	rc   io.ReadCloser
	h    *h1
	pc   *h1Conn
	addr string
	// stop ends the request's own watch of its context; parent, when stop is nil, is the watched parent.
	stop   func() bool
	parent context.Context
	reuse  bool
	eof    bool
	done   bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("http: read on closed response body")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// Interrupted by cancellation: the connection's deadline was moved, so it is not reused.
	var cancelled bool
	if b.stop != nil {
		cancelled = !b.stop()
	} else {
		cancelled = b.parent.Err() != nil
	}
	if b.eof && b.reuse && !cancelled {
		_ = b.rc.Close() // at its end: reads nothing more
		b.h.put(b.addr, b.pc)
		return nil
	}
	b.h.drop(b.pc)
	return nil
}

// get takes the most recently used idle connection to addr that is still open; reused is false when none is.
func (h *h1) get(addr string) (*h1Conn, bool) {
	now := time.Now()
	for {
		h.mu.Lock()
		list := h.idle[addr]
		if len(list) == 0 {
			h.mu.Unlock()
			return nil, false
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		h.idle[addr] = list[:len(list)-1]
		h.total--
		h.enter(pc)
		h.mu.Unlock()
		// A connection given back within the last second is not looked at (a system call per request under
		// load): if the receiver closed it meanwhile, no answer comes and RoundTrip makes the request again.
		idle := now.Sub(pc.idleAt)
		if idle < h1IdleTimeout && pc.br.Buffered() == 0 && (idle < h1FreshIdle || pc.peek.open()) {
			return pc, true
		}
		h.drop(pc)
	}
}

func (h *h1) put(addr string, pc *h1Conn) {
	pc.idleAt = time.Now()
	// No deadline while idle: the next request sets its own, and the check in get must not meet the old one.
	if pc.conn.SetDeadline(time.Time{}) != nil {
		h.drop(pc)
		return
	}
	h.mu.Lock()
	h.leave(pc)
	if len(h.idle[addr]) >= h1MaxIdle || h.total >= h1MaxIdleTotal {
		h.mu.Unlock()
		pc.conn.Close()
		return
	}
	h.idle[addr] = append(h.idle[addr], pc)
	h.total++
	if h.sweep == nil {
		h.sweep = time.AfterFunc(h1IdleTimeout, h.expire)
	}
	h.mu.Unlock()
}

// expire closes the connections idle for h1IdleTimeout or longer, and comes back while any stays idle.
func (h *h1) expire() {
	var old []*h1Conn
	cutoff := time.Now().Add(-h1IdleTimeout)
	h.mu.Lock()
	for addr, list := range h.idle {
		// Oldest first: the ones given back earliest are at the front.
		n := 0
		for n < len(list) && !list[n].idleAt.After(cutoff) {
			n++
		}
		old = append(old, list[:n]...)
		if n == len(list) {
			delete(h.idle, addr)
			continue
		}
		kept := append(list[:0], list[n:]...)
		clear(list[len(kept):])
		h.idle[addr] = kept
	}
	h.total -= len(old)
	h.sweep = nil
	if h.total > 0 {
		h.sweep = time.AfterFunc(h1IdleTimeout/2, h.expire)
	}
	h.mu.Unlock()
	for _, pc := range old {
		pc.conn.Close()
	}
}

// closeIdle closes the idle connections, as http.Transport.CloseIdleConnections does. The watch of the
// attempts' parent ends once no connection is busy.
func (h *h1) closeIdle() {
	if h == nil {
		return
	}
	h.mu.Lock()
	idle := h.idle
	h.idle, h.total = map[string][]*h1Conn{}, 0
	if h.sweep != nil {
		h.sweep.Stop()
		h.sweep = nil
	}
	h.retired = true
	h.unwatchIdle()
	h.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.conn.Close()
		}
	}
}

// plainHost reports whether host (a URL's host, or a Host header; empty is allowed) needs nothing of what
// Request.Write does to a host before sending it: no IDNA conversion, no IPv6 zone to remove, nothing to refuse.
// A host that does goes by the transport.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		c := host[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' ||
			c == '[' || c == ']' || c == '_' {
			continue
		}
		return false
	}
	return true
}

// writeRequest writes req on w as Request.Write does for the requests use accepts (a body of ContentLength
// bytes, no transfer encoding, no trailer, a plain host, header names and values already checked): the request
// line, Host, User-Agent (Go's default unless the request sets its own; none when set empty), Content-Length,
// the other headers, and the body. Headers go in map order, which HTTP leaves free; Request.Write sorts them,
// and formats the first lines with fmt, which cost more than the rest of the head together.
func writeRequest(w *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	ruri := req.URL.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if c := ruri[i]; c < ' ' || c == 0x7f {
			return errors.New("net/http: can't write control character in Request.URL")
		}
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(ruri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	ua := h1UserAgent
	if vs, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vs) > 0 {
			ua = trimHeaderValue(vs[0])
		}
	}
	if ua != "" {
		w.WriteString("User-Agent: ")
		w.WriteString(ua)
		w.WriteString("\r\n")
	}
	n := req.ContentLength
	if n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10)) // the digits written in place: no allocation
		w.WriteString("\r\n")
	}
	for k, vs := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(trimHeaderValue(v))
			w.WriteString("\r\n")
		}
	}
	w.WriteString("\r\n")
	if req.Body == nil || req.Body == http.NoBody {
		if n != 0 {
			return fmt.Errorf("http: Request.ContentLength=%d with nil Body", n)
		}
		return nil
	}
	defer req.Body.Close()
	wrote, err := io.Copy(w, req.Body)
	if err != nil {
		return err
	}
	if wrote != n {
		return fmt.Errorf("http: ContentLength=%d with Body length %d", n, wrote)
	}
	return nil
}

// h1UserAgent is what Request.Write sends when a request names no User-Agent.
const h1UserAgent = "Go-http-client/1.1"

// trimHeaderValue trims what textproto.TrimString trims (the values reaching here hold no CR or LF).
func trimHeaderValue(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// enter lists pc as busy; h.mu is held.
func (h *h1) enter(pc *h1Conn) {
	if h.busy == nil {
		pc.prev, pc.next = pc, pc
	} else {
		pc.prev, pc.next = h.busy.prev, h.busy
		h.busy.prev.next = pc
		h.busy.prev = pc
	}
	h.busy = pc
}

// leave takes pc off the busy list (if it is on it); h.mu is held.
func (h *h1) leave(pc *h1Conn) {
	if pc.next == nil {
		return
	}
	if pc.next == pc {
		h.busy = nil
	} else {
		pc.prev.next, pc.next.prev = pc.next, pc.prev
		if h.busy == pc {
			h.busy = pc.next
		}
	}
	pc.prev, pc.next = nil, nil
	if h.retired {
		h.unwatchIdle()
	}
}

// drop closes pc, which is not given back.
func (h *h1) drop(pc *h1Conn) {
	h.mu.Lock()
	h.leave(pc)
	h.mu.Unlock()
	pc.conn.Close()
}

// watch makes sure parent is watched: once it is cancelled, interrupt moves the busy connections' deadlines
// into the past. One parent is watched at a time (the dispatcher has one); another one takes its place.
func (h *h1) watch(parent context.Context) {
	if w := h.watched.Load(); w != nil && w.parent == parent {
		return
	}
	h.mu.Lock()
	if w := h.watched.Load(); w == nil || w.parent != parent {
		if w != nil {
			w.stop()
		}
		h.watched.Store(&h1Watch{parent: parent, stop: context.AfterFunc(parent, h.interrupt)})
	}
	h.mu.Unlock()
}

// unwatchIdle ends the watch when no connection is busy; h.mu is held.
func (h *h1) unwatchIdle() {
	if w := h.watched.Load(); h.busy == nil && w != nil {
		w.stop()
		h.watched.Store(nil)
	}
}

// interrupt ends what the busy connections are doing: their attempts' parent was cancelled.
func (h *h1) interrupt() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if pc := h.busy; pc != nil {
		for {
			pc.conn.SetDeadline(aLongTimeAgo)
			if pc = pc.next; pc == h.busy {
				break
			}
		}
	}
}
