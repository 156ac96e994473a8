package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// restoreLeases is crash recovery: leases persisted by an earlier run whose
// app is gone are ended; live apps keep their Keygen process, pinged, for
// the adoption window while their client reconnects. Their first ping is
// left to the returned func, which the license loop runs after its first
// round: that round and the pings would otherwise start in the same
// instant and race for the request budget (under a 429 storm the loser
// waits out the Retry-After, so the agent's state after a restart
// depended on goroutine order; the model test's seed 31).
func (a *Agent) restoreLeases(ctx context.Context) (pingRestored func()) {
	recs, err := a.store.Leases()
	if err != nil {
		a.log.Error("reading persisted leases", "err", err)
		return nil
	}
	var ping []string
	defer func() {
		if len(ping) > 0 {
			pingRestored = func() {
				for _, id := range ping {
					if a.leases.get(id) != nil {
						a.sched.Set(schedKey{kind: schedPing, lease: id}, schedNow())
					}
				}
			}
		}
	}()
	window := a.config().AdoptionWindow.D()
	// The leases keep their order (seq: which are newest when the limit
	// falls). Records from before seq was persisted get theirs after the
	// others, in creation order, and are written back with it.
	slices.SortStableFunc(recs, func(x, y cache.LeaseRecord) int {
		switch {
		case (x.Seq == 0) != (y.Seq == 0):
			if x.Seq == 0 {
				return 1
			}
			return -1
		case x.Seq != y.Seq:
			return cmp.Compare(x.Seq, y.Seq)
		case !x.Created.Equal(y.Created):
			return x.Created.Compare(y.Created)
		}
		return strings.Compare(x.ID, y.ID)
	})
	for _, r := range recs {
		// The interval Keygen gave the process (issue 14 defect 5: a
		// restored 60 s process must not be pinged every 600 s). Records
		// from before the field existed fall back to the shortest interval
		// Keygen allows, so the first pings come early; the first ping's
		// answer then carries the real one (fireProcessHeartbeat).
		interval := time.Duration(r.IntervalSeconds) * time.Second
		if interval <= 0 {
			interval = minProcessInterval
		}
		l := &lease{
			id: r.ID, pid: r.PID, start: r.StartTime, exe: r.Exe, user: r.User, app: r.App, appVersion: r.AppVersion,
			keygenPID: r.KeygenPID, processID: r.ProcessID, offline: r.Offline, created: r.Created,
			conns: map[uint64]*ipc.Conn{}, interval: interval, seq: r.Seq,
		}
		if !a.procs.Alive(r.PID, r.StartTime) {
			a.leases.restore(l, time.Time{})
			a.goOwned(func() { a.releaseLease(l.id, "the app exited while the agent was down") })
			continue
		}
		until := schedNow().Add(window)
		a.leases.restore(l, until)
		if r.Seq == 0 {
			a.persistLease(l)
		}
		a.sched.Set(schedKey{kind: schedAdopt, lease: l.id}, until)
		if r.ProcessID != "" {
			// Ping soon: the process may have died while we were down.
			ping = append(ping, l.id)
		}
		a.watchLease(l)
		a.log.Info("lease awaiting re-adoption", "lease", l.id, "pid", l.pid, "until", until)
	}
	return nil // pingRestored is set on the way out
}

// reconcileServer runs after every successful validation. It ends the
// leases beyond a lowered process limit (enforceLimit), lists this
// machine's Keygen processes to see whether another agent serves this
// license here (reported in status), and, once per start, kills the
// processes of this agent that no lease knows about (left by a lost cache
// or a crash). Another agent's processes are never killed: that agent
// heartbeats them, and Keygen culls them if it is gone.
func (a *Agent) reconcileServer(ctx context.Context) {
	a.enforceLimit(a.view())
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
	self := a.agentID()
	others := map[string]int{}
	for _, p := range procs {
		if owner, own := ownedBy(p.Metadata, self); !own && p.Status != "DEAD" {
			others[owner]++
		}
	}
	if len(others) > 0 {
		a.log.Warn("another keygen-agent serves this license on this machine; both share its process limit", "agents", len(others))
	}
	a.leases.setOthers(others)
	if a.leases.reconciledYet() {
		return
	}
	known, spawning := a.leases.markReconciled()
	for _, p := range procs {
		if _, own := ownedBy(p.Metadata, self); !own || known[p.ID] || known["pid:"+p.PID] {
			continue
		}
		if spawning {
			// A spawn in flight may be this one; leave it to the next start.
			continue
		}
		a.log.Info("killing orphaned Keygen process", "process", p.ID, "pid", p.PID)
		if err := a.killProcess(ctx, p.ID); err != nil {
			a.log.Warn("killing orphan", "process", p.ID, "err", err)
		}
	}
}

