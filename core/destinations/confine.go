package destinations

import (
	"slices"
	"strings"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// confine applies the operator's policy for API destinations (api.destinations, DESIGN §9) to a parsed
// destination and its JSON spec. tenant is the caller's tenant ("" for a tenant-less admin key).
func (m *Manager) confine(d *config.Destination, spec map[string]any, tenant string) error {
	pol := m.cfg.API.Destinations
	if tenant != "" && !slices.Contains(pol.TenantTypes, d.Type) {
		return refuse(ErrForbidden, "type", "a tenant key may create %s destinations only (api.destinations.tenant_types); %q is not among them",
			strings.Join(pol.TenantTypes, ", "), d.Type)
	}
	if tenant != "" && d.Type == "webhook" {
		var wc webhook.Config
		if d.Config.Decode(&wc) == nil {
			if fields := wc.FileFields(); len(fields) > 0 {
				return refuse(ErrForbidden, "config."+fields[0], "a tenant key may not name files on the gateway's host; give the PEM itself (-----BEGIN ...) instead of a path")
			}
		}
	}
	if raw, ok := config.BucketURL(d); ok {
		if dir, isFile := config.FileBucketDir(d); isFile && m.cfg.Store.Path != "" && config.UnderStore(dir, m.cfg.Store.Path) {
			return refuse(ErrForbidden, "config.url", "no bucket destination may write inside the store directory")
		}
		switch {
		case len(pol.BucketPrefixes) > 0:
			if !slices.ContainsFunc(pol.BucketPrefixes, func(p string) bool { return strings.HasPrefix(raw, p) }) {
				return refuse(ErrForbidden, "config.url", "must start with one of api.destinations.bucket_prefixes (%s)", strings.Join(pol.BucketPrefixes, ", "))
			}
		case tenant != "" && strings.HasPrefix(raw, "file:"):
			return refuse(ErrForbidden, "config.url", "a tenant key may not create file:// buckets unless api.destinations.bucket_prefixes lists the directory")
		}
	}
	if !pol.AmbientCredentials {
		if field := ambientField(d, spec); field != "" {
			return refuse(ErrInvalid, field, "API destinations must carry their own credentials (api.destinations.ambient_credentials is false); set %s", field)
		}
	}
	return nil
}

// ambientField names the config field a destination would need to avoid the gateway's ambient cloud
// credentials ("" when it needs none).
func ambientField(d *config.Destination, spec map[string]any) string {
	c, _ := spec["config"].(map[string]any)
	has := func(k string) bool { s, _ := c[k].(string); return s != "" }
	switch d.Type {
	case "sqs":
		if !has("access_key_id") || !has("secret_access_key") {
			return "config.access_key_id"
		}
	case "bucket":
		raw, _ := config.BucketURL(d)
		switch {
		case strings.HasPrefix(raw, "s3:"):
			if !has("access_key_id") || !has("secret_access_key") {
				return "config.access_key_id"
			}
		case strings.HasPrefix(raw, "file:"):
		default:
			// gs:// (and any other cloud scheme) authenticates only with the gateway's own credentials.
			return "config.url"
		}
	case "pubsub":
		if !has("emulator_host") {
			// credentials_file is a path on the gateway's disk: the gateway's credentials, not the caller's.
			return "config.credentials_file"
		}
	}
	return ""
}
