package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

var destName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (l *loader) validate(c *Config, reg *sinks.Registry) {
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		l.errorf("server.listen", "must be host:port such as 127.0.0.1:8080 (%v)", err)
	}

	for _, t := range []struct {
		path string
		d    Duration
	}{{"server.read_timeout", c.Server.ReadTimeout}, {"server.write_timeout", c.Server.WriteTimeout}, {"server.idle_timeout", c.Server.IdleTimeout}} {
		if t.d <= 0 || t.d.D() > time.Hour {
			l.errorf(t.path, "must be a duration between 1s and 1h such as 30s (an unbounded timeout lets slow clients hold connections)")
		}
	}
	l.validateAPI(c, reg)

	if len(c.Auth.Keys) == 0 {
		l.errorf("auth.keys", "at least one key is required; every /v1 route needs one, e.g. {name: admin, key: \"${SLUICE_ADMIN_KEY}\", role: admin}")
	}
	names, keys := map[string]bool{}, map[string]bool{}
	for i, k := range c.Auth.Keys {
		p := fmt.Sprintf("auth.keys[%d]", i)
		if k.Name == "" {
			l.errorf(p+".name", "is required")
		} else if names[k.Name] {
			l.errorf(p+".name", "%q is used by another key; names must be unique", k.Name)
		}
		names[k.Name] = true
		switch {
		case k.Key == "":
			l.errorf(p+".key", "is required (a long random string; set it from the environment with ${NAME})")
		case keys[k.Key]:
			l.errorf(p+".key", "is the same as another key's; each key must be unique")
		}
		keys[k.Key] = true
		switch k.Role {
		case RoleAdmin, RolePublisher, RoleReader:
		default:
			l.errorf(p+".role", "%q is not a role; use admin, publisher or reader", k.Role)
		}
	}

	switch c.Store.Driver {
	case "embedded":
		if c.Store.Path == "" {
			l.errorf("store.path", "is required for the embedded store: a directory such as ./data")
		}
	case "postgres":
		l.validatePostgres(c.Store)
	default:
		l.errorf("store.driver", "%q is not a store driver; use embedded or postgres", c.Store.Driver)
	}

	if _, err := c.Store.EncryptionKeys(); err != nil {
		if strings.HasPrefix(err.Error(), "store.") {
			l.errorf("store.previous_encryption_keys", "%s", strings.TrimPrefix(err.Error(), "store.previous_encryption_keys: "))
		} else {
			l.errorf("store.encryption_key", "%v", err)
		}
	}
	if c.Store.Retention < 0 {
		l.errorf("store.retention", "must be a duration such as 168h, or 0 to keep everything")
	} else if c.Store.Retention > 0 && c.Store.Retention < c.Intake.DedupeWindow {
		l.errorf("store.retention", "%s is shorter than intake.dedupe_window (%s): events must be kept at least as long as their ids are deduplicated",
			c.Store.Retention.D(), c.Intake.DedupeWindow.D())
	}
	if c.Intake.HTTP.MaxBodyBytes <= 0 {
		l.errorf("intake.http.max_body_bytes", "must be a positive number of bytes, e.g. 1048576")
	}
	l.validateIntake(&c.Intake)

	l.checkTimeout("delivery.timeout", c.Delivery.Timeout, false)
	l.checkConcurrency("delivery.concurrency", c.Delivery.Concurrency, false)
	l.checkRetry("delivery.retry", &c.Delivery.Retry)
	l.checkBreaker("delivery.breaker", &c.Delivery.Breaker, false)
	if c.Delivery.AutoDisableAfter < 0 {
		l.errorf("delivery.auto_disable_after", "must be 0 (never) or a number of consecutive failed deliveries, e.g. 100")
	}
	if c.Delivery.RotationOverlap < 0 {
		l.errorf("delivery.rotation_overlap", "must be a duration such as 24h (0 drops the old secret at once)")
	}
	for i, s := range c.Delivery.Network.AllowCIDRs {
		if _, errs := netguard.ParseCIDRs([]string{s}); len(errs) > 0 {
			l.errorf(fmt.Sprintf("delivery.network.allow_cidrs[%d]", i), "%v", errs[0])
		}
	}
	if c.Delivery.MaxInFlightBytes < 1<<20 {
		l.errorf("delivery.max_inflight_bytes", "must be at least 1048576 (1 MiB); the default is 268435456 (256 MiB)")
	}
	if _, err := netguard.ParseProxy(c.Delivery.Network.Proxy); err != nil {
		l.errorf("delivery.network.proxy", "%v", err)
	}
	for i, s := range c.Intake.InlineSubscriptions.AllowCIDRs {
		if _, errs := netguard.ParseCIDRs([]string{s}); len(errs) > 0 {
			l.errorf(fmt.Sprintf("intake.inline_subscriptions.allow_cidrs[%d]", i), "%v", errs[0])
		}
	}

	topics := map[string]bool{}
	for i, t := range c.Topics {
		p := fmt.Sprintf("topics[%d]", i)
		switch {
		case t.Name == "":
			l.errorf(p+".name", "is required")
		case strings.Contains(t.Name, "*"):
			l.errorf(p+".name", "%q: a catalog topic is a concrete name; patterns belong in destinations[].topics", t.Name)
		case topics[t.Name]:
			l.errorf(p+".name", "%q is listed twice", t.Name)
		}
		topics[t.Name] = true
		l.validateTopic(p, &c.Topics[i])
	}

	reg = l.validatePlugins(c, reg)
	c.Registry = reg
	seen := map[string]bool{}
	for i := range c.Destinations {
		l.validateDestination(fmt.Sprintf("destinations[%d]", i), &c.Destinations[i], seen, reg)
		if dir, ok := FileBucketDir(&c.Destinations[i]); ok && c.Store.Path != "" && UnderStore(dir, c.Store.Path) {
			l.errorf(fmt.Sprintf("destinations[%d].config.url", i), "writes inside store.path %q; no bucket sink may write to the store directory, pick another directory", c.Store.Path)
		}
	}

	l.validateConsole(&c.Console)

	switch c.Telemetry.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		l.errorf("telemetry.log.level", "%q is not a level; use debug, info, warn or error", c.Telemetry.Log.Level)
	}
	switch c.Telemetry.Log.Format {
	case "json", "text":
	default:
		l.errorf("telemetry.log.format", "%q is not a format; use json or text", c.Telemetry.Log.Format)
	}
}

