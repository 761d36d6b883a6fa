package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// ParseDestination decodes and validates one destination given as JSON (the API's form) or YAML, exactly as a
// destination in the config file is validated: unknown keys, the topic patterns, the filter, the transform,
// the policy and the sink's own config. Problems come back as field errors whose paths are relative to the
// destination (`config.url`, `filter.data.x`). No ${NAME} expansion happens: API input is taken literally.
func ParseDestination(src []byte, reg *sinks.Registry) (*Destination, []*sinks.FieldError) {
	l := &loader{index: map[string]*yaml.Node{}}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(src)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, []*sinks.FieldError{{Msg: "the body is empty; send the destination as a JSON object"}}
		}
		return nil, []*sinks.FieldError{{Msg: "the body is not valid JSON: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, []*sinks.FieldError{{Msg: "the destination must be a JSON object"}}
	}
	const p = "destination"
	d := &Destination{}
	l.check(root, reflect.TypeOf(d).Elem(), p)
	if len(l.errs) == 0 {
		if err := root.Decode(d); err != nil {
			l.errs = append(l.errs, l.yamlError(err, p))
		}
	}
	if len(l.errs) == 0 {
		l.validateDestination(p, d, map[string]bool{}, reg)
	}
	if len(l.errs) == 0 {
		return d, nil
	}
	out := make([]*sinks.FieldError, len(l.errs))
	for i, e := range l.errs {
		path := strings.TrimPrefix(strings.TrimPrefix(e.Path, p), ".")
		out[i] = &sinks.FieldError{Path: path, Msg: e.Msg}
	}
	return nil, out
}

// EncryptionKeys decodes store.encryption_key and store.previous_encryption_keys: the current key first
// (nil when none is set).
func (s *Store) EncryptionKeys() ([][]byte, error) {
	var out [][]byte
	all := append([]string{s.EncryptionKey}, s.PreviousEncryptionKeys...)
	for i, k := range all {
		if k == "" {
			if i == 0 {
				continue
			}
			return nil, errors.New("store.previous_encryption_keys: an entry is empty")
		}
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(b) != 32 {
			if i > 0 {
				return nil, fmt.Errorf("store.previous_encryption_keys: entry %d must be base64 of 32 bytes", i-1)
			}
			return nil, errors.New("must be base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")
		}
		out = append(out, b)
	}
	return out, nil
}