// enforceLimit revokes the newest leases while more are held than the
// process limit allows, e.g. after the policy's maxProcesses was lowered:
// Keygen checks the limit only when a process is created
// (machine_process.rb, `validate on: :create`), so the processes it
// already counts stay alive and the agent must end the excess itself. The
// apps told are the newest ones, with LIMIT_REDUCED.
func (a *Agent) enforceLimit(v licenseView) {
	if !v.Valid {
		return // enforceView revokes everything
	}
	limit := a.effectiveLimit(v)
	if limit == nil {
		return
	}
	ids := a.leases.beyond(*limit)
	if len(ids) == 0 {
		return
	}
	a.log.Warn("the process limit is below the leases held; revoking the newest", "limit", *limit, "revoking", len(ids))
	reason := fmt.Sprintf("the license's process limit was lowered to %d; the newest leases are ended", *limit)
	for _, id := range ids {
		a.revokeLease(id, reason, ipc.CodeLimitReduced)
	}
}

// replayOutbox sends what was queued while offline, oldest first. When
// Keygen refuses a queued spawn (its seats were taken meanwhile, e.g. by
// other machines under PER_LICENSE), that lease — a newer one than every
// lease already confirmed — is revoked with a notification.
//
// Each entry is charged to the user whose lease it serves, and never waits
// on that user's share (withinShare): a user whose share is spent has its
// entries left for the next round (outboxRetry) while the other users'
// entries go on, so one user's spent budget never holds up another's
// replay. A spawn refused for the process limit while kills are still
// queued (a skipped user's) gets one seat freed by freeSeat, charged to the
// agent, and one more try.
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
		return boolInt(x.Kind != cache.OutboxKill) - boolInt(y.Kind != cache.OutboxKill)
	})
	spent := map[string]bool{} // users whose share ran out this round
	deferred := func(user string) {
		spent[user] = true
		a.sched.Set(schedKey{kind: schedOutbox}, schedNow().Add(outboxRetry))
	}
	for _, e := range entries {
		if spent[e.User] {
			continue // keep the user's entries in order: all wait for the next round
		}
		if !a.claims.claim(e.Seq) {
			continue // freeSeat is sending it
		}
		stop := a.replayEntry(ctx, e, deferred)
		a.claims.release(e.Seq)
		if stop {
			return
		}
	}
}

// replayEntry sends one outbox entry for replayOutbox; it reports true when
// Keygen is unreachable (the replay stops). deferred is called, and the
// entry kept, when the entry's user has spent its share.
func (a *Agent) replayEntry(ctx context.Context, e cache.OutboxEntry, deferred func(user string)) bool {
	uctx := withinShare(withBudgetOwner(ctx, e.User))
	switch e.Kind {
	case cache.OutboxSpawn:
		l, _, live := a.leases.live(e.LeaseID)
		if !live {
			_ = a.store.Ack(e.Seq)
			return false
		}
		// A replay is charged to the user whose lease it serves: one
		// user's offline grants must not spend everyone's budget.
		proc, err := a.spawnProcess(uctx, l)
		if errors.Is(err, keygen.ErrProcessLimitExceeded) && a.freeSeat(withBudgetOwner(ctx, l.user), l.user) {
			proc, err = a.spawnProcess(uctx, l)
		}
		switch {
		case err == nil:
			lp := a.leases.setProcess(l, proc.ID, time.Duration(proc.Interval)*time.Second)
			a.recordProof(l.id, proc, true)
			a.persistLease(l)
			_ = a.store.Ack(e.Seq)
			a.schedulePing(l.id, lp.interval)
		case errors.Is(err, errShareSpent):
			deferred(e.User)
		case offline(err):
			return true
		default:
			_ = a.store.Ack(e.Seq)
			a.leases.clearOffline(l) // nothing to drop from the outbox any more
			code := ipc.CodeLicenseInvalid
			if errors.Is(err, keygen.ErrProcessLimitExceeded) {
				code = ipc.CodeProcessLimitExceeded
			}
			a.revokeLease(e.LeaseID, "Keygen refused the lease granted while offline: "+err.Error(), code)
		}
	case cache.OutboxUse:
		return a.replayUse(ctx, e)
	case cache.OutboxKill:
		err := a.killProcess(uctx, e.ProcessID)
		switch {
		case errors.Is(err, errShareSpent):
			deferred(e.User)
		case offline(err):
			return true
		default:
			_ = a.store.Ack(e.Seq)
		}
	default:
		_ = a.store.Ack(e.Seq)
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
