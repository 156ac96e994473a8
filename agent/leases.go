package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// newLeaseID draws a lease id from Deps.IDs. The id only names the lease;
// which leases are newest is the lease's seq (leaseTable.beyond).
func (a *Agent) newLeaseID() string {
	var b [12]byte
	if _, err := io.ReadFull(a.deps.IDs, b[:]); err != nil {
		// crypto/rand does not fail; an injected source that ran dry
		// still must not hand out one id twice.
		_, _ = crand.Read(b[:])
	}
	return "lease_" + hex.EncodeToString(b[:])
}

// keygenPID is the pid attribute of a lease's Keygen process: the
// kernel-reported PID plus the process start time, so a reused PID never
// collides with a stale process.
func keygenPID(pid int, start uint64) string {
	return strconv.Itoa(pid) + "@" + strconv.FormatUint(start, 10)
}

// acquire implements lease.acquire for the calling peer: it re-uses the
// caller's lease, or takes a seat in the lease table (waiting for one when
// asked), spawns the Keygen process on it and commits the lease.
func (a *Agent) acquire(ctx context.Context, p ipc.AcquireParams) (*ipc.AcquireResult, error) {
	peer, ok := ipc.PeerFromContext(ctx)
	conn := ipc.ConnFromContext(ctx)
	if !ok || peer.PID <= 0 || conn == nil {
		return nil, ipc.Errorf(ipc.CodePermissionDenied, "the agent could not identify the calling process")
	}
	if !a.isReady() {
		return nil, ipc.Errorf(ipc.CodeStarting, "the agent is starting; retry shortly")
	}
	// The peer is the process that opened the connection, resolved once at
	// accept. When it is gone, the caller is a process that inherited the
	// connection (fork and exit): it gets no seat, neither a new one nor
	// the dead process's (issue 14 defect 9).
	if err := a.peerAlive(peer); err != nil {
		return nil, err
	}
	key := procKey{peer.PID, peer.StartTime}
	endTurn, err := a.leases.turn(ctx, key)
	if err != nil {
		return nil, err
	}
	defer endTurn()
	v := a.view()
	if err := a.reuseAllowed(v); err != nil {
		return nil, err
	}
	if res := a.reuse(key, conn, v); res != nil {
		return res, nil
	}
	if err := a.leaseAllowed(v); err != nil {
		return nil, err
	}
	if err := a.requireEntitlementsParam(ctx, p, v); err != nil {
		return nil, err
	}
	waitCtx := ctx
	if p.WaitMS > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, time.Duration(p.WaitMS)*time.Millisecond)
		defer cancel()
	}
	seat, err := a.leases.reserve(waitCtx, a.effectiveLimit(v), a.capacity(v), p.WaitMS > 0)
	if err != nil {
		return nil, seatError(ctx, err)
	}
	defer seat.cancel() // hands the seat on unless committed
	if p.WaitMS > 0 {
		// While this acquirer waited, the process may have got a lease on
		// another connection, or exited, or the license may have changed.
		if err := a.peerAlive(peer); err != nil {
			return nil, err
		}
		v = a.view()
		if err := a.reuseAllowed(v); err != nil {
			return nil, err
		}
		if res := a.reuse(key, conn, v); res != nil {
			return res, nil
		}
		if err := a.leaseAllowed(v); err != nil {
			return nil, err
		}
	}
	l, err := a.spawnLease(ctx, peer, conn, p, v)
	if err != nil {
		return nil, err
	}
	lp := l.procLocked() // l is not shared until commit
	// A signed answer during the spawn (a refusal in the validation that
	// relearned the clock, say) may have refused the license: the new
	// lease is then not granted (model test, I4/granted-after-signed-
	// invalid-online).
	if now := a.view(); !now.Valid && now.State != StateStarting {
		a.discardSpawned(lp)
		return nil, a.leaseAllowed(now)
	}
	if err := seat.commit(l); err != nil {
		// The shutdown ended every lease while this one was spawning.
		a.endAtShutdown(a.haltCtx(), lp)
		return nil, seatError(ctx, err)
	}
	a.watchLease(l)
	if lp.processID != "" {
		a.schedulePing(l.id, lp.interval)
	}
	a.log.Info("lease acquired", "lease", l.id, "pid", l.pid, "app", l.app, "process", lp.processID, "offline", lp.offline)
	return acquireResult(lp, v, false), nil
}

