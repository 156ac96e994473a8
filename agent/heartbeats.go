package agent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/agent/heartbeat"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// schedKind is what a scheduler key stands for.
type schedKind uint8

const (
	// schedMachine is the machine heartbeat.
	schedMachine schedKind = iota + 1
	// schedOutbox replays the outbox.
	schedOutbox
	// schedPing is a lease's process heartbeat.
	schedPing
	// schedAdopt ends a restored lease's adoption window.
	schedAdopt
)

// schedKey is the agent's heartbeat.Scheduler key; lease is set for
// schedPing and schedAdopt.
type schedKey struct {
	kind  schedKind
	lease string
}

var machineHeartbeatKey = schedKey{kind: schedMachine}

// fireHeartbeat is the scheduler's work function: machine pings, process
// pings, outbox replays and the end of adoption windows.
func (a *Agent) fireHeartbeat(ctx context.Context, key schedKey) {
	switch key.kind {
	case schedMachine:
		a.fireMachineHeartbeat(ctx)
	case schedPing:
		a.fireProcessHeartbeat(ctx, key.lease)
	case schedOutbox:
		if a.view().Online {
			a.replayOutbox(ctx)
		}
		if out, err := a.store.Outbox(); err == nil && len(out) > 0 {
			a.sched.Set(key, schedNow().Add(outboxRetry))
		}
	case schedAdopt:
		if a.leases.unclaimed(key.lease) {
			a.releaseLease(key.lease, "not re-claimed within the adoption window after a restart")
		}
	}
}

// retryDelay is when a failed ping is tried again: soon, and well inside
// the remaining window.
func retryDelay(interval time.Duration) time.Duration {
	return min(interval/10, 30*time.Second)
}

// schedulePing schedules lease id's next process heartbeat.
func (a *Agent) schedulePing(id string, interval time.Duration) {
	a.sched.Set(schedKey{kind: schedPing, lease: id}, heartbeat.NextPing(schedNow(), interval, a.config().HeartbeatFraction, 0.1, a.draw("ping/"+id)))
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
		a.sched.Set(machineHeartbeatKey, heartbeat.NextPing(schedNow(), d, a.config().HeartbeatFraction, 0.1, a.draw("machine")))
		a.backOnline(v)
	case errors.Is(err, keygen.ErrHeartbeatDead) || errors.Is(err, keygen.ErrNotFound):
		a.log.Warn("machine heartbeat lost; re-validating", "err", err)
		a.goOwned(func() { _ = a.requestSync(a.ctx()) })
	default:
		if ctx.Err() == nil {
			a.sched.Set(machineHeartbeatKey, schedNow().Add(retryDelay(d)))
		}
	}
}

func (a *Agent) fireProcessHeartbeat(ctx context.Context, id string) {
	l, lp, ok := a.leases.live(id)
	if !ok || lp.processID == "" {
		return
	}
	key := schedKey{kind: schedPing, lease: id}
	var proc *keygen.Process
	err := a.call(ctx, budget.PriorityPing, func(ctx context.Context, c *keygen.Client) error {
		var err error
		proc, err = c.PingProcess(ctx, lp.processID)
		a.recordProof(id, proc, false)
		return err
	})
	switch {
	case err == nil:
		// Keygen's answer carries the process's interval (the machine's
		// heartbeat duration, or 600 s): follow it, so a changed policy
		// or a lease restored without one is pinged in time.
		if d := time.Duration(proc.Interval) * time.Second; d > 0 && d != lp.interval {
			lp = a.leases.setProcess(l, lp.processID, d)
			a.persistLease(l)
		}
		a.backOnline(a.view())
	case errors.Is(err, keygen.ErrNotFound) || errors.Is(err, keygen.ErrHeartbeatDead):
		// Culled or dead (an outage longer than the window): re-spawn
		// under the same lease, transparently for the app.
		a.log.Info("Keygen process lost; re-spawning under the same lease", "lease", id, "err", err)
		if !a.respawn(ctx, l) {
			a.sched.Set(key, schedNow().Add(retryDelay(lp.interval)))
			return
		}
		a.backOnline(a.view())
	default:
		if ctx.Err() != nil {
			return
		}
		if offline(err) {
			a.goOfflineAsync(err)
		} else {
			a.log.Warn("process ping failed", "lease", id, "err", err)
		}
		a.sched.Set(key, schedNow().Add(retryDelay(lp.interval)))
		return
	}
	a.schedulePing(id, lp.interval)
}

// backOnline: a heartbeat reached Keygen while the view is offline. The
// license loop may be minutes into its offline backoff; have it sync now,
// so that the state (and a machine Keygen culled during the outage) is
// put right at once rather than at the next retry.
func (a *Agent) backOnline(v licenseView) {
	if !v.Online {
		a.kickLicenseLoop()
	}
}

// respawn replaces a lost Keygen process of a live lease.
//
// The lease may be released while its ping is in flight (its app exits in
// the same instant): a released lease gets no new process, and one spawned
// as the release happened is killed, or it would hold a seat nobody owns
// until Keygen culls it, and an app waiting for that seat is refused (model
// test seed 546: a lease granted offline was revoked once online because
// the released lease's re-spawn took its seat).
func (a *Agent) respawn(ctx context.Context, l *lease) bool {
	if _, _, ok := a.leases.live(l.id); !ok {
		return true
	}
	proc, err := a.spawnProcess(ctx, l)
	if err != nil {
		if errors.Is(err, keygen.ErrProcessLimitExceeded) {
			a.revokeLease(l.id, "Keygen refused to re-create the process: limit reached", ipc.CodeProcessLimitExceeded)
			return true
		}
		a.log.Warn("re-spawn failed", "lease", l.id, "err", err)
		return false
	}
	if _, ok := a.leases.setProcessIfLive(l, proc.ID, time.Duration(proc.Interval)*time.Second); !ok {
		if err := a.killProcess(ctx, proc.ID); err != nil {
			a.log.Warn("killing the process re-spawned for a released lease", "process", proc.ID, "err", err)
		}
		return true
	}
	a.recordProof(l.id, proc, true)
	a.persistLease(l)
	return true
}

// minProcessInterval is the shortest heartbeat duration Keygen accepts
// (policy.rb: heartbeat_duration >= 60).
const minProcessInterval = 60 * time.Second

// schedNow is the base of every deadline given to a.sched. The scheduler
// sleeps on the monotonic clock (time.Now), so its deadlines must not come
// from the local wall clock a.now, which may be wrong by any amount: a
// clock a year slow put the outbox retry a year in the past, and the
// scheduler fired it again at once, forever (model test, seed 46); a clock
// a minute slow left restored leases no adoption window (F9).
func schedNow() time.Time { return time.Now() }

// draw returns the jitter source of the timer named key: a value in
// [0, 1) hashed from the agent's salt (one Deps.Rand draw at New), the key
// and the instant of the draw (schedNow). Agents still spread their pings
// (each has its own salt), and one agent's timers do not depend on the
// order in which its goroutines woken in the same instant draw: with a
// seeded Deps.Rand, a run replays the same timers (the model test).
func (a *Agent) draw(key string) func() float64 {
	return func() float64 {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], a.salt)
		binary.LittleEndian.PutUint64(b[8:], uint64(schedNow().UnixNano()))
		h := sha256.New()
		h.Write(b[:])
		h.Write([]byte(key))
		sum := h.Sum(nil)
		return float64(binary.LittleEndian.Uint64(sum)>>11) / (1 << 53)
	}
}
