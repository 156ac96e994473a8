package agent

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// exhaustShare takes owner's share of the request budget until one more
// request would wait on it.
func exhaustShare(t *testing.T, a *Agent, owner string) int {
	t.Helper()
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		err := a.budget.WaitAs(ctx, budget.PrioritySpawn, owner)
		cancel()
		if err != nil {
			return n
		}
		if n++; n > 1000 {
			t.Fatal("the owner's share never ran out")
		}
	}
}

// attackerAtLimit: uid 666 holds every seat, its Keygen processes' kills
// are queued (Keygen unreachable for kills when its leases ended), and its
// budget share is spent.
func attackerAtLimit(t *testing.T, limit int) *env {
	e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
	var conns []*agenttest.Client
	for i := range limit {
		pid := 600 + i
		e.procs.Spawn(pid)
		c := e.dial(ipc.Peer{PID: pid, UID: "666", StartTime: uint64(pid) * 7, Exe: "/usr/bin/hog"})
		if _, _, err := c.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	e.srv.SetFaults(devserver.Faults{Refuse: true, Routes: []string{"DELETE /processes/{id}"}})
	for _, c := range conns {
		c.Close()
	}
	e.waitFor("the attacker's leases ended", func() bool { return e.a.leases.used() == 0 })
	e.srv.SetFaults(devserver.Faults{})
	kills := 0
	entries, _ := e.a.store.Outbox()
	for _, en := range entries {
		if en.Kind == cache.OutboxKill && en.User == "666" {
			kills++
		}
	}
	if kills != limit || e.liveProcesses() != limit {
		t.Fatalf("setup: %d queued kills, %d live processes; want %d each", kills, e.liveProcesses(), limit)
	}
	exhaustShare(t, e.a, "uid:666")
	return e
}

// A good user's acquire at Keygen's process limit sends the queued kills of
// another user's dead leases: it must not wait on that user's spent share
// (issue 15, defect 3 follow-up).
func TestAcquireDoesNotWaitOnAnotherUsersShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 2
		e := attackerAtLimit(t, limit)
		e.procs.Spawn(700)
		good := e.dial(ipc.Peer{PID: 700, UID: "1000", StartTime: 700 * 7, Exe: "/usr/bin/demo"})
		defer good.Close()
		start := time.Now()
		res, _, err := good.Acquire(acquireParams())
		took := time.Since(start)
		if err != nil {
			t.Fatalf("good acquire: %v", err)
		}
		if res.Offline {
			t.Fatalf("good acquire was granted offline after %v: it waited on the attacker's share", took)
		}
		if took > time.Second {
			t.Fatalf("good acquire took %v (fake time): it waited on the attacker's share", took)
		}
		if n := e.liveProcesses(); n != limit {
			t.Fatalf("live processes = %d, want %d", n, limit)
		}
	})
}

// A user whose share is spent releases a lease while another user waits
// for the seat: the release's kill is queued at once, not waited out on the
// spent share, and the waiter's acquire frees the seat charged to the agent.
func TestReleaseDoesNotHoldSeatOnSpentShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.Spawn(600)
		hog := e.dial(ipc.Peer{PID: 600, UID: "666", StartTime: 600 * 7, Exe: "/usr/bin/hog"})
		if _, _, err := hog.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		exhaustShare(t, e.a, "uid:666")
		e.procs.Spawn(700)
		good := e.dial(ipc.Peer{PID: 700, UID: "1000", StartTime: 700 * 7, Exe: "/usr/bin/demo"})
		defer good.Close()
		got := make(chan error, 1)
		var res *ipc.AcquireResult
		start := time.Now()
		go func() {
			p := acquireParams()
			p.WaitMS = 60_000
			r, _, err := good.Acquire(p)
			res = r
			got <- err
		}()
		synctest.Wait()
		hog.Close()
		if err := <-got; err != nil {
			t.Fatalf("good acquire: %v", err)
		}
		if took := time.Since(start); took > time.Second || res.Offline {
			t.Fatalf("good acquire took %v (offline %v): the seat waited on the hog's share", took, res.Offline)
		}
		if n := e.liveProcesses(); n != 1 {
			t.Fatalf("live processes = %d, want 1", n)
		}
	})
}

// The outbox replay is not held up by a user whose share is spent: that
// user's queued kills wait for the next round, another user's queued spawn
// is sent, with a seat freed for it charged to the agent.
func TestReplayNotHeldUpBySpentShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 2
		e := attackerAtLimit(t, limit)
		// A good user's lease granted offline (the spawn queued).
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		e.procs.Spawn(700)
		good := e.dial(ipc.Peer{PID: 700, UID: "1000", StartTime: 700 * 7, Exe: "/usr/bin/demo"})
		defer good.Close()
		res, _, err := good.Acquire(acquireParams())
		if err != nil || !res.Offline {
			t.Fatalf("offline acquire: %+v %v", res, err)
		}
		e.srv.SetFaults(devserver.Faults{})
		exhaustShare(t, e.a, "uid:666") // still spent after the offline spell
		start := time.Now()
		e.a.replayOutbox(context.Background())
		if took := time.Since(start); took > time.Second {
			t.Fatalf("the replay took %v: it waited on the attacker's share", took)
		}
		if l := e.a.leases.get(res.LeaseID); l == nil || l.processID == "" {
			t.Fatal("the good user's queued spawn was not replayed")
		}
		kills := 0
		entries, _ := e.a.store.Outbox()
		for _, en := range entries {
			if en.Kind == cache.OutboxKill {
				kills++
			}
		}
		if kills != limit-1 {
			t.Fatalf("%d kills still queued, want %d (one sent to free the seat)", kills, limit-1)
		}
	})
}
