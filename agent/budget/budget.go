package budget

import (
	"container/heap"
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Priority orders waiting callers: a lower value is served first.
type Priority int

const (
	// PriorityPing is for machine and process heartbeats; a missed ping
	// kills a lease, so pings go first.
	PriorityPing Priority = iota
	// PrioritySpawn is for process spawns (new leases).
	PrioritySpawn
	// PriorityKill is for process kills (released leases).
	PriorityKill
	// PriorityRefresh is for validations, check-outs and everything else.
	PriorityRefresh
)

// String returns the priority's name.
func (p Priority) String() string {
	switch p {
	case PriorityPing:
		return "ping"
	case PrioritySpawn:
		return "spawn"
	case PriorityKill:
		return "kill"
	case PriorityRefresh:
		return "refresh"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// Window is one server-side rate limit: at most Limit requests in any Period.
type Window struct {
	Limit  int
	Period time.Duration
}

// DefaultWindows are Keygen Cloud's client-side limits as documented by third
// parties (unconfirmed): 60 requests per 30 s and 500 per 5 min.
var DefaultWindows = []Window{
	{Limit: 60, Period: 30 * time.Second},
	{Limit: 500, Period: 5 * time.Minute},
}

// DefaultSafety is the share of each limit the budget allows itself.
const DefaultSafety = 0.9

// DefaultOwnerShare is the share of the users' part of each window (what
// the agent leaves) one local user may use when it is the only user.
const DefaultOwnerShare = 0.5

// DefaultAgentReserve is the share of each window kept for the agent's own
// requests (pings, revalidations) whatever the local users ask for.
const DefaultAgentReserve = 0.2

// MaxPause bounds how long a single [Observation] can pause the budget, so a
// Reset skewed by a wrong clock cannot stop the agent for good.
const MaxPause = time.Hour

// Config configures a [Budget].
type Config struct {
	// Windows are the limits to respect. Nil or empty means [DefaultWindows].
	// Entries with Limit <= 0 or Period <= 0 are ignored.
	Windows []Window
	// Safety is the share of each Limit the budget allows itself, in (0, 1];
	// other values mean [DefaultSafety]. The effective limit of a window is
	// floor(Safety*Limit), at least 1.
	Safety float64
	// OwnerShare is the share of the users' part of each effective window
	// one owner other than the agent ("") may use, in (0, 1]; other values
	// mean [DefaultOwnerShare]. The users' part is what the agent used or
	// reserves (AgentReserve) leaves; when n users are active (requests in
	// the window, or waiting) each may use at most 1/n of it. A user
	// looping requests then leaves the rest of every window to the other
	// users and to the agent's own pings and revalidations.
	OwnerShare float64
	// AgentReserve is the share of each effective window the local users
	// together can never take from the agent (""), in (0, 1); other values
	// mean [DefaultAgentReserve]. It is floor(AgentReserve*limit), at most
	// limit-1; the agent's own requests count against it.
	AgentReserve float64
	// Now is the clock; nil means time.Now. It must advance with the time
	// package's timers (it is meant for tests and clock offsets).
	Now func() time.Time
}

// Observation is what one API response said about the server's limits.
type Observation struct {
	// Status is the HTTP status code.
	Status int
	// Remaining and Limit are X-RateLimit-Remaining and X-RateLimit-Limit;
	// -1 when the header is absent.
	Remaining, Limit int
	// Reset is X-RateLimit-Reset (the end of the server's current period);
	// zero when absent.
	Reset time.Time
	// RetryAfter is the Retry-After of a 429; zero when absent.
	RetryAfter time.Duration
}

// Stats is a snapshot of a [Budget].
type Stats struct {
	// Sent is the number of slots granted since New.
	Sent uint64
	// Waiting is the number of callers blocked in Wait.
	Waiting int
	// PausedUntil is the end of the current server-imposed pause; zero when
	// not paused.
	PausedUntil time.Time
	// InWindow is, for each effective window (in Config order, invalid
	// entries dropped), the number of slots granted in its last Period.
	InWindow []int
}

// window tracks the send times still inside one sliding window, oldest
// first, in a growable ring.
type window struct {
	limit   int // effective limit
	reserve int // the part of limit kept for the agent (global windows)
	period  time.Duration
	buf     []time.Time
	head    int
	n       int
}

// prune forgets the sends that left the window at now.
func (w *window) prune(now time.Time) {
	for w.n > 0 && !w.buf[w.head].Add(w.period).After(now) {
		w.buf[w.head] = time.Time{}
		w.head++
		if w.head == len(w.buf) {
			w.head = 0
		}
		w.n--
	}
}

// freeAt returns when the window allows one more send, given it was pruned
// at now: now itself when there is room.
func (w *window) freeAt(now time.Time) time.Time {
	if w.n < w.limit {
		return now
	}
	// The window holds exactly limit sends (never more); the next send is
	// allowed when the oldest one that must leave does.
	return w.at(w.n - w.limit).Add(w.period)
}

func (w *window) at(i int) time.Time {
	return w.buf[(w.head+i)%len(w.buf)]
}

func (w *window) push(t time.Time) {
	if w.n == len(w.buf) {
		c := 2 * len(w.buf)
		if c < 8 {
			c = 8
		}
		if c > w.limit {
			c = w.limit
		}
		nb := make([]time.Time, c)
		for i := 0; i < w.n; i++ {
			nb[i] = w.at(i)
		}
		w.buf, w.head = nb, 0
	}
	w.buf[(w.head+w.n)%len(w.buf)] = t
	w.n++
}

// remove forgets the newest send recorded at t, if the window still holds
// it.
func (w *window) remove(t time.Time) {
	for i := w.n - 1; i >= 0; i-- {
		if w.at(i).Equal(t) {
			for j := i; j < w.n-1; j++ {
				w.buf[(w.head+j)%len(w.buf)] = w.at(j + 1)
			}
			w.buf[(w.head+w.n-1)%len(w.buf)] = time.Time{}
			w.n--
			return
		}
	}
}

type waiter struct {
	owner   string
	prio    Priority
	seq     uint64
	index   int // in the heap; -1 when out of it
	ready   chan struct{}
	granted bool
	at      time.Time // when granted
}

type waiterHeap []*waiter

func (h waiterHeap) Len() int { return len(h) }
func (h waiterHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio < h[j].prio
	}
	return h[i].seq < h[j].seq
}
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}

// Budget is a request budget shared by goroutines. It is safe for concurrent
// use. It owns no goroutine: a single time.AfterFunc timer wakes the head
// waiter when a slot frees up.
type Budget struct {
	now func() time.Time

	mu      sync.Mutex
	windows []window
	// Waiters, per owner. Pings go first whoever waits; otherwise owners
	// take turns (round robin over ring from next), and each owner's
	// waiters go by priority, then first come first served.
	owners      map[string]*waiterHeap
	ring        []string // owners with waiters, in arrival order
	next        int      // ring index of the owner whose turn is next
	nwait       int
	share       float64
	used        map[string][]window // per owner, "" included: its own sends in each window
	seq         uint64
	sent        uint64
	pausedUntil time.Time
	timer       *time.Timer
	timerAt     time.Time // when the armed timer fires; zero when not armed
}

// New returns a Budget for c.
func New(c Config) *Budget {
	b := &Budget{now: c.Now, owners: map[string]*waiterHeap{}, used: map[string][]window{}, share: c.OwnerShare}
	if !(b.share > 0 && b.share <= 1) {
		b.share = DefaultOwnerShare
	}
	reserve := c.AgentReserve
	if !(reserve > 0 && reserve < 1) {
		reserve = DefaultAgentReserve
	}
	if b.now == nil {
		b.now = time.Now
	}
	safety := c.Safety
	if !(safety > 0 && safety <= 1) {
		safety = DefaultSafety
	}
	ws := c.Windows
	if len(ws) == 0 {
		ws = DefaultWindows
	}
	for _, w := range ws {
		if w.Limit <= 0 || w.Period <= 0 {
			continue
		}
		eff := int(math.Floor(safety*float64(w.Limit) + 1e-9))
		if eff < 1 {
			eff = 1
		}
		r := min(int(math.Floor(reserve*float64(eff)+1e-9)), eff-1)
		b.windows = append(b.windows, window{limit: eff, reserve: r, period: w.Period})
	}
	return b
}

// allowedAt prunes the windows and returns when one more send is allowed:
// now itself when it is allowed at once.
func (b *Budget) allowedAt(now time.Time) time.Time {
	at := now
	if b.pausedUntil.After(at) {
		at = b.pausedUntil
	}
	for i := range b.windows {
		w := &b.windows[i]
		w.prune(now)
		if f := w.freeAt(now); f.After(at) {
			at = f
		}
	}
	return at
}

func (b *Budget) record(now time.Time) {
	for i := range b.windows {
		b.windows[i].push(now)
	}
	b.sent++
}

// dispatchLocked grants slots to the waiters in order while the windows
// allow, then arms the timer for the head waiter if one remains.
func (b *Budget) dispatchLocked() {
	if b.nwait == 0 {
		b.disarmLocked()
		return
	}
	now := b.now()
	for b.nwait > 0 {
		at := b.allowedAt(now)
		if at.After(now) {
			b.armLocked(now, at)
			return
		}
		w, wake := b.popLocked(now)
		if w == nil {
			// Every waiting owner has used its share: wait for the
			// first share to free up.
			b.armLocked(now, wake)
			return
		}
		b.record(now)
		b.recordOwner(w.owner, now)
		w.granted, w.at = true, now
		close(w.ready)
	}
	b.disarmLocked()
}

func (b *Budget) pushLocked(w *waiter) {
	h := b.owners[w.owner]
	if h == nil {
		h = &waiterHeap{}
		b.owners[w.owner] = h
		b.ring = append(b.ring, w.owner)
	}
	heap.Push(h, w)
	b.nwait++
}

// popLocked takes the next waiter whose owner is within its share: the
// oldest such ping if any waits, else the first waiter of the next such
// owner in turn. If none is, it returns nil and when to look again.
func (b *Budget) popLocked(now time.Time) (*waiter, time.Time) {
	var wake time.Time
	sh := b.sharesLocked(now)
	eligible := func(o string) bool {
		at := b.ownerAllowedAt(o, now, sh)
		if at.After(now) {
			if wake.IsZero() || at.Before(wake) {
				wake = at
			}
			return false
		}
		return true
	}
	turn := -1
	var ping *waiter
	for i, o := range b.ring {
		if w := (*b.owners[o])[0]; w.prio == PriorityPing && (ping == nil || w.seq < ping.seq) && eligible(o) {
			ping, turn = w, i
		}
	}
	if ping == nil {
		for k := range b.ring {
			i := (b.next + k) % len(b.ring)
			if eligible(b.ring[i]) {
				turn = i
				break
			}
		}
		if turn < 0 {
			return nil, wake
		}
		b.next = turn + 1
	}
	o := b.ring[turn]
	w := heap.Pop(b.owners[o]).(*waiter)
	b.nwait--
	if b.owners[o].Len() == 0 {
		b.dropOwnerLocked(turn)
	}
	return w, time.Time{}
}

// share is how one global window is split at one instant.
type share struct {
	pool   int // what the users together may hold: limit - max(agent's sends, reserve)
	users  int // the users' sends
	active int // users with sends in the window or waiting
}

// sharesLocked prunes every owner's windows, forgets owners without sends,
// and returns how each global window is split now.
func (b *Budget) sharesLocked(now time.Time) []share {
	sh := make([]share, len(b.windows))
	for i, g := range b.windows {
		sh[i].pool = g.limit - g.reserve
	}
	for o, ws := range b.used {
		empty := true
		for i := range ws {
			ws[i].prune(now)
			empty = empty && ws[i].n == 0
		}
		if empty {
			delete(b.used, o)
		}
	}
	for o, ws := range b.used {
		for i := range ws {
			switch {
			case o == "":
				sh[i].pool = b.windows[i].limit - max(ws[i].n, b.windows[i].reserve)
			case ws[i].n > 0:
				sh[i].users += ws[i].n
				sh[i].active++
			}
		}
	}
	for o := range b.owners {
		if o == "" {
			continue
		}
		for i := range sh {
			if ws := b.used[o]; ws == nil || ws[i].n == 0 {
				sh[i].active++
			}
		}
	}
	return sh
}

// ownerAllowedAt is when owner may send one more request within its share
// of every window, given the split sh computed at now: now itself if it
// may. The agent ("") has no share cap. A user may send when the users
// together are under their pool and it is under its own cap, the pool
// times OwnerShare or split evenly between the active users, whichever is
// less (at least one request). A user over its cap is looked at again when
// the next request leaves the window: that can raise the pool or lower the
// number of active users.
func (b *Budget) ownerAllowedAt(owner string, now time.Time, sh []share) time.Time {
	at := now
	if owner == "" {
		return at
	}
	ws := b.used[owner]
	for i := range sh {
		n, active := 0, sh[i].active
		if ws != nil {
			n = ws[i].n
		}
		if n == 0 && b.owners[owner] == nil {
			active++ // not counted yet: neither sent nor waiting
		}
		limit := int(math.Floor(float64(sh[i].pool)*min(b.share, 1/float64(active)) + 1e-9))
		if sh[i].pool > 0 {
			limit = max(limit, 1)
		}
		if n < limit && sh[i].users < sh[i].pool {
			continue
		}
		g := &b.windows[i]
		g.prune(now)
		if g.n == 0 {
			continue // cannot happen: the owner's or the agent's sends are in it
		}
		if f := g.at(0).Add(g.period); f.After(at) {
			at = f
		}
	}
	return at
}

// recordOwner counts a send against owner's windows ("" is the agent).
func (b *Budget) recordOwner(owner string, now time.Time) {
	ws := b.used[owner]
	if ws == nil {
		ws = make([]window, len(b.windows))
		for i, g := range b.windows {
			// Never more sends than the global window holds: its limit
			// bounds the ring.
			ws[i] = window{limit: g.limit, period: g.period}
		}
		b.used[owner] = ws
	}
	for i := range ws {
		ws[i].push(now)
	}
}

// dropOwnerLocked removes ring[i], an owner left without waiters.
func (b *Budget) dropOwnerLocked(i int) {
	delete(b.owners, b.ring[i])
	b.ring = append(b.ring[:i], b.ring[i+1:]...)
	if b.next > i {
		b.next--
	}
	if len(b.ring) == 0 || b.next >= len(b.ring) {
		b.next = 0
	}
}

func (b *Budget) removeLocked(w *waiter) {
	h := b.owners[w.owner]
	heap.Remove(h, w.index)
	b.nwait--
	if h.Len() == 0 {
		b.dropOwnerLocked(slices.Index(b.ring, w.owner))
	}
}

func (b *Budget) armLocked(now, at time.Time) {
	if !b.timerAt.IsZero() && b.timerAt.Equal(at) {
		return
	}
	d := at.Sub(now)
	if b.timer == nil {
		b.timer = time.AfterFunc(d, b.onTimer)
	} else {
		b.timer.Reset(d)
	}
	b.timerAt = at
}

func (b *Budget) disarmLocked() {
	if b.timer != nil && !b.timerAt.IsZero() {
		b.timer.Stop()
	}
	b.timerAt = time.Time{}
}

func (b *Budget) onTimer() {
	b.mu.Lock()
	b.timerAt = time.Time{}
	b.dispatchLocked()
	b.mu.Unlock()
}

// Wait is WaitAs for the agent's own requests (owner "").
func (b *Budget) Wait(ctx context.Context, p Priority) error {
	return b.WaitAs(ctx, p, "")
}

// WaitAs blocks until one request may be sent under every window and no
// server-imposed pause is in force, and records it as sent. owner says on
// whose behalf the request is made: "" for the agent's own work, a user id
// for work a local user asked for; a user waits while it holds its share
// (Config.OwnerShare, Config.AgentReserve). Waiting pings go first; otherwise the
// owners with waiters take turns, so one user looping requests delays
// another user (or the agent's revalidations) by at most one request per
// other waiting owner. One owner's waiters are served by priority, then
// first come first served. If ctx ends first, the waiter is removed and
// WaitAs returns ctx.Err() with nothing recorded; it returns nil exactly
// when a slot was recorded for the caller.
func (b *Budget) WaitAs(ctx context.Context, p Priority, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.nwait == 0 {
		now := b.now()
		if !b.allowedAt(now).After(now) && !b.ownerAllowedAt(owner, now, b.sharesLocked(now)).After(now) {
			b.record(now)
			b.recordOwner(owner, now)
			b.mu.Unlock()
			return nil
		}
	}
	w := &waiter{owner: owner, prio: p, seq: b.seq, ready: make(chan struct{})}
	b.seq++
	b.pushLocked(w)
	b.dispatchLocked()
	if w.granted {
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.granted {
		// Granted while ctx ended: give the slot back so that Wait's result
		// says whether a slot is the caller's.
		for i := range b.windows {
			b.windows[i].remove(w.at)
		}
		for i := range b.used[w.owner] {
			b.used[w.owner][i].remove(w.at)
		}
		b.sent--
	} else {
		b.removeLocked(w)
	}
	b.dispatchLocked()
	return ctx.Err()
}

// ErrShareSpent is WaitWithinShare's answer when the owner has used its
// share of a window: the request would wait for the owner's own earlier
// requests to leave the window.
var ErrShareSpent = errors.New("budget: the owner's share of the request budget is spent")

// WaitWithinShare is WaitAs, except that when owner has used its share of
// a window it returns [ErrShareSpent] at once, recording nothing, instead of
// waiting for the share to free up. It still waits for the global windows
// and a server-imposed pause, which every owner waits for alike. The agent
// uses it where another owner's work would otherwise wait behind this
// owner's share (a kill that holds a seat, a replay that holds the outbox);
// the agent ("") has no share and never gets ErrShareSpent.
func (b *Budget) WaitWithinShare(ctx context.Context, p Priority, owner string) error {
	if owner != "" {
		b.mu.Lock()
		now := b.now()
		spent := b.ownerAllowedAt(owner, now, b.sharesLocked(now)).After(now)
		b.mu.Unlock()
		if spent {
			return ErrShareSpent
		}
	}
	return b.WaitAs(ctx, p, owner)
}

// TryTake records one request and reports true if it may be sent now without
// waiting; it reports false otherwise. It never overtakes a waiting caller:
// callers only wait when no slot is free, so while any caller waits TryTake
// fails whatever p is (p is accepted for symmetry with Wait).
func (b *Budget) TryTake(p Priority) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	// After a dispatch, a remaining waiter means no slot is free for anyone,
	// whatever the priority.
	b.dispatchLocked()
	if b.nwait > 0 {
		return false
	}
	now := b.now()
	if b.allowedAt(now).After(now) {
		return false
	}
	b.record(now)
	b.recordOwner("", now)
	return true
}

// Observe feeds the budget what a response said about the server's limits.
// A 429 with a Retry-After pauses every caller until now+RetryAfter (a 429
// without one, until Reset if known); Remaining == 0 with a known Reset
// pauses until Reset. Anything else changes nothing. A pause only ever
// extends the current one, and is at most [MaxPause] long.
func (b *Budget) Observe(o Observation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var until time.Time
	switch {
	case o.Status == 429 && o.RetryAfter > 0:
		until = now.Add(o.RetryAfter)
	case (o.Status == 429 || o.Remaining == 0) && !o.Reset.IsZero():
		until = o.Reset
	default:
		return
	}
	if limit := now.Add(MaxPause); until.After(limit) {
		until = limit
	}
	if !until.After(b.pausedUntil) || !until.After(now) {
		return
	}
	b.pausedUntil = until
	b.dispatchLocked()
}

// SustainableRate returns the requests per second the effective windows
// allow in the long run: the minimum over windows of floor(Safety*Limit) /
// Period. It is +Inf without windows.
func (b *Budget) SustainableRate() float64 {
	r := math.Inf(1)
	for i := range b.windows {
		// Only the immutable limit and period are read: no lock needed
		// (copying the window would read its ring, which Wait mutates).
		w := &b.windows[i]
		if x := float64(w.limit) / w.period.Seconds(); x < r {
			r = x
		}
	}
	return r
}

// Stats returns a snapshot of the budget.
func (b *Budget) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	s := Stats{Sent: b.sent, Waiting: b.nwait, InWindow: make([]int, len(b.windows))}
	if b.pausedUntil.After(now) {
		s.PausedUntil = b.pausedUntil
	}
	for i := range b.windows {
		b.windows[i].prune(now)
		s.InWindow[i] = b.windows[i].n
	}
	return s
}
