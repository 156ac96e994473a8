package agent

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// lease is one app instance's seat: one OS process, one Keygen process.
// The fields below conns are guarded by the leaseTable's lock once the
// lease is in the table.
type lease struct {
	id              string
	pid             int
	start           uint64
	exe, user       string
	app, appVersion string
	metadata        map[string]any
	keygenPID       string
	created         time.Time // the local clock's reading: shown, never compared
	// seq orders the leases by when they were made, newest highest: the
	// lease table hands them out increasing, persists them with the lease
	// and restores them, so the order survives restarts and does not
	// depend on the local clock (which may jump) or on the random ids.
	seq uint64

	processID  string // Keygen process id; "" while an offline spawn is queued
	interval   time.Duration
	offline    bool
	conns      map[uint64]*ipc.Conn
	stopWatch  context.CancelFunc
	adoptUntil time.Time // set while restored after a restart and not yet re-claimed
	releasing  bool
}

// leaseProc is a consistent copy of a lease's Keygen side.
type leaseProc struct {
	leaseID   string
	processID string
	interval  time.Duration
	offline   bool
}

func (l *lease) procLocked() leaseProc {
	return leaseProc{leaseID: l.id, processID: l.processID, interval: l.interval, offline: l.offline}
}

type procKey struct {
	pid   int
	start uint64
}

// errStopping: the agent is shutting down and grants no seat.
var errStopping = errors.New("the agent is stopping")

// limitReached is reserve's answer when every seat stayed taken.
type limitReached struct {
	limit, used int
	waited      bool // the caller queued and its wait ended
}

func (e *limitReached) Error() string {
	return fmt.Sprintf("process limit reached: %d of %d in use", e.used, e.limit)
}

// capacityReached is reserve's answer when the request budget cannot keep
// one more lease alive.
type capacityReached struct{ capacity, used int }

func (e *capacityReached) Error() string {
	return fmt.Sprintf("heartbeat capacity reached: %d of %d", e.used, e.capacity)
}

type tableState int

const (
	tableOpen    tableState = iota
	tableClosed             // shutting down: no new seats; spawns in flight may still commit
	tableDrained            // shut down: no commits either
)

// seatWaiter is an acquirer queued for a seat.
type seatWaiter struct {
	limit   int
	ready   chan struct{}
	granted bool  // a seat was reserved for it
	err     error // errStopping when the table closed under it
}

// leaseTable is the lease table: the leases by id and by OS process, the
// seats reserved by acquirers whose spawn is in flight (or handed to a
// waiter that has not yet woken), and the acquirers queued for a seat,
// first come first served. Seats in use are the leases plus the
// reservations, so the limit holds under concurrency. It owns its lock and
// calls nothing outside itself while holding it.
//
// An acquirer takes a seat with reserve and then either commits it with the
// new lease or cancels it; a cancelled or released seat goes to the longest
// waiter whose limit it fits.
type leaseTable struct {
	mu       sync.Mutex
	byID     map[string]*lease
	byProc   map[procKey]*lease
	reserved int
	waiters  list.List // of *seatWaiter
	state    tableState
	// settled is closed when no reservation is left after close; nil
	// while open.
	settled chan struct{}
	// interval is the heartbeat interval Keygen gave the last spawn.
	interval time.Duration
	// seq is the last lease seq handed out (nextSeq) or restored.
	seq uint64
	// reconciled is set once the server's process list was compared with
	// the table after a start.
	reconciled bool
	// others are the other agents last seen holding Keygen processes on
	// this machine, by agent id: their process counts.
	others map[string]int
	// instance is this agent's id (agentID); it has its own lock.
	instance instance
	// acquiring holds a token per OS process with an acquire in flight:
	// one process gets one lease, however many connections it asks on.
	acquiring map[procKey]*procTurn
}

// procTurn serializes one process's acquires: the token is in ch when
// free; waiters counts the acquires holding or waiting for it.
type procTurn struct {
	ch      chan struct{}
	waiters int
}

func newLeaseTable() *leaseTable {
	t := &leaseTable{byID: map[string]*lease{}, byProc: map[procKey]*lease{}, acquiring: map[procKey]*procTurn{}}
	t.waiters.Init()
	return t
}

func (t *leaseTable) usedLocked() int { return len(t.byID) + t.reserved }

