package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/plugins/sdk/wire"
	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// spec adapts the plugin to the sink registry.
func (p *Plugin) spec() sinks.Spec {
	doc := p.desc.Doc
	if doc == "" {
		doc = "plugin sink"
	}
	return sinks.Register(p.name, doc, func() pluginConfig { return pluginConfig{refKey: p} }, p.newSink)
}

// pluginConfig is a plugin destination's `config:` block. It is a map so the config loader indexes every key
// of the block by path (the plugin's field errors then point at their own YAML lines) and leaves checking
// keys and types to the plugin, which knows its struct. The entry under refKey ties it to its plugin; it is
// never sent, printed or encoded.
type pluginConfig map[string]configValue

// configValue is a distinct empty interface so nested mappings decode as plain maps, not as pluginConfig.
type configValue interface{}

const refKey = "\x00sluice-plugin"

var (
	_ sinks.Config   = pluginConfig(nil)
	_ yaml.Marshaler = pluginConfig(nil)
	_ json.Marshaler = pluginConfig(nil)
)

func (c pluginConfig) plugin() *Plugin {
	p, _ := c[refKey].(*Plugin)
	return p
}

// block returns the block as the plugin reads it: a YAML mapping, secrets included.
func (c pluginConfig) block() []byte {
	m := make(map[string]any, len(c))
	for k, v := range c {
		if k != refKey {
			m[k] = v
		}
	}
	b, err := yaml.Marshal(m)
	if err != nil { // values came from YAML; they encode back
		return nil
	}
	return b
}

// Validate asks the plugin to check the block: unknown keys, types, required fields and its own rules.
func (c pluginConfig) Validate() error {
	p := c.plugin()
	if p == nil {
		return sinks.Errorf("", "this block does not belong to a loaded plugin")
	}
	if p.loadErr != nil {
		return nil // the plugins[] entry reports why the plugin did not load
	}
	pr := p.current()
	if pr == nil {
		return sinks.Errorf("", "plugin %s is restarting; cannot check this block now", p.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.host.opts.StartTimeout)
	defer cancel()
	problems, err := pr.rpc.Validate(ctx, c.block())
	if err != nil {
		return sinks.Errorf("", "plugin %s could not check this block: %v", p.name, err)
	}
	return problems
}

// Fields describes the block, for `sluice sinks describe`.
func (c pluginConfig) Fields() []sinks.Field {
	if p := c.plugin(); p != nil {
		return p.desc.Fields
	}
	return nil
}

// Secrets are the fields the plugin marks secret.
func (c pluginConfig) Secrets() sinks.Secrets { return schema.SecretsIn(c.Fields()) }

// Tree is the block as generic values with the plugin's defaults filled in where the block leaves a field
// out, so `validate --print` and the API show what the plugin runs with, as they do for built-in sinks.
// Secrets are in clear: print it only through sinks.MaskSecrets.
func (c pluginConfig) Tree() any {
	out := map[string]any{}
	for k, v := range c {
		if k != refKey {
			out[k] = v
		}
	}
	for _, f := range c.Fields() {
		if f.Default == "" {
			continue
		}
		m, key := out, f.Name
		parts := strings.Split(f.Name, ".")
		for _, part := range parts[:len(parts)-1] {
			next, ok := m[part].(map[string]any)
			if !ok {
				if m[part] != nil {
					m = nil
					break
				}
				next = map[string]any{}
				m[part] = next
			}
			m = next
		}
		key = parts[len(parts)-1]
		if m == nil {
			continue
		}
		if _, given := m[key]; given {
			continue
		}
		var v any = f.Default
		if f.Type != "string" && f.Type != "duration" {
			// The default is written as YAML ("3", "true", "[a, b]"), as the SDK decodes it.
			if err := yaml.Unmarshal([]byte(f.Default), &v); err != nil {
				v = f.Default
			}
		}
		m[key] = v
	}
	return out
}

// Masked returns the block with its defaults and every field the plugin marks secret masked.
func (c pluginConfig) Masked() any { return sinks.MaskSecrets(c) }

// MarshalYAML shows the block masked: a plugin config is never encoded with its secrets by accident.
func (c pluginConfig) MarshalYAML() (any, error) { return c.Masked(), nil }

// MarshalJSON shows the block masked, as MarshalYAML.
func (c pluginConfig) MarshalJSON() ([]byte, error) { return json.Marshal(c.Masked()) }

// sink is a destination's sink inside a plugin process. It opens itself again on each new process.
type sink struct {
	p      *Plugin
	params wire.OpenParams

	mu     sync.Mutex
	gen    uint64 // the process generation handle belongs to
	handle uint64
	open   bool
	closed bool
	limits sinks.Limits
}

var (
	_ sinks.Sink    = (*sink)(nil)
	_ sinks.Limiter = (*sink)(nil)
)

// newSink builds a destination's sink. Only a config the plugin refuses fails it: a plugin that is
// restarting, or a sink whose server is down, is opened again on each Send until it works, so Sluice starts
// and keeps the events.
func (p *Plugin) newSink(ctx context.Context, c pluginConfig, env sinks.Env) (sinks.Sink, error) {
	if p.loadErr != nil {
		return nil, fmt.Errorf("plugin %s is not loaded: %w", p.name, p.loadErr)
	}
	p.addDestination(env.Destination)
	s := &sink{p: p, limits: p.desc.Limits, params: wire.OpenParams{Config: c.block(),
		Destination: env.Destination, UserAgent: env.UserAgent, Timeout: env.Timeout, Network: networkOf(env)}}
	if pr := p.current(); pr != nil {
		if _, err := s.opened(ctx, pr); err != nil {
			var fe *sinks.FieldError
			if errors.As(err, &fe) {
				return nil, err
			}
			p.log.Warn("plugin could not open the destination's sink yet; trying again with each delivery",
				"destination", env.Destination, "err", err.Error())
		}
	}
	return s, nil
}

// opened returns the sink's handle in process pr, opening it there first if needed.
func (s *sink) opened(ctx context.Context, pr *proc) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, sinks.Retryable(fmt.Errorf("plugin %s: the sink of destination %s is closed", s.p.name, s.params.Destination), 0)
	}
	if s.open && s.gen == pr.gen {
		return s.handle, nil
	}
	o, err := pr.rpc.Open(ctx, s.params)
	if err != nil {
		return 0, err
	}
	s.open, s.gen, s.handle = true, pr.gen, o.Handle
	if o.Limits != nil {
		s.limits = *o.Limits
	}
	return s.handle, nil
}

