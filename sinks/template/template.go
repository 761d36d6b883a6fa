// Package template renders the name templates of Sluice's sinks (routing keys, message groups, object keys)
// for Sluice's own events. The language and the renderer are plugins/sdk/template's, the one plugins use: see
// its package doc for the placeholders.
//
// May import: core/event, plugins/sdk/template.
package template

import (
	"time"

	"github.com/sluicehq/sluice/core/event"
	sdktemplate "github.com/sluicehq/sluice/plugins/sdk/template"
)

// Template is a compiled template.
type Template struct{ t *sdktemplate.Template }

// Error is a template that does not compile, naming the placeholder.
type Error = sdktemplate.Error

// Compile compiles s; an unknown placeholder or an unbalanced brace is an error naming it.
func Compile(s string) (*Template, error) {
	t, err := sdktemplate.Compile(s)
	if err != nil {
		return nil, err
	}
	return &Template{t}, nil
}

// MustCompile is Compile for templates known to be valid; it panics otherwise.
func MustCompile(s string) *Template { return &Template{sdktemplate.MustCompile(s)} }

// String is the template as written.
func (t *Template) String() string { return t.t.String() }

// Static reports whether the template has no placeholders.
func (t *Template) Static() bool { return t.t.Static() }

// Uses reports whether the template has the placeholder name ("tenant", "data", …).
func (t *Template) Uses(name string) bool { return t.t.Uses(name) }

// Render fills the template for one event (see plugins/sdk/template's Render).
func (t *Template) Render(ev *event.Event, batchID string, now time.Time) (string, error) {
	if ev == nil {
		return t.t.Render(nil, batchID, now)
	}
	return t.t.Render(&sdktemplate.Event{ID: ev.ID, Topic: ev.Topic, Tenant: ev.Tenant, Time: ev.Time,
		Metadata: ev.Metadata, Data: ev.Data, OrderingKey: ev.OrderingKey}, batchID, now)
}
