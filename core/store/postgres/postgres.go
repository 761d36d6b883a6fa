package postgres

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/core/store"
)

// Defaults of Options.
const (
	DefaultMaxConns = 20
	// DefaultLeaseTTL is how long a lease outlives its holder's last renewal: a dead node's deliveries are
	// claimable by the others this long after it died.
	DefaultLeaseTTL = 30 * time.Second
	// DefaultPoll is the polling backstop of change notifications.
	DefaultPoll = time.Second
)

// Options tune the store. DSN is required.
type Options struct {
	DSN      string
	MaxConns int
	// Schema, when set, is created if missing and used as the search path (tests give each their own).
	Schema string
	Logger *slog.Logger
	Now    func() time.Time
	// LeaseTTL is how far a claim's lease reaches past its last renewal (see DefaultLeaseTTL); leases are
	// renewed every LeaseTTL/3 while this process holds them, up to the lease the caller asked for. A negative
	// value keeps every lease exactly as asked, unrenewed (the plain contract, for the conformance suite).
	LeaseTTL time.Duration
	// Writers is how many group commits may run at once (default MaxConns/4, at least 2), besides the one
	// writer of completions.
	Writers int
	// MaxGroup bounds how many queued operations share one commit (default 256).
	MaxGroup int
	// Poll is how often the change version is read behind LISTEN/NOTIFY (default DefaultPoll).
	Poll time.Duration
	// LeaderEvery is how often a node that is not the leader tries to become it (default 2s).
	LeaderEvery time.Duration
	// Prewarm opens all MaxConns connections in Open and keeps them open, each with the statements of the hot
	// path (appends, completions, claims, lease renewals) prepared and run once on empty input: a node's first
	// commits cost what its later ones do (see warm). Open fails, naming store.max_conns, when PostgreSQL
	// refuses that many connections. `sluice serve` sets it; tests that open many stores at once leave it off.
	Prewarm bool
}

func (o *Options) defaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Writers <= 0 {
		o.Writers = max(2, o.MaxConns/4)
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 256
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.LeaderEvery <= 0 {
		o.LeaderEvery = 2 * time.Second
	}
}

func (o *Options) poolConfig() (*pgxpool.Config, error) {
	if o.DSN == "" {
		return nil, errors.New("store.dsn: is required for the postgres store: postgres://user:password@host:5432/db")
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		// pgx's message may quote the DSN; say only what is wrong with it.
		return nil, errors.New("store.dsn: is not a valid PostgreSQL connection string: use postgres://user:password@host:5432/db?sslmode=…")
	}
	cfg.MaxConns = int32(max(o.MaxConns, 1))
	if o.Prewarm {
		cfg.MinConns = cfg.MaxConns
		cfg.AfterConnect = warm
		// Opened together, the connections would also reach their lifetime together, and the pool would make
		// them all again at once, under load: spread their ends over a quarter of the lifetime.
		if cfg.MaxConnLifetimeJitter == 0 {
			cfg.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 4
		}
	}
	if o.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = o.Schema
	}
	return cfg, nil
}

// Store is the PostgreSQL store.
type Store struct {
	pool *pgxpool.Pool
	// connCfg makes the connections held outside the pool (dedicated).
	connCfg *pgx.ConnConfig
	opts    Options
	ops     chan *op
	// comps carries the completions: they commit apart from the appends (see writer).
	comps chan *op
	wg    sync.WaitGroup
	// node tells this process's change notifications from other nodes'.
	node    string
	channel string
	// nodeID marks the leases this process takes; presence holds the advisory lock keyed by it while the
	// process runs, which is how other nodes tell its leases from a dead node's.
	nodeID   int64
	presence *pgx.Conn
	// firstSeq is the first event seq whose deliveries' ids are made from it (migration 0008): older events'
	// deliveries are found by event_seq.
	firstSeq int64

	closeOnce sync.Once
	closed    chan struct{}
	// closing is held (read) while an operation is queued and taken (write) to close: nothing is queued once
	// the writers may have drained the queue for the last time.
	closing sync.RWMutex
	stop    context.CancelFunc

	holds holds

	commits, grouped atomic.Int64
	commitNanos      atomic.Int64 // nanoseconds the writers spent in commit, summed

	// The writers of s.ops form their groups one at a time (form) and, while another of their groups commits,
	// wait for more operations (gather). inflight counts their commits under way, commitTook is a moving
	// average of a commit's time (ns), and ended is closed (and replaced) each time one ends.
	form       sync.Mutex
	inflight   atomic.Int32
	commitTook atomic.Int64
	endedMu    sync.Mutex
	ended      chan struct{}

	changes changeHub
	leader  leader

	// beforeCommit, set by tests only, runs just before a group's COMMIT (to break its connection there).
	beforeCommit func(tx pgx.Tx)
}