// turn waits until no other acquire of process key is in flight, so that
// the second of two concurrent acquires finds the first's lease to reuse
// instead of spawning a second Keygen process under the same pid attribute
// (whose PID_TAKEN would then end the first's as stale). The returned
// func ends the turn.
func (t *leaseTable) turn(ctx context.Context, key procKey) (func(), error) {
	t.mu.Lock()
	pt := t.acquiring[key]
	if pt == nil {
		pt = &procTurn{ch: make(chan struct{}, 1)}
		pt.ch <- struct{}{}
		t.acquiring[key] = pt
	}
	pt.waiters++
	t.mu.Unlock()
	leave := func() {
		t.mu.Lock()
		if pt.waiters--; pt.waiters == 0 {
			delete(t.acquiring, key)
		}
		t.mu.Unlock()
	}
	select {
	case <-pt.ch:
		return func() { pt.ch <- struct{}{}; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}

// reserve takes a seat when fewer than limit (nil: unlimited) and fewer
// than capacity are in use. When the limit is reached and wait is set, it
// queues until a seat is handed over or ctx ends. The caller must commit
// or cancel the seat it gets.
func (t *leaseTable) reserve(ctx context.Context, limit *int, capacity int, wait bool) (*seat, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != tableOpen {
		return nil, errStopping
	}
	used := t.usedLocked()
	if limit != nil && used >= *limit {
		if !wait {
			return nil, &limitReached{limit: *limit, used: used}
		}
		w := &seatWaiter{limit: *limit, ready: make(chan struct{})}
		e := t.waiters.PushBack(w)
		t.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
		}
		t.mu.Lock()
		switch {
		case w.err != nil:
			return nil, w.err
		case !w.granted:
			t.waiters.Remove(e)
			return nil, &limitReached{limit: *limit, used: used, waited: true}
		case ctx.Err() != nil:
			// Handed a seat as the wait ended: pass it on.
			t.reserved--
			t.handOffLocked()
			return nil, &limitReached{limit: *limit, used: used, waited: true}
		}
		// The handed-over seat is counted in reserved already.
		if n := t.usedLocked() - 1; n >= capacity {
			t.reserved--
			t.handOffLocked()
			return nil, &capacityReached{capacity: capacity, used: n}
		}
		return &seat{t: t}, nil
	}
	if used >= capacity {
		return nil, &capacityReached{capacity: capacity, used: used}
	}
	t.reserved++
	return &seat{t: t}, nil
}

// handOffLocked gives freed seats to the longest waiters, while they fit
// the limit each waiter saw.
func (t *leaseTable) handOffLocked() {
	for e := t.waiters.Front(); e != nil && t.state == tableOpen; e = t.waiters.Front() {
		w := e.Value.(*seatWaiter)
		if t.usedLocked() >= w.limit {
			return
		}
		t.waiters.Remove(e)
		w.granted = true
		t.reserved++
		close(w.ready)
	}
}

func (t *leaseTable) settleLocked() {
	if t.state != tableOpen && t.reserved == 0 && t.settled != nil {
		close(t.settled)
		t.settled = nil
	}
}

// seat is one reserved place in the table.
type seat struct {
	t    *leaseTable
	done bool // guarded by t.mu
}

// commit puts l in the table on the reserved seat. After drain it refuses
// with errStopping: l is then the caller's to end.
func (s *seat) commit(l *lease) error {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.done {
		panic("agent: seat committed twice")
	}
	s.done = true
	t.reserved--
	defer t.settleLocked()
	if t.state == tableDrained {
		return errStopping
	}
	t.byID[l.id] = l
	t.byProc[procKey{l.pid, l.start}] = l
	return nil
}

// cancel gives the seat back (to the longest waiter). It does nothing after
// commit, so it can be deferred.
func (s *seat) cancel() {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	t.reserved--
	t.handOffLocked()
	t.settleLocked()
}

// close stops granting seats: queued acquirers get errStopping.
func (t *leaseTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != tableOpen {
		return
	}
	t.state = tableClosed
	t.settled = make(chan struct{})
	for e := t.waiters.Front(); e != nil; e = t.waiters.Front() {
		w := t.waiters.Remove(e).(*seatWaiter)
		w.err = errStopping
		close(w.ready)
	}
	t.settleLocked()
}

// drain waits until the spawns in flight at close have committed or
// cancelled, or ctx ends, then empties the table and returns its leases'
// Keygen sides; their exit watches are stopped. Commits after drain are
// refused.
func (t *leaseTable) drain(ctx context.Context) []leaseProc {
	t.close()
	t.mu.Lock()
	ch := t.settled
	t.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state = tableDrained
	out := make([]leaseProc, 0, len(t.byID))
	for _, l := range t.newestFirstLocked() {
		out = append(out, l.procLocked())
		if l.stopWatch != nil {
			l.stopWatch()
		}
	}
	t.byID, t.byProc = map[string]*lease{}, map[procKey]*lease{}
	return out
}

// restore puts a lease persisted by an earlier run back in the table.
func (t *leaseTable) restore(l *lease, adoptUntil time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.seq == 0 {
		// A record from before seq was persisted (restoreLeases passes
		// those in their creation order, after the others).
		t.seq++
		l.seq = t.seq
	}
	t.seq = max(t.seq, l.seq)
	l.adoptUntil = adoptUntil
	t.byID[l.id] = l
	t.byProc[procKey{l.pid, l.start}] = l
}

// reclaim gives the caller process key its existing lease back on conn;
// ok is false when it has none (or the table is shutting down).
func (t *leaseTable) reclaim(key procKey, c *ipc.Conn) (leaseProc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byProc[key]
	if l == nil || l.releasing || t.state != tableOpen {
		return leaseProc{}, false
	}
	l.conns[c.ID()] = c
	l.adoptUntil = time.Time{}
	return l.procLocked(), true
}

// get returns the lease id, or nil.
func (t *leaseTable) get(id string) *lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// live returns lease id and its Keygen side unless it is being released.
func (t *leaseTable) live(id string) (*lease, leaseProc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byID[id]
	if l == nil || l.releasing {
		return nil, leaseProc{}, false
	}
	return l, l.procLocked(), true
}

// unclaimed reports whether lease id was restored and is still not
// re-claimed by a connection.
func (t *leaseTable) unclaimed(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byID[id]
	return l != nil && !l.adoptUntil.IsZero() && len(l.conns) == 0
}

// beginRelease marks lease id as being released and stops its exit watch;
// ok is false when it is gone or already being released.
func (t *leaseTable) beginRelease(id string) (*lease, leaseProc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byID[id]
	if l == nil || l.releasing {
		return nil, leaseProc{}, false
	}
	l.releasing = true
	if l.stopWatch != nil {
		l.stopWatch()
	}
	return l, l.procLocked(), true
}

// remove takes l out of the table and hands its seat on.
func (t *leaseTable) remove(l *lease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[l.id] == l {
		delete(t.byID, l.id)
	}
	if k := (procKey{l.pid, l.start}); t.byProc[k] == l {
		delete(t.byProc, k)
	}
	t.handOffLocked()
}

// setWatch records how to stop l's exit watch.
func (t *leaseTable) setWatch(l *lease, stop context.CancelFunc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l.stopWatch = stop
}

// setProcess records that l's Keygen process (re)started as processID;
// interval is kept when zero. It returns l's Keygen side.
func (t *leaseTable) setProcess(l *lease, processID string, interval time.Duration) leaseProc {
	t.mu.Lock()
	defer t.mu.Unlock()
	l.processID, l.offline = processID, false
	if interval > 0 {
		l.interval = interval
	}
	return l.procLocked()
}

// setProcessIfLive is setProcess unless l is gone or being released
// (then ok is false and nothing changes): a release that began before it
// does not see the new process, so the caller must end it.
func (t *leaseTable) setProcessIfLive(l *lease, processID string, interval time.Duration) (lp leaseProc, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[l.id] != l || l.releasing {
		return leaseProc{}, false
	}
	l.processID, l.offline = processID, false
	if interval > 0 {
		l.interval = interval
	}
	return l.procLocked(), true
}

// clearOffline records that l has no queued spawn any more.
func (t *leaseTable) clearOffline(l *lease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l.offline = false
}

// conns returns the connections holding lease id; nil when it is gone.
func (t *leaseTable) conns(id string) (*lease, []*ipc.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byID[id]
	if l == nil {
		return nil, nil
	}
	out := make([]*ipc.Conn, 0, len(l.conns))
	for _, c := range l.conns {
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y *ipc.Conn) int { return cmp.Compare(x.ID(), y.ID()) })
	return l, out
}

