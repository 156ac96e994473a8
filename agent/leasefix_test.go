package agent

import (
	"encoding/json"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Issue 14 defect 5: a lease restored after a crash keeps the interval
// Keygen gave its process. With a 60 s process heartbeat, a restored lease
// pinged on a 600 s schedule was culled, re-spawned, and culled again.
func TestDefect5_RestoredLeaseKeepsRealInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5), HeartbeatDuration: intp(60)},
			cfg: Config{AdoptionWindow: Duration(60 * time.Second)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.procs.Spawn(300)
		c := e.dial(agenttest.PeerFor(300))
		r, _, err := c.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if r.HeartbeatInterval != 60 {
			t.Fatalf("heartbeat interval = %d, want 60", r.HeartbeatInterval)
		}
		synctest.Wait()
		e.crash()
		c.Close()
		e.start()
		defer e.stop()
		c = e.dial(agenttest.PeerFor(300))
		defer c.Close()
		r2, _, err := c.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if !r2.Reused || r2.ProcessID != r.ProcessID {
			t.Fatalf("not re-adopted: %+v", r2)
		}
		if r2.HeartbeatInterval != 60 {
			t.Errorf("restored heartbeat interval = %d, want 60", r2.HeartbeatInterval)
		}
		// Twenty minutes of 60 s heartbeats: the same process stays alive,
		// never culled and re-spawned.
		for range 20 {
			time.Sleep(time.Minute)
			synctest.Wait()
			ps := e.srv.Processes()
			if len(ps) != 1 || ps[0].ID != r.ProcessID || ps[0].Status != "ALIVE" {
				t.Fatalf("after restart the lease's process was lost: %+v\nlogs:\n%s", ps, e.logs.String())
			}
		}
	})
}

// Issue 14 defect 9: a parent acquires, forks ten children that keep its
// connection, and exits; the children acquire over the inherited
// connection while three other apps hold seats, limit 3. The parent's
// connection is told its lease ended (PROCESS_EXITED), every child is
// refused, and the apps told they hold a seat (and not told otherwise)
// never outnumber the limit.
func TestDefect9_InheritedConnectionNeverOutnumbersSeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 3
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		const parent = 400
		var holders []*agenttest.Client
		granted := map[string]bool{} // lease ids told OK and not revoked
		for _, pid := range []int{parent, 401, 402} {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			r, _, err := c.Acquire(acquireParams())
			if err != nil {
				t.Fatal(err)
			}
			granted[r.LeaseID] = true
			holders = append(holders, c)
		}
		inherited := holders[0]
		e.procs.Exit(parent) // the children keep the parent's connection open
		var mu sync.Mutex
		var wg sync.WaitGroup
		codes := map[string]int{}
		for range 10 {
			wg.Go(func() {
				r, code, err := inherited.Acquire(acquireParams())
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					granted[r.LeaseID] = true
				}
				codes[code]++
			})
		}
		wg.Wait()
		synctest.Wait()
		// A third app now takes the seat the parent freed.
		e.procs.Spawn(403)
		c3 := e.dial(agenttest.PeerFor(403))
		defer c3.Close()
		if r, _, err := c3.Acquire(acquireParams()); err == nil {
			granted[r.LeaseID] = true
		} else {
			t.Errorf("the parent's seat was not freed: %v", err)
		}
		synctest.Wait()
		revokedExited := 0
		for done := false; !done; {
			select {
			case n := <-inherited.Notes():
				if n.Method != ipc.NotifyLeaseRevoked {
					continue
				}
				var r ipc.LeaseRevoked
				if err := json.Unmarshal(n.Params, &r); err != nil {
					t.Fatal(err)
				}
				delete(granted, r.LeaseID)
				if r.Code == ipc.CodeProcessExited {
					revokedExited++
				}
			default:
				done = true
			}
		}
		if len(granted) > limit {
			t.Errorf("%d apps were told they hold a seat, limit %d (children: %v)", len(granted), limit, codes)
		}
		if codes[ipc.CodeProcessExited] != 10 {
			t.Errorf("children's answers by code: %v, want 10 × %s", codes, ipc.CodeProcessExited)
		}
		if revokedExited == 0 {
			t.Errorf("the inherited connection was never told the parent's lease ended")
		}
		if n := e.liveProcesses(); n > limit {
			t.Errorf("%d Keygen processes, limit %d", n, limit)
		}
	})
}

// When the policy's maxProcesses is lowered below the leases held, Keygen
// keeps the processes it already counts (the limit is checked at creation),
// so the agent ends the newest leases itself at the next validation, each
// with lease.revoked LIMIT_REDUCED; the oldest keep theirs.
func TestLimitLoweredRevokesNewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		var clients []*agenttest.Client
		for pid := 500; pid < 505; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			time.Sleep(time.Second) // distinct creation times
		}
		e.srv.UpdatePolicy(e.policy.ID, func(p *devserver.Policy) { p.MaxProcesses = intp(2) })
		time.Sleep(e.a.config().RevalidateInterval.D() + time.Minute)
		synctest.Wait()
		for i, c := range clients {
			n, ok := c.NextNote(ipc.NotifyLeaseRevoked, time.Second)
			switch {
			case i < 2 && ok:
				t.Errorf("lease %d of the oldest two was revoked: %s", i, n.Params)
			case i >= 2 && !ok:
				t.Errorf("lease %d of the newest three was not revoked", i)
			case i >= 2:
				var r ipc.LeaseRevoked
				_ = json.Unmarshal(n.Params, &r)
				if r.Code != ipc.CodeLimitReduced {
					t.Errorf("lease %d revoked with %q, want %s", i, r.Code, ipc.CodeLimitReduced)
				}
			}
		}
		if n := e.liveProcesses(); n != 2 {
			t.Errorf("%d Keygen processes, want 2", n)
		}
		if st := e.status(); st.Leases.Active != 2 {
			t.Errorf("status: %d leases active, want 2", st.Leases.Active)
		}
	})
}

