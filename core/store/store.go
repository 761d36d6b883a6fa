// Package store defines where Sluice keeps events, delivery rows and attempts, and the contract every store
// driver meets: appends are durable when they return (group-committed), pending work survives crashes, and a
// delivery row is the unit the dispatcher claims, attempts and completes.
//
// Drivers live in subpackages (embedded/, postgres/); this package imports only core/event.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/core/event"
)

// Status is where a delivery stands.
type Status string

const (
	Pending   Status = "pending"
	Delivered Status = "delivered"
	Failed    Status = "failed"
	Skipped   Status = "skipped"
)

// ErrNotFound is returned for an unknown event or delivery id.
var ErrNotFound = errors.New("not found")

// ErrIDReused is returned by Append when an event id was already used outside the dedupe window.
var ErrIDReused = errors.New("event id already used")

// NewEvent is one event to append with the destinations it matched.
type NewEvent struct {
	Event        event.Event
	Destinations []string
	// Leased lists, per destination (same index), whether the caller holds the first attempt in memory. Such a
	// delivery is leased at birth (AppendOptions.Lease), so no scan picks it up while it waits in a queue.
	Leased []bool
	// OrderingKeys holds, per destination (same index), the event's ordering key for that destination ("" =
	// unordered). A delivery with a key is not claimed while an earlier delivery of the same destination and
	// key is pending — or, when OrderingBlock is set for it, has failed.
	OrderingKeys  []string
	OrderingBlock []bool
}

// AppendOptions tune one Append.
type AppendOptions struct {
	// DedupeWindow is how long an event id is remembered as a duplicate.
	DedupeWindow time.Duration
	// Lease is how long a Leased delivery stays reserved to this process.
	Lease time.Duration
}

// AppendResult answers one NewEvent.
type AppendResult struct {
	ID        string
	Duplicate bool
	// Deliveries holds the delivery rows created (nil for a duplicate).
	Deliveries []Delivery
	// Err is set when this event was refused (e.g. ErrIDReused); the others in the call are unaffected.
	Err error
}

// Delivery is one event's journey to one destination.
type Delivery struct {
	ID          int64
	EventID     string
	Destination string
	Status      Status
	Attempts    int
	NextAt      time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
	LastError   string
	OrderingKey string
}

// Attempt is one try of a delivery.
type Attempt struct {
	DeliveryID int64
	N          int
	At         time.Time
	Duration   time.Duration
	StatusCode int
	Error      string
	Response   []byte
}

// Job is a claimed delivery with its event, ready to send.
type Job struct {
	Delivery Delivery
	Event    event.Event
}

// Outcome completes one attempt: the attempt is recorded and the delivery moves to Status; a Pending outcome is
// a retry at NextAt. An Attempt with N == 0 records no attempt (a delivery skipped without being tried).
type Outcome struct {
	DeliveryID int64
	Attempt    Attempt
	Status     Status
	NextAt     time.Time
}

// EventRecord is a stored event with its deliveries and their attempts.
type EventRecord struct {
	Event      event.Event
	ReceivedAt time.Time
	Deliveries []DeliveryRecord
}

// DeliveryRecord is a delivery with its attempts.
type DeliveryRecord struct {
	Delivery
	AttemptLog []Attempt
}

// Subscription is a per-run webhook destination an event registered (DESIGN §4), kept in the store so it
// outlives a restart. Name is its destination name; deliveries to it are ordinary delivery rows.
type Subscription struct {
	Name          string
	CorrelationID string
	Tenant        string
	URL           string
	Topics        []string
	// Secret signs its requests (Standard Webhooks); empty sends them unsigned.
	Secret    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Store is implemented by each driver. All methods are safe for concurrent use.
type Store interface {
	// Append stores events and their delivery rows, durably, before it returns. Concurrent callers share
	// commits. An event id seen within the dedupe window is a duplicate: stored once, answered Duplicate.
	Append(ctx context.Context, events []NewEvent, opts AppendOptions) ([]AppendResult, error)
	// Claim leases up to limit pending deliveries of destination that are due at now and not leased, until
	// now+lease, and returns them with their events, oldest due first.
	Claim(ctx context.Context, destination string, now time.Time, lease time.Duration, limit int) ([]Job, error)
	// NextDue returns when the earliest unleased pending delivery of destination falls due (ok false if none).
	NextDue(ctx context.Context, destination string) (t time.Time, ok bool, err error)
	// Complete records attempts and moves deliveries on. A delivery no longer pending is left as it is.
	Complete(ctx context.Context, outcomes []Outcome) error
	// ReleaseLeases makes every leased delivery claimable again; a single node calls it at startup, after a
	// crash left leases behind.
	ReleaseLeases(ctx context.Context) error
	// SkipPending ends the pending deliveries of a destination as skipped (it was disabled or removed).
	SkipPending(ctx context.Context, destination, reason string) (int, error)
	// Event returns one event with its deliveries and attempts.
	Event(ctx context.Context, id string) (*EventRecord, error)
	// PutSubscription creates a subscription or replaces the one of the same Name, durably.
	PutSubscription(ctx context.Context, sub Subscription) error
	// Subscriptions returns every stored subscription (expired ones too), oldest first.
	Subscriptions(ctx context.Context) ([]Subscription, error)
	// DeleteSubscription removes a subscription; an unknown name is not an error.
	DeleteSubscription(ctx context.Context, name string) error
	// Ping reports whether the store is usable (for /readyz).
	Ping(ctx context.Context) error
	Close() error
}
