package awshttp

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
)

// sdkBody behaves like smithy-go's request body: once closed, Read and WriteTo answer io.EOF. WriteTo waits
// for the close, which puts net/http's after-the-body check exactly where the SDK's close races it.
type sdkBody struct {
	data   *bytes.Reader
	closed chan struct{}
	once   sync.Once
}

func (b *sdkBody) Read(p []byte) (int, error) {
	select {
	case <-b.closed:
		return 0, io.EOF
	default:
		return b.data.Read(p)
	}
}

func (b *sdkBody) WriteTo(io.Writer) (int64, error) {
	<-b.closed
	return 0, io.EOF
}

func (b *sdkBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// TestResponseSurvivesTheSDKClosingTheRequestBody: the SDK closes the request body when the response headers
// arrive, then reads the response body. Through Transport the request write ends cleanly, the connection stays
// open, and the whole response arrives.
func TestResponseSurvivesTheSDKClosingTheRequestBody(t *testing.T) {
	const reqBody = `{"QueueUrl":"q","MaxNumberOfMessages":10}`
	rest := make(chan struct{})
	half := strings.Repeat("a", 8<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.ReadAll(r.Body)
		if string(got) != reqBody {
			t.Errorf("server read %q, want %q", got, reqBody)
		}
		w.Header().Set("Content-Length", "16384")
		_, _ = io.WriteString(w, half)
		w.(http.Flusher).Flush()
		select {
		case <-rest:
			_, _ = io.WriteString(w, half)
		case <-r.Context().Done(): // the client went away: the test has failed already
		}
	}))
	defer srv.Close()
	base := srv.Client().Transport.(*http.Transport)
	defer base.CloseIdleConnections()

	for i := range 3 { // the same connection is reused: each round also proves the previous one left it whole
		rest = make(chan struct{})
		body := &sdkBody{data: bytes.NewReader([]byte(reqBody)), closed: make(chan struct{})}
		wrote := make(chan error, 1)
		trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) { wrote <- i.Err }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodPost, srv.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(reqBody))

		resp, err := Transport(base).RoundTrip(req)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if req.Body != body {
			t.Fatalf("round %d: Transport replaced the caller's request body", i)
		}
		_ = body.Close() // what smithy-go does once the headers are in
		if err := <-wrote; err != nil {
			t.Fatalf("round %d: writing the request failed after the SDK closed its body (%v): the transport "+
				"closes the connection under the response", i, err)
		}
		close(rest)
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || len(got) != 16<<10 {
			t.Fatalf("round %d: read %d bytes of the response, err %v; want all 16384", i, len(got), err)
		}
	}
}

// TestBodiesWithoutWriteToPassUnchanged: only a body with WriteTo is wrapped; the request itself is never
// changed.
func TestBodiesWithoutWriteToPassUnchanged(t *testing.T) {
	var seen io.ReadCloser
	rt := Transport(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = r.Body
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
	}))
	plain := readCloser{io.NopCloser(strings.NewReader("x"))}
	req, err := http.NewRequest(http.MethodPost, "http://example.invalid/", plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if seen != plain {
		t.Fatalf("a body without WriteTo was wrapped: %T", seen)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
