package sqs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
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
	if refused := classify.Refused("sqs: queue "+queue, err); refused != nil {
		return refused
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) && classify.AWSStatus(err) != 0 {
		// An answer, but not one SQS writes (a proxy's or load balancer's error page).
		status := classify.AWSStatus(err)
		return classify.ByStatus(fmt.Sprintf("sqs: queue %s: http %d %s without an SQS error in the body", queue, status,
			http.StatusText(status)), status, false)
	}
	if ae == nil {
		// No answer from the server: refused, reset, timed out, DNS. The url.Error around it repeats the
		// endpoint URL; its cause is what helps.
		var ue *url.Error
		if errors.As(err, &ue) {
			return sinks.Retryable(fmt.Errorf("sqs: queue %s: no answer from %s: %w", queue, classify.Origin(ue.URL, "the endpoint"), ue.Err), 0)
		}
		return sinks.Retryable(fmt.Errorf("sqs: queue %s: %w", queue, err), 0)
	}
	code := errorCode(err)
	status := classify.AWSStatus(err)
	msg := fmt.Sprintf("sqs: queue %s: %s", queue, code)
	if m := ae.ErrorMessage(); m != "" {
		msg += ": " + classify.Clip(m, 300)
	}
	if status != 0 {
		msg += fmt.Sprintf(" (http %d)", status)
	}
	if hint, ok := permanentCodes[code]; ok {
		return sinks.Permanent(fmt.Errorf("%s; %s", msg, hint))
	}
	// An error code this sink does not know, with a client-error status: the request itself is wrong.
	return classify.ByStatus(msg, status, retryableCodes[code])
}

// entryError classifies one message SendMessageBatch refused: the sender's fault (bad content, too long, a
// group id SQS refuses) is permanent for that event; SQS's own fault is retryable.
func entryError(queue string, f *types.BatchResultErrorEntry) error {
	code := aws.ToString(f.Code)
	err := fmt.Errorf("sqs: queue %s refused the message: %s: %s", queue, code, classify.Clip(aws.ToString(f.Message), 300))
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
