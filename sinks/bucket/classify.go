package bucket

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"syscall"

	"github.com/aws/smithy-go"
	"gocloud.dev/gcerrors"
	"google.golang.org/api/googleapi"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// What a permanent failure means and what to check.
const (
	hintAuth   = "the store refused the credentials: check access_key_id and secret_access_key (or AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE; for gs://, GOOGLE_APPLICATION_CREDENTIALS) and that they may write objects in this bucket"
	hintBucket = "check the bucket name and ?region= (and ?endpoint= for a compatible server) in url; Sluice does not create buckets"
	hintKMS    = "the bucket's encryption key cannot be used: check kmskeyid and Sluice's permission to use the key"
	hintWrite  = "the store refused the object"
	hintFile   = "Sluice may not write in this directory: check its owner, permissions and mount"
)

// s3Permanent are S3 error codes that retrying cannot fix, with what to check.
var s3Permanent = map[string]string{
	"AccessDenied":                       hintAuth,
	"AllAccessDisabled":                  hintAuth,
	"InvalidAccessKeyId":                 hintAuth,
	"SignatureDoesNotMatch":              hintAuth,
	"InvalidToken":                       hintAuth,
	"InvalidSecurity":                    hintAuth,
	"AccountProblem":                     hintAuth,
	"NotSignedUp":                        hintAuth,
	"MissingSecurityHeader":              hintAuth,
	"InvalidPayer":                       hintAuth,
	"NoSuchBucket":                       hintBucket,
	"InvalidBucketName":                  hintBucket,
	"PermanentRedirect":                  hintBucket,
	"AuthorizationHeaderMalformed":       hintBucket,
	"IllegalLocationConstraintException": hintBucket,
	"KMS.DisabledException":              hintKMS,
	"KMS.NotFoundException":              hintKMS,
	"KMS.KMSInvalidStateException":       hintKMS,
	"KMS.AccessDeniedException":          hintKMS,
	"InvalidArgument":                    hintWrite,
	"InvalidRequest":                     hintWrite,
	"EntityTooLarge":                     hintWrite,
	"KeyTooLongError":                    hintWrite,
	"InvalidStorageClass":                hintWrite,
	"InvalidObjectState":                 hintWrite,
	"MissingContentLength":               hintWrite,
	"MalformedXML":                       hintWrite,
	"NotImplemented":                     hintWrite,
}

// s3Retryable are S3 errors with a client-error status that pass: throttling, clock skew, expired temporary
// credentials the provider refreshes, bodies corrupted in transit.
var s3Retryable = map[string]bool{
	"SlowDown": true, "ServiceUnavailable": true, "InternalError": true, "RequestTimeout": true,
	"RequestTimeTooSkewed": true, "ExpiredToken": true, "TokenRefreshRequired": true, "OperationAborted": true,
	"Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true, "BadDigest": true,
	"XAmzContentSHA256Mismatch": true, "IncompleteBody": true,
}

// classify maps a failed object write to the dispatcher's classes. Messages name the store and the key, never
// credentials.
func (s *Sink) classify(ctx context.Context, key string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The dispatcher cancelled or the attempt's deadline passed: not the store's failure.
		return ctxErr
	}
	return classifyError(fmt.Sprintf("bucket: %s: write %s", s.where, classify.Clip(key, 200)), err)
}

func classifyError(where string, err error) error {
	if refused := classify.Refused(where, err); refused != nil {
		return refused
	}

	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		status := classify.AWSStatus(err)
		msg := fmt.Sprintf("%s: %s", where, code)
		if m := ae.ErrorMessage(); m != "" {
			msg += ": " + classify.Clip(m, 300)
		}
		if status != 0 {
			msg += fmt.Sprintf(" (http %d)", status)
		}
		if hint, ok := s3Permanent[code]; ok {
			return sinks.Permanent(fmt.Errorf("%s; %s", msg, hint))
		}
		return classify.ByStatus(msg, status, s3Retryable[code])
	}

	var ge *googleapi.Error
	if errors.As(err, &ge) {
		msg := fmt.Sprintf("%s: http %d", where, ge.Code)
		if ge.Message != "" {
			msg += ": " + classify.Clip(ge.Message, 300)
		}
		switch ge.Code {
		case http.StatusUnauthorized, http.StatusForbidden:
			return sinks.Permanent(fmt.Errorf("%s; %s", msg, hintAuth))
		case http.StatusNotFound:
			return sinks.Permanent(fmt.Errorf("%s; %s", msg, hintBucket))
		}
		return classify.ByStatus(msg, ge.Code, false)
	}

	if status := classify.AWSStatus(err); status != 0 {
		// An answer without an S3 error in it (a proxy's error page).
		return classify.ByStatus(fmt.Sprintf("%s: http %d %s", where, status, http.StatusText(status)), status, false)
	}

	// Local directories.
	var pe *fs.PathError
	if errors.As(err, &pe) {
		switch {
		case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
			// Space may be freed; the events wait for it.
			return sinks.Retryable(fmt.Errorf("%s: %w", where, pe.Err), 0)
		case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
			return sinks.Permanent(fmt.Errorf("%s: %w; %s", where, pe.Err, hintFile))
		}
		return sinks.Retryable(fmt.Errorf("%s: %s %s: %w", where, pe.Op, pe.Path, pe.Err), 0)
	}

	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return sinks.Permanent(fmt.Errorf("%s: %v; %s", where, err, hintBucket))
	case gcerrors.PermissionDenied:
		return sinks.Permanent(fmt.Errorf("%s: %v; %s", where, err, hintAuth))
	case gcerrors.InvalidArgument, gcerrors.FailedPrecondition, gcerrors.Unimplemented:
		return sinks.Permanent(fmt.Errorf("%s: %v", where, err))
	}

	// No answer: refused, reset, timed out, DNS. The url.Error around it repeats the whole request URL (the key
	// and, for presigned forms, a query); the address and the cause are what help.
	var ue *url.Error
	if errors.As(err, &ue) {
		return sinks.Retryable(fmt.Errorf("%s: no answer from %s: %w", where, classify.Origin(ue.URL, "the store"), ue.Err), 0)
	}
	return sinks.Retryable(fmt.Errorf("%s: %w", where, err), 0)
}
