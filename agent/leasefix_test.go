package agent

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
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
