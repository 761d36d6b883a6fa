package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// validateIntake checks the AMQP consumers and inline subscriptions, filling their defaults.
func (l *loader) validateIntake(in *Intake) {
	names := map[string]bool{}
	for i := range in.AMQP {
		a := &in.AMQP[i]
		p := fmt.Sprintf("intake.amqp[%d]", i)
		switch u, err := url.Parse(a.URL); {
		case a.URL == "":
			l.errorf(p+".url", "is required, e.g. amqp://user:${AMQP_PASSWORD}@rabbitmq:5672/")
		case err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "":
			// The URL may hold a password: never repeat it.
			l.errorf(p+".url", "must be an amqp:// or amqps:// URL with a host, e.g. amqp://user:pass@rabbitmq:5672/vhost")
		}
		if a.Queue == "" {
			l.errorf(p+".queue", "is required: the queue to consume")
		}
		if a.Name == "" {
			a.Name = a.Queue
		}
		if names[a.Name] {
			l.errorf(p+".name", "%q names two consumers; give each a distinct name", a.Name)
		}
		names[a.Name] = true
		switch {
		case a.Prefetch == 0:
			a.Prefetch = 256
		case a.Prefetch < 1 || a.Prefetch > 65535:
			l.errorf(p+".prefetch", "must be between 1 and 65535 unacknowledged messages")
		}
		if a.Tenant != "" && a.AllowTenantFromMessage {
			l.errorf(p+".allow_tenant_from_message", "a consumer bound to tenant %q takes no tenant from messages; remove one of the two", a.Tenant)
		}
		if a.Tenant != "" && strings.TrimSpace(a.Tenant) != a.Tenant {
			l.errorf(p+".tenant", "%q has leading or trailing spaces", a.Tenant)
		}
		switch a.TopicFrom {
		case "":
			a.TopicFrom = TopicFromBody
		case TopicFromBody, TopicFromRoutingKey:
		default:
			l.errorf(p+".topic_from", "%q is not a topic source; use body (the message is an event or a CloudEvent) or routing_key (the body is the data)", a.TopicFrom)
		}
		for j, b := range a.Bindings {
			bp := fmt.Sprintf("%s.bindings[%d]", p, j)
			if b.Exchange == "" {
				l.errorf(bp+".exchange", "is required: the exchange to bind the queue to")
			}
			if len(b.RoutingKeys) == 0 {
				l.errorf(bp+".routing_keys", "at least one routing key is required, e.g. [\"case.#\"] (use [\"\"] for a fanout exchange)")
			}
		}
	}

	s := &in.InlineSubscriptions
	if s.TTL <= 0 {
		l.errorf("intake.inline_subscriptions.ttl", "must be a positive duration such as 24h")
	}
	if s.MaxPerCorrelation < 1 || s.MaxPerCorrelation > 1000 {
		l.errorf("intake.inline_subscriptions.max_per_correlation", "must be between 1 and 1000 subscriptions per correlation id")
	}
	if s.MaxActive < 1 || s.MaxActive > 1_000_000 {
		l.errorf("intake.inline_subscriptions.max_active", "must be between 1 and 1000000 live subscriptions")
	}
}

// validateTopic compiles a catalog entry's schema and checks its example against it.
func (l *loader) validateTopic(p string, t *Topic) {
	var example []byte
	if t.Example != nil {
		var err error
		if example, err = json.Marshal(t.Example); err != nil {
			l.errorf(p+".example", "cannot be read as JSON (%v); use string keys only", err)
			return
		}
	}
	var doc any
	switch {
	case t.Schema != nil && t.SchemaFile != "":
		l.errorf(p+".schema_file", "give either schema (inline) or schema_file, not both")
		return
	case t.Schema != nil:
		doc = t.Schema
	case t.SchemaFile != "":
		path := t.SchemaFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(l.file), path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			l.errorf(p+".schema_file", "cannot read %s: %v (a relative path is taken from the config file's directory)", path, errText(err))
			return
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			l.errorf(p+".schema_file", "%s is not JSON or YAML: %v", path, err)
			return
		}
	default:
		return
	}
	at := p + ".schema"
	if t.SchemaFile != "" {
		at = p + ".schema_file"
	}
	js, err := json.Marshal(doc)
	if err != nil {
		l.errorf(at, "cannot be read as JSON (%v); a JSON Schema has string keys only", err)
		return
	}
	sch, err := CompileSchema(js)
	if err != nil {
		l.errorf(at, "not a valid JSON Schema: %v", err)
		return
	}
	t.CompiledSchema = sch
	if example != nil {
		if err := sch.Validate(example); err != nil {
			l.errorf(p+".example", "does not match the topic's schema: %v", err)
		}
	}
}

var scopeKey = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// checkScope checks a destination's scope: the keys an event's scope must carry, with these values.
func (l *loader) checkScope(p string, scope map[string]string) {
	keys := make([]string, 0, len(scope))
	for k := range scope {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case !scopeKey.MatchString(k):
			l.errorf(p+"."+k, "%q is not a scope key; use letters, digits, '_', '.' and '-' (at most 128)", k)
		case scope[k] == "":
			l.errorf(p+"."+k, "is empty; a scope entry needs the value events must carry, e.g. workflow_definition_id: wf-1")
		}
	}
}

// errText drops the path os errors repeat.
func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}