var (
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
	envName   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// validatePlugins checks the plugins list and, when it is sound and a loader was given, launches the plugins
// and returns the registry extended with their sinks.
func (l *loader) validatePlugins(c *Config, reg *sinks.Registry) *sinks.Registry {
	before := len(l.errs)
	names := map[string]bool{}
	for i, p := range c.Plugins {
		at := fmt.Sprintf("plugins[%d]", i)
		switch {
		case p.Name == "":
			l.errorf(at+".name", "is required: the sink type destinations will use")
		case !destName.MatchString(p.Name):
			l.errorf(at+".name", "%q: use letters, digits, '.', '_' and '-'", p.Name)
		case names[p.Name]:
			l.errorf(at+".name", "%q is declared twice", p.Name)
		default:
			if _, builtin := reg.Lookup(p.Name); builtin {
				l.errorf(at+".name", "%q collides with the built-in sink of that name; give the plugin another name", p.Name)
			}
		}
		names[p.Name] = true
		if p.Path == "" {
			l.errorf(at+".path", "is required: the plugin executable")
		}
		for j, name := range p.Env {
			ep := fmt.Sprintf("%s.env[%d]", at, j)
			switch {
			case !envName.MatchString(name):
				l.errorf(ep, "%q is not a variable name; list names only (AWS_REGION), never NAME=value", name)
			case strings.HasPrefix(strings.ToUpper(name), "SLUICE_"):
				l.errorf(ep, "%q: Sluice's own variables (keys, the encryption key) never reach a plugin; give the plugin what it needs in its destination config", name)
			}
		}
		switch {
		case p.SHA256 == "" && !p.AllowUnpinned:
			l.errorf(at+".sha256", "is required to pin the binary (print it with `sha256sum %s`), or set allow_unpinned: true for development", p.Path)
		case p.SHA256 != "" && !sha256Hex.MatchString(strings.ToLower(p.SHA256)):
			l.errorf(at+".sha256", "must be 64 hex digits, as sha256sum prints")
		}
	}
	if len(c.Plugins) == 0 || len(l.errs) > before {
		return reg
	}
	if l.plugins == nil {
		l.errorf("plugins", "this command cannot launch plugins")
		return reg
	}
	specs, errs := l.plugins(c.Plugins)
	for i, err := range errs {
		l.errorf(fmt.Sprintf("plugins[%d]", i), "%v", err)
	}
	return reg.With(specs...)
}

func (l *loader) validateDestination(p string, d *Destination, seen map[string]bool, reg *sinks.Registry) {
	switch {
	case d.Name == "":
		l.errorf(p+".name", "is required")
	case !destName.MatchString(d.Name):
		l.errorf(p+".name", "%q: use letters, digits, '.', '_' and '-' (at most 128)", d.Name)
	case seen[d.Name]:
		l.errorf(p+".name", "%q is used by another destination; names must be unique", d.Name)
	}
	seen[d.Name] = true

	if len(d.Topics) == 0 {
		l.errorf(p+".topics", "at least one topic pattern is required, e.g. [\"*\"] or [\"case.*\"]")
	} else if tm, err := match.CompileTopics(d.Topics); err != nil {
		l.matchErrors(p+".topics", err)
	} else {
		d.TopicsMatch = tm
	}

	if m, ok := d.Filter.(map[string]any); ok {
		for k := range m {
			switch k {
			case "id", "topic", "time", "tenant", "metadata", "data", "$and", "$or", "$not":
			default:
				l.errorf(p+".filter."+k, "%q is not a field of an event; filter on id, topic, time, tenant, metadata or data (payload fields go under data:)", k)
			}
		}
	}
	if f, err := match.Compile(d.Filter); err != nil {
		l.matchErrors(p+".filter", err)
	} else {
		d.FilterMatch = f
	}

	if d.Transform != "" {
		if tr, err := match.CompileTransform(d.Transform); err != nil {
			l.errorf(p+".transform", "%v", err)
		} else {
			d.TransformExpr = tr
		}
	}
	l.checkScope(p+".scope", d.Scope)

	if d.Retry != nil {
		l.checkRetry(p+".retry", d.Retry)
	}
	if r := d.RateLimit; r != nil {
		if r.PerSecond <= 0 {
			l.errorf(p+".rate_limit.per_second", "must be a positive number of events per second, e.g. 50")
		}
		if r.Burst < 0 {
			l.errorf(p+".rate_limit.burst", "must not be negative (default 1)")
		}
	}
	if d.OrderingKey != "" && !validOrderingKey(d.OrderingKey) {
		l.errorf(p+".ordering_key", "%q is not a path into the event; use data.<path>, metadata.<key>, tenant, topic or correlation_id", d.OrderingKey)
	}
	if o := d.Ordering; o != nil {
		if d.OrderingKey == "" {
			l.errorf(p+".ordering", "needs ordering_key: the path whose value orders events")
		}
		if o.OnFailure != "skip" && o.OnFailure != "block" {
			l.errorf(p+".ordering.on_failure", "%q: use skip (later events proceed after a final failure) or block (they wait)", o.OnFailure)
		}
	}
	if a := d.AutoDisableAfter; a != nil && *a < 0 {
		l.errorf(p+".auto_disable_after", "must be 0 (never) or a number of consecutive failed deliveries")
	}
	if d.Breaker != nil {
		l.checkBreaker(p+".breaker", d.Breaker, true)
	}
	l.checkConcurrency(p+".concurrency", d.Concurrency, true)
	l.checkTimeout(p+".timeout", d.Timeout, true)

	if d.Type == "" {
		l.errorf(p+".type", "is required; one of: %s", strings.Join(reg.Types(), ", "))
		return
	}
	spec, ok := reg.Lookup(d.Type)
	if !ok {
		l.errorf(p+".type", "%q is not a sink type; use one of: %s", d.Type, strings.Join(reg.Types(), ", "))
		return
	}
	cfg := spec.Config()
	before := len(l.errs)
	if d.Config.Kind != 0 {
		l.check(&d.Config, reflect.TypeOf(cfg), p+".config")
		if len(l.errs) > before {
			return
		}
		if err := d.Config.Decode(cfg); err != nil {
			l.errs = append(l.errs, l.yamlError(err, p+".config"))
			return
		}
	} else {
		l.index[p+".config"] = l.nodeFor(p)
	}
	for _, fe := range fieldErrors(cfg.Validate()) {
		l.errorf(join(p+".config", fe.Path), "%s", fe.Msg)
	}
	d.SinkConfig = cfg
}

// fieldErrors flattens a joined validation error into field errors.
func fieldErrors(err error) []*sinks.FieldError {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*sinks.FieldError
		for _, e := range j.Unwrap() {
			out = append(out, fieldErrors(e)...)
		}
		return out
	}
	var fe *sinks.FieldError
	if errors.As(err, &fe) {
		return []*sinks.FieldError{fe}
	}
	return []*sinks.FieldError{{Msg: err.Error()}}
}

