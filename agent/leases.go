package agent

import (
	"container/list"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/agent/heartbeat"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// lease is one app instance's seat: one OS process, one Keygen process.
type lease struct {
	id              string
	pid             int
	start           uint64
	exe, user       string
	app, appVersion string
	metadata        map[string]any
	keygenPID       string
	processID       string // Keygen process id; "" while an offline spawn is queued
	interval        time.Duration
	offline         bool
	created         time.Time
	conns           map[uint64]*ipc.Conn
	stopWatch       context.CancelFunc
	adoptUntil      time.Time // set while restored after a restart and not yet re-claimed
	releasing       bool
}

type procKey struct {
	pid   int
	start uint64
}

type waiter struct {
	ch      chan struct{}
	granted bool
}

// leaseManager is the lease table. Seats in use are the leases plus seats
// reserved by acquirers that are spawning and seats handed to waiters that
// have not yet claimed them, so the limit holds under concurrency.
type leaseManager struct {
	mu       sync.Mutex
	leases   map[string]*lease
	byProc   map[procKey]*lease
	pending  int
	granted  int
	waiters  list.List // of *waiter, FIFO
	interval time.Duration
	// reconciled is set once the server's process list was compared with
	// ours after a start.
	reconciled bool
}

func (m *leaseManager) init() {
	m.leases = map[string]*lease{}
	m.byProc = map[procKey]*lease{}
	m.waiters.Init()
}

func (m *leaseManager) usedLocked() int { return len(m.leases) + m.pending + m.granted }

// wakeWaiterLocked hands a freed seat to the longest waiter.
func (m *leaseManager) wakeWaiterLocked() {
	e := m.waiters.Front()
	if e == nil {
		return
	}
	w := m.waiters.Remove(e).(*waiter)
	w.granted = true
	m.granted++
	close(w.ch)
}

const processKeyPrefix = "p:"
const adoptKeyPrefix = "a:"

func newLeaseID() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return "lease_" + hex.EncodeToString(b[:])
}

// keygenPID is the pid attribute of a lease's Keygen process: the
// kernel-reported PID plus the process start time, so a reused PID never
// collides with a stale process.
func keygenPID(pid int, start uint64) string {
	return strconv.Itoa(pid) + "@" + strconv.FormatUint(start, 10)
}

