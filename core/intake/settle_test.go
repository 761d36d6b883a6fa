package intake

import (
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"sync"
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

// firstGatedStore holds only the first Append until released.
type firstGatedStore struct {
	store.Store
	once             sync.Once
	entered, release chan struct{}
}

func (g *firstGatedStore) Append(ctx context.Context, evs []store.NewEvent, o store.AppendOptions) ([]store.AppendResult, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.release
	}
	return g.Store.Append(ctx, evs, o)
}

// TestSettleDoesNotHoldUpNewPublishes: while Settle waits for a publish that routed before it, a publish that
// starts afterwards goes through; and Settle called again meanwhile still waits for the first one.
func TestSettleDoesNotHoldUpNewPublishes(t *testing.T) {
	st, err := embedded.Open(filepath.Join(t.TempDir(), "data"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := &firstGatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	disp := dispatch.New(st, dispatch.Options{})
	defer disp.Shutdown(context.Background())
	in := New(g, disp, nil, Options{})
	publish := func() error {
		_, err := in.Publish(context.Background(), []event.Event{{Topic: "x", Data: json.RawMessage(`{}`)}})
		return err
	}
	first := make(chan error, 1)
	go func() { first <- publish() }()
	<-g.entered
	var released atomic.Bool
	settled := make(chan bool, 2)
	for range 2 {
		go func() {
			in.Settle()
			settled <- released.Load()
		}()
	}
	// Once a Settle has retired the first publish's generation it is waiting (or about to) for that publish.
	for {
		in.flightMu.Lock()
		retired := len(in.draining) == 1
		in.flightMu.Unlock()
		if retired {
			break
		}
		runtime.Gosched()
	}
	// Not held up by the waiting Settles (a write lock would hold it until the first publish ends).
	if err := publish(); err != nil {
		t.Fatal(err)
	}
	released.Store(true)
	close(g.release)
	for range 2 {
		if ok := <-settled; !ok {
			t.Fatal("Settle returned while a publish that routed before it was still appending")
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}