// matchErrors reports each filter problem at its own line inside the filter.
func (l *loader) matchErrors(p string, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			l.matchErrors(p, e)
		}
		return
	}
	var me *match.Error
	if errors.As(err, &me) {
		path := me.PathString()
		if path != "" && !strings.HasPrefix(path, "[") {
			path = "." + path
		}
		l.errorf(p+path, "%s", me.Msg)
		return
	}
	l.errorf(p, "%v", err)
}

// Bounds of per-destination settings: a destination (an API one is a tenant's) cannot hold a connection,
// a delivery row or a worker for longer than these.
const (
	MaxTimeout       = 5 * time.Minute
	MaxRetryInterval = 7 * 24 * time.Hour
	MaxRetries       = 100
)

func (l *loader) checkTimeout(p string, d Duration, optional bool) {
	if optional && d == 0 {
		return
	}
	if d <= 0 || d.D() > MaxTimeout {
		l.errorf(p, "must be a positive duration of at most %s, such as 15s", MaxTimeout)
	}
}

func (l *loader) checkConcurrency(p string, n int, optional bool) {
	if optional && n == 0 {
		return
	}
	if n < 1 || n > 1024 {
		l.errorf(p, "must be between 1 and 1024 (in-flight deliveries per destination)")
	}
}

func (l *loader) checkRetry(p string, r *Retry) {
	if r.Exponential != nil {
		e := r.Exponential
		if len(r.Schedule) > 0 && p != "delivery.retry" {
			l.errorf(p, "give either schedule or exponential, not both")
		}
		if e.Base <= 0 {
			l.errorf(p+".exponential.base", "must be a positive duration such as 1s")
		}
		if e.Max < e.Base {
			l.errorf(p+".exponential.max", "must be at least base (%s)", e.Base)
		}
		if e.Max.D() > MaxRetryInterval {
			l.errorf(p+".exponential.max", "must be at most %s", MaxRetryInterval)
		}
		if e.Attempts < 0 || e.Attempts > MaxRetries {
			l.errorf(p+".exponential.attempts", "must be between 0 and %d retries", MaxRetries)
		}
	}
	if len(r.Schedule) > MaxRetries {
		l.errorf(p+".schedule", "has %d retries; at most %d", len(r.Schedule), MaxRetries)
	}
	for i, d := range r.Schedule {
		if d <= 0 || d.D() > MaxRetryInterval {
			l.errorf(fmt.Sprintf("%s.schedule[%d]", p, i), "must be a positive duration of at most %s, such as 5s", MaxRetryInterval)
		}
	}
	if r.Jitter != nil && (*r.Jitter < 0 || *r.Jitter > 1) {
		l.errorf(p+".jitter", "must be between 0 and 1 (0.2 means ±20%%)")
	}
}

