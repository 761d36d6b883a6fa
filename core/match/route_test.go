package match

import (
	"encoding/json"
	"reflect"
	"testing"
)

func names(ms []Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// docOf is the event document as event.Event.Doc builds it, counting its calls.
func docOf(data string, calls *int) func() (map[string]any, error) {
	return func() (map[string]any, error) {
		*calls++
		var v any
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			return nil, err
		}
		return map[string]any{"data": v}, nil
	}
}

// TestRouterDecodesDataOnlyForFilters: a destination without filter conditions matches without the event's
// data being decoded (the hot path of most configs), while one with a filter still sees the data.
func TestRouterDecodesDataOnlyForFilters(t *testing.T) {
	topics, err := CompileTopics([]string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := Compile(map[string]any{})
	filter, err := Compile(map[string]any{"data": map[string]any{"ok": true}})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter([]Route{
		{Name: "none", Topics: topics},
		{Name: "empty", Topics: topics, Filter: empty},
		{Name: "filtered", Topics: topics, Filter: filter},
	})
	if r.routes[0].Filter != nil || r.routes[1].Filter != nil || r.routes[2].Filter == nil {
		t.Fatalf("routes without conditions keep a filter: %+v", r.routes)
	}
	// Data that would not decode: only a route that needs it can notice.
	calls := 0
	bad := &Event{Topic: "x", Doc: docOf(`{"ok": tru`, &calls)}
	if got := names(r.Route(bad)); !reflect.DeepEqual(got, []string{"none", "empty"}) {
		t.Fatalf("Route(undecodable) = %v", got)
	}
	good := &Event{Topic: "x", Doc: docOf(`{"ok": true}`, &calls)}
	if got := names(r.Route(good)); !reflect.DeepEqual(got, []string{"none", "empty", "filtered"}) {
		t.Fatalf("Route(ok) = %v", got)
	}
	calls = 0
	plain := NewRouter([]Route{{Name: "none", Topics: topics}, {Name: "empty", Topics: topics, Filter: empty}})
	if got := names(plain.Route(&Event{Topic: "x", Doc: docOf(`{}`, &calls)})); len(got) != 2 || calls != 0 {
		t.Fatalf("filterless routes decoded the data %d times (matched %v)", calls, got)
	}
}

// TestRouterDecodesOncePerEvent: however many routes filter on the data or order by it, the event's data is
// decoded once.
func TestRouterDecodesOncePerEvent(t *testing.T) {
	topics, _ := CompileTopics([]string{"case.*"})
	filter, err := Compile(map[string]any{"data": map[string]any{"case": map[string]any{"status": "approved"}}})
	if err != nil {
		t.Fatal(err)
	}
	var routes []Route
	for _, n := range []string{"a", "b", "c"} {
		routes = append(routes, Route{Name: n, Topics: topics, Filter: filter, OrderingKey: "data.case.id", Block: n == "b"})
	}
	routes = append(routes, Route{Name: "by-tenant", Topics: topics, OrderingKey: "tenant"},
		Route{Name: "by-meta", Topics: topics, OrderingKey: "metadata.k"})
	r := NewRouter(routes)
	calls := 0
	ev := &Event{Topic: "case.updated", Tenant: "acme", Metadata: map[string]string{"k": "v"},
		Doc: docOf(`{"case": {"id": 42, "status": "approved"}}`, &calls)}
	got := r.Route(ev)
	// The routes are tenant-less (shared by tenants), so each key is the event's tenant's.
	want := []Match{{Name: "a", Key: "acme/42"}, {Name: "b", Key: "acme/42", Block: true}, {Name: "c", Key: "acme/42"},
		{Name: "by-tenant", Key: "acme/acme"}, {Name: "by-meta", Key: "acme/v"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Route = %+v, want %+v", got, want)
	}
	if calls != 1 {
		t.Fatalf("the data was decoded %d times for one event, want 1", calls)
	}
}

// TestOrderingKeysPerTenantOnSharedDestinations: on a destination shared by tenants, two tenants' events with
// the same key value get different keys (neither waits on the other); a tenant's own destination and
// tenant-less events keep the value as it is.
func TestOrderingKeysPerTenantOnSharedDestinations(t *testing.T) {
	topics, _ := CompileTopics([]string{"*"})
	r := NewRouter([]Route{{Name: "shared", Topics: topics, OrderingKey: "metadata.k"},
		{Name: "own", Topics: topics, Tenant: "acme", OrderingKey: "metadata.k"}})
	key := func(tenant, dest string) string {
		for _, m := range r.Route(&Event{Topic: "x", Tenant: tenant, Metadata: map[string]string{"k": "c-1"}}) {
			if m.Name == dest {
				return m.Key
			}
		}
		return "(no match)"
	}
	if a, g := key("acme", "shared"), key("globex", "shared"); a == g {
		t.Fatalf("acme and globex share the ordering key %q on a shared destination", a)
	}
	if got := key("acme", "own"); got != "c-1" {
		t.Fatalf("key on acme's own destination = %q, want c-1", got)
	}
	if got := key("", "shared"); got != "c-1" {
		t.Fatalf("key of a tenant-less event = %q, want c-1", got)
	}
}
