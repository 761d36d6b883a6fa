package sdk_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/plugins/sdk"
	"github.com/sluicehq/sluice/plugins/sdk/netguard"
	"github.com/sluicehq/sluice/plugins/sdk/sdktest"
)

type dialCfg struct {
	Addr string `yaml:"addr" required:"true"`
}

type nopSink struct{}

func (nopSink) Send(context.Context, []sdk.Event) error { return nil }
func (nopSink) Close(context.Context) error             { return nil }

// sdk.Dialer applies the policy the host sends at Open, in the plugin's own process.
func TestDialerAppliesHostPolicy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := sdktest.Start(t, sdk.New("dialer", func(ctx context.Context, c dialCfg) (sdk.Sink, error) {
		conn, err := sdk.Dialer(ctx).DialContext(ctx, "tcp", c.Addr)
		if err != nil {
			return nil, sdk.Permanent(err)
		}
		conn.Close()
		return nopSink{}, nil
	}))
	block := "addr: " + ln.Addr().String()
	ctx := context.Background()
	if _, err := p.Open(ctx, block); err != nil {
		t.Fatalf("open with loopback allowed: %v", err)
	}
	_, err = p.OpenDestination(ctx, block, sdk.Info{Destination: "d", Network: sdk.Network{Setting: "delivery.network.allow_cidrs"}})
	if err == nil || !strings.Contains(err.Error(), "is loopback") || !strings.Contains(err.Error(), "delivery.network.allow_cidrs") {
		t.Fatalf("open with the default policy = %v, want a loopback refusal", err)
	}
	// In-process, the same rules: no host policy at all is the strict default.
	_, err = sdk.Dialer(context.Background()).DialContext(ctx, "tcp", ln.Addr().String())
	var be *netguard.BlockedError
	if !errors.As(err, &be) {
		t.Fatalf("Dialer without a host policy = %v, want a *BlockedError", err)
	}
}