// acquire implements lease.acquire for the calling peer.
func (a *Agent) acquire(ctx context.Context, p ipc.AcquireParams) (*ipc.AcquireResult, error) {
	peer, ok := ipc.PeerFromContext(ctx)
	conn := ipc.ConnFromContext(ctx)
	if !ok || peer.PID <= 0 || conn == nil {
		return nil, ipc.Errorf(ipc.CodePermissionDenied, "the agent could not identify the calling process")
	}
	if !a.isReady() {
		return nil, ipc.Errorf(ipc.CodeStarting, "the agent is starting; retry shortly")
	}
	key := procKey{peer.PID, peer.StartTime}
	waitCtx := ctx
	if p.WaitMS > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, time.Duration(p.WaitMS)*time.Millisecond)
		defer cancel()
	}
	var w *waiter
	for {
		v := a.view()
		a.lm.mu.Lock()
		if w != nil && w.granted {
			a.lm.granted--
			w = nil
		}
		if l := a.lm.byProc[key]; l != nil && !l.releasing {
			l.conns[conn.ID()] = conn
			l.adoptUntil = time.Time{}
			a.sched.Remove(adoptKeyPrefix + l.id)
			res := a.resultLocked(l, v, true)
			a.lm.wakeIfFreeLocked(a, v)
			a.lm.mu.Unlock()
			return res, nil
		}
		if err := a.leaseAllowed(v); err != nil {
			a.lm.wakeIfFreeLocked(a, v)
			a.lm.mu.Unlock()
			return nil, err
		}
		limit := a.effectiveLimit(v)
		used := a.lm.usedLocked()
		if limit != nil && used >= *limit {
			if p.WaitMS <= 0 {
				a.lm.mu.Unlock()
				return nil, limitError(*limit, used, "")
			}
			w = &waiter{ch: make(chan struct{})}
			e := a.lm.waiters.PushBack(w)
			a.lm.mu.Unlock()
			select {
			case <-w.ch:
				continue
			case <-waitCtx.Done():
				a.lm.mu.Lock()
				if w.granted {
					a.lm.granted--
					a.lm.wakeWaiterLocked()
				} else {
					a.lm.waiters.Remove(e)
				}
				a.lm.mu.Unlock()
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, limitError(*limit, used, "no seat became free within the wait timeout")
			}
		}
		if c := a.capacityLocked(v); used >= c {
			a.lm.wakeIfFreeLocked(a, v)
			a.lm.mu.Unlock()
			return nil, &ipc.Error{Code: ipc.CodeHeartbeatCapacity,
				Message: fmt.Sprintf("the agent cannot keep more than %d leases alive within Keygen's rate limits at the current heartbeat interval", c),
				Data:    map[string]any{"capacity": c, "count": used}}
		}
		a.lm.pending++
		a.lm.mu.Unlock()
		l, err := a.spawnLease(ctx, peer, conn, p, v)
		a.lm.mu.Lock()
		a.lm.pending--
		if err != nil {
			a.lm.wakeWaiterLocked()
			a.lm.mu.Unlock()
			return nil, err
		}
		a.lm.leases[l.id] = l
		a.lm.byProc[key] = l
		res := a.resultLocked(l, v, false)
		a.lm.mu.Unlock()
		a.watchLease(l)
		if l.processID != "" {
			a.schedulePing(l)
		}
		a.log.Info("lease acquired", "lease", l.id, "pid", l.pid, "app", l.app, "process", l.processID, "offline", l.offline)
		return res, nil
	}
}

// wakeIfFreeLocked passes a seat on when an acquirer that was handed one
// did not use it.
func (m *leaseManager) wakeIfFreeLocked(a *Agent, v licenseView) {
	limit := a.effectiveLimit(v)
	if m.waiters.Len() > 0 && (limit == nil || m.usedLocked() < *limit) {
		m.wakeWaiterLocked()
	}
}

func limitError(limit, count int, extra string) *ipc.Error {
	msg := fmt.Sprintf("process limit reached: %d of %d in use", count, limit)
	if extra != "" {
		msg += "; " + extra
	}
	return &ipc.Error{Code: ipc.CodeProcessLimitExceeded, Message: msg, Data: map[string]any{"limit": limit, "count": count}}
}

func (a *Agent) resultLocked(l *lease, v licenseView, reused bool) *ipc.AcquireResult {
	ents := v.Entitlements
	if ents == nil {
		ents = []string{}
	}
	return &ipc.AcquireResult{
		LeaseID: l.id, ProcessID: l.processID, HeartbeatInterval: int(l.interval / time.Second),
		Offline: l.offline, Entitlements: ents, Reused: reused,
	}
}

// leaseAllowed says whether the license permits a new lease now.
func (a *Agent) leaseAllowed(v licenseView) error {
	switch {
	case v.State == StateStarting:
		return ipc.Errorf(ipc.CodeStarting, "the agent is starting; retry shortly")
	case v.State == StateUnlicensed || v.State == StateNotActivated:
		return &ipc.Error{Code: ipc.CodeNotActivated, Message: v.Detail, Data: map[string]any{"state": v.State}}
	case v.State == StateOfflineExpired:
		data := map[string]any{"state": v.State}
		if v.OfflineUntil != nil {
			data["expiry"] = v.OfflineUntil.UTC().Format(time.RFC3339)
		} else if v.CertExpiry != nil {
			data["expiry"] = v.CertExpiry.UTC().Format(time.RFC3339)
		}
		return &ipc.Error{Code: ipc.CodeOfflineExpired, Message: v.Detail, Data: data}
	case !v.Valid:
		return &ipc.Error{Code: ipc.CodeLicenseInvalid, Message: nonEmpty(v.Detail, "the license is not valid"),
			Data: map[string]any{"reason": nonEmpty(v.Code, string(v.State)), "state": v.State, "keygen_code": v.Code}}
	case !v.Online && a.config().StrictOffline:
		return &ipc.Error{Code: ipc.CodeOfflineExpired, Message: "Keygen is unreachable and strict_offline denies new leases while offline",
			Data: map[string]any{"state": v.State}}
	}
	return nil
}

