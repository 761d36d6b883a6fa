package intake

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
)

// gatedStore holds Append until released, and notes when it has returned.
type gatedStore struct {
	store.Store
	entered, release chan struct{}
	appended         atomic.Bool
}

func (g *gatedStore) Append(ctx context.Context, evs []store.NewEvent, o store.AppendOptions) ([]store.AppendResult, error) {
	close(g.entered)
	<-g.release
	res, err := g.Store.Append(ctx, evs, o)
	g.appended.Store(true)
	return res, err
}

// TestSettleWaitsForPublishesRoutedWithTheOldTable: Settle does not return while a publish that routed
// before it is still appending, so ending a removed destination's pending rows after Settle misses none.
func TestSettleWaitsForPublishesRoutedWithTheOldTable(t *testing.T) {
	st, err := embedded.Open(filepath.Join(t.TempDir(), "data"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	disp := dispatch.New(st, dispatch.Options{})
	defer disp.Shutdown(context.Background())
	in := New(g, disp, nil, Options{})
	published := make(chan error, 1)
	go func() {
		_, err := in.Publish(context.Background(), []event.Event{{Topic: "x", Data: json.RawMessage(`{}`)}})
		published <- err
	}()
	<-g.entered
	settled := make(chan bool, 1)
	go func() {
		in.Settle()
		settled <- g.appended.Load()
	}()
	close(g.release)
	if done := <-settled; !done {
		t.Fatal("Settle returned while a publish was still appending")
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
}
