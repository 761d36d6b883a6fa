package sqs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// What an error code means for the delivery, and what the operator should do about a permanent one.
const (
	hintAuth    = "check access_key_id and secret_access_key (or the AWS credential chain) and that they may sqs:SendMessage to this queue"
	hintQueue   = "check queue_url, region and endpoint; Sluice does not create queues"
	hintKMS     = "the queue is encrypted with a KMS key Sluice cannot use; check the key and Sluice's kms:GenerateDataKey and kms:Decrypt permissions"
	hintRequest = "SQS refused the request as malformed"
)

// permanentCodes are whole-call errors that retrying cannot fix, with what to check. Codes are as the JSON and
// query protocols send them, without the AWS.SimpleQueueService. prefix.
var permanentCodes = map[string]string{
	"AccessDenied":                        hintAuth,
	"AccessDeniedException":               hintAuth,
	"InvalidClientTokenId":                hintAuth,
	"SignatureDoesNotMatch":               hintAuth,
	"UnrecognizedClientException":         hintAuth,
	"IncompleteSignature":                 hintAuth,
	"MissingAuthenticationToken":          hintAuth,
	"MissingAuthenticationTokenException": hintAuth,
	"InvalidAccessKeyId":                  hintAuth,
	"InvalidSecurity":                     hintAuth,
	"AuthFailure":                         hintAuth,
	"NotAuthorized":                       hintAuth,
	"OptInRequired":                       hintAuth,
	"NonExistentQueue":                    hintQueue,
	"QueueDoesNotExist":                   hintQueue,
	"QueueDeletedRecently":                hintQueue,
	"InvalidAddress":                      hintQueue,
	"KmsAccessDenied":                     hintKMS,
	"KmsDisabled":                         hintKMS,
	"KmsNotFound":                         hintKMS,
	"KmsInvalidState":                     hintKMS,
	"KmsInvalidKeyUsage":                  hintKMS,
	"KmsOptInRequired":                    hintKMS,
	"InvalidParameterValue":               hintRequest,
	"InvalidAttributeName":                hintRequest,
	"InvalidAttributeValue":               hintRequest,
	"InvalidMessageContents":              hintRequest,
	"UnsupportedOperation":                hintRequest,
	"TooManyEntriesInBatchRequest":        hintRequest,
	"EmptyBatchRequest":                   hintRequest,
	"BatchEntryIdsNotDistinct":            hintRequest,
	"InvalidBatchEntryId":                 hintRequest,
	"BatchRequestTooLong":                 hintRequest,
	"MissingParameter":                    hintRequest,
	"ValidationError":                     hintRequest,
	"InvalidAction":                       hintRequest,
	"MalformedQueryString":                hintRequest,
	"InvalidQueryParameter":               hintRequest,
}

// retryableCodes are errors that look like the caller's (4xx) but pass: throttling, clock skew that the SDK
// corrects on the next attempt, credentials that the provider refreshes.
var retryableCodes = map[string]bool{
	"Throttling": true, "ThrottlingException": true, "RequestThrottled": true, "KmsThrottled": true,
	"RequestLimitExceeded": true, "TooManyRequestsException": true, "SlowDown": true, "OverLimit": true,
	"ServiceUnavailable": true, "InternalError": true, "InternalFailure": true, "InternalServerError": true,
	"RequestTimeout": true, "RequestTimeoutException": true, "RequestTimeTooSkewed": true,
	"RequestExpired": true, "ExpiredToken": true, "ExpiredTokenException": true, "PriorRequestNotComplete": true,
}

// classify maps a failed SendMessageBatch call to the dispatcher's classes. The message names the queue and
// the error code, never the credentials.
func (s *Sink) classify(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The dispatcher cancelled or the attempt's deadline passed: not this queue's failure.
		return ctxErr
	}
	return classifyError(s.queue, err)
}

func classifyError(queue string, err error) error {
	var blocked *netguard.BlockedError
	if errors.As(err, &blocked) {
		// Retrying cannot change the guard's verdict; the message says how to allow the address.
		return sinks.Permanent(fmt.Errorf("sqs: queue %s: %w", queue, blocked))
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) && httpStatus(err) != 0 {
		// An answer, but not one SQS writes (a proxy's or load balancer's error page).
		status := httpStatus(err)
		msg := fmt.Errorf("sqs: queue %s: http %d %s without an SQS error in the body", queue, status, http.StatusText(status))
		if status >= 400 && status < 500 && status != 408 && status != 429 {
			return sinks.Permanent(msg)
		}
		return sinks.Retryable(msg, 0)
	}
	if ae == nil {
		// No answer from the server: refused, reset, timed out, DNS. The url.Error around it repeats the
		// endpoint URL; its cause is what helps.
		var ue *url.Error
		if errors.As(err, &ue) {
			return sinks.Retryable(fmt.Errorf("sqs: queue %s: no answer from %s: %w", queue, origin(ue.URL), ue.Err), 0)
		}
		return sinks.Retryable(fmt.Errorf("sqs: queue %s: %w", queue, err), 0)
	}
	code := errorCode(err)
	status := httpStatus(err)
	msg := fmt.Sprintf("sqs: queue %s: %s", queue, code)
	if m := ae.ErrorMessage(); m != "" {
		msg += ": " + clip(m, 300)
	}
	if status != 0 {
		msg += fmt.Sprintf(" (http %d)", status)
	}
	if hint, ok := permanentCodes[code]; ok {
		return sinks.Permanent(fmt.Errorf("%s; %s", msg, hint))
	}
	switch {
	case retryableCodes[code], status >= 500, status == 408, status == 429, status == 0:
		return sinks.Retryable(errors.New(msg), 0)
	case status >= 400:
		// An error code this sink does not know, with a client-error status: the request itself is wrong.
		return sinks.Permanent(errors.New(msg))
	}
	return sinks.Retryable(errors.New(msg), 0)
}

// entryError classifies one message SendMessageBatch refused: the sender's fault (bad content, too long, a
// group id SQS refuses) is permanent for that event; SQS's own fault is retryable.
func entryError(queue string, f *types.BatchResultErrorEntry) error {
	code := aws.ToString(f.Code)
	err := fmt.Errorf("sqs: queue %s refused the message: %s: %s", queue, code, clip(aws.ToString(f.Message), 300))
	if f.SenderFault {
		return sinks.Permanent(err)
	}
	return sinks.Retryable(err, 0)
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// origin is scheme://host of a URL string, what errors show of an endpoint.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "the endpoint"
	}
	return u.Scheme + "://" + u.Host
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
