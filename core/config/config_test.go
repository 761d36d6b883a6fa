package config_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/bucket"
	"github.com/sluicehq/sluice/sinks/webhook"
)

var update = flag.Bool("update", false, "rewrite golden files")

func reg() *sinks.Registry { return sinks.NewRegistry(webhook.Spec) }

func noEnv(string) (string, bool) { return "", false }

// TestExampleGolden loads the shipped config.example.yaml and compares its masked, resolved form with
// testdata/example.golden.yaml.
func TestExampleGolden(t *testing.T) {
	src, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("config.example.yaml", src, noEnv, reg())
	if err != nil {
		t.Fatalf("config.example.yaml must be valid:\n%v", err)
	}
	got, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "example.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./core/config -update)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("resolved config differs from %s (run with -update if intended):\n%s", golden, got)
	}
	for _, secret := range []string{"dev-admin-key", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
		if strings.Contains(string(got), secret) {
			t.Fatalf("--print output shows the secret %q", secret)
		}
	}
	if len(cfg.Destinations) != 1 || cfg.Destinations[0].SinkConfig == nil || cfg.Destinations[0].FilterMatch == nil {
		t.Fatalf("destination not compiled: %+v", cfg.Destinations)
	}
}

const base = `auth:
  keys: [{name: admin, key: k1, role: admin}]
`

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"PORT": "9090", "KEY": "from-env"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	src := `server: {listen: "127.0.0.1:${PORT}"}
auth:
  keys: [{name: a, key: "${KEY}", role: admin}, {name: b, key: "${MISSING:-fallback}", role: reader}]
intake:
  http:
    max_body_bytes: ${SIZE:-2048}
`
	cfg, err := config.Parse("f.yaml", []byte(src), lookup, reg())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:9090" || cfg.Auth.Keys[0].Key != "from-env" || cfg.Auth.Keys[1].Key != "fallback" {
		t.Fatalf("expansion: %+v %+v", cfg.Server, cfg.Auth.Keys)
	}
	if cfg.Intake.HTTP.MaxBodyBytes != 2048 {
		t.Fatalf("expanded integer: %d", cfg.Intake.HTTP.MaxBodyBytes)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := config.Parse("f.yaml", []byte(base), noEnv, reg())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:8080" || cfg.Store.Driver != "embedded" || cfg.Delivery.Concurrency != 16 ||
		cfg.Intake.DedupeWindow.D().Hours() != 24 || len(cfg.Delivery.Retry.Schedule) != 9 || *cfg.Delivery.Retry.Jitter != 0.2 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

// TestErrors checks each kind of problem is reported at its line and column with its path, all at once.
func TestErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // each a substring of one reported line, in order
	}{
		{"unknown top-level key", base + "servr: {}\n", []string{`f.yaml:3:1: servr: unknown key "servr"; valid keys here: server, auth`}},
		{"unknown nested key", base + "delivery:\n  retry:\n    schedul: [1s]\n", []string{`f.yaml:5:5: delivery.retry.schedul: unknown key`}},
		{"bad duration", base + "delivery: {timeout: 15}\n", []string{`f.yaml:3:21: delivery.timeout: "15" is not a duration`}},
		{"wrong type", base + "delivery: {concurrency: many}\n", []string{`f.yaml:3:25: delivery.concurrency: must be an integer, got "many"`}},
		{"list expected", base + "delivery: {retry: {schedule: 5s}}\n", []string{`f.yaml:3:30: delivery.retry.schedule: must be a list`}},
		{"bad role and missing key", "auth:\n  keys:\n    - {name: a, role: root}\n", []string{
			`f.yaml:3:7: auth.keys[0].key: is required`, `f.yaml:3:23: auth.keys[0].role: "root" is not a role`}},
		{"no keys", "server: {listen: 127.0.0.1:1}\n", []string{`auth.keys: at least one key is required`}},
		{"unbounded settings", base + `delivery: {timeout: 1h}
destinations:
  - {name: a, type: webhook, timeout: 10m, concurrency: 5000, retry: {schedule: [1s, 200h]}, config: {url: "https://x.example/h", signing: none}}
`, []string{`delivery.timeout: must be a positive duration of at most 5m0s`, `destinations[0].timeout: must be a positive duration of at most 5m0s`,
			`destinations[0].concurrency: must be between 1 and 1024`, `destinations[0].retry.schedule[1]: must be a positive duration of at most 168h0m0s`}},
		{"server timeouts and api policy", base + `server: {read_timeout: 0s}
api: {destinations: {tenant_types: [nope], bucket_prefixes: ["file://./data/x", "nourl"]}}
`, []string{`server.read_timeout: must be a duration between 1s and 1h`, `api.destinations.tenant_types[0]: "nope" is not a sink type`,
			`api.destinations.bucket_prefixes[0]: "file://./data/x" is inside store.path`, `api.destinations.bucket_prefixes[1]: "nourl" is not a URL prefix`}},
		{"unset env", base + "store: {path: \"${NOPE}\"}\n", []string{`f.yaml:3:15: environment variable NOPE is not set`}},
		{"bad cidr", base + "delivery: {network: {allow_cidrs: [10.0.0.0/40]}}\n", []string{`f.yaml:3:36: delivery.network.allow_cidrs[0]:`}},
		{"destination problems reported together", base + `destinations:
  - name: a
    type: webhook
    topics: ["ca*"]
    filter: {data: {amount: {$gt: [1]}}}
    config: {url: ftp://x, secrets: ["whsec_short"], colour: red}
  - name: a
    type: nope
    topics: ["*"]
`, []string{
			`f.yaml:6:14: destinations[0].topics[0]: invalid pattern "ca*"`,
			`f.yaml:7:35: destinations[0].filter.data.amount.$gt:`,
			`f.yaml:8:54: destinations[0].config.colour: unknown key "colour"`,
			`f.yaml:9:11: destinations[1].name: "a" is used by another destination`,
			`f.yaml:10:11: destinations[1].type: "nope" is not a sink type; use one of: webhook`,
		}},
		{"sink validation at its line", base + `destinations:
  - name: a
    type: webhook
    topics: ["*"]
    config:
      url: ftp://example.com/x
      secrets: ["whsec_c2hvcnQ="]
`, []string{`f.yaml:8:12: destinations[0].config.url:`, `f.yaml:9:17: destinations[0].config.secrets[0]:`}},
		{"filter on a field events do not have", base + `destinations:
  - name: a
    type: webhook
    topics: ["*"]
    filter: {amount: 5}
    config: {url: "https://example.com/x", signing: none}
`, []string{`f.yaml:7:22: destinations[0].filter.amount: "amount" is not a field of an event`}},
		{"ordering", base + `destinations:
  - name: a
    type: webhook
    topics: ["*"]
    ordering_key: case.id
    ordering: {on_failure: wait}
    config: {url: "https://example.com/x", signing: none}
`, []string{`f.yaml:7:19: destinations[0].ordering_key: "case.id" is not a path into the event`,
			`f.yaml:8:28: destinations[0].ordering.on_failure: "wait": use skip`}},
		{"malformed yaml", base + "server: [\n", []string{`f.yaml:`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("f.yaml", []byte(c.src), noEnv, reg())
			if err == nil {
				t.Fatal("want errors, got none")
			}
			var es config.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, want config.Errors", err)
			}
			lines := strings.Split(err.Error(), "\n")
			i := 0
			for _, line := range lines {
				if i < len(c.want) && strings.Contains(line, c.want[i]) {
					i++
				}
			}
			if i < len(c.want) {
				t.Fatalf("missing %q in:\n%s", c.want[i], err)
			}
			if strings.Contains(err.Error(), "whsec_c2hvcnQ=") || strings.Contains(err.Error(), "whsec_short") {
				t.Fatalf("an error message shows a secret:\n%s", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	example, _ := os.ReadFile("../../config.example.yaml")
	f.Add(string(example))
	f.Add(base)
	f.Add(base + "destinations: [{name: a, type: webhook, topics: ['*'], config: {url: 'http://x'}}]")
	f.Add("a: &x [*x]")
	f.Add("auth: {keys: [{name: ${A:-b}, key: c, role: admin}]}\ndelivery: {retry: {exponential: {base: 1s, max: 1m, attempts: 5}}}")
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := config.Parse("f.yaml", []byte(src), noEnv, reg())
		if err == nil {
			if _, err := cfg.Masked(); err != nil {
				t.Fatalf("a valid config failed to print: %v", err)
			}
			return
		}
		var es config.Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error is not config.Errors: %v", err)
		}
	})
}

