package destinations_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/core/destinations"
)

// TestNoLockAcrossInFlightAttempts: deleting or patching a destination whose attempt is in flight waits for
// that attempt, but holds no lock meanwhile: a lookup of another destination completes while the attempt is
// still blocked at the receiver.
func TestNoLockAcrossInFlightAttempts(t *testing.T) {
	for _, change := range []string{"delete", "patch"} {
		t.Run(change, func(t *testing.T) {
			entered, release, finished := make(chan struct{}, 16), make(chan struct{}), make(chan struct{})
			slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done(): // the attempt timed out: only a lock held across it gets here
				}
				select {
				case <-finished:
				default:
					close(finished)
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer slow.Close()
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			fast := newReceiver(t, 204)
			dir := t.TempDir()
			s := start(t, dir, conf(t, dir, "1h", 0, "1h", yamlDest("other", fast.URL, "*")))
			ctx := context.Background()
			// The attempt's timeout bounds how long a lock held across it could block the lookup below.
			if _, err := s.mgr.Create(ctx, []byte(fmt.Sprintf(`{"name":"slow","type":"webhook","topics":["case.*"],"timeout":"5s","config":{"url":%q,"signing":"none"}}`, slow.URL)), ""); err != nil {
				t.Fatal(err)
			}
			s.publish("case.status_updated")
			<-entered // the attempt is in flight, held by the receiver

			changed := make(chan error, 1)
			go func() {
				if change == "delete" {
					changed <- s.mgr.Delete(ctx, "slow", "")
					return
				}
				_, err := s.mgr.Patch(ctx, "slow", "", []byte(`{"topics":["user.*"]}`))
				changed <- err
			}()
			// The change is decided (visible to readers) and its lane is leaving the dispatcher, waiting for the
			// attempt.
			waitFor(t, "the change to be visible", func() bool {
				v, err := s.mgr.Get("slow", "")
				if change == "delete" {
					return errors.Is(err, destinations.ErrNotFound)
				}
				return err == nil && fmt.Sprint(v.Spec["topics"]) == "[user.*]"
			})
			looked := make(chan error, 1)
			go func() {
				_, err := s.mgr.Get("other", "")
				if err == nil && !slices.Contains(s.mgr.Names(""), "other") {
					err = errors.New("other is not listed")
				}
				looked <- err
			}()
			select {
			case err := <-looked:
				if err != nil {
					t.Fatal(err)
				}
			case err := <-changed:
				t.Fatalf("the %s returned (%v) before the lookup of another destination did", change, err)
			}
			select {
			case <-finished:
				t.Fatalf("the lookup completed only after the in-flight attempt ended: a lock was held across it")
			default:
			}
			close(release)
			if err := <-changed; err != nil {
				t.Fatal(err)
			}
		})
	}
}