// peerAlive refuses a caller whose process has exited.
func (a *Agent) peerAlive(peer ipc.Peer) error {
	if a.procs.Alive(peer.PID, peer.StartTime) {
		return nil
	}
	return &ipc.Error{Code: ipc.CodeProcessExited,
		Message: fmt.Sprintf("process %d, which opened this connection, has exited; a process that inherited the connection must connect itself", peer.PID),
		Data:    map[string]any{"pid": peer.PID}}
}

// reuseAllowed decides whether an existing lease (one restored after a
// restart, or held on another connection) may be handed back. Handing it
// back is a grant: not while the license is known invalid, and not while
// the agent is starting and the persisted verdict says Keygen refused the
// license (a restored lease would otherwise outlive the refusal until the
// first sync; issue 14 I4).
func (a *Agent) reuseAllowed(v licenseView) error {
	if v.State == StateStarting {
		if vr := a.verdict(); vr != nil {
			return &ipc.Error{Code: ipc.CodeLicenseInvalid,
				Message: "Keygen refused this license or machine at " + vr.At.UTC().Format(time.RFC3339) + ": " + nonEmpty(vr.Detail, string(vr.State)),
				Data:    map[string]any{"reason": nonEmpty(vr.Code, string(vr.State)), "state": vr.State, "keygen_code": vr.Code}}
		}
		return nil
	}
	if !v.Valid {
		return a.leaseAllowed(v)
	}
	return nil
}

// reuse gives the caller its existing lease back on conn, or returns nil.
func (a *Agent) reuse(key procKey, conn *ipc.Conn, v licenseView) *ipc.AcquireResult {
	lp, ok := a.leases.reclaim(key, conn)
	if !ok {
		return nil
	}
	a.sched.Remove(schedKey{kind: schedAdopt, lease: lp.leaseID})
	return acquireResult(lp, v, true)
}

// seatError maps the lease table's refusals onto the protocol's errors.
func seatError(ctx context.Context, err error) error {
	var lr *limitReached
	var cr *capacityReached
	switch {
	case errors.Is(err, errStopping):
		return ipc.Errorf(ipc.CodeStopping, "the agent is stopping; retry once it is back")
	case errors.As(err, &lr) && lr.waited:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return limitError(lr.limit, lr.used, "no seat became free within the wait timeout")
	case errors.As(err, &lr):
		return limitError(lr.limit, lr.used, "")
	case errors.As(err, &cr):
		return &ipc.Error{Code: ipc.CodeHeartbeatCapacity,
			Message: fmt.Sprintf("the agent cannot keep more than %d leases alive within Keygen's rate limits at the current heartbeat interval", cr.capacity),
			Data:    map[string]any{"capacity": cr.capacity, "count": cr.used}}
	}
	return err
}

func limitError(limit, count int, extra string) *ipc.Error {
	msg := fmt.Sprintf("process limit reached: %d of %d in use", count, limit)
	if extra != "" {
		msg += "; " + extra
	}
	return &ipc.Error{Code: ipc.CodeProcessLimitExceeded, Message: msg, Data: map[string]any{"limit": limit, "count": count}}
}

