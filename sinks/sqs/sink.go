package sqs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/awshttp"
	"github.com/sluicehq/sluice/sinks/internal/classify"
	"github.com/sluicehq/sluice/sinks/template"
)

// SQS limits (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html).
const (
	// MaxBatch is the most entries SendMessageBatch takes.
	MaxBatch = 10
	// MaxMessageBytes is the largest message Sluice sends, body plus attributes, and also the most one
	// SendMessageBatch call carries. 256 KiB is what every queue and SQS-compatible server accepts (AWS raised
	// its own ceiling to 1 MiB in 2025, but a queue's MaximumMessageSize may still be 256 KiB or less).
	MaxMessageBytes = 256 << 10
	// MaxAttributes is the most message attributes SQS allows on one message.
	MaxAttributes = 10
	// DefaultRegion is used when neither region nor queue_url names one.
	DefaultRegion = "us-east-1"
)

// envelopeAllowance is what the dispatcher's byte budget leaves per event for what it does not count: the
// envelope around the data (id, topic, time, tenant, metadata) and the message attributes. Send splits a batch
// further when the real encoding is larger, so this only keeps that rare.
const envelopeAllowance = 1 << 10

// Spec registers the sqs sink.
var Spec = sinks.Register("sqs", "Amazon SQS queue (standard or FIFO), batched with SendMessageBatch", NewConfig, New)

// Config is an sqs destination's `config` block.
type Config struct {
	QueueURL string `yaml:"queue_url" required:"true" secret:"url" desc:"the queue's URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/orders (a name ending in .fifo is a FIFO queue)"`
	Region   string `yaml:"region,omitempty" desc:"AWS region; default: the one in queue_url's host (sqs.REGION.amazonaws.com), else us-east-1"`
	Endpoint string `yaml:"endpoint,omitempty" secret:"url" desc:"API endpoint override for SQS-compatible servers, e.g. http://127.0.0.1:9324; default: AWS's endpoint for the region, or queue_url's scheme and host when that is not an AWS host"`
	// Credentials: both or neither. Without them the AWS default chain applies (environment, shared config
	// files, web identity, ECS/EC2 roles).
	AccessKeyID     string `yaml:"access_key_id,omitempty" secret:"true" desc:"static access key id; give it with secret_access_key, or leave both out to use the AWS default credential chain"`
	SecretAccessKey string `yaml:"secret_access_key,omitempty" secret:"true" desc:"static secret access key, with access_key_id"`
	MessageGroup    string `yaml:"message_group,omitempty" desc:"MessageGroupId template, e.g. {data.case.id} or {tenant:-none}; required for FIFO queues, where the event id is also the MessageDeduplicationId"`
	Proxy           string `yaml:"proxy,omitempty" secret:"url" desc:"HTTP proxy for this destination (http://host:port), in place of delivery.network.proxy"`
}

// NewConfig returns a Config with its defaults filled in (there are none beyond the zero values: region and
// endpoint are derived from queue_url when left out).
func NewConfig() *Config { return &Config{} }