// effectiveLimit is the per-machine process limit with the policy's overage
// allowance; nil means unlimited.
func (a *Agent) effectiveLimit(v licenseView) *int {
	var max *int
	switch {
	case v.Machine != nil && v.Machine.MaxProcesses != nil:
		max = v.Machine.MaxProcesses
	case v.License != nil && v.License.MaxProcesses != nil:
		max = v.License.MaxProcesses
	}
	if max == nil {
		return nil
	}
	n := *max
	if v.Policy != nil {
		switch v.Policy.OverageStrategy {
		case "ALWAYS_ALLOW_OVERAGE":
			return nil
		case "ALLOW_1_25X_OVERAGE":
			n = int(math.Floor(float64(n) * 1.25))
		case "ALLOW_1_5X_OVERAGE":
			n = int(math.Floor(float64(n) * 1.5))
		case "ALLOW_2X_OVERAGE":
			n *= 2
		}
	}
	return &n
}

// leaseInterval is the heartbeat interval new leases will get.
func (a *Agent) leaseIntervalLocked(v licenseView) time.Duration {
	if a.lm.interval > 0 {
		return a.lm.interval
	}
	if v.Machine != nil && v.Machine.HeartbeatDuration > 0 {
		return time.Duration(v.Machine.HeartbeatDuration) * time.Second
	}
	if v.Policy != nil && v.Policy.HeartbeatDuration != nil {
		return time.Duration(*v.Policy.HeartbeatDuration) * time.Second
	}
	return 600 * time.Second
}

// capacityLocked is how many leases the request budget can keep alive: 80%
// of the sustainable request rate goes to heartbeats, the rest stays free
// for validations, spawns and kills.
func (a *Agent) capacityLocked(v licenseView) int {
	rate := a.budget.SustainableRate() * 0.8
	frac := a.config().HeartbeatFraction
	if d := a.machineHeartbeatInterval(v); d > 0 {
		rate -= 1 / (d.Seconds() * frac)
	}
	perLease := 1 / (a.leaseIntervalLocked(v).Seconds() * frac)
	if rate <= 0 {
		return 0
	}
	return int(rate / perLease)
}

func (a *Agent) leaseUsage(v licenseView) ipc.LeaseUsage {
	a.lm.mu.Lock()
	defer a.lm.mu.Unlock()
	return ipc.LeaseUsage{Active: len(a.lm.leases), Limit: a.effectiveLimit(v), Capacity: a.capacityLocked(v)}
}

