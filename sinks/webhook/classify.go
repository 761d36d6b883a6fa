package webhook

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// maxRetryAfter bounds a parsed Retry-After before it becomes a Duration (so a huge number cannot overflow);
// the dispatcher clamps it further to its own policy.
const maxRetryAfter = 365 * 24 * time.Hour

// classifyResponse maps an HTTP answer to the dispatcher's classes (DESIGN §3, response handling).
func classifyResponse(resp *http.Response, now time.Time) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusGone:
		// The receiver says the endpoint was removed on purpose: stop and disable rather than retry for days.
		return sinks.Gone(statusError(code, ""))
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests,
		code >= 500 && code < 600:
		after, ok := retryAfter(resp.Header.Get("Retry-After"), now)
		note := ""
		if ok {
			note = fmt.Sprintf(" (retry-after %v)", after)
		}
		return sinks.Retryable(statusError(code, note), after)
	case code >= 300 && code < 400:
		note := ": redirects are not followed"
		if loc := resp.Header.Get("Location"); loc != "" {
			note += "; update the url if " + classify.Clip(loc, 200) + " is the new address"
		}
		return sinks.Permanent(fmt.Errorf("http %d%s", code, note))
	case code >= 400 && code < 500:
		return sinks.Permanent(statusError(code, ""))
	default:
		return sinks.Permanent(fmt.Errorf("http %d: not a final HTTP status", code))
	}
}

func statusError(code int, note string) error {
	if text := http.StatusText(code); text != "" {
		return fmt.Errorf("http %d %s%s", code, text, note)
	}
	return fmt.Errorf("http %d%s", code, note)
}

// retryAfter parses a Retry-After value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in the past
// means "now" (0, but present); garbage is ignored.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > maxRetryAfter:
		return maxRetryAfter, true
	}
	// HTTP-dates have whole seconds; round up so we never come back before the time asked for.
	return (d + time.Second - 1).Truncate(time.Second), true
}
