package heartbeat

import (
	"container/heap"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// DefaultConcurrency is the number of keys fired at once when
// Config.Concurrency is not positive.
const DefaultConcurrency = 8

// Config configures a [Scheduler].
type Config struct {
	// Concurrency bounds how many keys fire at once; <= 0 means
	// [DefaultConcurrency].
	Concurrency int
	// Now is the clock; nil means time.Now. It must advance with the time
	// package's timers (it is meant for tests and clock offsets).
	Now func() time.Time
}

// Func is the work for a key that came due. It runs on one of the
// scheduler's workers with Run's context. A key fires once per Set: to fire
// again, Func (or anyone) calls Set for the key.
type Func[K comparable] func(ctx context.Context, key K)

// ErrRunning is returned by Run when the scheduler is already running.
var ErrRunning = errors.New("heartbeat: scheduler already running")

type entry[K comparable] struct {
	key   K
	due   time.Time
	seq   uint64 // Set order, to fire equal due times first come first served
	index int    // in the heap; -1 when out of it

	firing     bool
	pending    bool // while firing: Set was called, due is the next due time
	pendingDue time.Time
}

type entryHeap[K comparable] []*entry[K]

func (h entryHeap[K]) Len() int { return len(h) }
func (h entryHeap[K]) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h entryHeap[K]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *entryHeap[K]) Push(x any) {
	e := x.(*entry[K])
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap[K]) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

// Scheduler fires keys when they come due. It is safe for concurrent use;
// Set, Remove, Due and Len may be called from Func.
type Scheduler[K comparable] struct {
	fire        Func[K]
	now         func() time.Time
	concurrency int
	wake        chan struct{}

	mu       sync.Mutex
	entries  map[K]*entry[K]
	heap     entryHeap[K]
	seq      uint64
	inflight int
	pending  int // firing entries with a pending Set
	running  bool
}

// New returns a Scheduler that calls fire for each key that comes due, once
// [Scheduler.Run] runs.
func New[K comparable](c Config, fire Func[K]) *Scheduler[K] {
	s := &Scheduler[K]{
		fire:        fire,
		now:         c.Now,
		concurrency: c.Concurrency,
		wake:        make(chan struct{}, 1),
		entries:     make(map[K]*entry[K]),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.concurrency <= 0 {
		s.concurrency = DefaultConcurrency
	}
	return s
}

func (s *Scheduler[K]) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run fires due keys, in due order, on at most Concurrency workers, until ctx
// ends; it then waits for the keys being fired to return and returns nil.
// Keys stay scheduled across runs. Run returns [ErrRunning] if another Run
// is in progress.
func (s *Scheduler[K]) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return ErrRunning
	}
	s.running = true
	s.mu.Unlock()

	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer func() {
		timer.Stop()
		wg.Wait()
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	for {
		if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		now := s.now()
		for s.inflight < s.concurrency && len(s.heap) > 0 && !s.heap[0].due.After(now) {
			e := heap.Pop(&s.heap).(*entry[K])
			e.firing = true
			s.inflight++
			wg.Go(func() { s.fireOne(ctx, e) })
		}
		wait := time.Duration(-1)
		if s.inflight < s.concurrency && len(s.heap) > 0 {
			wait = s.heap[0].due.Sub(now)
		}
		s.mu.Unlock()

		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		}
	}
}

func (s *Scheduler[K]) fireOne(ctx context.Context, e *entry[K]) {
	defer func() {
		s.mu.Lock()
		s.inflight--
		e.firing = false
		if e.pending {
			e.pending = false
			s.pending--
			e.due = e.pendingDue
			e.pendingDue = time.Time{}
			heap.Push(&s.heap, e)
		} else {
			delete(s.entries, e.key)
		}
		s.mu.Unlock()
		s.poke()
	}()
	s.fire(ctx, e.key)
}

