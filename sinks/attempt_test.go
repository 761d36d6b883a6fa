package sinks

import (
	"context"
	"errors"
	"testing"
	"time"
)

type attemptKey struct{}

// An attempt's context answers as context.WithDeadline(WithReport(parent, rep), deadline) would, whether or not
// its Done channel has been made.
func TestAttemptBehavesAsWithDeadline(t *testing.T) {
	parent := context.WithValue(context.Background(), attemptKey{}, "v")
	var rep Report
	deadline := time.Now().Add(time.Hour)
	a := NewAttempt(parent, &rep, deadline)
	if d, ok := a.Deadline(); !ok || !d.Equal(deadline) {
		t.Fatalf("deadline %v %v, want %v", d, ok, deadline)
	}
	if a.Err() != nil || a.Value(attemptKey{}) != "v" {
		t.Fatalf("fresh attempt: err %v, value %v", a.Err(), a.Value(attemptKey{}))
	}
	Note(a, 201, []byte("ok"))
	if rep.StatusCode != 201 || string(rep.Response) != "ok" {
		t.Fatalf("report %+v", rep)
	}
	if p, ok := AttemptParent(a); !ok || p != parent {
		t.Fatalf("AttemptParent = %v, %v", p, ok)
	}
	if _, ok := AttemptParent(parent); ok {
		t.Fatal("AttemptParent of a plain context")
	}
	select {
	case <-a.Done():
		t.Fatal("done before its deadline")
	default:
	}
	a.Release()
	<-a.Done()
	if !errors.Is(a.Err(), context.Canceled) || !errors.Is(context.Cause(a), context.Canceled) {
		t.Fatalf("released: err %v, cause %v", a.Err(), context.Cause(a))
	}

	// Released before Done was ever asked for.
	b := NewAttempt(parent, nil, deadline)
	b.Release()
	if !errors.Is(b.Err(), context.Canceled) || !errors.Is(context.Cause(b), context.Canceled) {
		t.Fatalf("released unmade: err %v, cause %v", b.Err(), context.Cause(b))
	}
	<-b.Done()
}

func TestAttemptEndsAtItsDeadline(t *testing.T) {
	// Never asked for Done: Err and Cause still say the deadline passed.
	past := NewAttempt(context.Background(), nil, time.Now().Add(-time.Millisecond))
	defer past.Release()
	if past.Err() != context.DeadlineExceeded || context.Cause(past) != context.DeadlineExceeded {
		t.Fatalf("past deadline: err %v, cause %v", past.Err(), context.Cause(past))
	}
	<-past.Done()

	// Asked for Done first: its timer closes it.
	soon := NewAttempt(context.Background(), nil, time.Now().Add(20*time.Millisecond))
	defer soon.Release()
	<-soon.Done()
	if soon.Err() != context.DeadlineExceeded {
		t.Fatalf("after the deadline: %v", soon.Err())
	}
	// A child made with the standard library ends with it.
	child, cancel := context.WithCancel(soon)
	defer cancel()
	<-child.Done()
}

func TestAttemptEndsWithItsParent(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	late := time.Now().Add(time.Hour)
	unmade := NewAttempt(parent, nil, late)
	defer unmade.Release()
	made := NewAttempt(parent, nil, late)
	defer made.Release()
	done := made.Done()
	child, stop := context.WithCancel(unmade)
	defer stop()
	never := NewAttempt(parent, nil, late) // Done is never asked for
	defer never.Release()
	shutdown := errors.New("shutting down")
	cancel(shutdown)
	if never.Err() != context.Canceled || context.Cause(never) != shutdown {
		t.Fatalf("never made: err %v, cause %v", never.Err(), context.Cause(never))
	}
	<-done
	<-child.Done()
	<-unmade.Done()
	for _, a := range []*Attempt{made, unmade} {
		if a.Err() != context.Canceled || context.Cause(a) != shutdown {
			t.Fatalf("err %v, cause %v", a.Err(), context.Cause(a))
		}
	}
	// The parent's deadline comes first when it is earlier.
	early := time.Now().Add(time.Minute)
	pd, pcancel := context.WithDeadline(context.Background(), early)
	defer pcancel()
	if d, _ := NewAttempt(pd, nil, late).Deadline(); !d.Equal(early) {
		t.Fatalf("deadline %v, want the parent's %v", d, early)
	}
}
