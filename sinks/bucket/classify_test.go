package bucket

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"google.golang.org/api/googleapi"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// s3Err builds the error the AWS SDK returns for an S3 error answer.
func s3Err(status int, code, msg string) error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "PutObject", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code, Message: msg},
		},
	}}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		class sinks.Class
		text  string
	}{
		{"s3 signature", s3Err(403, "SignatureDoesNotMatch", "check your key"), sinks.ClassPermanent, "check access_key_id"},
		{"s3 key id", s3Err(403, "InvalidAccessKeyId", "no such key"), sinks.ClassPermanent, "check access_key_id"},
		{"s3 denied", s3Err(403, "AccessDenied", "Access Denied"), sinks.ClassPermanent, "may write objects"},
		{"s3 no bucket", s3Err(404, "NoSuchBucket", "The specified bucket does not exist"), sinks.ClassPermanent, "does not create buckets"},
		{"s3 wrong region", s3Err(301, "PermanentRedirect", "use the right endpoint"), sinks.ClassPermanent, "?region="},
		{"s3 kms", s3Err(400, "KMS.NotFoundException", "no key"), sinks.ClassPermanent, "kmskeyid"},
		{"s3 slow down", s3Err(503, "SlowDown", "Reduce your request rate"), sinks.ClassRetryable, "SlowDown"},
		{"s3 internal", s3Err(500, "InternalError", "oops"), sinks.ClassRetryable, "http 500"},
		{"s3 skew", s3Err(403, "RequestTimeTooSkewed", "skew"), sinks.ClassRetryable, "RequestTimeTooSkewed"},
		{"s3 expired token", s3Err(400, "ExpiredToken", "refresh"), sinks.ClassRetryable, "ExpiredToken"},
		{"s3 bad digest", s3Err(400, "BadDigest", "corrupted"), sinks.ClassRetryable, "BadDigest"},
		{"s3 unknown 4xx", s3Err(400, "SomethingNew", "new"), sinks.ClassPermanent, "SomethingNew"},
		{"s3 unknown 5xx", s3Err(502, "", ""), sinks.ClassRetryable, "http 502"},
		{"gcs unauthorized", &googleapi.Error{Code: 401, Message: "Invalid Credentials"}, sinks.ClassPermanent, "GOOGLE_APPLICATION_CREDENTIALS"},
		{"gcs forbidden", &googleapi.Error{Code: 403, Message: "no storage.objects.create"}, sinks.ClassPermanent, "GOOGLE_APPLICATION_CREDENTIALS"},
		{"gcs no bucket", &googleapi.Error{Code: 404, Message: "Not Found"}, sinks.ClassPermanent, "does not create buckets"},
		{"gcs rate", &googleapi.Error{Code: 429, Message: "rate"}, sinks.ClassRetryable, "http 429"},
		{"gcs 503", &googleapi.Error{Code: 503, Message: "backend"}, sinks.ClassRetryable, "http 503"},
		{"gcs bad request", &googleapi.Error{Code: 400, Message: "bad"}, sinks.ClassPermanent, "http 400"},
		{"file denied", &fs.PathError{Op: "open", Path: "/data/x", Err: syscall.EACCES}, sinks.ClassPermanent, "permissions"},
		{"file read-only", &fs.PathError{Op: "open", Path: "/data/x", Err: syscall.EROFS}, sinks.ClassPermanent, "mount"},
		{"file full", &fs.PathError{Op: "write", Path: "/data/x", Err: syscall.ENOSPC}, sinks.ClassRetryable, "no space"},
		{"refused", &smithy.OperationError{Err: &url.Error{Op: "Put", URL: "http://127.0.0.1:1/b/k?x-id=PutObject", Err: syscall.ECONNREFUSED}},
			sinks.ClassRetryable, "no answer from http://127.0.0.1:1: connection refused"},
		{"guard", &url.Error{Op: "Put", URL: "http://10.0.0.1/b/k", Err: &netguard.BlockedError{Addr: netip.MustParseAddr("10.0.0.1"), Reason: "private"}},
			sinks.ClassPermanent, "allow_cidrs"},
		{"other", errors.New("something odd"), sinks.ClassRetryable, "something odd"},
	} {
		err := classifyError("bucket: s3://b: write k", tc.err)
		c, _ := sinks.Classify(err)
		if c != tc.class || !strings.Contains(err.Error(), tc.text) || !strings.HasPrefix(err.Error(), "bucket: s3://b: write k") {
			t.Errorf("%s: %v %q; want %v with %q", tc.name, c, err, tc.class, tc.text)
		}
		if strings.Contains(err.Error(), "x-id=PutObject") {
			t.Errorf("%s: the message repeats the request URL: %v", tc.name, err)
		}
	}
}

// TestCancelledWriteIsNotAFailure: a Send whose context ends reports the cancellation, never a class, and
// leaves no object.
func TestCancelledWriteIsNotAFailure(t *testing.T) {
	s, _ := fileSink(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, []event.Event{{ID: "a", Topic: "t"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if err := s.classify(ctx, "k", fmt.Errorf("wrapped: %w", context.Canceled)); !errors.Is(err, context.Canceled) {
		t.Fatalf("classify under a cancelled context: %v", err)
	}
}