var orderingPath = regexp.MustCompile(`^((data|metadata)(\.[^.\s]+)+|tenant|topic|correlation_id|id)$`)

func validOrderingKey(s string) bool { return orderingPath.MatchString(s) }

// checkBreaker validates a breaker block at path; in a destination's block (inherits) a field left out or 0
// takes the delivery default.
func (l *loader) checkBreaker(path string, b *Breaker, inherits bool) {
	if b.Window < 0 || (b.Window == 0 && !inherits) {
		l.errorf(path+".window", "must be a positive duration such as 30s: attempts this far back are judged")
	}
	if b.MinAttempts < 0 || (b.MinAttempts == 0 && !inherits) {
		l.errorf(path+".min_attempts", "must be at least 1, e.g. 20: fewer attempts in the window never open the breaker")
	}
	if r := b.FailureRatio; r < 0 || r > 1 || (r == 0 && !inherits) {
		l.errorf(path+".failure_ratio", "must be in (0,1], e.g. 0.8: the share of attempts in the window that must fail to open the breaker")
	}
	if b.ProbeInterval < 0 || (b.ProbeInterval == 0 && !inherits) {
		l.errorf(path+".probe_interval", "must be a positive duration such as 5s")
	}
	if b.MaxProbeInterval < 0 || (b.MaxProbeInterval == 0 && !inherits) {
		l.errorf(path+".max_probe_interval", "must be a positive duration such as 30s")
	} else if b.ProbeInterval > 0 && b.MaxProbeInterval > 0 && b.MaxProbeInterval < b.ProbeInterval {
		l.errorf(path+".max_probe_interval", "%s is shorter than probe_interval (%s): probes wait probe_interval, doubling up to this",
			b.MaxProbeInterval.D(), b.ProbeInterval.D())
	}
	if f := b.Failures; f != nil && *f < 0 {
		l.errorf(path+".failures", "(deprecated: use min_attempts and failure_ratio) must be 0 (never open) or more failures")
	}
}

