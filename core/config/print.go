package config

import (
	"bytes"
	"reflect"
	"time"

	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// Masked returns the resolved config as YAML with every secret masked (keys, DSNs, sink credentials).
func (c *Config) Masked() ([]byte, error) {
	cp := maskedCopy(reflect.ValueOf(c).Elem(), false).Interface().(Config)
	for i := range cp.Destinations {
		d := &c.Destinations[i]
		if d.SinkConfig == nil {
			continue
		}
		var n yaml.Node
		var v any
		if m, ok := d.SinkConfig.(interface{ Masked() any }); ok {
			// Configs without a Go struct (plugin sinks) mask themselves from their field descriptions.
			v = m.Masked()
		} else {
			v = maskedCopy(reflect.ValueOf(d.SinkConfig), false).Interface()
		}
		if err := n.Encode(v); err != nil {
			return nil, err
		}
		cp.Destinations[i].Config = n
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cp); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

var timeType = reflect.TypeOf(time.Time{})

// maskedCopy deep-copies v, replacing strings under a `secret:"true"` field with their masked form.
func maskedCopy(v reflect.Value, secret bool) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			out.Set(maskedCopy(v.Elem(), secret).Addr())
		}
	case reflect.Interface:
		if !v.IsNil() {
			out.Set(maskedCopy(v.Elem(), secret))
		}
	case reflect.Struct:
		if v.Type() == timeType || v.Type() == nodeType {
			out.Set(v)
			break
		}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			out.Field(i).Set(maskedCopy(v.Field(i), secret || f.Tag.Get("secret") == "true"))
		}
	case reflect.Slice:
		if !v.IsNil() {
			out.Set(reflect.MakeSlice(v.Type(), v.Len(), v.Len()))
			for i := 0; i < v.Len(); i++ {
				out.Index(i).Set(maskedCopy(v.Index(i), secret))
			}
		}
	case reflect.Map:
		if !v.IsNil() {
			out.Set(reflect.MakeMapWithSize(v.Type(), v.Len()))
			it := v.MapRange()
			for it.Next() {
				out.SetMapIndex(it.Key(), maskedCopy(it.Value(), secret))
			}
		}
	case reflect.String:
		if secret {
			out.SetString(sinks.Mask(v.String()))
		} else {
			out.SetString(v.String())
		}
	default:
		out.Set(v)
	}
	return out
}