var (
	_ store.Store         = (*Store)(nil)
	_ store.CommitCounter = (*Store)(nil)
)

// stmt is a statement and its arguments; scan, if set, reads the rows it answers.
type stmt struct {
	sql  string
	args []any
	scan func(pgx.Rows) error
}

// run runs st in tx.
func (st stmt) run(ctx context.Context, tx pgx.Tx) error {
	if st.scan == nil {
		_, err := tx.Exec(ctx, st.sql, st.args...)
		return err
	}
	rows, err := tx.Query(ctx, st.sql, st.args...)
	if err != nil {
		return err
	}
	return st.scan(rows)
}

type op struct {
	fn func(ctx context.Context, tx pgx.Tx) error
	// app, set on an Append, lets the appends of a group run as one statement.
	app *appendCall
	// complete, set on a Complete, gives its statements (Complete). A group made only of appends and
	// completions is sent as one pipeline (runBatch).
	complete func(shard int64) []stmt
	// changed marks an operation other nodes must learn of (a hint is sent after its commit).
	changed bool
	// after runs once the commit is durable.
	after func()
	done  chan error
}

// Open connects, applies missing migrations (under an advisory lock) and starts the store's background work.
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts.defaults()
	cfg, err := opts.poolConfig()
	if err != nil {
		return nil, err
	}
	if _, err := Migrate(ctx, opts, false); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	s := &Store{opts: opts, connCfg: cfg.ConnConfig, ops: make(chan *op, 4096), comps: make(chan *op, 256), node: randomID(),
		closed: make(chan struct{}), stop: stop}
	s.holds.m = map[int64]hold{}
	s.ended = make(chan struct{})
	s.nodeID = newToken()
	// The presence lock first: a pool that opens its connections at once (Prewarm) then cannot take the last
	// connection PostgreSQL allows before it.
	if s.presence, err = s.takePresence(ctx); err != nil {
		stop()
		return nil, err
	}
	// What fails from here lets go of the presence lock's connection and the pool.
	fail := func(err error) (*Store, error) {
		stop()
		s.presence.Close(context.Background())
		if s.pool != nil {
			s.pool.Close()
		}
		return nil, err
	}
	schema := opts.Schema
	if schema == "" {
		if err := s.presence.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return fail(unavailable(fmt.Errorf("store: %w", err)))
		}
	}
	s.channel = "sluice_changes." + schema
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return fail(unavailable(fmt.Errorf("store: connect: %w", err)))
	}
	// Before any other use of the pool, so that a refusal is met here and named.
	if opts.Prewarm {
		if err := fillPool(ctx, s.pool, int(cfg.MaxConns)); err != nil {
			return fail(err)
		}
	}
	s.changes.subs = map[chan struct{}]bool{}
	if err := s.pool.QueryRow(ctx, `SELECT version FROM changes`).Scan(&s.changes.seen); err != nil {
		return fail(unavailable(fmt.Errorf("store: read change version: %w", err)))
	}
	if err := s.pool.QueryRow(ctx, `SELECT first_seq FROM delivery_ids`).Scan(&s.firstSeq); err != nil {
		return fail(unavailable(fmt.Errorf("store: read delivery_ids: %w", err)))
	}
	if err := s.premakeAround(ctx); err != nil {
		return fail(unavailable(fmt.Errorf("store: make partitions: %w", err)))
	}
	for range opts.Writers {
		s.wg.Add(1)
		go s.writer(s.ops, true)
	}
	s.wg.Add(1)
	go s.writer(s.comps, false)
	s.wg.Add(5)
	go s.keepPresence(bg)
	go s.renewLeases(bg)
	go s.spillExpired(bg)
	go s.watch(bg, schema)
	go s.lead(bg)
	return s, nil
}

