// Package awshttp fits the AWS SDK for Go v2 to net/http's HTTP/1.1 transport without losing responses.
//
// smithy-go (under every AWS SDK v2 client) hands net/http each request body wrapped in a reader whose WriteTo
// answers io.EOF once it is closed, and it closes that body as soon as the response headers arrive. After
// net/http has sent a body of known length it reads the body once more, through WriteTo when the body has
// one, to check nothing is left over. When that check runs after the SDK's close, which a busy machine
// makes likely, the io.EOF counts as a failed write, and the transport closes the connection under the response
// still being read. The caller sees "use of closed network connection" in the middle of a 200 response: a call
// the server carried out (messages sent, or messages received and now invisible) reported as failed.
//
// Transport hides WriteTo, so the check goes through Read, where the closed body's io.EOF is a plain end of
// stream.
//
// May import: nothing of Sluice's.
package awshttp

import (
	"io"
	"net/http"
)

// Transport returns rt with every request body's WriteTo hidden. Use it as the Transport of the http.Client
// an AWS SDK v2 client is given.
func Transport(rt http.RoundTripper) http.RoundTripper {
	return transport{rt}
}

// Client is an http.Client over Transport(rt).
func Client(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: Transport(rt)}
}

type transport struct {
	rt http.RoundTripper
}

// readCloser has Read and Close only, whatever the body it holds can do.
type readCloser struct {
	io.ReadCloser
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		if _, ok := req.Body.(io.WriterTo); ok {
			// A RoundTripper may not change the caller's request: a shallow copy with its own Body.
			r := *req
			r.Body = readCloser{req.Body}
			req = &r
		}
	}
	return t.rt.RoundTrip(req)
}
