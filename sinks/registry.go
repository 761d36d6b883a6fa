package sinks

import (
	"context"
	"fmt"
	"reflect"
	"sort"

	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"gopkg.in/yaml.v3"
)

// Config is a sink's typed config block. Validate is fast and does no I/O; it returns every problem at once
// (errors.Join of *FieldError) so `sluice validate` can show them all.
type Config interface {
	Validate() error
}

// Spec registers one sink type.
type Spec struct {
	Type string
	Doc  string // one line for `sluice sinks`
	// Config returns a new config with defaults filled in; the loader decodes the YAML block over it.
	Config func() Config
	// New builds the sink. It may dial; it must not retain ctx.
	New func(ctx context.Context, cfg Config, env Env) (Sink, error)
}

// Registry maps destination types to their specs. Registration is explicit (no init side effects): the
// binary lists the sinks it ships in one place.
type Registry struct {
	specs map[string]Spec
}

// NewRegistry returns a registry holding specs. A duplicate type is a programming error and panics.
func NewRegistry(specs ...Spec) *Registry {
	r := &Registry{specs: make(map[string]Spec, len(specs))}
	for _, s := range specs {
		r.Add(s)
	}
	return r
}

// Add registers s; it panics on a duplicate type.
func (r *Registry) Add(s Spec) {
	if _, dup := r.specs[s.Type]; dup {
		panic("sinks: duplicate sink type " + s.Type)
	}
	r.specs[s.Type] = s
}

// With returns a new registry holding r's specs and specs (plugin sinks join the built-ins this way).
func (r *Registry) With(specs ...Spec) *Registry {
	out := &Registry{specs: make(map[string]Spec, len(r.specs)+len(specs))}
	for t, s := range r.specs {
		out.specs[t] = s
	}
	for _, s := range specs {
		out.Add(s)
	}
	return out
}

// Lookup returns the spec for a type.
func (r *Registry) Lookup(typ string) (Spec, bool) {
	s, ok := r.specs[typ]
	return s, ok
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.specs))
	for t := range r.specs {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Register describes a sink type for the registry: typ is the destination `type`, doc one line for `sluice
// sinks`, config returns a new config with its defaults filled in (the loader decodes the YAML block over it)
// and newSink builds the sink from that config.
func Register[C Config, S Sink](typ, doc string, config func() C, newSink func(ctx context.Context, cfg C, env Env) (S, error)) Spec {
	return Spec{
		Type:   typ,
		Doc:    doc,
		Config: func() Config { return config() },
		New: func(ctx context.Context, cfg Config, env Env) (Sink, error) {
			c, ok := cfg.(C)
			if !ok {
				var want C
				return nil, fmt.Errorf("%s: config is %T, want %T", typ, cfg, want)
			}
			s, err := newSink(ctx, c, env)
			if err != nil {
				return nil, err // not a typed nil inside a non-nil Sink
			}
			return s, nil
		},
	}
}

// Describe lists the fields of a config struct (or pointer to one), nested structs flattened with dots.
func Describe(cfg any) []Field { return schema.Describe(cfg) }

// FieldsOf lists a config's fields: from its struct tags, or as a plugin's config describes itself.
func FieldsOf(cfg Config) []Field {
	if f, ok := cfg.(interface{ Fields() []Field }); ok {
		return f.Fields()
	}
	return schema.Describe(cfg)
}

// SecretsOf says where a config's secrets are: its `secret:"true"` fields, or the fields a plugin's config
// marks secret.
func SecretsOf(cfg Config) Secrets {
	if s, ok := cfg.(interface{ Secrets() Secrets }); ok {
		return s.Secrets()
	}
	return schema.SecretsOf(reflect.TypeOf(cfg))
}

// Secrets says where the secrets of a type's config are (nil for an unknown type).
func (r *Registry) Secrets(typ string) Secrets {
	spec, ok := r.Lookup(typ)
	if !ok {
		return nil
	}
	return SecretsOf(spec.Config())
}

// node encodes a config as YAML, secrets in clear: a plugin's config encodes its block with the plugin's
// defaults filled in (its own encoders mask, so that it never leaks by accident).
func node(cfg any) (*yaml.Node, error) {
	var v any = cfg
	if t, ok := cfg.(interface{ Tree() any }); ok {
		v = t.Tree()
	}
	n := &yaml.Node{}
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	return n, nil
}

// MaskedNode returns a config as a YAML node, in field order, with every secret masked: what `validate
// --print` shows.
func MaskedNode(cfg Config) (*yaml.Node, error) {
	n, err := node(cfg)
	if err != nil {
		return nil, err
	}
	SecretsOf(cfg).Mask(n)
	return n, nil
}

// MaskSecrets returns a config as generic values (keys from yaml tags) with every secret masked: the form
// the API shows as JSON.
func MaskSecrets(cfg any) any {
	c, ok := cfg.(Config)
	if !ok || cfg == nil {
		return nil
	}
	n, err := MaskedNode(c)
	if err != nil {
		return map[string]any{}
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return map[string]any{}
	}
	return v
}

// SecretValues returns a config's secret strings in a stable order (to fingerprint it).
func SecretValues(cfg Config) []string {
	n, err := node(cfg)
	if err != nil {
		return nil
	}
	var out []string
	SecretsOf(cfg).Walk(n, func(_, v string) string { out = append(out, v); return v })
	return out
}
