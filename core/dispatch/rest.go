package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// A lane's goroutines (its scanner and workers) and its queue of first attempts form its crew, which runs only
// while the lane has work. A crew that has had nothing to do for Options.IdleAfter goes to rest: its goroutines
// end and its queue is freed, so thousands of quiet destinations (per-run subscriptions) cost no goroutines and
// little memory. A resting lane is woken by what would have woken its scanner — a delivery enqueued for it, a
// poke (a retry written, an operator's retry or replay) — and by the dispatcher's one idle watch, which wakes
// it when its next delivery falls due and, each Poll, asks the store (store.DueFinder) which resting lanes
// have work nobody told them of (written by another node, or a lease that ran out). A new lane starts resting;
// the idle watch asks the store at once whether it has work due, and if not, when it next will (a retry
// written before a restart is then sent when due, not at the next Poll after).

// crew is one run of a lane's goroutines and the queues they read.
type crew struct {
	fresh   chan store.Job
	scanned chan store.Job
	rest    chan struct{} // closed when the crew goes to rest: its workers return
}

// wakeUp starts the lane's crew unless it runs already or the lane is stopping.
func (l *lane) wakeUp() {
	l.enq.Lock()
	l.rouse()
	l.enq.Unlock()
}

// rouse returns the running crew, starting one if the lane rests; nil once the lane or the dispatcher is
// stopping. Callers hold enq.
func (l *lane) rouse() *crew {
	if l.c != nil {
		return l.c
	}
	if l.closed || l.stopping() {
		return nil
	}
	select {
	case <-l.d.stopping:
		return nil
	default:
	}
	c := &crew{fresh: make(chan store.Job, l.d.opts.FreshQueue), scanned: make(chan store.Job), rest: make(chan struct{})}
	l.c = c
	l.resting.Store(false)
	l.d.idle.drop(l)
	n := 1 + l.dest.Policy.Concurrency
	l.alive.Add(int32(n))
	l.d.wg.Add(n)
	l.wg.Add(n)
	go l.scan(c)
	for i := 0; i < l.dest.Policy.Concurrency; i++ {
		go l.work(c)
	}
	return c
}

// start readies a new lane: it rests until there is work, which the idle watch looks for at once. A store
// that cannot say which lanes have work (no store.DueFinder) gets a running crew, which scans at once.
func (l *lane) start() {
	if _, ok := l.d.store.(store.DueFinder); ok {
		l.d.idle.add(l, time.Time{}, true)
		return
	}
	l.wakeUp()
}

// done marks one of the lane's goroutines finished; the last of a crew that went to rest tells OnIdle.
func (l *lane) done() {
	if l.alive.Add(-1) == 0 && l.resting.Load() && !l.stopping() && l.d.opts.OnIdle != nil {
		l.d.opts.OnIdle(l.dest.Name)
	}
	l.wg.Done()
	l.d.wg.Done()
}

// rest sends crew c to rest if the lane still has nothing in hand: no reservation or queued first attempt, no
// job with a worker, no poke waiting. due is when its next delivery falls due (zero: none). It reports whether
// the crew rests; the scanner then returns.
func (l *lane) rest(c *crew, due time.Time) bool {
	l.enq.Lock()
	defer l.enq.Unlock()
	if l.c != c || l.stopping() || len(l.slots) > 0 || l.taken.Load() != l.finished.Load() {
		return false
	}
	l.resting.Store(true)
	select {
	case <-l.wake: // a poke came (it saw the lane awake): stay, and let the scanner see it
		l.resting.Store(false)
		select {
		case l.wake <- struct{}{}:
		default: // another poke filled it meanwhile
		}
		return false
	default:
	}
	l.c = nil
	close(c.rest)
	l.d.idle.add(l, due, false)
	return true
}

// idleWatch is a scanner's view of whether its lane has been idle for Options.IdleAfter.
type idleWatch struct {
	since time.Time
	taken int64
}

// check reports whether the lane has had nothing to do for IdleAfter; when not, how long until it may have.
// busy says the scanner itself is waiting on something (the breaker, due work it cannot claim yet).
func (q *idleWatch) check(l *lane, busy bool) (time.Duration, bool) {
	after := l.d.opts.IdleAfter
	if after < 0 {
		return l.d.opts.Poll, false
	}
	now := l.d.opts.Now()
	t := l.taken.Load()
	if busy || q.since.IsZero() || t != q.taken || t != l.finished.Load() || len(l.slots) > 0 || l.ctl.isOpen() {
		q.since, q.taken = now, t
		return max(after, time.Millisecond), false
	}
	if left := q.since.Add(after).Sub(now); left > 0 {
		return max(left, time.Millisecond), false
	}
	return 0, true
}

