package match

import (
	"encoding/json"
	"errors"
	"strings"
)

// Route is one destination as the router sees it.
type Route struct {
	Name   string
	Topics Topics
	// Filter nil (or one without conditions) matches every event without decoding its data.
	Filter *Filter
	// Tenant "" receives every tenant's events; otherwise only that tenant's.
	Tenant string
	// Scope: every key must be in the event's scope with the same value.
	Scope map[string]string
	// OrderingKey is a dotted path into the event (data.case.id, metadata.k, tenant, topic, correlation_id,
	// id); "" = unordered.
	OrderingKey string
	// Block: a final failure holds back later events of the same key.
	Block bool
	// Disabled: the destination is disabled; events it matches are answered with Match.Disabled set, so
	// their delivery rows are kept (skipped) for a replay after it is enabled again.
	Disabled bool
}

// Event is what the router reads of an event.
type Event struct {
	ID, Topic, Tenant, CorrelationID string
	Metadata, Scope                  map[string]string
	// Doc returns the event as the filter language sees it ({id, topic, time, tenant, metadata, data}). The
	// router calls it at most once per Route call, and only when a filter or a data ordering key needs it.
	Doc func() (map[string]any, error)
}

// Match is one destination an event goes to.
type Match struct {
	Name string
	// Key is the event's ordering key for this destination ("" when it is unordered or the event lacks the
	// field); Block says whether a final failure blocks later events of the key.
	Key   string
	Block bool
	// Disabled: the destination is disabled (Route.Disabled).
	Disabled bool
	// Err: deciding whether the event matches the destination's filter exceeded the filter's budget (it wraps
	// ErrBudget). The delivery is recorded, never attempted, with Err as its reason: the event's fault, seen
	// in the delivery log, and counted by neither the breaker nor auto-disable.
	Err error
}

// Router matches events to destinations. It is immutable; a change builds a new one.
type Router struct {
	routes []route
}

type route struct {
	Route
	key []string // OrderingKey split; nil = unordered
}

// NewRouter builds a router over routes, in order.
func NewRouter(routes []Route) *Router {
	r := &Router{routes: make([]route, 0, len(routes))}
	for _, rt := range routes {
		if rt.Filter.MatchesAll() {
			// Only a filter with conditions needs the event's data decoded.
			rt.Filter = nil
		}
		x := route{Route: rt}
		if rt.OrderingKey != "" {
			x.key = strings.Split(rt.OrderingKey, ".")
		}
		r.routes = append(r.routes, x)
	}
	return r
}

// Route returns the destinations ev goes to, in route order, with their ordering keys. The event's document
// is built once, and only if a route needs it.
func (r *Router) Route(ev *Event) []Match {
	var (
		doc     map[string]any
		decoded bool
		docErr  error
		out     []Match
	)
	getDoc := func() (map[string]any, error) {
		if !decoded {
			decoded = true
			if ev.Doc != nil {
				doc, docErr = ev.Doc()
			} else {
				docErr = errNoDoc
			}
		}
		return doc, docErr
	}
	for i := range r.routes {
		rt := &r.routes[i]
		if !rt.Topics.Match(ev.Topic) {
			continue
		}
		// A tenant's destination sees only that tenant's events; a tenant-less one sees every tenant's.
		if rt.Tenant != "" && rt.Tenant != ev.Tenant {
			continue
		}
		if !scopeContains(ev.Scope, rt.Scope) {
			continue
		}
		var ferr error
		if rt.Filter != nil {
			d, err := getDoc()
			if err != nil {
				continue // intake validated data as JSON, so an error cannot happen
			}
			var ok bool
			if ok, ferr = rt.Filter.Eval(d); !ok && ferr == nil {
				continue
			}
		}
		m := Match{Name: rt.Name, Disabled: rt.Disabled, Err: ferr}
		if ferr != nil {
			out = append(out, m)
			continue
		}
		if rt.key != nil && !rt.Disabled {
			m.Key, m.Block = orderingValue(rt.key, ev, getDoc), rt.Block
			// On a destination shared by tenants, keys are per tenant: one tenant's blocked or slow key never
			// holds back another tenant's events that happen to carry the same value.
			if m.Key != "" && rt.Tenant == "" && ev.Tenant != "" {
				m.Key = ev.Tenant + "/" + m.Key
			}
		}
		if out == nil {
			// Sized once for a fan-out, instead of growing 1, 2, 4, 8, 16 along it.
			out = make([]Match, 0, min(len(r.routes)-i, 16))
		}
		out = append(out, m)
	}
	return out
}

var errNoDoc = errors.New("the event has no document")

func orderingValue(path []string, ev *Event, doc func() (map[string]any, error)) string {
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
	d, err := doc()
	if err != nil {
		return ""
	}
	v := d["data"]
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