// TestBucketNeverWritesIntoTheStore: a YAML bucket destination whose file:// directory is the store's (or
// inside it) is refused at validation.
func TestBucketNeverWritesIntoTheStore(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(base+`store: {path: %s}
destinations:
  - {name: b, type: bucket, topics: ["*"], config: {url: "file://%s"}}
`, filepath.Join(dir, "data"), filepath.Join(dir, "data", "exports"))
	_, err := config.Parse("f.yaml", []byte(src), noEnv, sinks.NewRegistry(webhook.Spec, bucket.Spec))
	if err == nil || !strings.Contains(err.Error(), "destinations[0].config.url: writes inside store.path") {
		t.Fatalf("a bucket into the store directory: %v", err)
	}
	ok := fmt.Sprintf(base+`store: {path: %s}
destinations:
  - {name: b, type: bucket, topics: ["*"], config: {url: "file://%s"}}
`, filepath.Join(dir, "data"), filepath.Join(dir, "exports"))
	if _, err := config.Parse("f.yaml", []byte(ok), noEnv, sinks.NewRegistry(webhook.Spec, bucket.Spec)); err != nil {
		t.Fatalf("a bucket beside the store: %v", err)
	}
}

// validate --print masks webhook headers values and the secret parts of URLs (userinfo, query values).
func TestPrintMasksURLAndHeaderSecrets(t *testing.T) {
	src := base + `delivery:
  network: {proxy: "http://proxyuser:proxypass-1@10.0.0.5:3128"}
destinations:
  - name: hook
    type: webhook
    topics: ["*"]
    config:
      url: https://example.com/x?token=qtoken-secret&sig=hookpass-1
      signing: none
      headers: {Authorization: "Bearer hdr-secret-81f0"}
`
	cfg, err := config.Parse("f.yaml", []byte(src), noEnv, reg())
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hookpass-1", "qtoken-secret", "hdr-secret-81f0", "proxyuser", "proxypass-1"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("--print shows %q:\n%s", secret, out)
		}
	}
	for _, kept := range []string{"https://example.com/x?token=…cret&sig=", "Authorization: …81f0", "http://****:****@10.0.0.5:3128"} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("--print lacks %q:\n%s", kept, out)
		}
	}
}

// The egress and trust keys are validated with their paths.
func TestEgressKeysValidated(t *testing.T) {
	src := base + `delivery:
  network: {proxy: "https://proxy:3128"}
intake:
  inline_subscriptions: {allow_cidrs: [10.1.2.3/8]}
  amqp:
    - {url: "amqp://localhost", queue: q, tenant: acme, allow_tenant_from_message: true}
plugins:
  - {name: p, path: /bin/true, allow_unpinned: true, env: [AWS_REGION, "A=1", SLUICE_ADMIN_KEY]}
`
	_, err := config.Parse("f.yaml", []byte(src), noEnv, reg())
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`delivery.network.proxy: "https://proxy:3128" is not a proxy URL`,
		`intake.inline_subscriptions.allow_cidrs[0]:`,
		`intake.amqp[0].allow_tenant_from_message: a consumer bound to tenant "acme"`,
		`plugins[0].env[1]: "A=1" is not a variable name`,
		`plugins[0].env[2]: "SLUICE_ADMIN_KEY": Sluice's own variables`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "plugins[0].env[0]") {
		t.Errorf("a valid env name was refused:\n%v", err)
	}
}