// every runs fn every d until ctx ends, then marks the loop done (s.wg): the shape of the store's background
// loops.
func (s *Store) every(ctx context.Context, d time.Duration, fn func()) {
	defer s.wg.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fn()
	}
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

// newToken returns a claim token: random, non-zero (zero marks "no claim").
func newToken() int64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		if t := int64(binary.LittleEndian.Uint64(b[:]) >> 1); t != 0 {
			return t
		}
	}
}

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("store is closed")

// unavailable marks err as store.ErrUnavailable when it comes from a connection that failed rather than from
// the server refusing a statement.
func unavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "57": // connection exception, operator intervention (shutdown, too many connections)
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		if pgErr.Code == "53300" { // too_many_connections
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		return err
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.As(err, &ne) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// write queues fn for the next group commit and waits until that commit is durable (or known failed).
func (s *Store) write(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	s.closing.RLock()
	select {
	case <-s.closed:
		s.closing.RUnlock()
		return ErrClosed
	default:
	}
	q := s.ops
	if o.complete != nil {
		q = s.comps
	}
	select {
	case q <- o:
		s.closing.RUnlock()
	case <-ctx.Done():
		s.closing.RUnlock()
		return ctx.Err()
	}
	// Once queued, the commit's outcome is what the caller must learn: wait for it regardless of ctx.
	return <-o.done
}

// Group forming. The appends of a node wait a little for company while another of its groups commits: a
// commit has a fixed cost on both sides (a round trip, a transaction, a WAL flush), and several nodes on one
// database each see a share of the load — without the wait, three nodes made 2.3 times as many commits per
// event as one (3.4 operations a group against 8.5), and PostgreSQL spent half as much again per event.
const (
	// minGroup ends the wait: a group this full goes.
	minGroup = 16
	// lingerShare is the longest wait, as a share (in %) of the node's recent commit time: the wait overlaps
	// the commits under way instead of adding to them.
	lingerShare = 50
)

// writer takes the operations of q, runs them in one transaction and commits them together. Several writers
// share s.ops (Options.Writers): while one commits, the next group forms — one group at a time (s.form), so
// the operations queued meanwhile go together rather than one to each idle writer. One more writer takes the
// completions (s.comps), which never wait: the dispatcher writes its outcomes one batch at a time, and each
// batch carries every outcome that came in while the previous one committed.
func (s *Store) writer(q chan *op, linger bool) {
	defer s.wg.Done()
	group := make([]*op, 0, s.opts.MaxGroup)
	shard := newToken() // this writer's row of each pending counter
	for {
		if linger {
			s.form.Lock()
		}
		var first *op
		select {
		case first = <-q:
		case <-s.closed:
			if linger {
				s.form.Unlock()
			}
			for {
				select {
				case o := <-q:
					o.done <- ErrClosed
				default:
					return
				}
			}
		}
		group = append(group[:0], first)
		if !linger {
			group = fill(q, group, s.opts.MaxGroup)
			t0 := time.Now()
			s.commit(withShard(context.Background(), shard), group)
			s.commitNanos.Add(int64(time.Since(t0)))
			continue
		}
		group = s.gather(group)
		s.inflight.Add(1)
		s.form.Unlock()
		t0 := time.Now()
		s.commit(withShard(context.Background(), shard), group)
		took := time.Since(t0)
		s.commitNanos.Add(int64(took))
		s.commitEnded(took)
	}
}

// fill adds what q holds to group, up to n operations, without waiting.
func fill(q chan *op, group []*op, n int) []*op {
	for len(group) < n {
		select {
		case o := <-q:
			group = append(group, o)
		default:
			return group
		}
	}
	return group
}

// gather fills group from s.ops and, while another group of this node commits, waits for more: until the
// group holds minGroup operations, lingerShare of a recent commit's time has passed, or no group of this node
// is committing any more. Nothing waits on an idle database: with no commit under way, the group goes at once.
func (s *Store) gather(group []*op) []*op {
	group = fill(s.ops, group, s.opts.MaxGroup)
	if len(group) >= minGroup || s.inflight.Load() == 0 {
		return group
	}
	wait := time.Duration(s.commitTook.Load()) * time.Duration(lingerShare) / 100
	if wait <= 0 {
		return group
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(group) < minGroup {
		s.endedMu.Lock()
		ended := s.ended
		s.endedMu.Unlock()
		if s.inflight.Load() == 0 {
			break
		}
		select {
		case o := <-s.ops:
			group = fill(s.ops, append(group, o), s.opts.MaxGroup)
			continue
		case <-ended:
			continue
		case <-timer.C:
		case <-s.closed:
		}
		break
	}
	return group
}

// commitEnded records a group's commit time in the moving average and wakes the writer waiting on it.
func (s *Store) commitEnded(took time.Duration) {
	for {
		avg := s.commitTook.Load()
		if s.commitTook.CompareAndSwap(avg, avg+(int64(took)-avg)/8) {
			break
		}
	}
	s.inflight.Add(-1)
	s.endedMu.Lock()
	close(s.ended)
	s.ended = make(chan struct{})
	s.endedMu.Unlock()
}

// commit runs a group in one transaction. Operations are re-runnable: if one fails, each runs again in its
// own transaction, so one bad operation cannot fail its neighbours. A lost connection fails them all with
// store.ErrUnavailable — unless the commit is found to have happened.
func (s *Store) commit(ctx context.Context, group []*op) {
	run := s.runTx
	if batchable(group) {
		run = s.runBatch
	}
	if len(group) > 1 {
		errs, err := run(ctx, group)
		if err == nil && errors.Join(errs...) == nil {
			s.committed(group)
			return
		}
		if err != nil && errors.Is(err, store.ErrUnavailable) {
			for _, o := range group {
				o.done <- err
			}
			return
		}
	}
	for _, o := range group {
		var err error
		// PostgreSQL aborts one of two transactions that wait on each other's rows (two writers inserting the
		// same event ids in opposite orders) and says to run it again: nothing of it was written.
		for try := 1; ; try++ {
			var errs []error
			if errs, err = run(ctx, []*op{o}); err == nil {
				err = errs[0]
			}
			if err == nil || try == maxReruns {
				break
			}
			if noPartition(err) {
				// The clock is past the days made ahead (or the leader has been away): make them, run again.
				if perr := s.premakeAround(ctx); perr != nil {
					s.opts.Logger.Warn("store: make partitions", "err", perr)
					break
				}
				continue
			}
			if !rerunnable(err) {
				break
			}
		}
		if err == nil {
			s.committed([]*op{o})
			continue
		}
		o.done <- err
	}
}

// maxReruns bounds how often one operation runs again after PostgreSQL aborted it as a deadlock victim.
const maxReruns = 5

// rerunnable reports whether PostgreSQL aborted the transaction to break a deadlock or a serialization
// conflict: the transaction wrote nothing and succeeds when run again.
func rerunnable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

func (s *Store) committed(group []*op) {
	s.commits.Add(1)
	s.grouped.Add(int64(len(group)))
	changed := false
	for _, o := range group {
		if o.after != nil {
			o.after()
		}
		changed = changed || o.changed
	}
	if changed {
		// The hint goes after the commit, on its own connection, never inside the hot transaction.
		s.notify()
	}
	for _, o := range group {
		o.done <- nil
	}
}

// batchable reports whether every operation of group can go in one pipeline (runBatch).
func batchable(group []*op) bool {
	for _, o := range group {
		if o.app == nil && o.complete == nil {
			return false
		}
	}
	return true
}

// runBatch runs a group of appends and completions as one pipeline — its transaction id, the appends' statement,
// each completion's statement — in one round trip, committed as one implicit transaction when the server
// reaches its end. A statement that fails rolls all of it back. Duplicates among the appends are answered
// after the commit (from the committed events they duplicate).
func (s *Store) runBatch(ctx context.Context, ops []*op) (errs []error, err error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, unavailable(fmt.Errorf("store: begin: %w", err))
	}
	defer c.Release()
	if s.beforeCommit != nil {
		s.beforeCommit(&groupTx{c: c})
	}
	shard, _ := ctx.Value(shardKey{}).(int64)
	b := &pgx.Batch{}
	b.Queue(`SELECT txid_current()`)
	calls, first := appendsOf(ops)
	var plan *appendPlan
	if len(calls) > 0 {
		plan = s.planAppend(calls, shard)
		b.Queue(appendSQL, plan.args...)
	}
	sts := make([][]stmt, len(ops))
	for i, o := range ops {
		if o.complete != nil {
			sts[i] = o.complete(shard)
			for _, st := range sts[i] {
				b.Queue(st.sql, st.args...)
			}
		}
	}
	errs = make([]error, len(ops))
	br := c.SendBatch(ctx, b)
	var xid int64
	fail := func(at int, err error) ([]error, error) {
		_ = br.Close()
		if err = unavailable(err); errors.Is(err, store.ErrUnavailable) {
			return nil, err
		}
		errs[at] = err
		return errs, nil
	}
	if err := br.QueryRow().Scan(&xid); err != nil {
		return fail(0, fmt.Errorf("store: begin: %w", err))
	}
	var rows pgx.Rows
	if plan != nil {
		if rows, err = br.Query(); err != nil {
			return fail(first, fmt.Errorf("insert events: %w", err))
		}
		// Read now (the results come in order); duplicates are looked up once the batch is closed.
		if err := plan.read(rows); err != nil {
			return fail(first, err)
		}
	}
	for i := range ops {
		for _, st := range sts[i] {
			if st.scan == nil {
				_, err = br.Exec()
			} else if rows, err = br.Query(); err == nil {
				err = st.scan(rows)
			}
			if err != nil {
				return fail(i, fmt.Errorf("complete deliveries: %w", err))
			}
		}
	}
	if err := br.Close(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && !errors.Is(unavailable(err), store.ErrUnavailable) {
			errs[0] = fmt.Errorf("store: commit: %w", err)
			return errs, nil // the server refused it: nothing was written
		}
		if errs, err = s.resolve(xid, err, errs); err != nil {
			return nil, err
		}
	}
	if plan != nil {
		if err := plan.finish(ctx, s.pool); err != nil {
			// Committed, but the answers to duplicates among the appends could not be read: the group fails as
			// a whole (never run again), and a publisher's retry is answered as a duplicate.
			return nil, unavailable(fmt.Errorf("store: read duplicates: %w", err))
		}
	}
	return errs, nil
}

// appendsOf returns the group's appends, in order, and the index in ops of the first (-1 when none).
func appendsOf(ops []*op) ([]*appendCall, int) {
	var calls []*appendCall
	first := -1
	for i, o := range ops {
		if o.app != nil {
			calls = append(calls, o.app)
			if first < 0 {
				first = i
			}
		}
	}
	return calls, first
}

// runTx runs ops in one transaction and commits it unless one failed. err is a begin or commit failure.
func (s *Store) runTx(ctx context.Context, ops []*op) (errs []error, err error) {
	tx, xid, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.c.Release() // a connection left inside a transaction (it broke) is closed, not reused
	errs = make([]error, len(ops))
	failed := false
	// The group's appends go in together, as one statement; should it fail, each runs alone (commit).
	calls, first := appendsOf(ops)
	if len(calls) > 1 {
		if err := s.appendAll(ctx, tx, calls); err != nil {
			errs[first] = unavailable(err)
			_ = tx.Rollback(ctx)
			if errors.Is(errs[first], store.ErrUnavailable) {
				return nil, errs[first]
			}
			return errs, nil
		}
	}
	for i, o := range ops {
		if o.app != nil && len(calls) > 1 {
			continue
		}
		if errs[i] = o.fn(ctx, tx); errs[i] != nil {
			errs[i] = unavailable(errs[i])
			failed = true
			if errors.Is(errs[i], store.ErrUnavailable) {
				_ = tx.Rollback(ctx)
				return nil, errs[i]
			}
			if len(ops) > 1 {
				break
			}
		}
	}
	if failed {
		_ = tx.Rollback(ctx)
		return errs, nil
	}
	if s.beforeCommit != nil {
		s.beforeCommit(tx)
	}
	if err := tx.Commit(ctx); err != nil {
		if errors.Is(err, pgx.ErrTxCommitRollback) {
			return nil, fmt.Errorf("store: commit: %w", err) // the server rolled it back: nothing was written
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && !errors.Is(unavailable(err), store.ErrUnavailable) {
			return nil, fmt.Errorf("store: commit: %w", err) // the server refused it: nothing was written
		}
		// The connection broke (or the server went down) at COMMIT: it may have committed or not.
		return s.resolve(xid, err, errs)
	}
	return errs, nil
}

// groupTx is a group commit's transaction on a connection of the pool, begun in the same round trip that
// reads its id. Operations use Exec, Query, QueryRow and Conn; it has none of pgx.Tx's other methods.
type groupTx struct {
	pgx.Tx
	c *pgxpool.Conn
}

func (t *groupTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.c.Exec(ctx, sql, args...)
}

func (t *groupTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.c.Query(ctx, sql, args...)
}

func (t *groupTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.c.QueryRow(ctx, sql, args...)
}

func (t *groupTx) Conn() *pgx.Conn { return t.c.Conn() }

func (t *groupTx) Rollback(ctx context.Context) error {
	_, err := t.c.Exec(ctx, `ROLLBACK`)
	return err
}

func (t *groupTx) Commit(ctx context.Context) error {
	tag, err := t.c.Exec(ctx, `COMMIT`)
	if err == nil && tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return err
}

// begin takes a connection and begins a transaction on it, reading the transaction's id (to learn whether it
// committed if the connection drops during COMMIT) in the same round trip. The caller releases tx.c.
func (s *Store) begin(ctx context.Context) (*groupTx, int64, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, 0, unavailable(fmt.Errorf("store: begin: %w", err))
	}
	res, err := c.Conn().PgConn().Exec(ctx, `BEGIN; SELECT txid_current()`).ReadAll()
	if err == nil && (len(res) != 2 || len(res[1].Rows) != 1 || len(res[1].Rows[0]) != 1) {
		err = errors.New("BEGIN; SELECT txid_current() answered no id")
	}
	var xid int64
	if err == nil {
		xid, err = strconv.ParseInt(string(res[1].Rows[0][0]), 10, 64)
	}
	if err != nil {
		c.Release()
		return nil, 0, unavailable(fmt.Errorf("store: begin: %w", err))
	}
	return &groupTx{c: c}, xid, nil
}

// resolve learns whether transaction xid committed after the connection broke during COMMIT, asking on a
// fresh connection for a while. Committed: the operations succeeded. Aborted or still unknown: they failed
// (the caller was not told they were stored, and a publisher's retry with the same id is deduplicated if they
// were).
func (s *Store) resolve(xid int64, commitErr error, errs []error) ([]error, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wait := time.NewTimer(0)
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the outcome of a commit is unknown (%w)", store.ErrUnavailable, commitErr)
		case <-wait.C:
		}
		var status *string
		err := s.pool.QueryRow(ctx, `SELECT txid_status($1)`, xid).Scan(&status)
		if err == nil && status != nil {
			switch *status {
			case "committed":
				return errs, nil
			case "aborted":
				return nil, unavailable(fmt.Errorf("store: commit: %w", commitErr))
			}
		}
		wait.Reset(200 * time.Millisecond)
	}
}

