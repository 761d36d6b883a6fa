package destinations

import (
	"encoding/json"
	"maps"
	"time"
)

// Source says where a destination is defined.
const (
	SourceConfig = "config" // the YAML file: read-only over the API
	SourceAPI    = "api"    // created over the API, kept in the store
)

// View is a destination as the API shows it: the same object as in YAML, as JSON (name, type, tenant,
// topics, filter, transform, config, …) with secrets masked, plus id, enabled and source.
type View struct {
	ID     string
	Name   string
	Type   string
	Tenant string
	Source string
	// File is the config file of a YAML destination.
	File    string
	Enabled bool
	// DisabledReason says why a disabled destination is disabled.
	DisabledReason string
	// BreakerOpen: the destination keeps failing and its lane sends one probe at a time (not in the API's
	// JSON, which describes the destination; the console shows it).
	BreakerOpen bool
	CreatedAt   time.Time // zero for YAML destinations
	UpdatedAt   time.Time
	// Spec holds the destination's own fields (topics, filter, transform, config, ...) as JSON values, with
	// every secret masked.
	Spec map[string]any
	// Retiring lists rotated-out secrets (masked) that still sign until their time.
	Retiring []RetiringView
}

// RetiringView is a masked rotated-out secret.
type RetiringView struct {
	Secret string    `json:"secret"`
	Until  time.Time `json:"until"`
}

// MarshalJSON writes the spec's fields with id, name, type, tenant, enabled, source and the rest.
func (v View) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(v.Spec)+8)
	maps.Copy(out, v.Spec)
	out["id"], out["name"], out["type"], out["enabled"], out["source"] = v.ID, v.Name, v.Type, v.Enabled, v.Source
	delete(out, "tenant")
	if v.Tenant != "" {
		out["tenant"] = v.Tenant
	}
	if v.File != "" {
		out["file"] = v.File
	}
	if v.DisabledReason != "" && !v.Enabled {
		out["disabled_reason"] = v.DisabledReason
	}
	if !v.CreatedAt.IsZero() {
		out["created_at"], out["updated_at"] = v.CreatedAt, v.UpdatedAt
	}
	if len(v.Retiring) > 0 {
		out["retiring_secrets"] = v.Retiring
	}
	return json.Marshal(out)
}