// detach removes connection id from every lease and returns the leases it
// was the last connection of (restored leases awaiting re-adoption
// excepted).
func (t *leaseTable) detach(connID uint64) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var orphaned []string
	for _, l := range t.newestFirstLocked() {
		if _, ok := l.conns[connID]; ok {
			delete(l.conns, connID)
			if len(l.conns) == 0 && l.adoptUntil.IsZero() {
				orphaned = append(orphaned, l.id)
			}
		}
	}
	return orphaned
}

// liveIDs returns the ids of the leases not being released, newest first.
func (t *leaseTable) liveIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]string, 0, len(t.byID))
	for _, l := range t.newestFirstLocked() {
		if !l.releasing {
			ids = append(ids, l.id)
		}
	}
	return ids
}

// newestFirstLocked lists the leases by seq, newest first: whoever acts on
// several leases (revoking, detaching, ending them) does so in one order,
// not the map's, so a run replays (issue 14).
func (t *leaseTable) newestFirstLocked() []*lease {
	ls := make([]*lease, 0, len(t.byID))
	for _, l := range t.byID {
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(x, y *lease) int { return cmp.Compare(y.seq, x.seq) })
	return ls
}

// nextSeq returns the seq of a lease being made: higher than every lease's
// in the table, restored ones included.
func (t *leaseTable) nextSeq() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	return t.seq
}

