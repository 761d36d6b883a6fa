package intake

import (
	"encoding/json"
	"strings"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/match"
)

// Router matches events to destinations. It is immutable; a reload builds a new one.
type Router struct {
	routes    []route
	anyFilter bool
}

type route struct {
	name   string
	key    []string // ordering_key path; nil = unordered
	block  bool
	topics match.Topics
	filter *match.Filter
	tenant string
	scope  map[string]string
}

// NewRouter builds a router over the enabled destinations of a validated config.
func NewRouter(dests []config.Destination) *Router {
	r := &Router{}
	for i := range dests {
		d := &dests[i]
		if !d.IsEnabled() {
			continue
		}
		rt := route{name: d.Name, topics: d.TopicsMatch, tenant: d.Tenant, scope: d.Scope}
		if !d.FilterMatch.MatchesAll() {
			// Only a filter with conditions needs the event's data decoded.
			rt.filter = d.FilterMatch
		}
		if d.OrderingKey != "" {
			rt.key = strings.Split(d.OrderingKey, ".")
			rt.block = d.Ordering != nil && d.Ordering.OnFailure == "block"
		}
		r.routes = append(r.routes, rt)
		if rt.filter != nil {
			r.anyFilter = true
		}
	}
	return r
}

// Match returns the names of the destinations ev goes to.
func (r *Router) Match(ev *event.Event) []string {
	var doc map[string]any
	var out []string
	for i := range r.routes {
		rt := &r.routes[i]
		if !rt.topics.Match(ev.Topic) {
			continue
		}
		// A tenant's destination sees only that tenant's events; a tenant-less one sees every tenant's.
		if rt.tenant != "" && rt.tenant != ev.Tenant {
			continue
		}
		if !scopeContains(ev.Scope, rt.scope) {
			continue
		}
		if rt.filter != nil {
			if doc == nil {
				d, err := ev.Doc()
				if err != nil {
					continue // intake validated data as JSON, so this cannot happen
				}
				doc = d
			}
			if !rt.filter.Match(doc) {
				continue
			}
		}
		out = append(out, rt.name)
	}
	return out
}

// Ordering returns a destination's ordering key for ev ("" when the destination is unordered or the event
// lacks the field) and whether a final failure blocks later events of the key.
func (r *Router) Ordering(name string, ev *event.Event) (key string, block bool) {
	for i := range r.routes {
		rt := &r.routes[i]
		if rt.name != name || rt.key == nil {
			continue
		}
		return orderingValue(rt.key, ev), rt.block
	}
	return "", false
}

func orderingValue(path []string, ev *event.Event) string {
	switch path[0] {
	case "tenant":
		return ev.Tenant
	case "topic":
		return ev.Topic
	case "correlation_id":
		return ev.CorrelationID
	case "id":
		return ev.ID
	case "metadata":
		return ev.Metadata[strings.Join(path[1:], ".")]
	}
	var v any
	if json.Unmarshal(ev.Data, &v) != nil {
		return ""
	}
	for _, k := range path[1:] {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// scopeContains reports whether every key of want is in have with the same value.
func scopeContains(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}
