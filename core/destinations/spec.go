package destinations

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// readOnlyKeys are fields of a destination's JSON the API shows but never takes.
var readOnlyKeys = []string{"id", "source", "file", "created_at", "updated_at", "disabled_reason", "retiring_secrets"}

// decodeSpec reads a destination body as a JSON object, dropping read-only fields.
func decodeSpec(body []byte) (map[string]any, error) {
	var spec map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&spec); err != nil || spec == nil {
		msg := "the body must be a JSON object describing the destination"
		if err != nil {
			msg += ": " + err.Error()
		}
		return nil, &Error{Kind: ErrMalformed, Msg: msg}
	}
	for _, k := range readOnlyKeys {
		delete(spec, k)
	}
	return normalize(spec).(map[string]any), nil
}

// normalize turns json.Number into int64 or float64 so values compare and re-encode as numbers.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// deepCopy copies a JSON value (maps and slices anew).
func deepCopy(v any) any { return jsonable(v) }

// mergePatch applies an RFC 7396 JSON merge patch.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}

// secretFields says where, inside `config`, a sink type's secrets are (sinks decides, from the config's tags or
// a plugin's description).
func secretFields(reg *sinks.Registry, typ string) sinks.Secrets { return reg.Secrets(typ) }

// walkSecretPaths calls fn with every secret string of a spec and its path ("config.secrets[0]").
func walkSecretPaths(reg *sinks.Registry, spec map[string]any, fn func(path, s string)) {
	eachSecret(reg, spec, func(path, s string) string { fn(path, s); return s })
}

// walkSecrets replaces every secret string of a spec by fn's result.
func walkSecrets(reg *sinks.Registry, spec map[string]any, fn func(s string) string) {
	eachSecret(reg, spec, func(_, s string) string { return fn(s) })
}

// eachSecret replaces every secret string of a spec (a field the sink's config marks secret, or an element
// of such a list) by fn(path, value), in the order the config declares them.
func eachSecret(reg *sinks.Registry, spec map[string]any, fn func(path, s string) string) {
	typ, _ := spec["type"].(string)
	if cfg, ok := spec["config"].(map[string]any); ok {
		secretFields(reg, typ).Walk(cfg, func(path, s string) string { return fn("config."+path, s) })
	}
}

// unmaskSecrets puts the stored secret back wherever a patch sends a secret's masked form unchanged.
func unmaskSecrets(reg *sinks.Registry, patch, current map[string]any) {
	typ, _ := current["type"].(string)
	pc, ok1 := patch["config"].(map[string]any)
	cc, ok2 := current["config"].(map[string]any)
	if ok1 && ok2 {
		secretFields(reg, typ).Keep(pc, cc)
	}
}

// secretValues returns the secret strings of a sink config (to fingerprint it).
func secretValues(cfg sinks.Config) []string { return sinks.SecretValues(cfg) }

// destFields renders a destination's own fields (without config) as JSON values, as the YAML file spells
// them.
func destFields(d *config.Destination) map[string]any {
	cp := *d
	cp.Config = yaml.Node{}
	raw, err := yaml.Marshal(&cp)
	out := map[string]any{}
	if err == nil {
		_ = yaml.Unmarshal(raw, &out)
	}
	delete(out, "config")
	delete(out, "enabled")
	return jsonable(out).(map[string]any)
}

// jsonable converts yaml.v3 values (map[string]any already) recursively to JSON-encodable ones.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonable(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[toString(k)] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	}
	return v
}

// maskedSinkConfig renders a sink config with secrets masked; trim drops that many trailing `secrets`
// entries (rotated-out secrets, shown separately).
func maskedSinkConfig(cfg sinks.Config, trim int) any {
	if cfg == nil {
		return map[string]any{}
	}
	v := jsonable(sinks.MaskSecrets(cfg))
	if mm, ok := v.(map[string]any); ok && trim > 0 {
		mm = maps.Clone(mm)
		if list, ok := mm["secrets"].([]any); ok && len(list) >= trim {
			mm["secrets"] = list[:len(list)-trim]
		}
		return mm
	}
	return v
}

// invalidDestination answers validation errors: ErrInvalid naming the first field, listing all.
func invalidDestination(errs []*sinks.FieldError) *Error {
	return &Error{Kind: ErrInvalid, Field: errs[0].Path, Msg: joinFieldErrors(errs)}
}

func joinFieldErrors(errs []*sinks.FieldError) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func toString(v any) string { return fmt.Sprint(v) }
