package agent

import (
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// TestThousandLeasesWithinDefaultRateLimits holds 1,000 leases over several
// heartbeat windows against a devserver enforcing Keygen Cloud's default
// client rate limits (60/30s, 500/5m): no process may die on the server
// and no request may be refused with 429. At Keygen's default 600 s
// heartbeat 1,000 leases cannot fit those limits (see the capacity check in
// TestCapacityRefusal); the policy here uses 3600 s.
func TestThousandLeasesWithinDefaultRateLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("long: 1,000 leases over several hours of fake time")
	}
	synctest.Test(t, func(t *testing.T) {
		const n = 1000
		hb := 3600
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(n), HeartbeatDuration: &hb}})
		start := time.Now()
		var clients []*agenttest.Client
		errs := make(chan error, n)
		for i := range n {
			pid := 10_000 + i
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			clients = append(clients, c)
			go func() {
				_, _, err := c.Acquire(acquireParams())
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("acquire: %v", err)
			}
		}
		granted := time.Since(start)
		// The budget lets about 1.5 spawns a second through: the rest were
		// granted locally after spawnWait and are replayed from the outbox.
		e.waitLimit = time.Hour
		e.waitFor("every lease's process on the server", func() bool { return e.liveProcesses() == n })
		spawnTime := time.Since(start)
		before := e.srv.Stats()
		windows := 3
		for w := range windows {
			time.Sleep(time.Duration(hb) * time.Second)
			dead := 0
			for _, p := range e.srv.Processes() {
				if p.Status != "ALIVE" {
					dead++
				}
			}
			if got := len(e.srv.Processes()); got != n || dead != 0 {
				t.Fatalf("window %d: %d processes, %d not alive", w+1, got, dead)
			}
		}
		after := e.srv.Stats()
		if after.RateLimited != 0 {
			t.Errorf("%d requests were refused with 429", after.RateLimited)
		}
		perWindow := float64(after.Total-before.Total) / float64(windows)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("1,000 leases: all granted within %v and on the server within %v of fake time; %.0f API requests per %ds heartbeat window (budget %d per 5 min = %d per window); heap in use %.1f MiB; goroutines %d",
			granted, spawnTime, perWindow, hb, 500, 500*hb/300, float64(ms.HeapInuse)/(1<<20), runtime.NumGoroutine())
		for _, c := range clients {
			c.Close()
		}
	})
}

// Beyond what the budget can keep alive, a new lease is refused with
// HEARTBEAT_CAPACITY_EXCEEDED instead of letting existing leases die.
func TestCapacityRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 60
		// 3 per 30 s and 10 per 5 min: 9 requests per 5 min usable, 80%
		// of that for pings every 30 s: capacity 0.024*30 = 0.
		e := activeEnv(t, envOptions{
			policy: devserver.PolicySpec{MaxProcesses: intp(100), HeartbeatDuration: &hb},
			cfg:    Config{RateLimit: RateLimitConfig{PerShort: 3, PerLong: 10}},
		})
		if c := e.status().Leases.Capacity; c != 0 {
			t.Fatalf("capacity = %d", c)
		}
		e.procs.Spawn(7)
		cl := e.dial(agenttest.PeerFor(7))
		defer cl.Close()
		_, code, err := cl.Acquire(acquireParams())
		if code != ipc.CodeHeartbeatCapacity {
			t.Fatalf("code %q err %v", code, err)
		}
	})
}
