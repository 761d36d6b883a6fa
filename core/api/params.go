package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/seal"
)

// List sizes: a page holds defaultLimit items unless limit asks otherwise, never more than maxLimit.
const (
	defaultLimit = 50
	maxLimit     = 1000
)

// maxAdminBody bounds the body of an admin request (a destination, a test event, a replay filter).
const maxAdminBody = 1 << 20

func badParam(field, format string, args ...any) *problem {
	return &problem{Status: http.StatusBadRequest, Code: "invalid_parameter", Field: field,
		Message: fmt.Sprintf(format, args...)}
}

func notFound(what string) *problem {
	return &problem{Status: http.StatusNotFound, Code: "not_found", Message: "no " + what + " with this id"}
}

// listParams are the query parameters every list takes.
type listParams struct {
	limit  int
	before int64 // decoded cursor; 0 = first page
	since  time.Time
	until  time.Time
}

// parseList reads limit, cursor, since and until.
func (s *Server) parseList(r *http.Request) (listParams, *problem) {
	q := r.URL.Query()
	lp := listParams{limit: defaultLimit}
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return lp, badParam("limit", "must be an integer from 1 to %d", maxLimit)
		}
		lp.limit = n
	}
	if v := q.Get("cursor"); v != "" {
		n, ok := s.revealCursor(v)
		if !ok {
			return lp, badParam("cursor", "is not a cursor this server handed out; pass next_cursor of the previous page unchanged")
		}
		lp.before = n
	}
	var p *problem
	if lp.since, p = parseTime(q.Get("since"), "since"); p != nil {
		return lp, p
	}
	if lp.until, p = parseTime(q.Get("until"), "until"); p != nil {
		return lp, p
	}
	return lp, nil
}

func parseTime(v, field string) (time.Time, *problem) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badParam(field, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	// Stores keep times as int64 nanoseconds, which span 1678–2262; beyond that a bound would wrap around
	// and select the opposite of what was asked.
	if y := t.UTC().Year(); y < 1678 || y > 2261 {
		return time.Time{}, badParam(field, "must be a time between the years 1678 and 2261")
	}
	return t.UTC(), nil
}

// Cursors are opaque to clients: the store position of the last item of a page. With store.encryption_key
// set it is hidden (seal.Numbers), so a cursor tells no tenant how many rows others made; without, it is
// base64url behind a version prefix, so the encoding can change without old cursors being misread.
const cursorPrefix = "v1:"

// cursor is the cursor of store position n.
func (s *Server) cursor(n int64) string {
	if s.nums.Keyed() {
		return s.nums.Hide(n, seal.KindCursor)
	}
	return encodeCursor(n)
}

// revealCursor is the store position a cursor this server handed out stands for.
func (s *Server) revealCursor(v string) (int64, bool) {
	if s.nums.Keyed() {
		return s.nums.Reveal(v, seal.KindCursor)
	}
	return decodeCursor(v)
}

func encodeCursor(n int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(n, 10)))
}

func decodeCursor(s string) (int64, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, false
	}
	num, ok := strings.CutPrefix(string(raw), cursorPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// readBody reads an optional request body; blank means none (nil).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *problem) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &problem{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large",
				Message: fmt.Sprintf("the body is larger than %d bytes", maxAdminBody)}
		}
		return nil, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Message: "reading the body: " + err.Error()}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	return b, nil
}

// decodeBody decodes an optional JSON object body strictly into v: unknown fields are refused, naming the
// field. It reports whether there was a body.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (bool, *problem) {
	b, p := readBody(w, r)
	if p != nil || b == nil {
		return false, p
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return true, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Field: te.Field,
				Message: fmt.Sprintf("%s must be a JSON %s", te.Field, te.Type.Kind())}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return true, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Field: f,
				Message: fmt.Sprintf("unknown field %q", f)}
		}
		return true, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Message: "malformed JSON: " + err.Error()}
	}
	if dec.More() {
		return true, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Message: "the body must hold a single JSON object"}
	}
	return true, nil
}