// Send delivers through the plugin. While the plugin restarts, and for sends its death cut short, the error
// is retryable.
func (s *sink) Send(ctx context.Context, batch []event.Event) error {
	if len(batch) == 0 {
		return nil
	}
	pr := s.p.current()
	if pr == nil {
		return sinks.Retryable(fmt.Errorf("plugin %s is restarting", s.p.name), 0)
	}
	h, err := s.opened(ctx, pr)
	if err != nil {
		return err
	}
	in := make([]wire.Event, len(batch))
	for i := range batch {
		e := &batch[i]
		in[i] = wire.Event{ID: e.ID, Topic: e.Topic, Time: e.Time, Tenant: e.Tenant, Metadata: e.Metadata,
			Scope: e.Scope, CorrelationID: e.CorrelationID, Data: e.Data, Body: e.Body}
	}
	rep, err := pr.rpc.Send(ctx, h, in)
	if rep != nil {
		sinks.Note(ctx, rep.StatusCode, rep.Response)
	}
	if errors.Is(err, wire.ErrUnknownHandle) {
		s.mu.Lock()
		s.open = false
		s.mu.Unlock()
	}
	return err
}

// Close closes the sink in the plugin; safe after a failed open and while a Send runs.
func (s *sink) Close(ctx context.Context) error {
	s.mu.Lock()
	open, gen, h := s.open, s.gen, s.handle
	s.open, s.closed = false, true
	s.mu.Unlock()
	pr := s.p.current()
	if !open || pr == nil || pr.gen != gen {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pr.rpc.Close(ctx, h)
}

// Limits are what the plugin declared (or the sink's own, from Open).
func (s *sink) Limits() sinks.Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}

// networkOf is the destination's network policy as the plugin's sdk.Dialer applies it: the same allow list
// and proxy the built-in sinks dial under. Without one (tests), the plugin gets the strict default.
func networkOf(env sinks.Env) *wire.Network {
	if env.Network == nil {
		return nil
	}
	g := env.Network.Guard()
	n := &wire.Network{Setting: g.Setting()}
	for _, p := range g.Allowed() {
		n.AllowCIDRs = append(n.AllowCIDRs, p.String())
	}
	if p := env.Network.Proxy(); p != nil {
		n.Proxy = p.String()
	}
	return n
}
