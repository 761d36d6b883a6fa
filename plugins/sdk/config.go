package sdk

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decode turns a config block (a YAML mapping) into a C: defaults from `default` tags first, then the block
// checked key by key (unknown keys and wrong types are reported with their paths, all at once), then
// `required` fields, then C's own Validate method if it has one.
func decode[C any](src []byte) (any, error) {
	var cfg C
	v := reflect.ValueOf(&cfg).Elem()
	if err := fillDefaults(v, ""); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, &FieldError{Msg: fmt.Sprintf("not a YAML mapping: %v", err)}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	var errs []error
	present := map[string]bool{}
	if root.Kind != 0 && !(root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null") {
		check(root, v.Type(), "", &errs, present)
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		if err := root.Decode(&cfg); err != nil {
			return nil, &FieldError{Msg: err.Error()}
		}
	}
	required(v, "", present, &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if val, ok := any(&cfg).(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

var (
	durationType  = reflect.TypeOf(time.Duration(0))
	timeType      = reflect.TypeOf(time.Time{})
	unmarshalerIf = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// fillDefaults sets every zero field with a `default` tag by decoding the tag as YAML.
func fillDefaults(v reflect.Value, path string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		if !f.IsExported() || name == "-" {
			continue
		}
		fv := v.Field(i)
		p := join(path, name)
		if inline {
			p = path
		}
		if def, ok := f.Tag.Lookup("default"); ok && fv.IsZero() {
			if fv.Kind() == reflect.String { // taken as written: "{topic}" is not YAML for a mapping here
				fv.SetString(def)
				continue
			}
			if err := yaml.Unmarshal([]byte(def), fv.Addr().Interface()); err != nil {
				return fmt.Errorf("sdk: default %q of config field %s does not decode: %v", def, p, err)
			}
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != timeType {
			if err := fillDefaults(fv, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// check walks the YAML against the Go type like Sluice's own config loader, recording which paths are given.
func check(n *yaml.Node, t reflect.Type, path string, errs *[]error, present map[string]bool) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	present[path] = true
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Interface {
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerIf) || t == timeType {
		checkScalar(n, t, path, errs)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*errs = append(*errs, Errorf(path, "must be a mapping of keys (%s)", strings.Join(fieldNames(t), ", ")))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := fieldByYAML(t, k.Value)
			if !ok {
				*errs = append(*errs, Errorf(join(path, k.Value), "unknown key %q; valid keys here: %s", k.Value,
					strings.Join(fieldNames(t), ", ")))
				continue
			}
			check(val, f.Type, join(path, k.Value), errs, present)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			*errs = append(*errs, Errorf(path, "must be a list"))
			return
		}
		for i, c := range n.Content {
			check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs, present)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			*errs = append(*errs, Errorf(path, "must be a mapping"))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			check(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs, present)
		}
	default:
		checkScalar(n, t, path, errs)
	}
}

func checkScalar(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if strings.Contains(msg, "cannot unmarshal") {
			msg = fmt.Sprintf("must be %s, got %q", kindName(t), n.Value)
		}
		*errs = append(*errs, Errorf(path, "%s", msg))
	}
}

// required reports `required:"true"` fields that the block left out or left empty.
func required(v reflect.Value, path string, present map[string]bool, errs *[]error) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		if !f.IsExported() || name == "-" {
			continue
		}
		p := join(path, name)
		if inline {
			p = path
		}
		fv := v.Field(i)
		if f.Tag.Get("required") == "true" && fv.IsZero() {
			if present[p] {
				*errs = append(*errs, Errorf(p, "must not be empty"))
			} else {
				*errs = append(*errs, Errorf(p, "is required: %s", orDefault(f.Tag.Get("desc"), "set it")))
			}
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != timeType {
			required(fv, p, present, errs)
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func kindName(t reflect.Type) string {
	if t == durationType || strings.HasSuffix(t.Name(), "Duration") {
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

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

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

func fieldByYAML(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		if !f.IsExported() || name == "-" {
			continue
		}
		if inline && f.Type.Kind() == reflect.Struct {
			if sf, ok := fieldByYAML(f.Type, key); ok {
				return sf, true
			}
			continue
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func fieldNames(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		if !f.IsExported() || name == "-" {
			continue
		}
		if inline && f.Type.Kind() == reflect.Struct {
			out = append(out, fieldNames(f.Type)...)
			continue
		}
		out = append(out, name)
	}
	return out
}
