// Package store defines where Sluice keeps events, delivery rows and attempts, and the contract every store
// driver meets: appends are durable when they return (group-committed), pending work survives crashes, and a
// delivery row is the unit the dispatcher claims, attempts and completes.
//
// Drivers live in subpackages (embedded/, postgres/); this package imports only core/event. Every driver passes
// the conformance suite in core/store/storetest, which holds the contract written here to account.
//
// Rules that hold across the methods:
//   - Times a driver stamps (an event's ReceivedAt, a delivery's CreatedAt and UpdatedAt, a new delivery's
//     NextAt, the time ReleaseLeases makes leased deliveries due) come from the driver's clock, which its
//     options let a caller (a test) replace. Times a caller passes (Claim's now, Outcome.NextAt, Retry's now)
//     are stored as given. Times are kept to the microsecond at least and read back in UTC.
//   - Delivery ids grow in the order the rows are made, and events have a store sequence (EventSummary.Seq)
//     that grows in the order they were appended: the lists' cursors count on both.
//   - Event data, metadata and scope are kept byte for byte (Data is not re-encoded).
//   - A "destination" here (NewEvent.Destinations, Delivery.Destination, Claim's destination, filters,
//     DestinationState.Name) is the destination's immutable id, never its name: a new destination reusing a
//     deleted one's name starts with an empty history. Drivers treat it as an opaque string.
//   - After Close every call fails (Close itself may be called again and returns nil).
//
// May import: core/event.
// Must not import: net/http.
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

// ErrConflict is returned when a write clashes with what is stored: a destination name already taken, or a
// retry of a delivery that is being attempted right now.
var ErrConflict = errors.New("conflict")

// ErrUnavailable is returned when the store cannot be reached (a database server down or unreachable) or a
// commit's outcome could not be learned: nothing was acknowledged, and the caller may try again later. The
// HTTP API answers it 503 with Retry-After.
var ErrUnavailable = errors.New("store unavailable")

// ErrIDReused is returned by Append when an event id was already used outside the dedupe window.
var ErrIDReused = errors.New("event id already used")

// ErrFanout refuses an event (AppendResult.Err) that matched more destinations than the store can number
// deliveries for in one event (the PostgreSQL store: 65,536). Publishing it again cannot succeed.
var ErrFanout = errors.New("event matches too many destinations")

// NewEvent is one event to append with the destinations it matched.
type NewEvent struct {
	Event        event.Event
	Destinations []string
	// Leased lists, per destination (same index), whether the caller holds the first attempt in memory. Such a
	// delivery is leased at birth (AppendOptions.Lease), so no scan picks it up while it waits in a queue.
	Leased []bool
	// OrderingKeys holds, per destination (same index), the event's ordering key for that destination ("" =
	// unordered). A delivery with a key is not claimed while an earlier delivery (a lower id) of the same
	// destination and key is pending — leased or not, due or not — or, when OrderingBlock is set for the later
	// delivery, has failed. A skipped or delivered one holds nothing back; a failed one that is retried or
	// replayed is pending again and holds the later ones until it ends.
	OrderingKeys  []string
	OrderingBlock []bool
	// Skipped holds, per destination (same index), a reason to make the delivery skipped at birth ("" =
	// pending as usual): an event that matched a disabled destination still gets its row, with LastError the
	// reason, so a replay after re-enabling sends it. A skipped row is never claimed and holds no key back.
	Skipped []string
	// Test marks the deliveries as test sends (POST /v1/destinations/{id}/test): they show in the delivery
	// log with test set.
	Test bool
}

// AppendOptions tune one Append.
type AppendOptions struct {
	// DedupeWindow is how long an event id is remembered as a duplicate: an id received at most DedupeWindow
	// ago (by the store's clock) is a duplicate; older, it is refused with ErrIDReused.
	DedupeWindow time.Duration
	// Lease is how long a Leased delivery stays reserved to this process: its NextAt is the append time plus
	// Lease, after which any Claim may take it.
	Lease time.Duration
}

