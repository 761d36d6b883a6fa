package webhook

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
	tests := []struct {
		in    string
		want  time.Duration
		found bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"30", 30 * time.Second, true},
		{" 30 ", 30 * time.Second, true},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"99999999999999999", maxRetryAfter, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true}, // rounded up from 89.5s
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{now.Add(24 * 400 * time.Hour).Format(http.TimeFormat), maxRetryAfter, true},
		{"Fri, 02 Jan 2026 03:05:00 GMT", 55 * time.Second, true},  // IMF-fixdate
		{"Friday, 02-Jan-26 03:05:00 GMT", 55 * time.Second, true}, // RFC 850, which receivers still send
	}
	for _, tt := range tests {
		got, found := retryAfter(tt.in, now)
		if got != tt.want || found != tt.found {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tt.in, got, found, tt.want, tt.found)
		}
	}
}
