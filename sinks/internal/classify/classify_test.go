package classify

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"testing"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

func TestRefusedIsPermanentAndKeepsTheGuardsError(t *testing.T) {
	blocked := &netguard.BlockedError{Addr: netip.MustParseAddr("10.0.0.1"), Reason: "private"}
	err := Refused("sqs: queue q", &url.Error{Op: "Post", URL: "http://10.0.0.1/q", Err: blocked})
	if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassPermanent {
		t.Fatalf("refused = %v (%v), want permanent", err, c)
	}
	var be *netguard.BlockedError
	if !errors.As(err, &be) || be != blocked {
		t.Errorf("the guard's *BlockedError is lost: %v", err)
	}
	if err := Refused("x", errors.New("connection refused")); err != nil {
		t.Errorf("an error that is no guard refusal = %v, want nil", err)
	}
}

func TestByStatus(t *testing.T) {
	for _, tc := range []struct {
		status    int
		retryable bool
		want      sinks.Class
	}{
		{0, false, sinks.ClassRetryable},
		{400, false, sinks.ClassPermanent},
		{403, false, sinks.ClassPermanent},
		{403, true, sinks.ClassRetryable},
		{408, false, sinks.ClassRetryable},
		{429, false, sinks.ClassRetryable},
		{500, false, sinks.ClassRetryable},
		{503, false, sinks.ClassRetryable},
		{302, false, sinks.ClassRetryable},
	} {
		t.Run(fmt.Sprint(tc.status, tc.retryable), func(t *testing.T) {
			if c, _ := sinks.Classify(ByStatus("m", tc.status, tc.retryable)); c != tc.want {
				t.Errorf("class %v, want %v", c, tc.want)
			}
		})
	}
}

func TestMessagesHideURLsAndStayBounded(t *testing.T) {
	err := &url.Error{Op: "Post", URL: "https://h/hook?token=s3cr3t", Err: errors.New("connection reset")}
	if got := URLErrMsg(err); got != "connection reset" {
		t.Errorf("URLErrMsg = %q", got)
	}
	if got := Origin("https://h:8443/p?token=s3cr3t", "the endpoint"); got != "https://h:8443" {
		t.Errorf("Origin = %q", got)
	}
	if got := Origin("::", "the endpoint"); got != "the endpoint" {
		t.Errorf("Origin of garbage = %q", got)
	}
	if got := Clip("abcdef", 3); got != "abc…" {
		t.Errorf("Clip = %q", got)
	}
	if got := Clip("abc", 3); got != "abc" {
		t.Errorf("Clip of a short string = %q", got)
	}
}
