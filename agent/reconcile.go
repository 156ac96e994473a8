package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/agent/heartbeat"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// fireHeartbeat is the scheduler's work function: machine pings, process
// pings, and the end of adoption windows.
func (a *Agent) fireHeartbeat(ctx context.Context, key string) {
	switch {
	case key == machineHeartbeatKey:
		a.fireMachineHeartbeat(ctx)
	case strings.HasPrefix(key, processKeyPrefix):
		a.fireProcessHeartbeat(ctx, strings.TrimPrefix(key, processKeyPrefix))
	case key == outboxKey:
		if a.view().Online {
			a.replayOutbox(ctx)
		}
		if out, err := a.store.Outbox(); err == nil && len(out) > 0 {
			a.sched.Set(outboxKey, a.now().Add(outboxRetry))
		}
	case strings.HasPrefix(key, adoptKeyPrefix):
		id := strings.TrimPrefix(key, adoptKeyPrefix)
		a.lm.mu.Lock()
		l := a.lm.leases[id]
		unclaimed := l != nil && !l.adoptUntil.IsZero() && len(l.conns) == 0
		a.lm.mu.Unlock()
		if unclaimed {
			a.releaseLease(id, "not re-claimed within the adoption window after a restart")
		}
	}
}

// retryDelay is when a failed ping is tried again: soon, and well inside
// the remaining window.
func retryDelay(interval time.Duration) time.Duration {
	return min(interval/10, 30*time.Second)
}

func (a *Agent) fireMachineHeartbeat(ctx context.Context) {
	v := a.view()
	d := a.machineHeartbeatInterval(v)
	if d == 0 {
		return
	}
	err := a.pingMachine(ctx)
	switch {
	case err == nil:
		a.sched.Set(machineHeartbeatKey, heartbeat.NextPing(a.now(), d, a.config().HeartbeatFraction, 0.1, rand.Float64))
	case errors.Is(err, keygen.ErrHeartbeatDead) || errors.Is(err, keygen.ErrNotFound):
		a.log.Warn("machine heartbeat lost; re-validating", "err", err)
		a.goOwned(func() { _ = a.requestSync(a.ctx()) })
	default:
		if ctx.Err() == nil {
			a.sched.Set(machineHeartbeatKey, a.now().Add(retryDelay(d)))
		}
	}
}

func (a *Agent) fireProcessHeartbeat(ctx context.Context, id string) {
	a.lm.mu.Lock()
	l := a.lm.leases[id]
	if l == nil || l.releasing || l.processID == "" {
		a.lm.mu.Unlock()
		return
	}
	procID, interval := l.processID, l.interval
	a.lm.mu.Unlock()
	err := a.call(ctx, budget.PriorityPing, func(ctx context.Context, c *keygen.Client) error {
		p, err := c.PingProcess(ctx, procID)
		a.recordProof(id, p, false)
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, keygen.ErrNotFound) || errors.Is(err, keygen.ErrHeartbeatDead):
		// Culled or dead (an outage longer than the window): re-spawn
		// under the same lease, transparently for the app.
		a.log.Info("Keygen process lost; re-spawning under the same lease", "lease", id, "err", err)
		if !a.respawn(ctx, l) {
			a.sched.Set(processKeyPrefix+id, a.now().Add(retryDelay(interval)))
			return
		}
	default:
		if ctx.Err() != nil {
			return
		}
		if offline(err) {
			a.goOfflineAsync(err)
		} else {
			a.log.Warn("process ping failed", "lease", id, "err", err)
		}
		a.sched.Set(processKeyPrefix+id, a.now().Add(retryDelay(interval)))
		return
	}
	a.sched.Set(processKeyPrefix+id, heartbeat.NextPing(a.now(), interval, a.config().HeartbeatFraction, 0.1, rand.Float64))
}

// respawn replaces a lost Keygen process of a live lease.
func (a *Agent) respawn(ctx context.Context, l *lease) bool {
	proc, err := a.spawnProcess(ctx, l)
	if err != nil {
		if errors.Is(err, keygen.ErrProcessLimitExceeded) {
			a.revokeLease(l.id, "Keygen refused to re-create the process: limit reached", ipc.CodeProcessLimitExceeded)
			return true
		}
		a.log.Warn("re-spawn failed", "lease", l.id, "err", err)
		return false
	}
	a.lm.mu.Lock()
	l.processID, l.offline = proc.ID, false
	a.lm.mu.Unlock()
	a.recordProof(l.id, proc, true)
	_ = a.persistLease(l)
	return true
}