var (
	// awsRegionRe is an AWS region as it appears in an AWS host name; regionRe is what the region setting
	// accepts (compatible servers have names of their own, such as "elasticmq").
	awsRegionRe = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$`)
	regionRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	queueNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)
)

// Validate reports every problem of the block at once. It does no I/O and never shows a secret's value.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sinks.Errorf(path, format, args...)) }
	if _, err := netguard.ParseProxy(c.Proxy); err != nil {
		add("proxy", "%v", err)
	}

	fifo := false
	switch u, err := url.Parse(c.QueueURL); {
	case c.QueueURL == "":
		add("queue_url", "required; write the queue's URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/orders")
	case err != nil:
		add("queue_url", "not a URL (%v); write it like https://sqs.eu-west-1.amazonaws.com/123456789012/orders", classify.URLErrMsg(err))
	case u.Scheme != "https" && u.Scheme != "http":
		add("queue_url", "must be an https URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/orders")
	case u.Hostname() == "":
		add("queue_url", "has no host; write it like https://sqs.eu-west-1.amazonaws.com/123456789012/orders")
	case u.User != nil:
		add("queue_url", "must not carry user:password; give credentials in access_key_id and secret_access_key")
	case u.RawQuery != "" || u.Fragment != "":
		add("queue_url", "must not have a query or fragment; copy the URL exactly as the SQS console shows it")
	default:
		name := queueName(u)
		base := strings.TrimSuffix(name, ".fifo")
		fifo = base != name
		if !queueNameRe.MatchString(base) {
			add("queue_url", "%q does not end in a queue name (1–80 letters, digits, - or _, plus .fifo for a "+
				"FIFO queue); copy the URL exactly as the SQS console shows it", name)
		}
	}

	if c.Region != "" && !regionRe.MatchString(c.Region) {
		add("region", "%q is not an AWS region; write it like eu-west-1", c.Region)
	}
	if c.Endpoint != "" {
		switch u, err := url.Parse(c.Endpoint); {
		case err != nil:
			add("endpoint", "not a URL (%v); write it like http://127.0.0.1:9324", classify.URLErrMsg(err))
		case u.Scheme != "https" && u.Scheme != "http" || u.Hostname() == "":
			add("endpoint", "must be an absolute http or https URL, e.g. http://127.0.0.1:9324")
		case u.User != nil:
			add("endpoint", "must not carry user:password; give credentials in access_key_id and secret_access_key")
		}
	}

	switch {
	case c.AccessKeyID != "" && c.SecretAccessKey == "":
		add("secret_access_key", "required when access_key_id is set; give both, or neither to use the AWS "+
			"default credential chain")
	case c.AccessKeyID == "" && c.SecretAccessKey != "":
		add("access_key_id", "required when secret_access_key is set; give both, or neither to use the AWS "+
			"default credential chain")
	}

	if c.MessageGroup == "" {
		if fifo {
			add("message_group", "required for a FIFO queue (queue_url ends in .fifo): SQS orders messages "+
				"within a group; write e.g. {data.case.id} for per-case order or {topic} for per-topic order")
		}
	} else if t, err := template.Compile(c.MessageGroup); err != nil {
		add("message_group", "%v", err)
	} else if t.Uses("batch_id") {
		add("message_group", "{batch_id} changes with every batch, so it would put each batch in a group of its "+
			"own; group by something in the event, e.g. {data.case.id}")
	}
	return errors.Join(errs...)
}

// Sink delivers events to one SQS queue.
type Sink struct {
	queueURL  string
	queue     string // the queue's name, what errors show instead of the whole URL
	fifo      bool
	group     *template.Template // nil when message_group is not set
	client    *sqs.Client
	transport *http.Transport
	closed    atomic.Bool
	now       func() time.Time
}

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Limiter = (*Sink)(nil)
)

// New builds an SQS sink. It reads the AWS shared config and credential settings but opens no connection: the
// first Send does. ctx is not retained.
func New(ctx context.Context, cfg *Config, env sinks.Env) (*Sink, error) {
	if cfg == nil {
		return nil, errors.New("sqs: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sqs: invalid config: %w", err)
	}
	u, _ := url.Parse(cfg.QueueURL) // Validate parsed it
	s := &Sink{queueURL: cfg.QueueURL, queue: queueName(u), now: time.Now}
	s.fifo = strings.HasSuffix(s.queue, ".fifo")
	if cfg.MessageGroup != "" {
		s.group = template.MustCompile(cfg.MessageGroup) // Validate compiled it
	}

	region := cfg.Region
	if region == "" {
		region = regionFromHost(u.Hostname())
	}
	endpoint := cfg.Endpoint
	if endpoint == "" && !isAWSHost(u.Hostname()) {
		// A compatible server's queue URL names the server itself; AWS's endpoint for the region would be
		// wrong for it.
		endpoint = u.Scheme + "://" + u.Host
	}

	opts := []func(*config.LoadOptions) error{
		config.WithRegion(region),
		// The dispatcher owns retries and their schedule; a retrying SDK would hide failures and stretch an
		// attempt past its timeout.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithRetryMaxAttempts(1),
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("sqs: load AWS config: %w", err)
	}

	proxy, _ := netguard.ParseProxy(cfg.Proxy) // validated by Validate
	// Proxy variables from the environment are ignored: reaching AWS through an egress proxy is configured
	// (proxy, or delivery.network.proxy), and the queue's host is judged by the guard before the proxy is asked.
	s.transport = env.HTTPTransport(&http.Transport{
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}, proxy)
	httpClient := awshttp.Client(s.transport)
	s.client = sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		// Set on the client only, not in LoadDefaultConfig: the credential chain's own requests (EC2 instance
		// metadata, ECS) must not go through the guard, which refuses metadata addresses by design.
		o.HTTPClient = httpClient
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	return s, nil
}

// Limits says SQS takes 10 messages per call. The byte budget leaves room for each event's envelope and
// attributes; Send splits further if the encoded messages still exceed 256 KiB.
func (s *Sink) Limits() sinks.Limits {
	return sinks.Limits{
		MaxBatch:      MaxBatch,
		MaxBatchBytes: MaxMessageBytes - MaxBatch*envelopeAllowance,
		MaxEventBytes: MaxMessageBytes,
	}
}

// Close drops idle connections; a Send already running finishes on its own connection, later ones fail
// (retryably). It is safe to call more than once.
func (s *Sink) Close(context.Context) error {
	s.closed.Store(true)
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	return nil
}

// queueName is the last path segment of a queue URL.
func queueName(u *url.URL) string {
	p := strings.TrimRight(u.Path, "/")
	return p[strings.LastIndexByte(p, '/')+1:]
}

// isAWSHost reports whether host is one of AWS's own (so the SDK's endpoint for the region is the right one).
func isAWSHost(host string) bool {
	host = strings.ToLower(host)
	for _, suffix := range []string{".amazonaws.com", ".amazonaws.com.cn", ".api.aws"} {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// regionFromHost reads the region from sqs.REGION.amazonaws.com or the legacy REGION.queue.amazonaws.com.
func regionFromHost(host string) string {
	parts := strings.Split(strings.ToLower(host), ".")
	switch {
	case len(parts) >= 3 && parts[0] == "sqs" && awsRegionRe.MatchString(parts[1]):
		return parts[1]
	case len(parts) >= 3 && parts[1] == "queue" && awsRegionRe.MatchString(parts[0]):
		return parts[0]
	}
	return DefaultRegion
}
