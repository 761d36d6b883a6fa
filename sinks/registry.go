package sinks

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
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

// Field describes one config field, derived from the config struct's tags:
// `yaml:"name"`, `desc:"..."`, `default:"..."`, `required:"true"`, `secret:"true"`.
type Field struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Default     string `json:"default,omitempty"`
	Required    bool   `json:"required,omitempty"`
	Secret      bool   `json:"secret,omitempty"`
	Description string `json:"description,omitempty"`
}

// Describe lists the fields of a config struct (or pointer to one), nested structs flattened with dots.
func Describe(cfg any) []Field {
	return describe(reflect.TypeOf(cfg), "")
}

func describe(t reflect.Type, prefix string) []Field {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []Field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		if name == "-" || !f.IsExported() {
			continue
		}
		if inline {
			out = append(out, describe(f.Type, prefix)...)
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}) && f.Tag.Get("desc") == "" {
			out = append(out, describe(ft, prefix+name+".")...)
			continue
		}
		out = append(out, Field{
			Name:        prefix + name,
			Type:        typeName(f.Type),
			Default:     f.Tag.Get("default"),
			Required:    f.Tag.Get("required") == "true",
			Secret:      f.Tag.Get("secret") == "true",
			Description: f.Tag.Get("desc"),
		})
	}
	return out
}

func yamlName(f reflect.StructField) (name string, inline bool) {
	tag := f.Tag.Get("yaml")
	parts := strings.Split(tag, ",")
	for _, p := range parts[1:] {
		if p == "inline" {
			inline = true
		}
	}
	name = parts[0]
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, inline
}

func typeName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		return typeName(t.Elem())
	}
	if t.PkgPath() != "" && strings.HasSuffix(t.Name(), "Duration") {
		return "duration"
	}
	switch t.Kind() {
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "bool"
	case reflect.String:
		return "string"
	}
	return t.Kind().String()
}

// MaskSecrets returns a copy of a config struct value as a generic map (keys from yaml tags) with every
// `secret:"true"` field masked, for printing.
func MaskSecrets(cfg any) any {
	return maskValue(reflect.ValueOf(cfg), false)
}

func maskValue(v reflect.Value, secret bool) any {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if m, ok := v.Interface().(fmt.Stringer); ok && v.Kind() != reflect.Struct {
		if secret {
			return Mask(m.String())
		}
		return m.String()
	}
	switch v.Kind() {
	case reflect.Struct:
		out := map[string]any{}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, inline := yamlName(f)
			if name == "-" || !f.IsExported() {
				continue
			}
			val := maskValue(v.Field(i), secret || f.Tag.Get("secret") == "true")
			if inline {
				if m, ok := val.(map[string]any); ok {
					for k, x := range m {
						out[k] = x
					}
				}
				continue
			}
			if strings.Contains(f.Tag.Get("yaml"), "omitempty") && v.Field(i).IsZero() {
				continue
			}
			out[name] = val
		}
		return out
	case reflect.Slice, reflect.Array:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = maskValue(v.Index(i), secret)
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		iter := v.MapRange()
		for iter.Next() {
			out[fmt.Sprint(iter.Key().Interface())] = maskValue(iter.Value(), secret)
		}
		return out
	case reflect.String:
		if secret {
			return Mask(v.String())
		}
		return v.String()
	}
	return v.Interface()
}
