package sdk_test

import (
	"os"
	"strings"
	"testing"
)

// TestNoGatewayDependencies keeps the SDK a small module: a plugin that imports it must not pull in Sluice's
// gateway or the cloud SDKs Sluice's built-in sinks use.
func TestNoGatewayDependencies(t *testing.T) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, forbidden := range []string{"github.com/sluicehq/sluice ", "github.com/aws/", "cloud.google.com/",
		"gocloud.dev", "github.com/rabbitmq/", "github.com/nats-io/", "modernc.org/sqlite", "google.golang.org/api "} {
		if strings.Contains(string(b), forbidden) {
			t.Errorf("plugins/sdk/go.mod requires %s; the SDK must build on go-plugin, gRPC, protobuf and yaml.v3 alone", strings.TrimSpace(forbidden))
		}
	}
	for _, needed := range []string{"github.com/hashicorp/go-plugin", "google.golang.org/grpc", "google.golang.org/protobuf", "gopkg.in/yaml.v3"} {
		if !strings.Contains(string(b), needed) {
			t.Errorf("plugins/sdk/go.mod lacks %s", needed)
		}
	}
}