// The lease record is in the cache when lease.acquire answers, not only
// queued for the background writer: a kill -9 right after the answer must
// not lose it (chaos/TestKill9AgentWith100Leases). The writer is held up
// here so that only a synchronous write can put the record there.
func TestLeaseRecordDurableBeforeAcquireAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		block := make(chan struct{})
		e.a.persist(func() error { <-block; return nil })
		defer close(block)
		e.procs.Spawn(600)
		c := e.dial(agenttest.PeerFor(600))
		defer c.Close()
		r, _, err := c.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		recs, err := e.a.store.Leases()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].ID != r.LeaseID || recs[0].ProcessID != r.ProcessID {
			t.Fatalf("cache holds %+v when acquire answered, want lease %s", recs, r.LeaseID)
		}
	})
}

// secondAgent is another agent (its own data directory, so its own cache
// and agent id) for the same license on the same machine as e: a system
// and a per-user agent, or two installs.
func (e *env) secondAgent() *env {
	dir := tempDir(e.t.(*testing.T))
	e2 := &env{noWatch: true, t: e.t, srv: e.srv, policy: e.policy, license: e.license, dir: dir, fp: e.fp,
		procs: e.procs, logs: &agenttest.SyncBuffer{}, cfg: e.cfg}
	e2.cfg.DataDir = dir
	return e2
}

// Issue 14 defect 8: two agents for one license on one machine do not
// reap each other's Keygen processes as orphans; each reports the other in
// status.
func TestDefect8_TwoAgentsDoNotReapEachOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		var procsA []string
		for pid := 700; pid < 702; pid++ {
			a.procs.Spawn(pid)
			c := a.dial(agenttest.PeerFor(pid))
			defer c.Close()
			r, _, err := c.Acquire(acquireParams())
			if err != nil {
				t.Fatal(err)
			}
			procsA = append(procsA, r.ProcessID)
		}
		b := a.secondAgent()
		b.start()
		defer b.stop()
		b.waitFor("second agent active", func() bool { return b.status().State == string(StateActive) })
		synctest.Wait()
		alive := func(id string) bool {
			for _, p := range a.srv.Processes() {
				if p.ID == id && p.Status == "ALIVE" {
					return true
				}
			}
			return false
		}
		for _, id := range procsA {
			if !alive(id) {
				t.Fatalf("the second agent killed the first one's process %s\nlogs:\n%s", id, b.logs.String())
			}
		}
		if o := b.status().OtherAgents; len(o) != 1 || o[0].Processes != 2 {
			t.Errorf("second agent's status: other agents %+v, want one with 2 processes", o)
		}
		a.procs.Spawn(702)
		cb := b.dial(agenttest.PeerFor(702))
		defer cb.Close()
		rb, _, err := cb.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		// At its next validation the first agent sees the second.
		time.Sleep(a.a.config().RevalidateInterval.D() + time.Minute)
		synctest.Wait()
		if o := a.status().OtherAgents; len(o) != 1 || o[0].Processes != 1 {
			t.Errorf("first agent's status: other agents %+v, want one with 1 process", o)
		}
		for _, id := range append(procsA, rb.ProcessID) {
			if !alive(id) {
				t.Errorf("process %s lost while both agents ran", id)
			}
		}
	})
}

// One process asking for a lease on several connections at once gets one
// lease and one Keygen process. Before, each acquire found no lease to
// reuse, both spawned under the same pid attribute, and the second spawn's
// PID_TAKEN killed the first's live Keygen process as stale (seen in the
// attack suite's acquire/release loop).
func TestConcurrentAcquiresFromOneProcessShareOneLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		const pid = 500
		e.procs.Spawn(pid)
		const n = 4
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			ids = map[string]int{}
		)
		for range n {
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, _, err := c.Acquire(acquireParams())
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				mu.Lock()
				ids[r.LeaseID+"/"+r.ProcessID]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		synctest.Wait()
		if len(ids) != 1 {
			t.Fatalf("one process got %d different leases/processes: %v\nlogs:\n%s", len(ids), ids, e.logs.String())
		}
		alive := 0
		for _, p := range e.srv.Processes() {
			if p.Status == "ALIVE" {
				alive++
			}
		}
		if alive != 1 {
			t.Fatalf("Keygen holds %d live processes for one app, want 1: %+v", alive, e.srv.Processes())
		}
		if st := e.status(); st.Leases.Active != 1 {
			t.Fatalf("status shows %d leases, want 1", st.Leases)
		}
	})
}
