package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicehq/sluice/sinks/webhook"
)

const (
	listenPrintBytes = 64 << 10 // body bytes shown per request
	listenMaxBody    = 16 << 20 // larger bodies are answered 413 rather than held in memory
	listenTolerance  = 5 * time.Minute
)

// listenSecrets collects --secret, repeatable and comma-separated.
type listenSecrets []string

func (s *listenSecrets) String() string { return strings.Join(*s, ",") }

func (s *listenSecrets) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s = append(*s, part)
		}
	}
	return nil
}

// runListen is `sluice listen`: a local webhook receiver that prints what arrives, checks its signature and
// answers with the status asked for, so retries and failures can be watched without any outside service.
func runListen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: sluice listen [flags]\n\nReceive webhooks locally: print each request, "+
			"verify its signature, answer with a chosen status.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:9000", "address to listen on (port 0 picks a free port)")
	var secrets listenSecrets
	fs.Var(&secrets, "secret", "verify each request with this `secret` (repeatable or comma-separated): "+
		"whsec_… for Standard Webhooks signatures, any string for hex signatures")
	sigHeader := fs.String("signature-header", webhook.DefaultSignatureHeader,
		"header holding the hmac-sha256-hex signature, checked when webhook-signature is absent")
	status := fs.Int("status", http.StatusNoContent, "answer this status `code`")
	failFirst := fs.Int("fail-first", 0, "answer 503 to the first `N` requests of each webhook-id, then --status")
	retryAfter := fs.Int("retry-after", 0, "add Retry-After: `seconds` to failure answers (503s and a --status of 400 or more)")
	quiet := fs.Bool("quiet", false, "print one line per request, without the body")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sluice listen: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q; all options are flags (see sluice listen -h)", fs.Arg(0))
	case *status < 200 || *status > 599:
		return fail("--status %d: give a final HTTP status between 200 and 599", *status)
	case *failFirst < 0:
		return fail("--fail-first %d: must not be negative", *failFirst)
	case *retryAfter < 0:
		return fail("--retry-after %d: give whole seconds, 0 or more", *retryAfter)
	}

	l := &listener{
		out:        stdout,
		secrets:    secrets,
		sigHeader:  *sigHeader,
		status:     *status,
		failFirst:  *failFirst,
		retryAfter: *retryAfter,
		quiet:      *quiet,
		attempts:   map[string]int{},
	}
	for i, s := range secrets {
		if strings.HasPrefix(s, webhook.SecretPrefix) {
			if err := webhook.ValidateSecret(s); err != nil {
				fmt.Fprintf(stderr, "sluice listen: --secret %d: %v; it will only check hex signatures\n", i+1, err)
				continue
			}
			l.standard = append(l.standard, s)
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "sluice listen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	fmt.Fprintln(stdout, l.describe())

	srv := &http.Server{
		Handler:           l,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(stderr, "sluice listen: ", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		fmt.Fprintf(stderr, "sluice listen: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	// Let a request being printed finish, but do not wait on a sender that keeps its connection open.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	return 0
}

type listener struct {
	out        io.Writer
	secrets    []string // all, as given: hex signatures use them as is
	standard   []string // the valid whsec_ ones, for Standard Webhooks signatures
	sigHeader  string
	status     int
	failFirst  int
	retryAfter int
	quiet      bool

	mu       sync.Mutex // guards attempts and keeps each request's printout in one piece
	attempts map[string]int
}

func (l *listener) describe() string {
	var b strings.Builder
	switch n := len(l.secrets); n {
	case 0:
		b.WriteString("not verifying signatures (no --secret)")
	case 1:
		b.WriteString("verifying signatures with 1 secret")
	default:
		fmt.Fprintf(&b, "verifying signatures with %d secrets", n)
	}
	fmt.Fprintf(&b, "; answering %d", l.status)
	switch {
	case l.failFirst == 1:
		b.WriteString(", after a 503 to the first request of each webhook-id")
	case l.failFirst > 1:
		fmt.Fprintf(&b, ", after 503 to the first %d requests of each webhook-id", l.failFirst)
	}
	if l.retryAfter > 0 {
		fmt.Fprintf(&b, " (failures carry Retry-After: %d)", l.retryAfter)
	}
	return b.String()
}

func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, listenMaxBody))
	id := r.Header.Get(webhook.HeaderID)
	if err != nil {
		code := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "cannot read body: "+err.Error(), code)
		l.print(at, r, id, "✗ body not read: "+err.Error(), code, "", nil)
		return
	}

	verdict, ok := l.verify(r.Header, body)
	code, note := l.status, ""
	if !ok {
		code = http.StatusUnauthorized
	} else if l.failFirst > 0 {
		l.mu.Lock()
		l.attempts[id]++
		n := l.attempts[id]
		l.mu.Unlock()
		note = fmt.Sprintf("attempt %d", n)
		if n <= l.failFirst {
			code = http.StatusServiceUnavailable
			note += fmt.Sprintf(", failing %d of %d", n, l.failFirst)
		}
	}
	// A 401 is the sender's mistake, not a reason to wait; Retry-After goes only on answers meant to be retried.
	if l.retryAfter > 0 && code >= 400 && code != http.StatusUnauthorized {
		w.Header().Set("Retry-After", strconv.Itoa(l.retryAfter))
	}
	switch {
	case !ok:
		// The sender logs this excerpt with the attempt, so it learns why.
		http.Error(w, "signature not verified: "+strings.TrimPrefix(verdict, "✗ "), code)
	case code == http.StatusServiceUnavailable && note != "":
		http.Error(w, "sluice listen --fail-first: "+note, code)
	default:
		w.WriteHeader(code)
	}
	l.print(at, r, id, verdict, code, note, body)
}

