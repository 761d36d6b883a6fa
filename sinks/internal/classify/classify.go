// Package classify holds what every built-in sink does alike when it turns a failure into a delivery class:
// a guard refusal is permanent, an HTTP status maps to a class the same way everywhere, an AWS answer's
// status is read one way, and messages never quote a whole URL or an unbounded body.
//
// May import: core/event, core/netguard, sinks, plugins/sdk/....
package classify

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// Refused returns err as a permanent failure prefixed with where when the SSRF guard refused the
// connection: retrying cannot change the guard's verdict, and the guard's message says how to allow the
// address. It returns nil for any other error.
func Refused(where string, err error) error {
	var blocked *netguard.BlockedError
	if errors.As(err, &blocked) {
		return sinks.Permanent(fmt.Errorf("%s: %w", where, blocked))
	}
	return nil
}

// ByStatus classifies a failure by its HTTP status when nothing more specific is known: a code known to pass
// (retryable), no status at all, 5xx, 408 and 429 are retryable; other 4xx are the request's own fault.
func ByStatus(msg string, status int, retryable bool) error {
	switch {
	case retryable, status == 0, status >= 500, status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return sinks.Retryable(errors.New(msg), 0)
	case status >= 400:
		return sinks.Permanent(errors.New(msg))
	}
	return sinks.Retryable(errors.New(msg), 0)
}

// AWSStatus is the HTTP status of an AWS SDK call's answer, 0 when there was none.
func AWSStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// URLErrMsg is err's message without url.Error's quoting of the whole URL, which may carry a token.
func URLErrMsg(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// Origin is scheme://host of a URL string, what errors show of an endpoint; unknown when it has none.
func Origin(raw, unknown string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return unknown
	}
	return u.Scheme + "://" + u.Host
}

// Clip bounds s to n bytes (a far side's message, a key), marking the cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
