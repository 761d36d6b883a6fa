//go:build unix

package webhook

import (
	"net"
	"syscall"
)

var errConnReset error = syscall.ECONNRESET

// peeker looks at an idle connection's socket without reading from it. It is made once per connection (the
// raw connection and the function each cost an allocation).
type peeker struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	alive bool
	buf   [1]byte
}

func newPeeker(c net.Conn) *peeker {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.fn = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK // nothing to read, not at its end
		return true
	}
	return p
}

// open reports whether an idle connection may carry another request: the receiver has neither closed it nor
// sent anything unasked. One non-blocking peek at the socket; http.Transport learns the same from the read it
// always has pending on an idle connection. A connection that cannot be looked at is taken as open: a write
// or read on a closed one fails, and the request is made once more (h1.RoundTrip).
func (p *peeker) open() bool {
	if p == nil {
		return true
	}
	p.alive = false
	return p.rc.Read(p.fn) == nil && p.alive
}
