package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// replayServer is a stand-in Sluice API that records the replay requests it gets and answers as told.
type replayServer struct {
	*httptest.Server
	status int
	answer string

	mu   sync.Mutex
	reqs []recordedReq
}

type recordedReq struct {
	method, path, auth, ctype string
	body                      map[string]any
}

func newReplayServer(t *testing.T, status int, answer string) *replayServer {
	s := &replayServer{status: status, answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		rec := recordedReq{method: r.Method, path: r.URL.EscapedPath(), auth: r.Header.Get("Authorization"),
			ctype: r.Header.Get("Content-Type")}
		if err := json.Unmarshal(raw, &rec.body); err != nil {
			t.Errorf("replay body is not a JSON object: %q", raw)
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, rec)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		io.WriteString(w, s.answer)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *replayServer) requests() []recordedReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recordedReq(nil), s.reqs...)
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestReplaySendsTheRequest(t *testing.T) {
	srv := newReplayServer(t, http.StatusAccepted, `{"requeued": 7}`)
	before := time.Now()
	code, out, errOut := runCmd("replay", "--server", srv.URL+"/", "--key", "k-123", "--destination", "orders hook",
		"--since", "2h", "--until", "2030-01-02T03:04:05+01:00", "--status", "failed", "--status", "skipped,delivered")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != "requeued 7 deliveries of orders hook\n" {
		t.Fatalf("stdout %q", out)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost || r.path != "/v1/destinations/orders%20hook/replay" {
		t.Errorf("request %s %s, want POST /v1/destinations/orders%%20hook/replay", r.method, r.path)
	}
	if r.auth != "Bearer k-123" || r.ctype != "application/json" {
		t.Errorf("Authorization %q, Content-Type %q", r.auth, r.ctype)
	}
	since, err := time.Parse(time.RFC3339Nano, r.body["since"].(string))
	if err != nil {
		t.Fatalf("since %v: %v", r.body["since"], err)
	}
	// "2h" is two hours before the command ran: between two hours before the test's start and now.
	if lo, hi := before.Add(-2*time.Hour-time.Second), time.Now().Add(-2*time.Hour); since.Before(lo) || since.After(hi) {
		t.Errorf("since %v, want about two hours ago (%v..%v)", since, lo, hi)
	}
	if r.body["until"] != "2030-01-02T02:04:05Z" {
		t.Errorf("until %v, want the RFC 3339 time in UTC", r.body["until"])
	}
	st, _ := json.Marshal(r.body["status"])
	if string(st) != `["failed","skipped","delivered"]` {
		t.Errorf("status %s, want the repeated and comma-separated values as one list", st)
	}
}

func TestReplayOmitsUnsetFields(t *testing.T) {
	srv := newReplayServer(t, http.StatusAccepted, `{"requeued": 0}`)
	code, out, errOut := runCmd("replay", "--server", srv.URL, "--key", "k", "--destination", "d1")
	if code != 0 || out != "requeued 0 deliveries of d1\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if b := srv.requests()[0].body; len(b) != 0 {
		t.Fatalf("body %v, want {} when no filter is given", b)
	}
}

func TestReplayServerAndKeyFromEnvironment(t *testing.T) {
	srv := newReplayServer(t, http.StatusAccepted, `{"requeued": 1}`)
	t.Setenv("SLUICE_SERVER", srv.URL)
	t.Setenv("SLUICE_API_KEY", "")
	t.Setenv("SLUICE_ADMIN_KEY", "admin-from-env")
	if code, _, errOut := runCmd("replay", "--destination", "d1"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	t.Setenv("SLUICE_API_KEY", "api-from-env") // wins over SLUICE_ADMIN_KEY, as for publish
	if code, _, errOut := runCmd("replay", "--destination", "d1"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	reqs := srv.requests()
	if reqs[0].auth != "Bearer admin-from-env" || reqs[1].auth != "Bearer api-from-env" {
		t.Fatalf("keys sent %q, %q", reqs[0].auth, reqs[1].auth)
	}
}

func TestReplayAPIError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		answer string
		want   string
	}{
		{"not found", 404, `{"error": {"code": "not_found", "message": "no destination with this id"}}`,
			"sluice replay: no destination with this id (404 Not Found)\n"},
		{"field", 422, `{"error": {"code": "invalid", "message": "must be before until", "field": "since"}}`,
			"sluice replay: since: must be before until (422 Unprocessable Entity)\n"},
		{"not JSON", 502, "<html>bad gateway</html>", "sluice replay: 502 Bad Gateway: <html>bad gateway</html>\n"},
		{"unexpected success body", 202, `{}`, "unexpected answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newReplayServer(t, tc.status, tc.answer)
			code, out, errOut := runCmd("replay", "--server", srv.URL, "--destination", "d1")
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, tc.want)
			}
		})
	}
}

func TestReplayUnreachableServer(t *testing.T) {
	srv := newReplayServer(t, 202, `{"requeued": 1}`)
	url := srv.URL
	srv.Close()
	code, _, errOut := runCmd("replay", "--server", url, "--destination", "d1")
	if code != 1 || !strings.HasPrefix(errOut, "sluice replay: ") {
		t.Fatalf("exit %d, stderr %q; want exit 1", code, errOut)
	}
}

func TestReplayUsageErrors(t *testing.T) {
	srv := newReplayServer(t, 202, `{"requeued": 1}`)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no destination", nil, "--destination is required"},
		{"empty destination", []string{"--destination", " "}, "--destination is required"},
		{"bad since", []string{"--destination", "d", "--since", "yesterday"}, `--since "yesterday": want an RFC 3339 time`},
		{"bad until", []string{"--destination", "d", "--until", "2024-13-01"}, `--until "2024-13-01"`},
		{"negative duration", []string{"--destination", "d", "--since", "-2h"}, "must not be negative"},
		{"since after until", []string{"--destination", "d", "--since", "1h", "--until", "2h"}, "--since 1h is not before --until 2h"},
		{"bad status", []string{"--destination", "d", "--status", "failed,broken"}, `unknown status "broken"`},
		{"positional", []string{"--destination", "d", "extra"}, `unexpected argument "extra"`},
		{"bad server", []string{"--destination", "d", "--server", "localhost:8080"}, `--server "localhost:8080" is not a URL`},
		{"unknown flag", []string{"--destination", "d", "--nope"}, "flag provided but not defined: -nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"replay"}, tc.args...)
			if tc.name != "bad server" {
				args = append(args, "--server", srv.URL)
			}
			code, out, errOut := runCmd(args...)
			if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, errOut, tc.want)
			}
		})
	}
	if n := len(srv.requests()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}

func TestParseReplayTime(t *testing.T) {
	now := time.Date(2024, 5, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2024-05-01T00:00:00Z":           time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
		"2024-05-01T00:00:00.5+02:00":    time.Date(2024, 4, 30, 22, 0, 0, 5e8, time.UTC),
		"90m":                            now.Add(-90 * time.Minute),
		"7d":                             now.Add(-7 * 24 * time.Hour),
		"1.5d":                           now.Add(-36 * time.Hour),
		"0s":                             now,
		"2024-05-01T00:00:00.123456789Z": time.Date(2024, 5, 1, 0, 0, 0, 123456789, time.UTC),
	} {
		got, err := parseReplayTime("since", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseReplayTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestReplayInUsage(t *testing.T) {
	_, out, _ := runCmd("help")
	if !strings.Contains(out, "sluice replay") {
		t.Fatalf("usage does not mention replay:\n%s", out)
	}
}