// beyond returns the newest leases past the first limit (oldest first),
// newest first; leases already being released are not counted. Newest is
// the highest seq: the order the leases were made in, whatever the local
// clock read then and whatever ids they drew.
func (t *leaseTable) beyond(limit int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := make([]*lease, 0, len(t.byID))
	for _, l := range t.newestFirstLocked() {
		if !l.releasing {
			live = append(live, l)
		}
	}
	if len(live) <= limit {
		return nil
	}
	ids := make([]string, 0, len(live)-limit)
	for _, l := range live[:len(live)-max(limit, 0)] {
		ids = append(ids, l.id)
	}
	return ids
}

// count returns the number of leases.
func (t *leaseTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// used returns the seats in use: leases plus reservations.
func (t *leaseTable) used() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.usedLocked()
}

// infos lists the leases for leases.list (NextPing left empty).
func (t *leaseTable) infos() []ipc.LeaseInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ipc.LeaseInfo, 0, len(t.byID))
	for _, l := range t.byID {
		out = append(out, ipc.LeaseInfo{LeaseID: l.id, ProcessID: l.processID, App: l.app, AppVersion: l.appVersion,
			User: l.user, PID: l.pid, Since: l.created, Offline: l.offline})
	}
	return out
}

// record is l as persisted in the cache.
func (t *leaseTable) record(l *lease) cache.LeaseRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return cache.LeaseRecord{
		ID: l.id, ProcessID: l.processID, KeygenPID: l.keygenPID, App: l.app, AppVersion: l.appVersion,
		User: l.user, Exe: l.exe, PID: l.pid, StartTime: l.start, Offline: l.offline, Created: l.created,
		Seq: l.seq, IntervalSeconds: int(l.interval / time.Second),
	}
}

// setOthers records the other agents seen on this machine.
func (t *leaseTable) setOthers(others map[string]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.others = others
}

// otherAgents lists the other agents seen on this machine, by id.
func (t *leaseTable) otherAgents() []ipc.OtherAgent {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ipc.OtherAgent
	for id, n := range t.others {
		out = append(out, ipc.OtherAgent{AgentID: id, Processes: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AgentID < out[j].AgentID })
	return out
}

// learnedInterval is the heartbeat interval Keygen gave the last spawn;
// zero before the first.
func (t *leaseTable) learnedInterval() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.interval
}

func (t *leaseTable) learnInterval(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.interval = d
}

// reconciledYet reports whether the server's process list was compared
// with the table since the start.
func (t *leaseTable) reconciledYet() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reconciled
}

// markReconciled records the comparison and returns what the table knows
// of: Keygen process ids and "pid:"+pid attributes, and whether a spawn is
// in flight (its process may be one the table does not know yet).
func (t *leaseTable) markReconciled() (known map[string]bool, spawning bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reconciled = true
	known = map[string]bool{}
	for _, l := range t.byID {
		known[l.processID] = true
		known["pid:"+l.keygenPID] = true
	}
	return known, t.reserved > 0
}
