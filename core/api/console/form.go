package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/sinks"
)

// The destination form is generated from the sink's field descriptions (sinks.Describe, the same data as
// `sluice sinks describe TYPE`), so plugin sinks get a form too. Each config field is one input named
// "cfg.<dotted name>"; the input kind follows the field's type.

type formField struct {
	Name     string // dotted config path
	Input    string // the form input's name
	Kind     string // text | password | number | select-bool | lines | keyvalues | json
	Type     string // as sinks describe it
	Value    string
	Default  string
	Required bool
	Secret   bool
	Desc     string
	Error    bool
}

type destForm struct {
	Edit       bool
	ID         string
	Types      []string
	Type       string
	TypeDoc    string
	Name       string
	Tenant     string
	AskTenant  bool // a tenant-less admin may set the tenant; a tenant's session creates its own only
	Topics     string
	Filter     string
	Transform  string
	Enabled    bool
	Fields     []formField
	Error      string
	ErrorField string
}

func kindOf(f sinks.Field) string {
	switch {
	case f.Secret && f.Type == "string":
		return "password"
	case f.Type == "string" || f.Type == "duration":
		return "text"
	case f.Type == "integer" || f.Type == "number":
		return "number"
	case f.Type == "bool":
		return "select-bool"
	case strings.HasPrefix(f.Type, "list of ") && !strings.Contains(f.Type, "map"):
		return "lines"
	case f.Type == "map of string":
		return "keyvalues"
	}
	return "json"
}

// fieldsOf describes typ's config fields, with values from cfg (a destination's masked config) when given.
func fieldsOf(reg *sinks.Registry, typ string, cfg map[string]any) ([]formField, string) {
	if reg == nil {
		return nil, ""
	}
	spec, ok := reg.Lookup(typ)
	if !ok || spec.Config == nil {
		return nil, ""
	}
	var out []formField
	for _, f := range sinks.Describe(spec.Config()) {
		ff := formField{Name: f.Name, Input: "cfg." + f.Name, Kind: kindOf(f), Type: f.Type, Default: f.Default,
			Required: f.Required, Secret: f.Secret, Desc: f.Description}
		if v, ok := lookupPath(cfg, f.Name); ok {
			ff.Value = formatValue(ff.Kind, v)
		}
		out = append(out, ff)
	}
	return out, spec.Doc
}

func lookupPath(m map[string]any, path string) (any, bool) {
	parts := strings.Split(path, ".")
	var cur any = m
	for _, p := range parts {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[p]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func formatValue(kind string, v any) string {
	switch kind {
	case "lines":
		if list, ok := v.([]any); ok {
			parts := make([]string, 0, len(list))
			for _, x := range list {
				parts = append(parts, fmt.Sprint(x))
			}
			return strings.Join(parts, "\n")
		}
	case "keyvalues":
		if m, ok := v.(map[string]any); ok {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			lines := make([]string, 0, len(keys))
			for _, k := range keys {
				lines = append(lines, k+": "+fmt.Sprint(m[k]))
			}
			return strings.Join(lines, "\n")
		}
	case "text", "password", "number", "select-bool":
		if s, ok := v.(string); ok {
			return s
		}
		if f, ok := v.(float64); ok {
			return strconv.FormatFloat(f, 'f', -1, 64)
		}
		return fmt.Sprint(v)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// fieldError is a problem with one form input.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// parseValue turns one input into its JSON value; ok false means the input was left empty.
func parseValue(f formField, raw string) (v any, ok bool, err error) {
	raw = strings.TrimSpace(strings.ReplaceAll(raw, "\r\n", "\n"))
	if raw == "" {
		return nil, false, nil
	}
	switch f.Kind {
	case "text", "password":
		return raw, true, nil
	case "number":
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return nil, false, &fieldError{"config." + f.Name, "must be a number"}
		}
		return n, true, nil
	case "select-bool":
		return raw == "true", true, nil
	case "lines":
		var list []any
		for _, l := range strings.Split(raw, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				list = append(list, l)
			}
		}
		return list, len(list) > 0, nil
	case "keyvalues":
		m := map[string]any{}
		for _, l := range strings.Split(raw, "\n") {
			if strings.TrimSpace(l) == "" {
				continue
			}
			k, val, found := strings.Cut(l, ":")
			if !found || strings.TrimSpace(k) == "" {
				return nil, false, &fieldError{"config." + f.Name, "write one \"Name: value\" per line"}
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
		return m, true, nil
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil, false, &fieldError{"config." + f.Name, "must be JSON"}
	}
	return v, true, nil
}

// readForm fills f from a submitted form and returns the destination as the API takes it. For an edit,
// emptied config fields become null (a merge patch removes them).
func readForm(r *http.Request, f *destForm, reg *sinks.Registry, existing map[string]any) (map[string]any, error) {
	f.Name = strings.TrimSpace(r.PostFormValue("name"))
	f.Topics = r.PostFormValue("topics")
	f.Filter = r.PostFormValue("filter")
	f.Transform = r.PostFormValue("transform")
	f.Enabled = r.PostFormValue("enabled") == "on"
	if f.AskTenant {
		f.Tenant = strings.TrimSpace(r.PostFormValue("tenant"))
	}
	if !f.Edit {
		f.Type = r.PostFormValue("type")
	}
	f.Fields, f.TypeDoc = fieldsOf(reg, f.Type, nil)
	spec := map[string]any{}
	var topics []any
	for _, t := range strings.FieldsFunc(f.Topics, func(r rune) bool { return r == ',' || r == '\n' || r == ' ' }) {
		topics = append(topics, strings.TrimSpace(t))
	}
	spec["topics"] = topics
	if strings.TrimSpace(f.Filter) != "" {
		var v any
		if err := json.Unmarshal([]byte(f.Filter), &v); err != nil {
			return nil, &fieldError{"filter", "must be JSON, e.g. {\"data\": {\"case\": {\"status\": \"approved\"}}}"}
		}
		spec["filter"] = v
	} else if f.Edit {
		spec["filter"] = nil
	}
	if t := strings.TrimSpace(f.Transform); t != "" {
		spec["transform"] = t
	} else if f.Edit {
		spec["transform"] = nil
	}
	if !f.Edit {
		spec["name"], spec["type"] = f.Name, f.Type
		if f.Tenant != "" {
			spec["tenant"] = f.Tenant
		}
		if !f.Enabled {
			spec["enabled"] = false
		}
	}
	cfg := map[string]any{}
	var firstErr error
	for i := range f.Fields {
		ff := &f.Fields[i]
		raw := r.PostFormValue(ff.Input)
		ff.Value = raw
		v, ok, err := parseValue(*ff, raw)
		switch {
		case err != nil:
			ff.Error = true
			if firstErr == nil {
				firstErr = err
			}
		case ok:
			setPath(cfg, ff.Name, v)
		case f.Edit:
			// Only a field the destination has is removed: a null inside a block it lacks would create the
			// block empty.
			if _, had := lookupPath(existing, ff.Name); had {
				setPath(cfg, ff.Name, nil)
			}
		}
	}
	spec["config"] = cfg
	return spec, firstErr
}

// markError flags the input a service error names ("config.url", "topics", ...).
func (f *destForm) markError(field, msg string) {
	f.Error, f.ErrorField = msg, field
	for i := range f.Fields {
		if "config."+f.Fields[i].Name == field {
			f.Fields[i].Error = true
		}
	}
}