// AppendResult answers one NewEvent.
type AppendResult struct {
	ID        string
	Duplicate bool
	// Deliveries holds the delivery rows created, in the order of NewEvent.Destinations. A duplicate answers
	// the rows its first append made (whatever destinations the duplicate named; none are added).
	Deliveries []Delivery
	// Err is set when this event was refused (e.g. ErrIDReused); nothing of it is stored, and the others in
	// the call are unaffected.
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
	// RetryBase is the number of attempts made before the delivery was last requeued by hand (retry or
	// replay): the retry schedule counts from there, so a requeued delivery gets the whole schedule again.
	RetryBase int
	// Test marks a test send.
	Test bool
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
// Attempts counts the recorded attempts; LastError becomes Attempt.Error (so a success clears it); the lease
// ends; UpdatedAt is the store's now.
type Outcome struct {
	DeliveryID int64
	Attempt    Attempt
	Status     Status
	NextAt     time.Time
}

// EventRecord is a stored event with its deliveries (by id) and their attempts.
type EventRecord struct {
	Event      event.Event
	ReceivedAt time.Time
	Deliveries []DeliveryRecord
}

// DeliveryRecord is a delivery with its attempts, in the order of Attempt.N.
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

// DestinationRecord is a destination created over the API. Spec is its JSON form (as the API takes it) with
// secrets sealed; the store does not look inside.
type DestinationRecord struct {
	ID     string
	Name   string
	Tenant string
	Type   string
	Spec   []byte
	// Retiring holds signing secrets replaced by a rotation that still sign until their time (sealed).
	Retiring  []RetiringSecret
	CreatedAt time.Time
	UpdatedAt time.Time
}

// RetiringSecret is a rotated-out secret that keeps signing until Until.
type RetiringSecret struct {
	Secret string    `json:"secret"`
	Until  time.Time `json:"until"`
}

// DestinationState is the operational state of a destination (YAML or API), kept apart from its definition:
// disabled over the API, by auto-disable or by a 410.
type DestinationState struct {
	// Name is the destination's id (a YAML destination's id is its name).
	Name      string
	Enabled   bool
	Reason    string
	UpdatedAt time.Time
}

// EventFilter selects events for a list, newest first. Zero fields do not filter.
type EventFilter struct {
	Topic string
	// Tenant, with TenantSet, selects that tenant's events only ("" = tenant-less events).
	Tenant    string
	TenantSet bool
	// Since and Until bound the time the event was received: Since <= received_at < Until. Since after Until
	// matches nothing.
	Since, Until time.Time
	// Before continues a list: only events older (by store sequence) than this cursor. 0 starts at the newest.
	// Passing the last Seq of a page as the next Before walks every match once, without gaps or repeats.
	Before int64
	// Limit is the page size: <= 0 means 100; drivers cap it at 1001.
	Limit int
}

// EventSummary is one row of an event list.
type EventSummary struct {
	Seq        int64
	Event      event.Event
	ReceivedAt time.Time
}

// DeliveryFilter selects deliveries for a list, newest first. Zero fields do not filter.
type DeliveryFilter struct {
	// Destinations, when non-nil, keeps deliveries to these destinations only (an empty non-nil slice
	// matches nothing; a name given twice counts once).
	Destinations []string
	// Status keeps deliveries in this status; a value that is not one of the four is an error.
	Status  Status
	EventID string
	// Since and Until bound the delivery's creation time: Since <= created_at < Until.
	Since, Until time.Time
	// Before continues a list: only deliveries with an id below this cursor. 0 starts at the newest.
	// Passing the last ID of a page as the next Before walks every match once, without gaps or repeats.
	Before int64
	// Limit is the page size: <= 0 means 100; drivers cap it at 1001.
	Limit int
}

// ReplayFilter selects the deliveries of one destination to requeue.
type ReplayFilter struct {
	Destination string
	// Since and Until bound the delivery's creation time, Since <= created_at < Until (zero = unbounded).
	Since, Until time.Time
	// Statuses to requeue; empty means every final status (delivered, failed, skipped). Pending deliveries
	// are never touched: they are on their way already (Pending in Statuses is ignored). A value that is not
	// one of the four is an error.
	Statuses []Status
}

// Watcher is implemented by a store that several nodes share: Changes receives after another node changed API
// destinations, destination states or subscriptions, so this node reloads them. The channel holds at most one
// signal (several changes may come as one); it stops receiving when ctx ends.
type Watcher interface {
	Changes(ctx context.Context) <-chan struct{}
}

// DueFinder is implemented by a store that can tell, in one call, which destinations have work waiting. The
// dispatcher asks it about its resting lanes (lanes with nothing to do keep no goroutines) so that work it was
// not told of — written by another node, or a claim whose lease ran out — still wakes them.
type DueFinder interface {
	// Due returns those of destinations (no duplicates) that have a pending delivery Claim could take at now,
	// ordering keys aside: due, and unleased or its lease ended. The order is not specified; never nil on
	// success.
	Due(ctx context.Context, destinations []string, now time.Time) ([]string, error)
}

// CommitCounter is implemented by a store that writes by group commit: Stats says how many transactions its
// writer committed and how many operations (appends, completions, …) they carried, since it opened. Their ratio
// is how many operations share a commit. CommitTime is the time its writers have spent on those groups —
// running each group's statements and committing it, the sync or the round trip included — summed over
// writers: per second of the clock it is how busy they are, and the embedded store's one writer near a second
// a second is its ceiling. /metrics shows all three.
type CommitCounter interface {
	Stats() (commits, ops int64)
	CommitTime() time.Duration
}

// Lingerer is implemented by a store whose every commit is costly (an fsync; on PostgreSQL also a round trip and
// a transaction on a server that other nodes share): CompleteLinger is how long the dispatcher may hold outcomes
// nothing waits on so that more of them share one Complete (dispatch.Options.CompleteLinger).
type Lingerer interface {
	CompleteLinger() time.Duration
}

// Leader is implemented by a store that several nodes share: maintenance (retention) runs only on the node
// Leading answers true for, and moves to another node when that one dies.
type Leader interface {
	Leading() bool
}

// Store is implemented by each driver. All methods are safe for concurrent use.
type Store interface {
	// Append stores events and their delivery rows, durably, before it returns. Concurrent callers share
	// commits. Event ids are per tenant: (Tenant, ID) identifies an event, and two tenants' events with the
	// same id are two events. An event (tenant, id) seen within the dedupe window is a duplicate: stored once, answered Duplicate
	// (also when the same id comes twice in one call, or from concurrent calls: exactly one caller is
	// answered as the first). A new delivery is pending, due at the store's now, or leased until now+Lease
	// when NewEvent.Leased says so. The error is for the call as a whole (nothing was stored); an event
	// refused alone says so in its AppendResult.Err.
	Append(ctx context.Context, events []NewEvent, opts AppendOptions) ([]AppendResult, error)
	// Claim leases up to limit pending deliveries of destination that are due at now and not leased, until
	// now+lease, and returns them with their events (Event.OrderingKey set to the delivery's key). It
	// chooses the oldest due first (by NextAt); the order of the returned jobs is not specified. A lease ends
	// at now+lease: from then on (now >= that) the delivery is claimable again, and each job's Delivery.NextAt
	// is that end. Ordering keys hold deliveries back as NewEvent.OrderingKeys says. A delivery whose event is
	// gone (pruned) is not returned. A store several nodes share may keep a shorter lease in the database and
	// renew it while this process lives, up to now+lease (postgres: Options.LeaseTTL), so a dead node's
	// claims come back in seconds rather than when the lease asked for ends.
	Claim(ctx context.Context, destination string, now time.Time, lease time.Duration, limit int) ([]Job, error)
	// NextDue returns when the earliest unleased pending delivery of destination falls due (ok false if none).
	// Leased deliveries are left out, even once their lease has ended: Claim finds those when it polls.
	NextDue(ctx context.Context, destination string) (t time.Time, ok bool, err error)
	// Complete records attempts and moves deliveries on (see Outcome). A delivery no longer pending is left
	// as it is, and an unknown id is ignored. Leases are not checked: an outcome for a pending delivery is
	// applied whoever holds its lease now, so of two workers whose leases overlapped (one ran out) the
	// first to end the delivery wins and the other's outcome is ignored. A store several nodes share
	// (postgres) is stricter across processes: a node whose claim another node took over (its lease ran out)
	// has its outcome ignored, since each claim carries a token.
	Complete(ctx context.Context, outcomes []Outcome) error
	// ReleaseLeases makes every leased pending delivery claimable again, due at the store's now; deliveries
	// without a lease keep their NextAt. A single node calls it at startup, after a crash left leases behind.
	// A store several nodes share (postgres) releases only the leases this process took: other nodes' are
	// live, and a dead node's run out by themselves (so calling it at startup is harmless there).
	ReleaseLeases(ctx context.Context) error
	// SkipPending ends the pending deliveries of a destination, leased or not, as skipped with LastError set
	// to reason (it was disabled or removed), and returns how many. A late outcome for one is ignored.
	SkipPending(ctx context.Context, destination, reason string) (int, error)
	// Event returns one event with its deliveries and attempts; ErrNotFound if unknown. Event ids are unique
	// per tenant: when tenants share an id, the first appended of them is returned (TenantEvent picks one).
	Event(ctx context.Context, id string) (*EventRecord, error)
	// TenantEvent returns the event of this tenant ("" = tenant-less) with this id, as Event does.
	TenantEvent(ctx context.Context, tenant, id string) (*EventRecord, error)
	// PutSubscription creates a subscription or replaces the one of the same Name, durably.
	PutSubscription(ctx context.Context, sub Subscription) error
	// Subscriptions returns every stored subscription (expired ones too: acting on ExpiresAt is the caller's
	// part), oldest first by CreatedAt, then by Name. Callers find a run's subscriptions by CorrelationID.
	Subscriptions(ctx context.Context) ([]Subscription, error)
	// DeleteSubscription removes a subscription; an unknown name is not an error.
	DeleteSubscription(ctx context.Context, name string) error
	// ListEvents returns events matching f, newest first by store sequence (a page of f.Limit), never nil.
	ListEvents(ctx context.Context, f EventFilter) ([]EventSummary, error)
	// ListDeliveries returns deliveries matching f, newest first by id (a page of f.Limit), without attempts,
	// never nil.
	ListDeliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	// Delivery returns one delivery with its attempts; ErrNotFound if unknown.
	Delivery(ctx context.Context, id int64) (*DeliveryRecord, error)
	// Retry requeues one delivery, whatever its status, due at now, with a fresh retry schedule (RetryBase =
	// its attempts so far; Attempts and LastError are kept), and returns it as stored. A pending delivery
	// that is leased (being attempted) answers ErrConflict; ErrNotFound if unknown.
	Retry(ctx context.Context, id int64, now time.Time) (Delivery, error)
	// Replay requeues the deliveries f selects, due at now, each with a fresh retry schedule (as Retry), in
	// small transactions; it returns how many it requeued. Deliveries of other destinations and pending ones
	// are never touched.
	Replay(ctx context.Context, f ReplayFilter, now time.Time) (int, error)
	// Prune deletes up to limit events received before cutoff whose deliveries are all final (none pending;
	// an event without deliveries counts), oldest first, with their deliveries and attempts, in one small
	// transaction; it returns how many events it deleted. A limit <= 0 takes the driver's default batch. No
	// later delivery ever shows a pruned one's attempts, even where the driver reuses its id.
	Prune(ctx context.Context, cutoff time.Time, limit int) (int, error)
	// PendingCounts returns the number of pending deliveries, leased or not, per destination (destinations
	// with none are absent).
	PendingCounts(ctx context.Context) (map[string]int64, error)

	// PutDestination creates or replaces (by ID) an API destination. Names are unique per tenant: a Name
	// another ID of the same Tenant uses answers ErrConflict and stores nothing (another tenant's is no clash); an empty ID or Name is an error. A zero UpdatedAt is the store's now; a
	// zero CreatedAt is the store's now on create and the stored one on replace.
	PutDestination(ctx context.Context, d DestinationRecord) error
	// DeleteDestination removes an API destination; ErrNotFound if unknown.
	DeleteDestination(ctx context.Context, id string) error
	// Destinations returns every API destination, oldest first by CreatedAt (then by when it was first put).
	Destinations(ctx context.Context) ([]DestinationRecord, error)
	// SetDestinationState records (replaces) a destination's operational state by name; an empty Name is an
	// error, a zero UpdatedAt is the store's now.
	SetDestinationState(ctx context.Context, st DestinationState) error
	// DestinationStates returns every recorded state, by name.
	DestinationStates(ctx context.Context) ([]DestinationState, error)
	// DeleteDestinationState forgets a destination's state (it was deleted); an unknown name is not an error.
	DeleteDestinationState(ctx context.Context, name string) error

	// Ping reports whether the store is usable (for /readyz): nil while it can read and write.
	Ping(ctx context.Context) error
	// Close stops the store after the writes in progress; later calls fail, a second Close returns nil.
	Close() error
}
