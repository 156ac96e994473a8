package agent

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

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
			e.procs.spawn(pid)
			c := e.dial(peerFor(pid))
			defer c.close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, code, err := c.acquire(acquireParams())
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
		e.procs.spawn(10)
		e.procs.spawn(11)
		a, b := e.dial(peerFor(10)), e.dial(peerFor(11))
		defer a.close()
		defer b.close()
		if _, _, err := a.acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		var res ipc.AcquireResult
		_, err := b.call(ipc.MethodAcquire, acquireParams(), &res)
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
		e.procs.spawn(20)
		c1, c2 := e.dial(peerFor(20)), e.dial(peerFor(20))
		r1, _, err := c1.acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		r2, _, err := c2.acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if r1.LeaseID != r2.LeaseID || !r2.Reused {
			t.Fatalf("leases %s / %s reused=%v", r1.LeaseID, r2.LeaseID, r2.Reused)
		}
		c1.close()
		synctest.Wait()
		if n := e.liveProcesses(); n != 1 {
			t.Fatalf("after closing one of two connections: %d processes", n)
		}
		c2.close()
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("after closing both: %d processes", n)
		}
	})
}

func TestWaiterGetsFreedSeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.spawn(30)
		e.procs.spawn(31)
		holder, waiter := e.dial(peerFor(30)), e.dial(peerFor(31))
		defer waiter.close()
		if _, _, err := holder.acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			p := acquireParams()
			p.WaitMS = 60_000
			_, _, err := waiter.acquire(p)
			got <- err
		}()
		synctest.Wait()
		select {
		case err := <-got:
			t.Fatalf("waiter returned early: %v", err)
		default:
		}
		holder.close()
		if err := <-got; err != nil {
			t.Fatalf("waiter: %v", err)
		}
		synctest.Wait()
		ps := e.srv.Processes()
		if len(ps) != 1 || ps[0].PID != keygenPID(31, peerFor(31).StartTime) {
			t.Fatalf("server processes = %+v", ps)
		}
	})
}

func TestWaitTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
		e.procs.spawn(40)
		e.procs.spawn(41)
		a, b := e.dial(peerFor(40)), e.dial(peerFor(41))
		defer a.close()
		defer b.close()
		if _, _, err := a.acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		p := acquireParams()
		p.WaitMS = 5000
		_, code, err := b.acquire(p)
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
		e.procs.spawn(50)
		c := e.dial(peerFor(50))
		defer c.close()
		if _, _, err := c.acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		if n := len(e.srv.Processes()); n != 1 {
			t.Fatalf("processes = %d", n)
		}
		// The app's process dies but a child keeps the socket open: the
		// exit watcher, not the connection, releases the lease.
		start := time.Now()
		e.procs.exit(50)
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
		e.procs.spawn(60)
		e.procs.spawn(61)
		a, b := e.dial(peerFor(60)), e.dial(peerFor(61))
		defer a.close()
		defer b.close()
		r, _, err := a.acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if code, err := b.call(ipc.MethodRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil); code != ipc.CodePermissionDenied {
			t.Fatalf("foreign release: %q %v", code, err)
		}
		if _, err := a.call(ipc.MethodRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil); err != nil {
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
		e.procs.spawn(70)
		user := e.dial(peerFor(70))
		defer user.close()
		r, _, err := user.acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := user.call(ipc.MethodLeasesList, nil, nil); code != ipc.CodePermissionDenied {
			t.Fatalf("non-admin leases.list: %q", code)
		}
		admin := e.dial(adminPeer)
		defer admin.close()
		var list ipc.LeasesListResult
		if _, err := admin.call(ipc.MethodLeasesList, nil, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Leases) != 1 || list.Leases[0].LeaseID != r.LeaseID || list.Leases[0].PID != 70 || list.Leases[0].NextPing == nil {
			t.Fatalf("leases = %+v", list.Leases)
		}
		if _, err := admin.call(ipc.MethodLeasesRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil); err != nil {
			t.Fatal(err)
		}
		if n, ok := user.nextNote(ipc.NotifyLeaseRevoked, time.Second); ok {
			t.Logf("revoked note: %s", n.Params)
		}
		synctest.Wait()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("processes = %d", n)
		}
		// Deactivate frees the machine in Keygen.
		var st ipc.Status
		if _, err := admin.call(ipc.MethodDeactivate, nil, &st); err != nil {
			t.Fatal(err)
		}
		if len(e.srv.Machines()) != 0 || st.State != string(StateNotActivated) {
			t.Fatalf("after deactivate: machines %d state %s", len(e.srv.Machines()), st.State)
		}
		// Activate brings it back.
		if _, err := admin.call(ipc.MethodActivate, ipc.ActivateParams{Key: e.license.Key}, &st); err != nil {
			t.Fatal(err)
		}
		if st.State != string(StateActive) || len(e.srv.Machines()) != 1 {
			t.Fatalf("after activate: %+v", st)
		}
	})
}
