package destinations

import (
	"context"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/sinks"
)

type credsConfig struct {
	URL   string `yaml:"url" secret:"true"`
	Queue string `yaml:"queue"`
	Auth  struct {
		Token string `yaml:"token" secret:"true"`
	} `yaml:"auth"`
	Keys []string `yaml:"keys" secret:"true"`
}

func (*credsConfig) Validate() error { return nil }

// TestEachSecretFindsEverySecretField: sealing finds secret fields of any sink type — a plain string, one
// nested in a block, and a list — and leaves the others alone.
func TestEachSecretFindsEverySecretField(t *testing.T) {
	reg := sinks.NewRegistry(sinks.Spec{Type: "creds", Config: func() sinks.Config { return &credsConfig{} },
		New: func(context.Context, sinks.Config, sinks.Env) (sinks.Sink, error) { return nil, nil }})
	spec := map[string]any{"type": "creds", "config": map[string]any{
		"url": "amqp://u:p@h/", "queue": "q", "auth": map[string]any{"token": "t0k"}, "keys": []any{"k1", "k2"},
	}}
	var paths []string
	walkSecretPaths(reg, spec, func(path, s string) { paths = append(paths, path+"="+s) })
	want := []string{"config.url=amqp://u:p@h/", "config.auth.token=t0k", "config.keys[0]=k1", "config.keys[1]=k2"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("secret paths %v, want %v", paths, want)
	}
	walkSecrets(reg, spec, func(s string) string { return "sealed(" + s + ")" })
	c := spec["config"].(map[string]any)
	if c["url"] != "sealed(amqp://u:p@h/)" || c["queue"] != "q" || c["auth"].(map[string]any)["token"] != "sealed(t0k)" ||
		c["keys"].([]any)[1] != "sealed(k2)" {
		t.Fatalf("after sealing: %v", c)
	}
}
