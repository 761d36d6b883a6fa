// Package schema is the one reflective layer over a sink's config struct. The struct's tags are the spec:
//
//	`yaml:"name"` (`,inline` merges a nested struct's keys), `desc:"…"`, `default:"…"`, `required:"true"`,
//	`secret:"true"`, `secret:"url"` (only the URL's userinfo and query values are secret)
//
// and from them this package checks a YAML block (unknown keys, wrong types, with their paths and lines),
// fills defaults, reports missing required fields, describes the fields (`sluice sinks describe`, the docs)
// and finds, masks and keeps secrets. Sluice's built-in sinks, its own config file and the plugin SDK all go
// through it, so they cannot drift apart.
//
// It imports only the standard library and yaml.v3.
package schema

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Field describes one config field, derived from the config struct's tags.
type Field struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Default  string `json:"default,omitempty"`
	Required bool   `json:"required,omitempty"`
	Secret   bool   `json:"secret,omitempty"`
	// SecretURL marks a URL whose userinfo and query values are secret (`secret:"url"`): the URL is shown
	// with those parts masked. A field is Secret or SecretURL, never both.
	SecretURL   bool   `json:"secret_url,omitempty"`
	Description string `json:"description,omitempty"`
}

// FieldError is one problem in a config block. Path is relative to the block (e.g. "url", "headers.X-Foo");
// whoever reads the block prefixes it and points at the YAML line.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf returns a *FieldError for path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

var (
	durationType  = reflect.TypeOf(time.Duration(0))
	timeType      = reflect.TypeOf(time.Time{})
	nodeType      = reflect.TypeOf(yaml.Node{})
	unmarshalerIf = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// yamlName is a field's key and whether its struct is inlined.
func yamlName(f reflect.StructField) (name string, inline bool) {
	parts := strings.Split(f.Tag.Get("yaml"), ",")
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

// visible reports whether a struct field is part of the YAML form.
func visible(f reflect.StructField) bool {
	name, _ := yamlName(f)
	return f.IsExported() && name != "-"
}

func inlined(f reflect.StructField) bool {
	_, inline := yamlName(f)
	return inline && deref(f.Type).Kind() == reflect.Struct
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// fieldByKey finds the field a YAML key names, looking into inline structs.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !visible(f) {
			continue
		}
		if inlined(f) {
			if sf, ok := fieldByKey(deref(f.Type), key); ok {
				return sf, true
			}
			continue
		}
		if name, _ := yamlName(f); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// Keys lists the YAML keys of a struct type, inline structs' keys included.
func Keys(t reflect.Type) []string {
	t = deref(t)
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !visible(f) {
			continue
		}
		if inlined(f) {
			out = append(out, Keys(f.Type)...)
			continue
		}
		name, _ := yamlName(f)
		out = append(out, name)
	}
	return out
}

// Join appends key to a dotted path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Describe lists the fields of a config struct (or pointer to one), nested structs flattened with dots (a
// nested struct with a desc tag is one field).
func Describe(cfg any) []Field {
	t := reflect.TypeOf(cfg)
	if t == nil {
		return nil
	}
	return describe(t, "")
}

func describe(t reflect.Type, prefix string) []Field {
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []Field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !visible(f) {
			continue
		}
		name, inline := yamlName(f)
		if inline {
			out = append(out, describe(f.Type, prefix)...)
			continue
		}
		ft := deref(f.Type)
		if ft.Kind() == reflect.Struct && ft != timeType && f.Tag.Get("desc") == "" {
			out = append(out, describe(ft, prefix+name+".")...)
			continue
		}
		out = append(out, Field{
			Name:        prefix + name,
			Type:        typeName(f.Type),
			Default:     f.Tag.Get("default"),
			Required:    f.Tag.Get("required") == "true",
			Secret:      secretKind(f) == kindWhole,
			SecretURL:   secretKind(f) == kindURL,
			Description: describeSecret(f),
		})
	}
	return out
}