// spawnLease creates the Keygen process for a new lease, or queues it when
// Keygen is unreachable and offline leasing is allowed.
func (a *Agent) spawnLease(ctx context.Context, peer ipc.Peer, conn *ipc.Conn, p ipc.AcquireParams, v licenseView) (*lease, error) {
	l := &lease{
		id: newLeaseID(), pid: peer.PID, start: peer.StartTime, exe: peer.Exe, user: peer.UID,
		app: p.App, appVersion: p.AppVersion, metadata: p.Metadata,
		keygenPID: keygenPID(peer.PID, peer.StartTime), created: a.now(),
		conns: map[uint64]*ipc.Conn{conn.ID(): conn},
	}
	a.lm.mu.Lock()
	l.interval = a.leaseIntervalLocked(v)
	a.lm.mu.Unlock()
	if v.Online {
		// An app waits at most spawnWait for Keygen (or for the request
		// budget during a 429 storm); past that the lease is granted
		// locally and its spawn queued, as when offline.
		proc, err := a.spawnProcess(withMaxBudgetWait(ctx, spawnWait), l)
		if errors.Is(err, keygen.ErrProcessLimitExceeded) && a.hasQueuedKills() {
			// Keygen still counts processes whose kill is queued: send the
			// kills, then try once more.
			a.replayOutbox(ctx)
			proc, err = a.spawnProcess(withMaxBudgetWait(ctx, spawnWait), l)
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err == nil:
			l.processID = proc.ID
			if proc.Interval > 0 {
				l.interval = time.Duration(proc.Interval) * time.Second
				a.lm.mu.Lock()
				a.lm.interval = l.interval
				a.lm.mu.Unlock()
			}
		case errors.Is(err, keygen.ErrProcessLimitExceeded):
			var kerr *keygen.Error
			detail := ""
			if errors.As(err, &kerr) {
				detail = "Keygen: " + kerr.Detail
			}
			a.lm.mu.Lock()
			used := a.lm.usedLocked() - 1
			a.lm.mu.Unlock()
			lim := used
			if el := a.effectiveLimit(v); el != nil {
				lim = *el
			}
			return nil, limitError(lim, used, detail)
		case offline(err):
			if a.config().StrictOffline {
				return nil, &ipc.Error{Code: ipc.CodeOfflineExpired, Message: "Keygen is unreachable and strict_offline denies new leases while offline"}
			}
			a.log.Warn("spawn failed: Keygen unreachable or rate limited; granting the lease locally", "err", err)
			if keygen.IsOffline(err) {
				a.goOfflineAsync(err)
				if v := a.view(); !v.Valid {
					return nil, a.leaseAllowed(v)
				}
			}
			l.offline = true
			a.sched.Set(outboxKey, a.now().Add(outboxRetry))
		default:
			return nil, mapKeygenError(err)
		}
	} else {
		l.offline = true
	}
	if l.offline {
		payload, _ := json.Marshal(l.processMetadata())
		if _, err := a.store.Enqueue(cache.OutboxEntry{Kind: "spawn", LeaseID: l.id, Payload: payload, Created: a.now()}); err != nil {
			return nil, ipc.Errorf(ipc.CodeInternal, "queueing the offline lease: %v", err)
		}
	}
	_ = a.persistLease(l)
	return l, nil
}

// goOfflineAsync switches the view to offline without waiting for the
// license loop's next round, and has the loop retry on its backoff.
func (a *Agent) goOfflineAsync(cause error) {
	if a.view().Online {
		a.goOffline(cause)
	}
	a.wakeLicenseLoop()
}

const (
	// spawnWait bounds how long lease.acquire waits for Keygen.
	spawnWait = 10 * time.Second
	// outboxKey schedules a replay of spawns queued while online (budget
	// exhausted or Keygen slow) without waiting for the next revalidation.
	outboxKey   = "outbox"
	outboxRetry = 30 * time.Second
)

func (l *lease) processMetadata() map[string]any {
	md := map[string]any{
		"leaseId": l.id, "pid": l.pid, "app": l.app, "appVersion": l.appVersion,
		"executable": l.exe, "user": l.user,
	}
	if len(l.metadata) > 0 {
		md["appMetadata"] = l.metadata
	}
	return md
}