// verify checks the request's signature; with no secrets configured everything passes unverified.
func (l *listener) verify(h http.Header, body []byte) (string, bool) {
	if len(l.secrets) == 0 {
		return "– not verified (no --secret)", true
	}
	if h.Get(webhook.HeaderSignature) != "" {
		if len(l.standard) == 0 {
			return "✗ webhook-signature sent but no --secret is a whsec_ secret", false
		}
		for i, s := range l.standard {
			if webhook.VerifyStandard([]string{s}, h, body, listenTolerance) == nil {
				return fmt.Sprintf("✓ verified (standard webhooks, secret %d of %d)", i+1, len(l.standard)), true
			}
		}
		return "✗ " + webhook.VerifyStandard(l.standard, h, body, listenTolerance).Error(), false
	}
	sig := h.Get(l.sigHeader)
	if sig == "" {
		return fmt.Sprintf("✗ unsigned: no webhook-signature or %s header", l.sigHeader), false
	}
	for i, s := range l.secrets {
		if webhook.VerifyHex([]string{s}, sig, body) == nil {
			return fmt.Sprintf("✓ verified (%s hmac-sha256-hex, secret %d of %d)", l.sigHeader, i+1,
				len(l.secrets)), true
		}
	}
	return "✗ " + webhook.VerifyHex(l.secrets, sig, body).Error(), false
}

func (l *listener) print(at time.Time, r *http.Request, id, verdict string, code int, note string,
	body []byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s  %s %s", at.Format("15:04:05.000"), listenLine(r.Method), listenLine(r.URL.RequestURI()))
	if id != "" {
		fmt.Fprintf(&b, "  webhook-id=%s", listenLine(id))
	}
	fmt.Fprintf(&b, "  %s  → %d", verdict, code)
	if note != "" {
		fmt.Fprintf(&b, " (%s)", note)
	}
	b.WriteByte('\n')
	if !l.quiet && body != nil {
		listenBody(&b, body)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.out.Write(b.Bytes())
}

// listenBody writes the body indented if it is JSON, as text otherwise, cut at listenPrintBytes.
func listenBody(b *bytes.Buffer, body []byte) {
	switch {
	case len(body) == 0:
		b.WriteString("(empty body)\n\n")
		return
	case len(body) <= listenPrintBytes && json.Valid(body):
		var out bytes.Buffer
		if json.Indent(&out, body, "", "  ") == nil {
			b.WriteString(listenText(out.String()))
			b.WriteString("\n\n")
			return
		}
	}
	shown := body
	if len(shown) > listenPrintBytes {
		shown = shown[:listenPrintBytes]
	}
	// The cut may split a character; drop its first bytes rather than call the body binary.
	for i := 0; i < utf8.UTFMax-1 && len(shown) < len(body) && !utf8.Valid(shown); i++ {
		shown = shown[:len(shown)-1]
	}
	if !utf8.Valid(shown) {
		fmt.Fprintf(b, "(%d bytes, not text)\n\n", len(body))
		return
	}
	b.WriteString(listenText(string(shown)))
	if len(body) > len(shown) {
		fmt.Fprintf(b, "\n… (%d more bytes not shown)", len(body)-len(shown))
	}
	b.WriteString("\n\n")
}

// listenText makes untrusted text safe for a terminal: a body could carry escape sequences that rewrite the
// screen or the title, so control characters other than newline and tab are shown escaped.
func listenText(s string) string {
	return listenEscape(s, "\n\t")
}

// listenLine is listenText for one-line fields (path, id), where a newline would forge a line.
func listenLine(s string) string {
	return listenEscape(s, "")
}

func listenEscape(s, keep string) string {
	clean := true
	for _, r := range s {
		if unicode.IsControl(r) && !strings.ContainsRune(keep, r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) && !strings.ContainsRune(keep, r) {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
