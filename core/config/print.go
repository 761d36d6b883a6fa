package config

import (
	"bytes"
	"reflect"
	"slices"

	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// configSecrets are where the config's own secrets are (keys, DSNs, encryption keys, AMQP URLs), from its
// `secret:"true"` tags.
var configSecrets = schema.SecretsOf(reflect.TypeOf(Config{}))

// Masked returns the resolved config as YAML with every secret masked (keys, DSNs, sink credentials). Each
// destination's config block shows its sink's resolved config (defaults filled in). Masking goes through the
// one secret walker (plugins/sdk/schema), the same the API uses.
func (c *Config) Masked() ([]byte, error) {
	cp := *c
	cp.Destinations = slices.Clone(c.Destinations)
	for i := range cp.Destinations {
		d := &cp.Destinations[i]
		if d.SinkConfig == nil {
			continue
		}
		n, err := sinks.MaskedNode(d.SinkConfig)
		if err != nil {
			return nil, err
		}
		d.Config = *n
	}
	var root yaml.Node
	if err := root.Encode(&cp); err != nil {
		return nil, err
	}
	configSecrets.Mask(&root)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}