// Stats reports how many commits the writers made and how many operations they carried.
func (s *Store) Stats() (commits, ops int64) { return s.commits.Load(), s.grouped.Load() }

// CommitTime implements store.CommitCounter: summed over the writers, which commit side by side.
func (s *Store) CommitTime() time.Duration { return time.Duration(s.commitNanos.Load()) }

// Close stops background work and closes the pool.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Lock()
		close(s.closed)
		s.closing.Unlock()
		s.stop()
		s.wg.Wait()
		// Leases still held stay: they run out (Options.LeaseTTL), or the next node to start releases them.
		if s.presence != nil {
			// Unlocked before the connection closes: the server lets go of a closed session's locks only once its
			// backend has exited, and a node starting just after this one must find it gone.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = s.presence.Exec(ctx, `SELECT pg_advisory_unlock($1)`, s.nodeID)
			cancel()
			s.presence.Close(context.Background())
		}
		s.pool.Close()
	})
	return nil
}

// Ping checks that the store is usable: a small durable write goes through the group commit, as an append.
func (s *Store) Ping(ctx context.Context) error {
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	err := s.write(ctx, &op{fn: func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO health (k, at) VALUES ('ping', $1) ON CONFLICT (k) DO UPDATE SET at = excluded.at`,
			s.opts.Now().UnixNano())
		return err
	}})
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func marshalMap(m map[string]string) []byte {
	if len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m)
	return b
}

func unmarshalMap(b []byte) map[string]string {
	if len(b) == 0 {
		return nil
	}
	var m map[string]string
	_ = json.Unmarshal(b, &m)
	return m
}
