package intake

import (
	"fmt"
	"sort"
	"strings"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
)

// catalog is the topic catalog as intake checks it. It is immutable; a reload builds a new one.
type catalog struct {
	topics   []config.Topic
	byName   map[string]*config.Topic
	names    string // for messages: the first few topic names
	validate bool
}

// SetCatalog swaps the topic catalog (config reload). With validate, unknown topics and data failing a
// topic's schema are refused.
func (in *Intake) SetCatalog(topics []config.Topic, validate bool) {
	c := &catalog{topics: topics, byName: make(map[string]*config.Topic, len(topics)), validate: validate}
	names := make([]string, 0, len(topics))
	for i := range topics {
		c.byName[topics[i].Name] = &topics[i]
		names = append(names, topics[i].Name)
	}
	sort.Strings(names)
	if len(names) > 10 {
		names = append(names[:10], "…")
	}
	c.names = strings.Join(names, ", ")
	in.catalog.Store(c)
}

// Topics returns the topic catalog (GET /v1/topics).
func (in *Intake) Topics() []config.Topic { return in.catalog.Load().topics }

func (c *catalog) check(ev *event.Event, prefix string) error {
	if !c.validate {
		return nil
	}
	t, ok := c.byName[ev.Topic]
	if !ok {
		msg := fmt.Sprintf("topic %q is not in the topic catalog, and this server accepts catalog topics only (intake.validate_topics)", ev.Topic)
		if c.names != "" {
			msg += "; known topics: " + c.names
		}
		return &Error{Kind: ErrUnknownTopic, Field: prefix + "topic", Msg: msg}
	}
	if t.CompiledSchema == nil {
		return nil
	}
	if err := t.CompiledSchema.Validate(ev.Data); err != nil {
		p := refuse(ErrSchemaMismatch, prefix+"data", "does not match the schema of topic %q: %v", ev.Topic, err)
		if se, ok := err.(*config.SchemaError); ok {
			ptr := se.Pointer
			p.Pointer = &ptr
		}
		return p
	}
	return nil
}
