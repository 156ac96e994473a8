package agent

import (
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// A crash (no shutdown) leaves leases in the cache and processes on the
// server. The restarted agent kills the dead apps' processes at once, keeps
// live apps' processes alive while they reconnect, and kills the unclaimed
// ones after the adoption window.
func TestCrashRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(10)},
			cfg: Config{AdoptionWindow: Duration(60 * time.Second)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		var clients []*agenttest.Client
		for pid := 100; pid < 106; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		if n := len(e.srv.Processes()); n != 6 {
			t.Fatalf("processes = %d", n)
		}
		e.crash()
		// While the agent is down: two apps exit.
		e.procs.Exit(100)
		e.procs.Exit(101)
		e.start()
		defer e.stop()
		synctest.Wait()
		e.waitFor("dead apps' processes killed", func() bool { return len(e.srv.Processes()) == 4 })
		// Two live apps reconnect and re-acquire: same lease, same process.
		for _, pid := range []int{102, 103} {
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			r, _, err := c.Acquire(acquireParams())
			if err != nil {
				t.Fatal(err)
			}
			if !r.Reused {
				t.Errorf("pid %d: lease not re-adopted", pid)
			}
		}
		// The other two never come back: killed after the window.
		time.Sleep(61 * time.Second)
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 2 {
			t.Fatalf("after adoption window: %d processes, want 2", n)
		}
		// The adopted ones stay alive over several heartbeat windows.
		time.Sleep(30 * time.Minute)
		if n := e.liveProcesses(); n != 2 {
			t.Fatalf("adopted processes alive = %d", n)
		}
		for _, c := range clients {
			c.Close()
		}
	})
}

// Processes of this machine that the cache does not know (a lost cache)
// are killed once the agent is online.
func TestOrphansKilledWhenCacheLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		for pid := 200; pid < 203; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
		}
		e.crash()
		// The cache loses its lease records (e.g. restored from an old
		// backup); the server still has the processes.
		st, err := cache.Open(filepath.Join(e.dir, "agent.db"), cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		recs, _ := st.Leases()
		for _, r := range recs {
			_ = st.DeleteLease(r.ID)
		}
		st.Close()
		e.start()
		defer e.stop()
		e.waitFor("orphans killed", func() bool { return len(e.srv.Processes()) == 0 })
	})
}

// An outage longer than the heartbeat interval: leases stay granted,
// Keygen culls the processes, and when it is back the agent re-spawns them
// under the same leases. New leases during the outage are granted offline
// up to the limit and replayed.
func TestOutageLongerThanHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 3
		hb := 120
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(limit), HeartbeatDuration: &hb}})
		a := e.dial(agenttest.PeerFor(300))
		e.procs.Spawn(300)
		defer a.Close()
		ra, _, err := a.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		time.Sleep(10 * time.Minute) // 5 heartbeat windows: the process dies on the server
		st := e.status()
		if st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("during outage: %+v", st)
		}
		// Offline: two more leases fit, the third is refused.
		var offline []*agenttest.Client
		for pid := 301; pid <= 303; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			r, code, err := c.Acquire(acquireParams())
			if pid < 303 {
				if err != nil || !r.Offline {
					t.Fatalf("offline acquire %d: %v %+v", pid, err, r)
				}
				offline = append(offline, c)
			} else if code != ipc.CodeProcessLimitExceeded {
				t.Fatalf("offline acquire over the limit: %q %v", code, err)
			}
		}
		e.srv.Cull()
		e.srv.SetFaults(devserver.Faults{})
		e.waitFor("back online with every lease on the server", func() bool {
			return e.status().Online && e.liveProcesses() == limit
		})
		// The first lease kept its identity.
		var list ipc.LeasesListResult
		adm := e.dial(agenttest.AdminPeer)
		defer adm.Close()
		if _, err := adm.Call(ipc.MethodLeasesList, nil, &list); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, l := range list.Leases {
			if l.LeaseID == ra.LeaseID {
				found = true
			}
			if l.Offline {
				t.Errorf("lease %s still offline", l.LeaseID)
			}
		}
		if !found || len(list.Leases) != limit {
			t.Fatalf("leases after recovery: %+v", list.Leases)
		}
		if out, _ := e.a.store.Outbox(); len(out) != 0 {
			t.Errorf("outbox not drained: %+v", out)
		}
		time.Sleep(20 * time.Minute)
		if n := e.liveProcesses(); n != limit {
			t.Fatalf("processes alive after recovery = %d", n)
		}
	})
}

// PER_LICENSE: while this machine was offline another machine took the
// seats. Replaying the outbox is refused by Keygen and the newest offline
// lease is revoked with a notification.
func TestOfflineLeaseRevokedWhenKeygenRefusesReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2), ProcessLeasingStrategy: "PER_LICENSE", Floating: true, MaxMachines: intp(2)}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		var cs []*agenttest.Client
		for pid := 400; pid < 402; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			if r, _, err := c.Acquire(acquireParams()); err != nil || !r.Offline {
				t.Fatalf("offline acquire: %v", err)
			}
			cs = append(cs, c)
		}
		// Another machine of the same license takes one seat meanwhile
		// (no fake time passes between these two lines).
		e.srv.SetFaults(devserver.Faults{})
		takeSeatFromOtherMachine(t, e)
		e.waitFor("replayed", func() bool {
			out, _ := e.a.store.Outbox()
			return e.status().Online && len(out) == 0
		})
		if _, ok := cs[1].NextNote(ipc.NotifyLeaseRevoked, time.Minute); !ok {
			t.Fatal("newest offline lease not revoked")
		}
		if n := len(e.srv.Processes()); n != 2 {
			t.Fatalf("server processes = %d, want 2 (the other machine's and our oldest)", n)
		}
	})
}

// A 429 storm longer than the heartbeat interval: no panic, leases are kept
// or re-spawned, the limit is never exceeded.
func TestRateLimitStorm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 120
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2), HeartbeatDuration: &hb}})
		var mu sync.Mutex
		for pid := 500; pid < 502; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
		}
		e.srv.SetFaults(devserver.Faults{RateLimitStorm: true})
		for range 10 {
			time.Sleep(time.Minute)
			mu.Lock()
			if n := len(e.srv.Processes()); n > 2 {
				t.Fatalf("server has %d processes > limit", n)
			}
			mu.Unlock()
		}
		e.srv.SetFaults(devserver.Faults{})
		e.waitFor("leases re-established", func() bool { return e.liveProcesses() == 2 })
		if n := len(e.srv.Processes()); n > 2 {
			t.Fatalf("server has %d processes > limit", n)
		}
	})
}

// takeSeatFromOtherMachine activates a second machine for the license and
// spawns one process on it, as another agent would.
func takeSeatFromOtherMachine(t *testing.T, e *env) {
	t.Helper()
	c := otherClient(t, e)
	m, err := c.ActivateMachine(t.Context(), keygen.ActivateParams{LicenseID: e.license.ID, Fingerprint: "other-machine-fingerprint-0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SpawnProcess(t.Context(), m.ID, "9999@1", nil); err != nil {
		t.Fatal(err)
	}
}

// otherClient is a Keygen client with the license key, as another app or
// agent would have.
func otherClient(t *testing.T, e *env) *keygen.Client {
	t.Helper()
	c, err := keygen.NewClient(keygen.Config{BaseURL: "http://devserver.invalid", Account: e.srv.AccountID(),
		LicenseKey: e.license.Key, PublicKey: e.srv.PublicKeyHex(), HTTPClient: &http.Client{Transport: e.srv.Transport()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
