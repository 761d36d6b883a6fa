package config_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/config"
)

const routingConfig = base + `intake:
  validate_topics: true
  inline_subscriptions: {enabled: true}
  amqp:
    - url: amqp://guest:guest@127.0.0.1:5672/
      queue: sluice.events
      declare: true
      bindings: [{exchange: platform, routing_keys: ["case.#"]}]
      dead_letter_exchange: sluice.rejected
    - {name: raw, url: "amqps://u:p@mq.example.com/vh", queue: raw, topic_from: routing_key, prefetch: 10}
topics:
  - name: case.status_updated
    schema:
      type: object
      required: [case]
      properties:
        case:
          type: object
          required: [id, status]
          properties: {id: {type: string}, status: {enum: [open, approved, rejected]}}
    example: {case: {id: c-1, status: approved}}
  - name: case.created
    schema_file: created.schema.json
destinations:
  - name: a
    type: webhook
    topics: ["case.*"]
    transform: "{id: id, status: data.case.status}"
    scope: {workflow_definition_id: wf-1}
    config: {url: "https://example.com/x", signing: none}
`

func TestRoutingConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "created.schema.json"), []byte(`{"type":"object","required":["id"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "f.yaml"), []byte(routingConfig), noEnv, reg())
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Intake
	if !in.ValidateTopics || !in.InlineSubscriptions.Enabled || in.InlineSubscriptions.TTL.D().Hours() != 24 ||
		in.InlineSubscriptions.MaxPerCorrelation != 10 {
		t.Fatalf("intake: %+v", in)
	}
	if a := in.AMQP[0]; a.Name != "sluice.events" || a.Prefetch != 256 || a.TopicFrom != "body" || !a.Declare {
		t.Fatalf("amqp defaults: %+v", a)
	}
	if b := in.AMQP[1]; b.Prefetch != 10 || b.TopicFrom != "routing_key" {
		t.Fatalf("amqp[1]: %+v", b)
	}
	for i, tp := range cfg.Topics {
		if tp.CompiledSchema == nil {
			t.Fatalf("topics[%d] schema not compiled", i)
		}
	}
	if err := cfg.Topics[0].CompiledSchema.Validate([]byte(`{"case":{"id":"c","status":"lost"}}`)); err == nil ||
		err.(*config.SchemaError).Pointer != "/case/status" {
		t.Fatalf("schema error: %v", err)
	}
	if err := cfg.Topics[0].CompiledSchema.Validate([]byte(`{"case":{"status":"open"}}`)); err == nil ||
		err.(*config.SchemaError).Pointer != "/case/id" {
		t.Fatalf("missing property must point at it: %v", err)
	}
	tr := cfg.Destinations[0].TransformExpr
	if tr == nil {
		t.Fatal("transform not compiled")
	}
	out, err := tr.Apply(map[string]any{"id": "e1", "data": map[string]any{"case": map[string]any{"status": "approved"}}})
	if err != nil || string(out) != `{"id":"e1","status":"approved"}` {
		t.Fatalf("transform: %s %v", out, err)
	}
	masked, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(masked), "guest:guest") || strings.Contains(string(masked), "u:p@") {
		t.Fatalf("--print shows an AMQP password:\n%s", masked)
	}
	if !json.Valid(cfg.Topics[1].CompiledSchema.JSON) {
		t.Fatal("schema JSON")
	}
}

func TestRoutingConfigErrors(t *testing.T) {
	dest := func(extra string) string {
		return base + "destinations:\n  - name: a\n    type: webhook\n    topics: [\"*\"]\n    config: {url: \"https://example.com/x\", signing: none}\n" + extra
	}
	cases := []struct{ name, src, want string }{
		{"transform syntax", dest("    transform: \"data.[\"\n"), `f.yaml:8:16: destinations[0].transform: JMESPath syntax error`},
		{"transform unknown function", dest("    transform: \"shout(data)\"\n"), `destinations[0].transform: unknown function: shout`},
		{"scope empty value", dest("    scope: {workflow_definition_id: \"\"}\n"), `destinations[0].scope.workflow_definition_id: is empty`},
		{"scope bad key", dest("    scope: {\"a b\": x}\n"), `destinations[0].scope.a b: "a b" is not a scope key`},
		{"schema invalid", base + "topics:\n  - name: t\n    schema: {type: 5}\n", `f.yaml:5:13: topics[0].schema: not a valid JSON Schema`},
		{"example fails schema", base + "topics:\n  - name: t\n    schema: {type: object, required: [id]}\n    example: {x: 1}\n",
			`f.yaml:6:14: topics[0].example: does not match the topic's schema: data at /id: missing property`},
		{"schema and file", base + "topics:\n  - name: t\n    schema: {}\n    schema_file: x.json\n", `topics[0].schema_file: give either schema (inline) or schema_file, not both`},
		{"schema file missing", base + "topics:\n  - name: t\n    schema_file: nope.json\n", `topics[0].schema_file: cannot read`},
		{"schema external ref", base + "topics:\n  - name: t\n    schema: {$ref: \"https://example.com/s.json\"}\n", `topics[0].schema: not a valid JSON Schema`},
		{"amqp url", base + "intake:\n  amqp: [{url: \"http://secretpw@x\", queue: q}]\n", `intake.amqp[0].url: must be an amqp:// or amqps:// URL`},
		{"amqp queue", base + "intake:\n  amqp: [{url: \"amqp://x\"}]\n", `intake.amqp[0].queue: is required`},
		{"amqp topic_from", base + "intake:\n  amqp: [{url: \"amqp://x\", queue: q, topic_from: header}]\n", `intake.amqp[0].topic_from: "header" is not a topic source`},
		{"amqp prefetch", base + "intake:\n  amqp: [{url: \"amqp://x\", queue: q, prefetch: -1}]\n", `intake.amqp[0].prefetch: must be between 1 and 65535`},
		{"amqp binding", base + "intake:\n  amqp: [{url: \"amqp://x\", queue: q, bindings: [{exchange: e}]}]\n", `intake.amqp[0].bindings[0].routing_keys: at least one`},
		{"amqp duplicate", base + "intake:\n  amqp: [{url: \"amqp://x\", queue: q}, {url: \"amqp://y\", queue: q}]\n", `intake.amqp[1].name: "q" names two consumers`},
		{"inline ttl", base + "intake:\n  inline_subscriptions: {enabled: true, ttl: 0s}\n", `intake.inline_subscriptions.ttl: must be a positive duration`},
		{"inline cap", base + "intake:\n  inline_subscriptions: {max_per_correlation: 0}\n", `intake.inline_subscriptions.max_per_correlation: must be between 1 and 1000`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("f.yaml", []byte(c.src), noEnv, reg())
			if err == nil {
				t.Fatal("want errors, got none")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("missing %q in:\n%s", c.want, err)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("an error shows the URL's secret:\n%s", err)
			}
		})
	}
}