// restoreLeases is crash recovery: leases persisted by an earlier run whose
// app is gone are ended; live apps keep their Keygen process, pinged, for
// the adoption window while their client reconnects.
func (a *Agent) restoreLeases(ctx context.Context) {
	recs, err := a.store.Leases()
	if err != nil {
		a.log.Error("reading persisted leases", "err", err)
		return
	}
	window := a.config().AdoptionWindow.D()
	for _, r := range recs {
		l := &lease{
			id: r.ID, pid: r.PID, start: r.StartTime, exe: r.Exe, user: r.User, app: r.App, appVersion: r.AppVersion,
			keygenPID: r.KeygenPID, processID: r.ProcessID, offline: r.Offline, created: r.Created,
			conns: map[uint64]*ipc.Conn{}, interval: 600 * time.Second,
		}
		a.lm.mu.Lock()
		a.lm.leases[l.id] = l
		a.lm.byProc[procKey{l.pid, l.start}] = l
		a.lm.mu.Unlock()
		if !a.procs.Alive(r.PID, r.StartTime) {
			a.goOwned(func() { a.releaseLease(l.id, "the app exited while the agent was down") })
			continue
		}
		l.adoptUntil = a.now().Add(window)
		a.sched.Set(adoptKeyPrefix+l.id, l.adoptUntil)
		if l.processID != "" {
			// Ping soon: the process may have died while we were down.
			a.sched.Set(processKeyPrefix+l.id, a.now())
		}
		a.watchLease(l)
		a.log.Info("lease awaiting re-adoption", "lease", l.id, "pid", l.pid, "until", l.adoptUntil)
	}
}

// reconcileServer kills Keygen processes of this machine that no lease
// knows about (left by a lost cache or a crash), once per start.
func (a *Agent) reconcileServer(ctx context.Context) {
	a.lm.mu.Lock()
	done := a.lm.reconciled
	a.lm.mu.Unlock()
	if done {
		return
	}
	mid := a.machineID()
	if mid == "" {
		return
	}
	var procs []keygen.Process
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		procs, err = c.MachineProcesses(ctx, mid)
		return err
	})
	if err != nil {
		return
	}
	a.lm.mu.Lock()
	a.lm.reconciled = true
	known := map[string]bool{}
	for _, l := range a.lm.leases {
		known[l.processID] = true
		known["pid:"+l.keygenPID] = true
	}
	pending := a.lm.pending
	a.lm.mu.Unlock()
	for _, p := range procs {
		if known[p.ID] || known["pid:"+p.PID] {
			continue
		}
		if pending > 0 {
			// A spawn in flight may be this one; leave it to the next start.
			continue
		}
		a.log.Info("killing orphaned Keygen process", "process", p.ID, "pid", p.PID)
		if err := a.killProcess(ctx, p.ID); err != nil {
			a.log.Warn("killing orphan", "process", p.ID, "err", err)
		}
	}
}

// replayOutbox sends what was queued while offline, oldest first. When
// Keygen refuses a queued spawn (its seats were taken meanwhile, e.g. by
// other machines under PER_LICENSE), that lease — a newer one than every
// lease already confirmed — is revoked with a notification.
func (a *Agent) replayOutbox(ctx context.Context) {
	// One replay at a time (the license loop and the scheduler both
	// trigger it); a second caller leaves it to the running one.
	if !a.replayMu.TryLock() {
		return
	}
	defer a.replayMu.Unlock()
	entries, err := a.store.Outbox()
	if err != nil || len(entries) == 0 {
		return
	}
	a.log.Info("replaying offline queue", "entries", len(entries))
	// Kills first: each frees a seat on Keygen, and a spawn queued before a
	// kill must not be refused for a seat the agent already gave back.
	slices.SortStableFunc(entries, func(x, y cache.OutboxEntry) int {
		return boolInt(x.Kind != "kill") - boolInt(y.Kind != "kill")
	})
	for _, e := range entries {
		switch e.Kind {
		case "spawn":
			a.lm.mu.Lock()
			l := a.lm.leases[e.LeaseID]
			live := l != nil && !l.releasing
			a.lm.mu.Unlock()
			if !live {
				_ = a.store.Ack(e.Seq)
				continue
			}
			proc, err := a.spawnProcess(ctx, l)
			switch {
			case err == nil:
				a.lm.mu.Lock()
				l.processID, l.offline = proc.ID, false
				if proc.Interval > 0 {
					l.interval = time.Duration(proc.Interval) * time.Second
				}
				a.lm.mu.Unlock()
				a.recordProof(l.id, proc, true)
				_ = a.persistLease(l)
				_ = a.store.Ack(e.Seq)
				a.schedulePing(l)
			case offline(err):
				return
			default:
				_ = a.store.Ack(e.Seq)
				a.lm.mu.Lock()
				l.offline = false // nothing to drop from the outbox any more
				a.lm.mu.Unlock()
				code := ipc.CodeLicenseInvalid
				if errors.Is(err, keygen.ErrProcessLimitExceeded) {
					code = ipc.CodeProcessLimitExceeded
				}
				a.revokeLease(e.LeaseID, "Keygen refused the lease granted while offline: "+err.Error(), code)
			}
		case "kill":
			err := a.killProcess(ctx, e.ProcessID)
			if offline(err) {
				return
			}
			_ = a.store.Ack(e.Seq)
		default:
			_ = a.store.Ack(e.Seq)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// hasQueuedKills reports whether the outbox holds kills not yet sent.
func (a *Agent) hasQueuedKills() bool {
	entries, err := a.store.Outbox()
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Kind == "kill" {
			return true
		}
	}
	return false
}