func acquireResult(lp leaseProc, v licenseView, reused bool) *ipc.AcquireResult {
	ents := v.Entitlements
	if ents == nil {
		ents = []string{}
	}
	return &ipc.AcquireResult{
		LeaseID: lp.leaseID, ProcessID: lp.processID, HeartbeatInterval: int(lp.interval / time.Second),
		Offline: lp.offline, Entitlements: ents, Reused: reused,
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

// effectiveLimit is the per-machine process limit (the machine's
// max_processes override, else the license's) raised by the policy's
// overage allowance; nil means unlimited.
func (a *Agent) effectiveLimit(v licenseView) *int {
	max := leasingMax(v)
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
	n = a.leasingLimit(v, n)
	return &n
}

// leaseInterval is the heartbeat interval new leases will get: the one
// Keygen gave the last spawn, else the machine's or the policy's.
func (a *Agent) leaseInterval(v licenseView) time.Duration {
	if d := a.leases.learnedInterval(); d > 0 {
		return d
	}
	if v.Machine != nil && v.Machine.HeartbeatDuration > 0 {
		return time.Duration(v.Machine.HeartbeatDuration) * time.Second
	}
	if v.Policy != nil && v.Policy.HeartbeatDuration != nil {
		return time.Duration(*v.Policy.HeartbeatDuration) * time.Second
	}
	return 600 * time.Second
}

// capacity is how many leases the request budget can keep alive: 80%
// of the sustainable request rate goes to heartbeats, the rest stays free
// for validations, spawns and kills.
func (a *Agent) capacity(v licenseView) int {
	if a.licenseOnly() {
		return localLeaseCapacity // no heartbeats to budget for (licenseonly.go)
	}
	rate := a.budget.SustainableRate() * 0.8
	frac := a.config().HeartbeatFraction
	if d := a.machineHeartbeatInterval(v); d > 0 {
		rate -= 1 / (d.Seconds() * frac)
	}
	perLease := 1 / (a.leaseInterval(v).Seconds() * frac)
	if rate <= 0 {
		return 0
	}
	return int(rate / perLease)
}

func (a *Agent) leaseUsage(v licenseView) ipc.LeaseUsage {
	return ipc.LeaseUsage{Active: a.leases.count(), Limit: a.effectiveLimit(v), Capacity: a.capacity(v)}
}

// spawnLease creates the Keygen process for a new lease, or queues it when
// Keygen is unreachable and offline leasing is allowed.
func (a *Agent) spawnLease(ctx context.Context, peer ipc.Peer, conn *ipc.Conn, p ipc.AcquireParams, v licenseView) (*lease, error) {
	l := &lease{
		id: a.newLeaseID(), seq: a.leases.nextSeq(), pid: peer.PID, start: peer.StartTime, exe: peer.Exe, user: peer.UID,
		app: p.App, appVersion: p.AppVersion, metadata: p.Metadata,
		keygenPID: keygenPID(peer.PID, peer.StartTime), created: a.now(),
		conns: map[uint64]*ipc.Conn{conn.ID(): conn}, interval: a.leaseInterval(v),
	}
	local := a.licenseOnly() // license-only mode: no Keygen process, nothing queued (licenseonly.go)
	if local {
		l.interval = 0
	}
	if v.Online && !local {
		// An app waits at most spawnWait for Keygen (or for the request
		// budget during a 429 storm); past that the lease is granted
		// locally and its spawn queued, as when offline.
		proc, err := a.spawnProcess(withMaxBudgetWait(ctx, spawnWait), l)
		if errors.Is(err, keygen.ErrProcessLimitExceeded) && a.freeSeat(withMaxBudgetWait(ctx, spawnWait), l.user) {
			// Keygen still counted a process whose kill was queued: one
			// seat is free now, try once more.
			proc, err = a.spawnProcess(withMaxBudgetWait(ctx, spawnWait), l)
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err == nil:
			l.processID = proc.ID
			a.recordProof(l.id, proc, false)
			if proc.Interval > 0 {
				l.interval = time.Duration(proc.Interval) * time.Second
				a.leases.learnInterval(l.interval)
			}
		case errors.Is(err, keygen.ErrProcessLimitExceeded):
			var kerr *keygen.Error
			detail := ""
			if errors.As(err, &kerr) {
				detail = "Keygen: " + kerr.Detail
			}
			used := a.leases.used() - 1
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
			a.sched.Set(schedKey{kind: schedOutbox}, schedNow().Add(outboxRetry))
		default:
			return nil, mapKeygenError(err)
		}
	} else if !local {
		l.offline = true
	}
	if l.offline {
		payload, _ := json.Marshal(l.processMetadata(a.agentID()))
		if _, err := a.store.Enqueue(cache.OutboxEntry{Kind: cache.OutboxSpawn, LeaseID: l.id, User: l.user, Payload: payload, Created: a.now()}); err != nil {
			return nil, ipc.Errorf(ipc.CodeInternal, "queueing the offline lease: %v", err)
		}
	}
	// The record is durable before lease.acquire answers: after a kill -9
	// right after the answer, the restarted agent still knows the lease,
	// so the app re-claims it (same lease, same Keygen process) instead of
	// getting a new one. One bbolt commit per acquire; BENCHMARKS.md
	// measures it. Later changes (a re-spawn's process id, the release)
	// still go through the background writer: losing one of those only
	// costs a ping that finds the process gone, or a stale record whose app
	// is gone at the next start.
	if err := a.store.PutLease(a.leases.record(l)); err != nil {
		a.log.Error("writing the lease record; a restart will not re-adopt this lease", "lease", l.id, "err", err)
	}
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
	// outboxRetry is when queued spawns (budget exhausted or Keygen slow
	// while online) are replayed without waiting for the next revalidation.
	outboxRetry = 30 * time.Second
)

// processMetadata is the metadata of l's Keygen process; agentID marks
// the agent that owns it (instance.go).
func (l *lease) processMetadata(agentID string) map[string]any {
	md := map[string]any{
		"leaseId": l.id, "pid": l.pid, "app": l.app, "appVersion": l.appVersion,
		"executable": l.exe, "user": l.user, "agentId": agentID,
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
			proc, err = c.SpawnProcess(ctx, mid, l.keygenPID, l.processMetadata(a.agentID()))
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
		if owner, own := ownedBy(p.Metadata, a.agentID()); !own && p.Status != "DEAD" {
			// The same OS process holds a seat from another agent on this
			// machine: that one is not ours to kill.
			return nil, &ipc.Error{Code: ipc.CodeLicenseInvalid,
				Message: "this process already holds a seat from another keygen-agent on this machine (" + owner + ")",
				Data:    map[string]any{"reason": "PID_TAKEN", "agent_id": owner}}
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

// persistLease queues the write of l's record.
func (a *Agent) persistLease(l *lease) {
	rec := a.leases.record(l)
	a.persist(func() error { return a.store.PutLease(rec) })
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
	// The watch ends with the lease (stopWatch) or, at the latest, when
	// the shutdown's budget for ending leases is spent: a lease the
	// shutdown could not end (Keygen slow or unreachable) must not keep
	// Run waiting for its watcher forever.
	ctx, cancel := context.WithCancel(a.haltCtx())
	a.leases.setWatch(l, cancel)
	ch, err := a.procs.WatchExit(ctx, l.pid, l.start)
	if err != nil {
		if !a.procs.Alive(l.pid, l.start) {
			a.goOwned(func() { a.processExited(l.id) })
			return
		}
		a.log.Debug("cannot watch process exit; relying on the connection", "pid", l.pid, "err", err)
		return
	}
	a.goOwned(func() {
		select {
		case <-ch:
			a.processExited(l.id)
		case <-ctx.Done():
		}
	})
}

// processExited ends the lease of a process that has exited. A connection
// may outlive it (a child inherited it after a fork): whoever still reads
// it is told, never left believing it holds a seat (issue 14 defect 9).
func (a *Agent) processExited(id string) {
	a.revokeLease(id, "the app's process has exited", ipc.CodeProcessExited)
}

// releaseLease ends a lease: its Keygen process is killed (or the kill is
// queued when offline) before the seat is handed on, so the server never
// sees more processes than the limit.
func (a *Agent) releaseLease(id, reason string) bool {
	l, lp, ok := a.leases.beginRelease(id)
	if !ok {
		return false
	}
	a.sched.Remove(schedKey{kind: schedPing, lease: id})
	a.sched.Remove(schedKey{kind: schedAdopt, lease: id})

	// The kill is charged to the lease's user, but never waits on that
	// user's share: the seat is handed on only after it, and whoever waits
	// for the seat (another user's acquire, the license loop revoking, a
	// heartbeat worker) must not wait out this user's budget. A user whose
	// share is spent has the kill queued at once (errShareSpent); Keygen
	// then counts the process until the replay sends the kill, or until an
	// acquire that needs the seat sends it charged to the agent (freeSeat).
	ctx, cancel := context.WithTimeout(withinShare(withBudgetOwner(a.haltCtx(), l.user)), 30*time.Second)
	defer cancel()
	switch {
	case lp.processID != "":
		if err := a.killProcess(ctx, lp.processID); err != nil {
			if offline(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				a.queueKill(id, lp.processID, l.user)
			} else {
				a.log.Warn("killing Keygen process", "process", lp.processID, "err", err)
			}
		}
	case lp.offline:
		a.dropQueuedSpawn(id)
	}
	a.persist(func() error { return a.store.DeleteLease(id) })
	a.dropProof(id)
	a.leases.remove(l)
	a.log.Info("lease released", "lease", id, "pid", l.pid, "reason", reason)
	return true
}

// discardSpawned undoes a spawn whose lease is not granted after all: its
// Keygen process is killed (queued when Keygen cannot be reached), a
// queued offline spawn dropped, and the persisted lease deleted.
func (a *Agent) discardSpawned(lp leaseProc) {
	ctx, cancel := context.WithTimeout(a.haltCtx(), 30*time.Second)
	defer cancel()
	switch {
	case lp.processID != "":
		if err := a.killProcess(ctx, lp.processID); err != nil {
			if offline(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				a.queueKill(lp.leaseID, lp.processID, "")
			} else {
				a.log.Warn("killing Keygen process", "process", lp.processID, "err", err)
			}
		}
	case lp.offline:
		a.dropQueuedSpawn(lp.leaseID)
	}
	a.persist(func() error { return a.store.DeleteLease(lp.leaseID) })
	a.dropProof(lp.leaseID)
	a.log.Info("lease not granted: the license was refused while its process was spawned", "lease", lp.leaseID)
}

func (a *Agent) queueKill(leaseID, processID, user string) {
	if _, err := a.store.Enqueue(cache.OutboxEntry{Kind: cache.OutboxKill, LeaseID: leaseID, ProcessID: processID, User: user, Created: a.now()}); err != nil {

		a.log.Error("queueing kill", "process", processID, "err", err)
	}
}

// ctx is Run's context (Background before Run).
func (a *Agent) ctx() context.Context {
	if a.runCtx != nil {
		return a.runCtx
	}
	return context.Background()
}

// haltCtx bounds Keygen calls that end leases: it is not cancelled with
// Run's context, only when the shutdown's budget for ending leases is
// spent.
func (a *Agent) haltCtx() context.Context {
	if a.halt != nil {
		return a.halt
	}
	return context.Background()
}

func (a *Agent) dropQueuedSpawn(leaseID string) {
	entries, err := a.store.Outbox()
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Kind == cache.OutboxSpawn && e.LeaseID == leaseID {
			_ = a.store.Ack(e.Seq)
		}
	}
}

// revokeLease tells the lease's app why, then releases it.
func (a *Agent) revokeLease(id, reason, code string) {
	l, conns := a.leases.conns(id)
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
	ids := a.leases.liveIDs()
	if len(ids) == 0 {
		return
	}
	reason := fmt.Sprintf("license is %s: %s", state, detail)
	a.log.Warn("revoking all leases", "count", len(ids), "state", state, "code", code)
	for _, id := range ids {
		a.revokeLease(id, reason, nonEmpty(code, string(state)))
	}
}

// connClosed releases the leases whose last connection this was. While
// stopping, the shutdown ends them instead.
func (a *Agent) connClosed(c *ipc.Conn) {
	a.conns.remove(c)
	if a.stopping.Load() {
		return
	}
	for _, id := range a.leases.detach(c.ID()) {
		a.goOwned(func() { a.releaseLease(id, "the app's connection closed") })
	}
}

// connOpened registers a connection for license.changed broadcasts.
func (a *Agent) connOpened(c *ipc.Conn) { a.conns.add(c) }

// release implements lease.release: the caller may release its own lease;
// admins any.
func (a *Agent) release(ctx context.Context, id string, admin bool) error {
	peer, _ := ipc.PeerFromContext(ctx)
	l := a.leases.get(id)
	if l == nil {
		return ipc.Errorf(ipc.CodeNotFound, "no lease %q", id)
	}
	owned := l.pid == peer.PID && l.start == peer.StartTime
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
	out := a.leases.infos()
	for i := range out {
		if due, ok := a.sched.Due(schedKey{kind: schedPing, lease: out[i].LeaseID}); ok {
			out[i].NextPing = &due
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return &ipc.LeasesListResult{Leases: out}
}

// shutdownLeases ends every lease within ctx: it waits for the spawns in
// flight, then kills every Keygen process. Leases whose kill did not
// finish stay in the cache and are reconciled at the next start; a spawn
// still in flight when ctx ends is refused its commit and ends itself
// (endAtShutdown).
func (a *Agent) shutdownLeases(ctx context.Context) {
	lps := a.leases.drain(ctx)
	if len(lps) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, lp := range lps {
		wg.Go(func() { a.endAtShutdown(ctx, lp) })
	}
	wg.Wait()
	a.log.Info("leases ended at shutdown", "count", len(lps))
}

// endAtShutdown kills a lease's Keygen process and forgets its record; a
// lease whose kill fails keeps its record for the next start.
func (a *Agent) endAtShutdown(ctx context.Context, lp leaseProc) {
	if lp.processID == "" {
		return
	}
	if err := a.killProcess(ctx, lp.processID); err != nil {
		a.log.Warn("killing Keygen process at shutdown; the next start reconciles it", "process", lp.processID, "err", err)
		return
	}
	a.persist(func() error { return a.store.DeleteLease(lp.leaseID) })
}