// spawnProcess creates the Keygen process; a PID_TAKEN from a stale process
// with the same pid attribute is resolved by killing it and retrying once.
func (a *Agent) spawnProcess(ctx context.Context, l *lease) (*keygen.Process, error) {
	mid := a.machineID()
	if mid == "" {
		return nil, ipc.Errorf(ipc.CodeNotActivated, "this machine has no Keygen activation yet")
	}
	var proc *keygen.Process
	spawn := func() error {
		return a.call(ctx, budget.PrioritySpawn, func(ctx context.Context, c *keygen.Client) error {
			var err error
			proc, err = c.SpawnProcess(ctx, mid, l.keygenPID, l.processMetadata())
			return err
		})
	}
	err := spawn()
	if errors.Is(err, keygen.ErrPIDTaken) {
		// Either this lease's own process (a spawn whose answer was lost,
		// then queued and replayed): adopt it; or a stale one from an
		// earlier run: kill it and spawn again.
		own, kerr := a.resolvePIDTaken(ctx, mid, l)
		if kerr != nil {
			return nil, kerr
		}
		if own != nil {
			return own, nil
		}
		err = spawn()
	}
	return proc, err
}

// resolvePIDTaken finds the processes holding l's pid attribute: returns
// the one that belongs to l, and kills the others.
func (a *Agent) resolvePIDTaken(ctx context.Context, machineID string, l *lease) (*keygen.Process, error) {
	var procs []keygen.Process
	err := a.call(ctx, budget.PriorityKill, func(ctx context.Context, c *keygen.Client) error {
		var err error
		procs, err = c.MachineProcesses(ctx, machineID)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, p := range procs {
		if p.PID != l.keygenPID {
			continue
		}
		if id, _ := p.Metadata["leaseId"].(string); id == l.id && p.Status != "DEAD" {
			a.log.Info("adopting this lease's existing Keygen process", "lease", l.id, "process", p.ID)
			return &procs[i], nil
		}
		a.log.Info("stale Keygen process holds this pid; killing it", "pid", l.keygenPID, "process", p.ID)
		if err := a.killProcess(ctx, p.ID); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func (a *Agent) killProcess(ctx context.Context, id string) error {
	err := a.call(ctx, budget.PriorityKill, func(ctx context.Context, c *keygen.Client) error {
		return c.KillProcess(ctx, id)
	})
	if errors.Is(err, keygen.ErrNotFound) {
		return nil
	}
	return err
}

func mapKeygenError(err error) error {
	var kerr *keygen.Error
	if errors.As(err, &kerr) {
		code := ipc.CodeLicenseInvalid
		if kerr.Status >= 500 {
			code = ipc.CodeInternal
		}
		return &ipc.Error{Code: code, Message: "Keygen refused: " + nonEmpty(kerr.Detail, kerr.Title),
			Data: map[string]any{"reason": kerr.Code, "keygen_code": kerr.Code}}
	}
	var ierr *ipc.Error
	if errors.As(err, &ierr) {
		return ierr
	}
	return ipc.Errorf(ipc.CodeInternal, "%v", err)
}

func (a *Agent) persistLease(l *lease) error {
	a.lm.mu.Lock()
	rec := cache.LeaseRecord{
		ID: l.id, ProcessID: l.processID, KeygenPID: l.keygenPID, App: l.app, AppVersion: l.appVersion,
		User: l.user, Exe: l.exe, PID: l.pid, StartTime: l.start, Offline: l.offline, Created: l.created,
	}
	a.lm.mu.Unlock()
	a.persist(func() error { return a.store.PutLease(rec) })
	return nil
}

// persist queues a lease-record write. Lease records are written off the
// request path, in order, by one goroutine: a record lost to a crash is
// recovered at the next start (an unknown Keygen process is an orphan and
// is killed; a stale record's app is gone or re-claims its lease).
func (a *Agent) persist(write func() error) {
	a.persistMu.RLock()
	defer a.persistMu.RUnlock()
	if a.persistQ == nil || a.persistClosed {
		// Before Run started the writer or after it stopped (a request
		// racing the shutdown): write in place.
		if err := write(); err != nil {
			a.log.Warn("writing a lease record", "err", err)
		}
		return
	}
	a.persistQ <- write
}

// runPersister applies queued lease-record writes until the queue is
// closed, then returns.
func (a *Agent) runPersister() {
	for write := range a.persistQ {
		if err := write(); err != nil {
			a.log.Warn("writing a lease record", "err", err)
		}
	}
}

// watchLease releases the lease the moment its OS process exits.
func (a *Agent) watchLease(l *lease) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(a.runCtx))
	a.lm.mu.Lock()
	l.stopWatch = cancel
	a.lm.mu.Unlock()
	ch, err := a.procs.WatchExit(ctx, l.pid, l.start)
	if err != nil {
		if !a.procs.Alive(l.pid, l.start) {
			a.goOwned(func() { a.releaseLease(l.id, "the app's process has exited") })
			return
		}
		a.log.Debug("cannot watch process exit; relying on the connection", "pid", l.pid, "err", err)
		return
	}
	a.goOwned(func() {
		select {
		case <-ch:
			a.releaseLease(l.id, "the app's process has exited")
		case <-ctx.Done():
		}
	})
}

func (a *Agent) schedulePing(l *lease) {
	a.sched.Set(processKeyPrefix+l.id, heartbeat.NextPing(a.now(), l.interval, a.config().HeartbeatFraction, 0.1, rand.Float64))
}

// releaseLease ends a lease: its Keygen process is killed (or the kill is
// queued when offline) before the seat is handed on, so the server never
// sees more processes than the limit.
func (a *Agent) releaseLease(id, reason string) bool {
	a.lm.mu.Lock()
	l := a.lm.leases[id]
	if l == nil || l.releasing {
		a.lm.mu.Unlock()
		return false
	}
	l.releasing = true
	if l.stopWatch != nil {
		l.stopWatch()
	}
	procID, isOffline := l.processID, l.offline
	a.lm.mu.Unlock()
	a.sched.Remove(processKeyPrefix + id)
	a.sched.Remove(adoptKeyPrefix + id)

	ctx, cancel := context.WithTimeout(withBudgetOwner(context.WithoutCancel(a.ctx()), l.user), 30*time.Second)
	defer cancel()
	switch {
	case procID != "":
		if err := a.killProcess(ctx, procID); err != nil {
			if offline(err) || errors.Is(err, context.DeadlineExceeded) {
				if _, qerr := a.store.Enqueue(cache.OutboxEntry{Kind: "kill", LeaseID: id, ProcessID: procID, Created: a.now()}); qerr != nil {
					a.log.Error("queueing kill", "process", procID, "err", qerr)
				}
			} else {
				a.log.Warn("killing Keygen process", "process", procID, "err", err)
			}
		}
	case isOffline:
		a.dropQueuedSpawn(id)
	}
	a.persist(func() error { return a.store.DeleteLease(id) })
	a.lm.mu.Lock()
	delete(a.lm.leases, id)
	if a.lm.byProc[procKey{l.pid, l.start}] == l {
		delete(a.lm.byProc, procKey{l.pid, l.start})
	}
	a.lm.wakeWaiterLocked()
	a.lm.mu.Unlock()
	a.log.Info("lease released", "lease", id, "pid", l.pid, "reason", reason)
	return true
}

func (a *Agent) ctx() context.Context {
	if a.runCtx != nil {
		return a.runCtx
	}
	return context.Background()
}

func (a *Agent) dropQueuedSpawn(leaseID string) {
	entries, err := a.store.Outbox()
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Kind == "spawn" && e.LeaseID == leaseID {
			_ = a.store.Ack(e.Seq)
		}
	}
}

// revokeLease tells the lease's app why, then releases it.
func (a *Agent) revokeLease(id, reason, code string) {
	a.lm.mu.Lock()
	l := a.lm.leases[id]
	var conns []*ipc.Conn
	if l != nil {
		for _, c := range l.conns {
			conns = append(conns, c)
		}
	}
	a.lm.mu.Unlock()
	if l == nil {
		return
	}
	for _, c := range conns {
		_ = c.Notify(ipc.NotifyLeaseRevoked, ipc.LeaseRevoked{LeaseID: id, Reason: reason, Code: code})
	}
	a.releaseLease(id, "revoked: "+reason)
}

// revokeAll revokes every lease, e.g. when the license became invalid.
func (a *Agent) revokeAll(state, code, detail string) {
	a.lm.mu.Lock()
	ids := make([]string, 0, len(a.lm.leases))
	for id, l := range a.lm.leases {
		if !l.releasing {
			ids = append(ids, id)
		}
	}
	a.lm.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	reason := fmt.Sprintf("license is %s: %s", state, detail)
	a.log.Warn("revoking all leases", "count", len(ids), "state", state, "code", code)
	for _, id := range ids {
		a.revokeLease(id, reason, nonEmpty(code, string(state)))
	}
}

// ConnClosed releases the leases whose last connection this was. The cmd
// wiring calls it from ipc.ServerConfig.OnClose.
func (a *Agent) ConnClosed(c *ipc.Conn) {
	a.conns.remove(c)
	if a.stopping.Load() {
		return
	}
	a.lm.mu.Lock()
	var release []string
	for id, l := range a.lm.leases {
		if _, ok := l.conns[c.ID()]; ok {
			delete(l.conns, c.ID())
			if len(l.conns) == 0 && l.adoptUntil.IsZero() {
				release = append(release, id)
			}
		}
	}
	a.lm.mu.Unlock()
	for _, id := range release {
		a.goOwned(func() { a.releaseLease(id, "the app's connection closed") })
	}
}

// ConnOpened registers a connection for license.changed broadcasts.
func (a *Agent) ConnOpened(c *ipc.Conn) { a.conns.add(c) }

// release implements lease.release: the caller may release its own lease;
// admins any.
func (a *Agent) release(ctx context.Context, id string, admin bool) error {
	peer, _ := ipc.PeerFromContext(ctx)
	a.lm.mu.Lock()
	l := a.lm.leases[id]
	owned := l != nil && l.pid == peer.PID && l.start == peer.StartTime
	a.lm.mu.Unlock()
	if l == nil {
		return ipc.Errorf(ipc.CodeNotFound, "no lease %q", id)
	}
	if !owned && !admin {
		return ipc.Errorf(ipc.CodePermissionDenied, "lease %q belongs to another process", id)
	}
	if !owned {
		// An admin takes the seat away: the holder is told why.
		a.revokeLease(id, "released by an administrator", ipc.CodeLicenseInvalid)
		return nil
	}
	a.releaseLease(id, "released by request")
	return nil
}

// listLeases implements leases.list.
func (a *Agent) listLeases() *ipc.LeasesListResult {
	a.lm.mu.Lock()
	out := make([]ipc.LeaseInfo, 0, len(a.lm.leases))
	for _, l := range a.lm.leases {
		out = append(out, ipc.LeaseInfo{LeaseID: l.id, ProcessID: l.processID, App: l.app, AppVersion: l.appVersion,
			User: l.user, PID: l.pid, Since: l.created, Offline: l.offline})
	}
	a.lm.mu.Unlock()
	for i := range out {
		if due, ok := a.sched.Due(processKeyPrefix + out[i].LeaseID); ok {
			out[i].NextPing = &due
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return &ipc.LeasesListResult{Leases: out}
}

// shutdownLeases kills every Keygen process within a bounded time. Leases
// whose kill did not finish stay in the cache and are reconciled at the
// next start.
func (a *Agent) shutdownLeases() {
	a.lm.mu.Lock()
	ids := make([]string, 0, len(a.lm.leases))
	for id, l := range a.lm.leases {
		ids = append(ids, id)
		if l.stopWatch != nil {
			l.stopWatch()
		}
	}
	a.lm.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx()), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		a.lm.mu.Lock()
		l := a.lm.leases[id]
		a.lm.mu.Unlock()
		if l == nil || l.processID == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.killProcess(ctx, l.processID); err == nil {
				a.persist(func() error { return a.store.DeleteLease(id) })
			}
		}()
	}
	wg.Wait()
	a.log.Info("leases ended at shutdown", "count", len(ids))
}
