package agent

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func acquireParams() ipc.AcquireParams {
	return ipc.AcquireParams{App: "demo", AppVersion: "1.0"}
}

// activeEnv starts an agent that is active online.
func activeEnv(t *testing.T, o envOptions) *env {
	e := newEnv(t, o)
	e.start()
	t.Cleanup(e.stop)
	e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	return e
}

func TestLimitHoldsWithConcurrentAcquirers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 5
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		var wg sync.WaitGroup
		var mu sync.Mutex
		granted, refused := 0, 0
		for i := range limit + 1 {
			pid := 1000 + i
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, code, err := c.Acquire(acquireParams())
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					granted++
				case code == ipc.CodeProcessLimitExceeded:
					refused++
				default:
					t.Errorf("acquire: %v", err)
				}
			}()
		}
		wg.Wait()
		if granted != limit || refused != 1 {
			t.Fatalf("granted %d refused %d", granted, refused)
		}
		if n := e.liveProcesses(); n != limit {
			t.Fatalf("server processes = %d, want %d", n, limit)
		}
	})
}

func TestLimitErrorCarriesLimitAndCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.Spawn(10)
		e.procs.Spawn(11)
		a, b := e.dial(agenttest.PeerFor(10)), e.dial(agenttest.PeerFor(11))
		defer a.Close()
		defer b.Close()
		if _, _, err := a.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		var res ipc.AcquireResult
		_, err := b.Call(ipc.MethodAcquire, acquireParams(), &res)
		if err == nil {
			t.Fatal("second acquire succeeded")
		}
		raw := fmt.Sprint(err)
		if want := "PROCESS_LIMIT_EXCEEDED"; raw[:len(want)] != want {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestSameProcessSharesOneLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.Spawn(20)
		c1, c2 := e.dial(agenttest.PeerFor(20)), e.dial(agenttest.PeerFor(20))
		r1, _, err := c1.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		r2, _, err := c2.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if r1.LeaseID != r2.LeaseID || !r2.Reused {
			t.Fatalf("leases %s / %s reused=%v", r1.LeaseID, r2.LeaseID, r2.Reused)
		}
		c1.Close()
		synctest.Wait()
		if n := e.liveProcesses(); n != 1 {
			t.Fatalf("after closing one of two connections: %d processes", n)
		}
		c2.Close()
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("after closing both: %d processes", n)
		}
	})
}

func TestWaiterGetsFreedSeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.Spawn(30)
		e.procs.Spawn(31)
		holder, waiter := e.dial(agenttest.PeerFor(30)), e.dial(agenttest.PeerFor(31))
		defer waiter.Close()
		if _, _, err := holder.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			p := acquireParams()
			p.WaitMS = 60_000
			_, _, err := waiter.Acquire(p)
			got <- err
		}()
		synctest.Wait()
		select {
		case err := <-got:
			t.Fatalf("waiter returned early: %v", err)
		default:
		}
		holder.Close()
		if err := <-got; err != nil {
			t.Fatalf("waiter: %v", err)
		}
		synctest.Wait()
		ps := e.srv.Processes()
		if len(ps) != 1 || ps[0].PID != keygenPID(31, agenttest.PeerFor(31).StartTime) {
			t.Fatalf("server processes = %+v", ps)
		}
	})
}

func TestWaitTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.Spawn(40)
		e.procs.Spawn(41)
		a, b := e.dial(agenttest.PeerFor(40)), e.dial(agenttest.PeerFor(41))
		defer a.Close()
		defer b.Close()
		if _, _, err := a.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		p := acquireParams()
		p.WaitMS = 5000
		_, code, err := b.Acquire(p)
		if err == nil || code != ipc.CodeProcessLimitExceeded {
			t.Fatalf("code %q err %v", code, err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("waited %v, want exactly 5s of fake time", waited)
		}
	})
}

func TestProcessExitReleasesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}})
		e.procs.Spawn(50)
		c := e.dial(agenttest.PeerFor(50))
		defer c.Close()
		if _, _, err := c.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		if n := len(e.srv.Processes()); n != 1 {
			t.Fatalf("processes = %d", n)
		}
		// The app's process dies but a child keeps the socket open: the
		// exit watcher, not the connection, releases the lease.
		start := time.Now()
		e.procs.Exit(50)
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("processes after exit = %d", n)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("release took %v", d)
		}
	})
}

func TestReleaseOwnLeaseOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}})
		e.procs.Spawn(60)
		e.procs.Spawn(61)
		a, b := e.dial(agenttest.PeerFor(60)), e.dial(agenttest.PeerFor(61))
		defer a.Close()
		defer b.Close()
		r, _, err := a.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if code, err := b.Call(ipc.MethodRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil); code != ipc.CodePermissionDenied {
			t.Fatalf("foreign release: %q %v", code, err)
		}
		if _, err := a.Call(ipc.MethodRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("processes = %d", n)
		}
	})
}

func TestAdminMethods(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}})
		e.procs.Spawn(70)
		user := e.dial(agenttest.PeerFor(70))
		defer user.Close()
		r, _, err := user.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := user.Call(ipc.MethodLeasesList, nil, nil); code != ipc.CodePermissionDenied {
			t.Fatalf("non-admin leases.list: %q", code)
		}
		admin := e.dial(agenttest.AdminPeer)
		defer admin.Close()
		var list ipc.LeasesListResult
		if _, err := admin.Call(ipc.MethodLeasesList, nil, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Leases) != 1 || list.Leases[0].LeaseID != r.LeaseID || list.Leases[0].PID != 70 || list.Leases[0].NextPing == nil {
			t.Fatalf("leases = %+v", list.Leases)
		}
		if _, err := admin.Call(ipc.MethodLeasesRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil); err != nil {
			t.Fatal(err)
		}
		n, ok := user.NextNote(ipc.NotifyLeaseRevoked, time.Second)
		if !ok || !strings.Contains(string(n.Params), r.LeaseID) {
			t.Fatalf("holder not told of the admin release: %v %s", ok, n.Params)
		}
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("processes = %d", n)
		}
		// Deactivate frees the machine in Keygen.
		var st ipc.Status
		if _, err := admin.Call(ipc.MethodDeactivate, nil, &st); err != nil {
			t.Fatal(err)
		}
		if len(e.srv.Machines()) != 0 || st.State != string(StateNotActivated) {
			t.Fatalf("after deactivate: machines %d state %s", len(e.srv.Machines()), st.State)
		}
		// Activate brings it back.
		if _, err := admin.Call(ipc.MethodActivate, ipc.ActivateParams{Key: e.license.Key}, &st); err != nil {
			t.Fatal(err)
		}
		if st.State != string(StateActive) || len(e.srv.Machines()) != 1 {
			t.Fatalf("after activate: %+v", st)
		}
	})
}

// A stale Keygen process with the same pid attribute (left by a crash
// whose cache was lost) is killed and the spawn retried.
func TestPIDTakenResolved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		mid := e.a.machineID()
		kc := otherClient(t, e)
		p := agenttest.PeerFor(77)
		if _, err := kc.SpawnProcess(t.Context(), mid, keygenPID(p.PID, p.StartTime), nil); err != nil {
			t.Fatal(err)
		}
		e.procs.Spawn(77)
		c := e.dial(p)
		defer c.Close()
		r, _, err := c.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		ps := e.srv.Processes()
		if len(ps) != 1 || ps[0].ID != r.ProcessID {
			t.Fatalf("processes = %+v, lease process %s", ps, r.ProcessID)
		}
	})
}

func TestStrictOfflineDeniesNewLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{cfg: Config{StrictOffline: true}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		e.procs.Spawn(90)
		c := e.dial(agenttest.PeerFor(90))
		defer c.Close()
		if _, code, err := c.Acquire(acquireParams()); code != ipc.CodeOfflineExpired {
			t.Fatalf("code %q err %v", code, err)
		}
	})
}
