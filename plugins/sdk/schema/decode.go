package schema

import (
	"errors"
	"fmt"
	"reflect"

	"gopkg.in/yaml.v3"
)

// FillDefaults sets every zero field of the struct ptr points to that has a `default` tag, by decoding the
// tag as YAML (a string field takes the tag as written: "{topic}" is not a YAML mapping there). Inline and
// nested structs are filled too.
func FillDefaults(ptr any) error {
	v := reflect.ValueOf(ptr)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("schema: FillDefaults needs a pointer to a struct, not %T", ptr)
	}
	return fillDefaults(v.Elem(), "")
}

func fillDefaults(v reflect.Value, path string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !visible(f) {
			continue
		}
		name, inline := yamlName(f)
		fv := v.Field(i)
		p := Join(path, name)
		if inline {
			p = path
		}
		if def, ok := f.Tag.Lookup("default"); ok && fv.IsZero() {
			if fv.Kind() == reflect.String {
				fv.SetString(def)
				continue
			}
			if err := yaml.Unmarshal([]byte(def), fv.Addr().Interface()); err != nil {
				return fmt.Errorf("schema: default %q of config field %s does not decode: %v", def, p, err)
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

// Required reports the `required:"true"` fields of the struct ptr points to that are zero: "must not be
// empty" when given reports the path was in the block, "is required" when it was left out.
func Required(ptr any, given func(path string) bool) []error {
	var errs []error
	required(reflect.ValueOf(ptr).Elem(), "", given, &errs)
	return errs
}

func required(v reflect.Value, path string, given func(string) bool, errs *[]error) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !visible(f) {
			continue
		}
		name, inline := yamlName(f)
		p := Join(path, name)
		if inline {
			p = path
		}
		fv := v.Field(i)
		if f.Tag.Get("required") == "true" && fv.IsZero() {
			if given(p) {
				*errs = append(*errs, Errorf(p, "must not be empty"))
			} else {
				desc := f.Tag.Get("desc")
				if desc == "" {
					desc = "set it"
				}
				*errs = append(*errs, Errorf(p, "is required: %s", desc))
			}
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != timeType {
			required(fv, p, given, errs)
		}
	}
}

// Decode turns a config block (a YAML mapping) into a C, a struct: defaults from `default` tags first, then
// the block checked key by key (unknown keys and wrong types, every one with its path), then `required`
// fields, then C's own Validate method if *C has one. Problems come back joined, each a *FieldError.
func Decode[C any](src []byte) (C, error) {
	var cfg C
	if err := FillDefaults(&cfg); err != nil {
		return cfg, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		msg, _ := Message(err)
		return cfg, &FieldError{Msg: "not a YAML mapping: " + msg}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	var errs []error
	given := map[string]bool{}
	if root.Kind != 0 && !(root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null") {
		Checker{
			Visit:   func(path string, _ *yaml.Node) { given[path] = true },
			Problem: func(_ *yaml.Node, path, msg string) { errs = append(errs, &FieldError{Path: path, Msg: msg}) },
		}.Check(root, reflect.TypeOf(cfg), "")
		if len(errs) > 0 {
			return cfg, errors.Join(errs...)
		}
		if err := root.Decode(&cfg); err != nil {
			msg, _ := Message(err)
			return cfg, &FieldError{Msg: msg}
		}
	}
	if errs := Required(&cfg, func(p string) bool { return given[p] }); len(errs) > 0 {
		return cfg, errors.Join(errs...)
	}
	if val, ok := any(&cfg).(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}