// describeSecret is a field's description, saying which parts of a secret:"url" field are secret. Such a field
// is described as SecretURL, not Secret: its value is a URL to show (masked in part), not a value to hide whole.
func describeSecret(f reflect.StructField) string {
	d := f.Tag.Get("desc")
	if secretKind(f) == kindURL {
		d = strings.TrimSpace(d + " (secret: the userinfo and query values)")
	}
	return d
}

// secretKind is the one place that decides, for a struct field, whether its values are (or hold) secrets:
// `secret:"true"` (the whole value, and every element or map value under it) or `secret:"url"` (a URL whose
// userinfo and query values are secret, see MaskURL). "" means not secret.
func secretKind(f reflect.StructField) string {
	switch f.Tag.Get("secret") {
	case "true":
		return kindWhole
	case "url":
		return kindURL
	}
	return ""
}

func typeName(t reflect.Type) string {
	t = deref(t)
	if t == durationType || (t.PkgPath() != "" && strings.HasSuffix(t.Name(), "Duration")) {
		return "duration"
	}
	switch t.Kind() {
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
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

// kindName says what a scalar of type t must look like, for errors.
func kindName(t reflect.Type) string {
	if typeName(t) == "duration" {
		return "a duration such as 5s"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// Checker walks a YAML node tree against a Go type. Both callbacks are optional.
type Checker struct {
	// Visit is called with every node and its path, free-form values (interfaces, yaml.Node) included, so a
	// caller can point later problems at their lines and tell given keys from absent ones.
	Visit func(path string, n *yaml.Node)
	// Problem is called with each unknown key and each value of the wrong type: n is the node it is about.
	Problem func(n *yaml.Node, path, msg string)
}

// Check reports unknown keys (also inside inline structs) and values that do not decode into their field's
// type (integers, unsigned integers, durations, types with their own UnmarshalYAML), each with its path.
func (c Checker) Check(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	c.visit(path, n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	t = deref(t)
	if t == nodeType || t.Kind() == reflect.Interface {
		c.visitRaw(n, path)
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerIf) || t == timeType {
		c.scalar(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.problem(n, path, fmt.Sprintf("must be a mapping of keys (%s)", strings.Join(Keys(t), ", ")))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fieldByKey(t, k.Value)
			if !ok {
				c.problem(k, Join(path, k.Value), fmt.Sprintf("unknown key %q; valid keys here: %s", k.Value,
					strings.Join(Keys(t), ", ")))
				continue
			}
			c.Check(v, f.Type, Join(path, k.Value))
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			c.problem(n, path, "must be a list")
			return
		}
		for i, e := range n.Content {
			c.Check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.problem(n, path, "must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.Check(n.Content[i+1], t.Elem(), Join(path, n.Content[i].Value))
		}
	default:
		c.scalar(n, t, path)
	}
}

func (c Checker) visit(path string, n *yaml.Node) {
	if c.Visit != nil {
		c.Visit(path, n)
	}
}

func (c Checker) problem(n *yaml.Node, path, msg string) {
	if c.Problem != nil {
		c.Problem(n, path, msg)
	}
}

// visitRaw visits a free-form subtree (a filter, a plugin's config block).
func (c Checker) visitRaw(n *yaml.Node, path string) {
	c.visit(path, n)
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.visitRaw(n.Content[i+1], Join(path, n.Content[i].Value))
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			c.visitRaw(e, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

var yamlLinePrefix = regexp.MustCompile(`^yaml: (?:unmarshal errors:\n\s*)?line (\d+): `)

// Message strips yaml.v3's "yaml: line N:" prefix from a decoding error (callers place the error at its
// node themselves) and returns the line it named, 0 when none.
func Message(err error) (msg string, line int) {
	msg = err.Error()
	if m := yamlLinePrefix.FindStringSubmatch(msg); m != nil {
		fmt.Sscan(m[1], &line)
		msg = msg[len(m[0]):]
	}
	return strings.TrimPrefix(msg, "yaml: "), line
}

func (c Checker) scalar(n *yaml.Node, t reflect.Type, path string) {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		msg, _ := Message(err)
		if strings.Contains(msg, "cannot unmarshal") {
			msg = fmt.Sprintf("must be %s, got %q", kindName(t), n.Value)
		}
		c.problem(n, path, msg)
	}
}
