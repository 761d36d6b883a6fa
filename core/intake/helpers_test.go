package intake

import (
	"context"
	"errors"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/match"
)

type nopSink struct{}

func (nopSink) Send(context.Context, []event.Event) error { return nil }
func (nopSink) Close(context.Context) error               { return nil }

const testConfig = `auth: {keys: [{name: a, key: k, role: admin}]}
destinations:
  - {name: all, type: webhook, topics: ["*"], config: {url: "https://example.com/a", signing: none}}
  - {name: cases, type: webhook, topics: ["case.*"], config: {url: "https://example.com/b", signing: none}}
  - name: approved
    type: webhook
    topics: ["case.*"]
    filter: {data: {case: {status: {$in: [approved, rejected]}}}}
    config: {url: "https://example.com/c", signing: none}
  - {name: acme-only, type: webhook, tenant: acme, topics: ["*"], config: {url: "https://example.com/d", signing: none}}
  - {name: wf-1, type: webhook, scope: {workflow_definition_id: wf-1}, topics: ["*"], config: {url: "https://example.com/e", signing: none}}
`

// routerFor routes to a config's enabled destinations, as core/destinations does.
func routerFor(dests []config.Destination) *match.Router {
	var routes []match.Route
	for _, d := range dests {
		if d.IsEnabled() {
			routes = append(routes, match.Route{Name: d.Name, Topics: d.TopicsMatch, Filter: d.FilterMatch,
				Tenant: d.Tenant, Scope: d.Scope, OrderingKey: d.OrderingKey})
		}
	}
	return match.NewRouter(routes)
}

// publishJSON takes one JSON event the way every transport does: decode, admit, publish.
func publishJSON(ctx context.Context, in *Intake, body string) (Result, error) {
	it, err := DecodeEvent(ctx, []byte(body))
	if err == nil {
		err = in.Admit(ctx, &it, "")
	}
	if err != nil {
		return Result{}, err
	}
	res, err := in.Publish(ctx, []event.Event{it.Event})
	if err != nil {
		return Result{}, err
	}
	return res[0], res[0].Err
}

// fieldOf is the field a refusal names.
func fieldOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}