// validateAPI checks api.destinations: known sink types, and bucket prefixes that are URLs outside the store.
func (l *loader) validateAPI(c *Config, reg *sinks.Registry) {
	ad := &c.API.Destinations
	// The default ([webhook]) is not checked: a registry without webhook (plugins only) keeps it harmlessly.
	_, set := l.index["api.destinations.tenant_types"]
	for i, t := range ad.TenantTypes {
		if _, ok := reg.Lookup(t); !ok && set {
			l.errorf(fmt.Sprintf("api.destinations.tenant_types[%d]", i), "%q is not a sink type; see sluice sinks", t)
		}
	}
	for i, p := range ad.BucketPrefixes {
		path := fmt.Sprintf("api.destinations.bucket_prefixes[%d]", i)
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok || scheme == "" || rest == "" {
			l.errorf(path, "%q is not a URL prefix; use e.g. s3://bucket/prefix/ or file:///var/lib/exports/", p)
			continue
		}
		if scheme == "file" && c.Store.Path != "" && UnderStore(rest, c.Store.Path) {
			l.errorf(path, "%q is inside store.path; no bucket sink may write to the store directory", p)
		}
	}
}

// UnderStore reports whether a local path is the store directory or inside it (or contains it): no bucket sink
// may write there, whoever configured it.
func UnderStore(path, storePath string) bool {
	a, err1 := filepath.Abs(path)
	b, err2 := filepath.Abs(storePath)
	if err1 != nil || err2 != nil {
		return true
	}
	a, b = filepath.Clean(a), filepath.Clean(b)
	within := func(x, dir string) bool {
		rel, err := filepath.Rel(dir, x)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	return within(a, b) || within(b, a)
}

// BucketURL returns the url of a bucket destination's config (ok false for other types or before decoding).
func BucketURL(d *Destination) (string, bool) {
	if d.Type != "bucket" || d.SinkConfig == nil {
		return "", false
	}
	v := reflect.ValueOf(d.SinkConfig)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return "", false
	}
	f := v.FieldByName("URL")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// FileBucketDir returns the directory a file:// bucket destination writes to.
func FileBucketDir(d *Destination) (string, bool) {
	raw, ok := BucketURL(d)
	if !ok {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" {
		return "", false
	}
	return u.Path, true
}