// idler holds the resting lanes and when each is next due.
type idler struct {
	mu    sync.Mutex
	lanes map[*lane]time.Time // resting lane → when its next delivery falls due (zero: none known)
	check []*lane             // new lanes to ask the store about at once
	kick  chan struct{}
}

func newIdler() *idler {
	return &idler{lanes: map[*lane]time.Time{}, kick: make(chan struct{}, 1)}
}

// add registers a resting lane; check asks the store about it at once.
func (w *idler) add(l *lane, due time.Time, check bool) {
	w.mu.Lock()
	w.lanes[l] = due
	if check {
		w.check = append(w.check, l)
	}
	w.mu.Unlock()
	if check || !due.IsZero() {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// drop forgets a lane (it woke, or stopped).
func (w *idler) drop(l *lane) {
	w.mu.Lock()
	delete(w.lanes, l)
	w.mu.Unlock()
}

// resting reports how many lanes rest (tests).
func (w *idler) resting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lanes)
}

// watchIdle wakes resting lanes: each when its next delivery falls due, and every Poll those the store says
// have work (when it can say). It is one goroutine for the whole dispatcher.
func (d *Dispatcher) watchIdle() {
	finder, _ := d.store.(store.DueFinder)
	timer := time.NewTimer(d.opts.Poll)
	defer timer.Stop()
	lastSweep := d.opts.Now()
	for {
		select {
		case <-d.stopping:
			return
		case <-timer.C:
		case <-d.idle.kick:
		}
		now := d.opts.Now()
		sweep := now.Sub(lastSweep) >= d.opts.Poll
		if sweep {
			lastSweep = now
		}
		next := now.Add(d.opts.Poll)
		var wake, ask []*lane
		d.idle.mu.Lock()
		for l, due := range d.idle.lanes {
			switch {
			case due.IsZero():
			case !due.After(now):
				wake = append(wake, l)
				continue
			case due.Before(next):
				next = due
			}
			if sweep {
				ask = append(ask, l)
			}
		}
		fresh := d.idle.check
		if !sweep {
			ask = append(ask, fresh...)
		}
		d.idle.check = nil
		d.idle.mu.Unlock()
		for _, l := range wake {
			l.wakeUp()
		}
		var woken map[*lane]bool // nil when none was asked: reads as empty
		if finder != nil && len(ask) > 0 {
			woken = d.wakeDue(finder, ask, now)
		}
		// A new lane with nothing due yet may have work due later (a retry written before a restart): learn
		// when, so it is woken then rather than at the first sweep after.
		for _, l := range fresh {
			if woken[l] {
				continue
			}
			if due, ok := d.learnDue(l); ok && due.Before(next) {
				next = due
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(next.Sub(d.opts.Now()), time.Millisecond))
	}
}

// learnDue records when a resting lane's next delivery falls due, asking the store, unless the lane woke
// meanwhile or its due time is known already. It returns that time.
func (d *Dispatcher) learnDue(l *lane) (time.Time, bool) {
	next, ok, err := d.store.NextDue(context.Background(), l.dest.Name)
	if err != nil {
		d.log.Error("find next due delivery", "destination", l.dest.Name, "err", err)
		return time.Time{}, false
	}
	if !ok {
		return time.Time{}, false
	}
	d.idle.mu.Lock()
	defer d.idle.mu.Unlock()
	due, resting := d.idle.lanes[l]
	if !resting || !due.IsZero() {
		return time.Time{}, false
	}
	d.idle.lanes[l] = next
	return next, true
}

// wakeDue asks the store which of lanes have work, wakes those, and returns them.
func (d *Dispatcher) wakeDue(finder store.DueFinder, lanes []*lane, now time.Time) map[*lane]bool {
	byName := make(map[string]*lane, len(lanes))
	names := make([]string, 0, len(lanes))
	for _, l := range lanes {
		if _, dup := byName[l.dest.Name]; !dup {
			names = append(names, l.dest.Name)
		}
		byName[l.dest.Name] = l
	}
	due, err := finder.Due(context.Background(), names, now)
	if err != nil {
		d.log.Error("find resting destinations with due deliveries", "err", err)
		return nil
	}
	woken := make(map[*lane]bool, len(due))
	for _, name := range due {
		if l := byName[name]; l != nil {
			l.wakeUp()
			woken[l] = true
		}
	}
	return woken
}
