package bucket

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"cloud.google.com/go/storage"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/blob/s3blob"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/awshttp"
)

// newTransport is the HTTP transport for a cloud bucket: it dials through the sink's dialer (the SSRF guard),
// since an s3 endpoint is whatever address the config names.
func newTransport(env sinks.Env, cfg *Config) *http.Transport {
	proxy, _ := netguard.ParseProxy(cfg.Proxy) // validated by Validate
	// Proxy variables from the environment are ignored: a proxy is delivery.network.proxy, and the bucket's
	// host is judged by the guard before it is asked.
	return env.HTTPTransport(&http.Transport{
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}, proxy)
}

// openS3 opens an s3:// URL the way gocloud.dev's s3blob does, but with the dispatcher in charge of retries,
// the guard in charge of dialing, and optional static credentials.
func openS3(ctx context.Context, u *url.URL, cfg *Config, env sinks.Env) (*blob.Bucket, func(), error) {
	q := u.Query()
	pop := func(k string) string {
		v := q.Get(k)
		q.Del(k)
		return v
	}
	isTrue := func(v string) bool { b, _ := strconv.ParseBool(v); return b }

	endpoint := pop("endpoint")
	var opts s3blob.Options
	if v := pop("ssetype"); v != "" {
		opts.EncryptionType = s3types.ServerSideEncryption(v)
	}
	opts.KMSEncryptionID = pop("kmskeyid")
	accelerate := isTrue(pop("accelerate"))
	pathStyle := isTrue(pop("use_path_style"))
	if isTrue(pop("s3ForcePathStyle")) {
		pathStyle = true
	}
	disableHTTPS := isTrue(pop("disable_https"))
	if endpoint != "" {
		// S3-compatible servers often refuse the newer default (aws-chunked uploads with trailing CRC
		// checksums); ask for checksums only where the API requires them, unless the URL says otherwise.
		if q.Get("request_checksum_calculation") == "" {
			q.Set("request_checksum_calculation", "when_required")
		}
		if q.Get("response_checksum_validation") == "" {
			q.Set("response_checksum_validation", "when_required")
		}
	}

	// region, profile, anonymous, dualstack, fips, rate_limiter_capacity, role and the checksum modes.
	awsCfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	// The dispatcher owns retries and their schedule; a retrying SDK would hide failures and stretch an attempt
	// past its timeout.
	awsCfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	if cfg.AccessKeyID != "" {
		awsCfg.Credentials = aws.NewCredentialsCache(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""))
	}
	transport := newTransport(env, cfg)
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Set on the client only: the credential chain's own requests (instance metadata) must not go through
		// the guard, which refuses metadata addresses by design.
		o.HTTPClient = awshttp.Client(transport)
		o.UsePathStyle = pathStyle
		o.UseAccelerate = accelerate
		o.EndpointOptions.DisableHTTPS = disableHTTPS
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	// The transfer manager that uploads takes its checksum mode from here, not from the client.
	opts.RequestChecksumCalculation = awsCfg.RequestChecksumCalculation
	b, err := s3blob.OpenBucket(ctx, client, u.Host, &opts)
	if err != nil {
		return nil, nil, err
	}
	return b, transport.CloseIdleConnections, nil
}

// openGCS opens a gs:// URL with Google's default credentials (or none: ?anonymous=true, or the emulator named
// by STORAGE_EMULATOR_HOST, which the storage client honours).
func openGCS(ctx context.Context, u *url.URL, cfg *Config, env sinks.Env) (*blob.Bucket, func(), error) {
	transport := newTransport(env, cfg)
	anonymous, _ := strconv.ParseBool(u.Query().Get("anonymous"))
	// JSON reads work against real GCS and every emulator; the default XML reads do not work against
	// fake-gcs-server.
	opts := []option.ClientOption{storage.WithJSONReads()}
	var hc *http.Client
	if anonymous || os.Getenv("STORAGE_EMULATOR_HOST") != "" {
		hc = &http.Client{Transport: transport}
		opts = append(opts, option.WithoutAuthentication())
	} else {
		// The token source fetches tokens with its own client (metadata server, OAuth endpoint), outside the
		// guard; only the storage requests go through it.
		creds, err := google.FindDefaultCredentials(ctx, storage.ScopeReadWrite)
		if err != nil {
			return nil, nil, fmt.Errorf("find Google credentials: %w; set GOOGLE_APPLICATION_CREDENTIALS to a "+
				"service account key file, run where a default service account exists, or add ?anonymous=true "+
				"for a public bucket", err)
		}
		hc = &http.Client{Transport: &oauth2.Transport{Source: creds.TokenSource, Base: transport}}
	}
	opts = append(opts, option.WithHTTPClient(hc))
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	// The dispatcher owns retries.
	client.SetRetry(storage.WithPolicy(storage.RetryNever))
	b, err := gcsblob.OpenBucket(ctx, nil, u.Host, &gcsblob.Options{Client: client})
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	release := func() {
		_ = client.Close()
		transport.CloseIdleConnections()
	}
	return b, release, nil
}

// openFile opens a file:// URL: a directory, created if missing. Objects are written to a temporary file
// beside their final name and renamed into place on Close, so a reader never sees half an object (a temporary
// file in os.TempDir would fail to rename when the directory is on another mount). No metadata sidecar files
// are written.
func openFile(u *url.URL) (*blob.Bucket, error) {
	return fileblob.OpenBucket(u.Path, &fileblob.Options{
		CreateDir: true,
		NoTempDir: true,
		Metadata:  fileblob.MetadataDontWrite,
	})
}
