package intake

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/match"
)

// TestRouterDecodesDataOnlyForFilters: a destination without filter conditions matches without the event's
// data being decoded (the hot path of most configs), while one with a filter still sees the data.
func TestRouterDecodesDataOnlyForFilters(t *testing.T) {
	topics, err := match.CompileTopics([]string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := match.Compile(map[string]any{})
	filter, err := match.Compile(map[string]any{"data": map[string]any{"ok": true}})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter([]config.Destination{
		{Name: "none", TopicsMatch: topics},
		{Name: "empty", TopicsMatch: topics, FilterMatch: empty},
		{Name: "filtered", TopicsMatch: topics, FilterMatch: filter},
	})
	if r.anyFilter != true || r.routes[0].filter != nil || r.routes[1].filter != nil {
		t.Fatalf("routes without conditions keep a filter: %+v", r.routes)
	}
	// Data that would not decode: only a route that needs it can notice.
	bad := &event.Event{Topic: "x", Data: json.RawMessage(`{"ok": tru`)}
	if got := r.Match(bad); !reflect.DeepEqual(got, []string{"none", "empty"}) {
		t.Fatalf("Match(undecodable) = %v", got)
	}
	good := &event.Event{Topic: "x", Data: json.RawMessage(`{"ok": true}`)}
	if got := r.Match(good); !reflect.DeepEqual(got, []string{"none", "empty", "filtered"}) {
		t.Fatalf("Match(ok) = %v", got)
	}
}