// Set schedules key to fire at due, or moves it there if it is already
// scheduled. A due time in the past fires as soon as a worker is free. If the
// key is firing, the new due time takes effect when that firing returns.
func (s *Scheduler[K]) Set(key K, due time.Time) {
	s.mu.Lock()
	s.seq++
	e := s.entries[key]
	switch {
	case e == nil:
		e = &entry[K]{key: key, due: due, seq: s.seq}
		s.entries[key] = e
		heap.Push(&s.heap, e)
	case e.firing:
		if !e.pending {
			e.pending = true
			s.pending++
		}
		e.pendingDue = due
		e.seq = s.seq
	default:
		e.due, e.seq = due, s.seq
		heap.Fix(&s.heap, e.index)
	}
	s.mu.Unlock()
	s.poke()
}

// Remove unschedules key. A firing in progress is not interrupted, but the
// key will not fire again unless Set again. Removing an unknown key does
// nothing.
func (s *Scheduler[K]) Remove(key K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	switch {
	case e == nil:
	case e.firing:
		if e.pending {
			e.pending = false
			e.pendingDue = time.Time{}
			s.pending--
		}
	default:
		heap.Remove(&s.heap, e.index)
		delete(s.entries, key)
	}
}

// Due returns when key is next due to fire, and whether it is scheduled. A
// key being fired is scheduled only if Set was called since it started.
func (s *Scheduler[K]) Due(key K) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	switch {
	case e == nil:
		return time.Time{}, false
	case e.firing:
		return e.pendingDue, e.pending
	}
	return e.due, true
}

// Len returns the number of scheduled keys (those for which Due reports
// true).
func (s *Scheduler[K]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heap) + s.pending
}

// MaxFraction is the latest point of a heartbeat interval at which NextPing
// schedules a ping, leaving the rest of the interval for retries.
const MaxFraction = 0.8

// DefaultFraction is what NextPing uses for a fraction that is not positive.
const DefaultFraction = 0.5

func normFraction(f float64) float64 {
	switch {
	case !(f > 0): // also NaN
		return DefaultFraction
	case f > MaxFraction:
		return MaxFraction
	}
	return f
}

// NextPing returns when to send the next ping of a lease whose last
// successful ping was at last and whose server-side heartbeat interval is
// interval: last + interval*fraction, moved earlier or later by up to a
// jitter share of that delay (jitter in [0, 1]; rnd returns values in [0, 1),
// nil means math/rand/v2). The result is never before last and never after
// last + interval*[MaxFraction]. A fraction that is not positive means
// [DefaultFraction]; one above MaxFraction means MaxFraction.
//
// For example, fraction 0.5 and jitter 0.2 ping between 40 % and 60 % of the
// interval after the last ping: a 600 s interval is pinged every 4–6 min,
// leaving at least 4 min for retries and rate-limit pauses.
func NextPing(last time.Time, interval time.Duration, fraction, jitter float64, rnd func() float64) time.Time {
	if interval <= 0 {
		return last
	}
	fraction = normFraction(fraction)
	if !(jitter > 0) {
		jitter = 0
	} else if jitter > 1 {
		jitter = 1
	}
	r := 0.5
	if jitter > 0 {
		if rnd == nil {
			rnd = rand.Float64
		}
		r = rnd()
		if !(r >= 0) {
			r = 0
		} else if r > 1 {
			r = 1
		}
	}
	base := float64(interval) * fraction
	d := base * (1 + jitter*(2*r-1))
	if limit := float64(interval) * MaxFraction; d > limit {
		d = limit
	}
	if d < 0 {
		d = 0
	}
	return last.Add(time.Duration(d))
}

// Capacity returns how many keys pinged per [NextPing] with interval and
// fraction a request rate (requests per second, for example
// budget.SustainableRate minus what other traffic needs) keeps alive in the
// long run: each key costs on average one request per interval*fraction.
func Capacity(ratePerSecond float64, interval time.Duration, fraction float64) int {
	if !(ratePerSecond > 0) || interval <= 0 {
		return 0
	}
	n := ratePerSecond*interval.Seconds()*normFraction(fraction) + 1e-9
	if n >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int(n)
}
