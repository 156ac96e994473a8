package chaos

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// These scenarios run the agent in a testing/synctest bubble against an
// in-memory devserver: hours of fake time take milliseconds, and nothing
// depends on how fast the machine is.

// Keygen unreachable for longer than the heartbeat interval, then back:
// every live lease continues (the processes culled meanwhile are re-spawned
// under the same lease), leases granted offline are replayed from the
// outbox, a kill queued offline is sent, and the limit is never exceeded.
func TestOutageLongerThanHeartbeatThenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 5
		e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		mon := e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		live := []*app{acquire(t, e), acquire(t, e), acquire(t, e)}

		e.Srv.SetFaults(devserver.Faults{Refuse: true})
		time.Sleep(25 * time.Minute) // > 2 heartbeat windows of 600 s
		if st, _ := e.StatusDirect(); st.State != "offline" || !st.Valid {
			t.Fatalf("during the outage: state %q valid %v, want offline and valid", st.State, st.Valid)
		}
		// Two leases granted offline fill the limit; a third is refused.
		for range 2 {
			a := acquire(t, e)
			if !a.res.Offline {
				t.Errorf("lease %s granted during the outage is not offline", a.lease)
			}
			live = append(live, a)
		}
		if _, code, err := tryAcquire(e); code != ipc.CodeProcessLimitExceeded {
			t.Fatalf("acquire beyond the limit offline: %s %v", code, err)
		}
		// One app that held a lease from before the outage exits.
		live[0].c.Close()
		live = live[1:]
		time.Sleep(5 * time.Minute)

		e.Srv.SetFaults(devserver.Faults{})
		waitSettled(t, e, live, 15*time.Minute)
		if st, _ := e.StatusDirect(); !st.Online {
			t.Errorf("after the outage: state %q, not online", st.State)
		}
		// Leases keep going over further heartbeat windows.
		time.Sleep(30 * time.Minute)
		waitSettled(t, e, live, time.Minute)
		checkLimit(t, mon, limit)
		noPanics(t, e)
		closeAll(live)
	})
}

// A 429 storm: every request is rate limited for five minutes while apps
// come and go. Leases are granted from the cache and reconciled after.
func TestRateLimitStorm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 4
		e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		mon := e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		live := []*app{acquire(t, e), acquire(t, e)}

		e.Srv.SetFaults(devserver.Faults{RateLimitStorm: true})
		live = append(live, acquire(t, e), acquire(t, e))
		if _, code, err := tryAcquire(e); code != ipc.CodeProcessLimitExceeded {
			t.Fatalf("acquire beyond the limit during the storm: %s %v", code, err)
		}
		time.Sleep(2 * time.Minute)
		live[0].c.Close()
		live = live[1:]
		time.Sleep(3 * time.Minute)

		e.Srv.SetFaults(devserver.Faults{})
		waitSettled(t, e, live, 15*time.Minute)
		checkLimit(t, mon, limit)
		noPanics(t, e)
		closeAll(live)
	})
}

// 5xx bursts: half of all requests fail with 500/503 for ten minutes while
// apps acquire and release.
func TestServerErrorBursts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 6
		e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		mon := e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		var live []*app
		for burst := range 3 {
			e.Srv.SetFaults(devserver.Faults{ServerErrorRate: 0.5})
			for i := range 20 {
				if i%3 == 2 && len(live) > 0 {
					live[0].c.Close()
					live = live[1:]
				} else if a, code, err := tryAcquire(e); err == nil {
					live = append(live, a)
				} else if code != ipc.CodeProcessLimitExceeded {
					t.Fatalf("burst %d: acquire: %s %v", burst, code, err)
				}
				time.Sleep(30 * time.Second)
			}
			e.Srv.SetFaults(devserver.Faults{})
			waitSettled(t, e, live, 15*time.Minute)
		}
		checkLimit(t, mon, limit)
		noPanics(t, e)
		closeAll(live)
	})
}

// Bad response signatures (a man in the middle): nothing from those
// responses is trusted. The license is suspended on the server meanwhile;
// the agent must not act on the forged answer: it stays on its verified
// cache (offline, valid), keeps every lease and enforces the cached limit.
func TestBadSignaturesAreNotTrusted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 4
		e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		mon := e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		live := []*app{acquire(t, e), acquire(t, e), acquire(t, e)}

		e.Srv.SetFaults(devserver.Faults{BadSignature: true})
		e.Srv.UpdateLicense(e.License.ID, func(l *devserver.License) { l.Suspended = true; l.MaxProcesses = intp(50) })
		time.Sleep(15 * time.Minute) // past a revalidation and a heartbeat window
		st, _ := e.StatusDirect()
		if st.State != "offline" || !st.Valid || st.Online {
			t.Fatalf("with forged signatures: state %q valid %v online %v, want offline and valid", st.State, st.Valid, st.Online)
		}
		if st.Leases.Limit == nil || *st.Leases.Limit != limit {
			t.Fatalf("limit = %v, want the cached %d", st.Leases.Limit, limit)
		}
		live = append(live, acquire(t, e))
		if _, code, err := tryAcquire(e); code != ipc.CodeProcessLimitExceeded {
			t.Fatalf("acquire beyond the cached limit: %s %v", code, err)
		}
		for _, a := range live {
			if a.c.Revoked() > 0 {
				t.Fatalf("lease revoked on a forged answer")
			}
		}

		e.Srv.UpdateLicense(e.License.ID, func(l *devserver.License) { l.Suspended = false; l.MaxProcesses = nil })
		e.Srv.SetFaults(devserver.Faults{})
		waitSettled(t, e, live, 15*time.Minute)
		checkLimit(t, mon, limit)
		noPanics(t, e)
		closeAll(live)
	})
}

// The clock rolled back while Keygen is reachable: Keygen's signed answers
// rule (issue 14 defect 6): the agent stays active with a clock_skew
// warning and keeps its leases; once the clock is put right, leases work
// as before and the server matches.
func TestClockRolledBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 3
		e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		mon := e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		live := []*app{acquire(t, e), acquire(t, e)}

		e.Offset.Store(int64(-5 * time.Minute))
		time.Sleep(12 * time.Minute)
		waitSettled(t, e, live, time.Minute)

		e.Offset.Store(int64(-3 * time.Hour))
		time.Sleep(12 * time.Minute)
		if st, _ := e.StatusDirect(); st.State != "active" || !st.Valid || st.ClockSkew == nil {
			t.Fatalf("3h roll-back online: state %q valid %v clock_skew %+v", st.State, st.Valid, st.ClockSkew)
		}
		waitSettled(t, e, live, time.Minute)
		closeAll(live)
		live = nil
		waitSettled(t, e, nil, 15*time.Minute)

		e.Offset.Store(0)
		time.Sleep(11 * time.Minute)
		for range limit {
			live = append(live, acquire(t, e))
		}
		if _, code, err := tryAcquire(e); code != ipc.CodeProcessLimitExceeded {
			t.Fatalf("acquire beyond the limit: %s %v", code, err)
		}
		waitSettled(t, e, live, 15*time.Minute)
		checkLimit(t, mon, limit)
		noPanics(t, e)
		closeAll(live)
	})
}

// The cache file corrupted between runs, with an orphan process left on
// the server by the lost run: the agent sets the file aside, re-validates,
// kills the orphan, and serves leases again.
func TestCorruptCacheBetweenRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 3
		e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}})
		mon := e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		a := acquire(t, e)
		a.c.Close()
		checkLimit(t, mon, limit)
		if err := e.Stop(); err != nil {
			t.Fatal(err)
		}
		// An orphan: a process the lost cache knew about.
		admin, err := keygen.NewClient(keygen.Config{BaseURL: e.Srv.URL(), Account: e.Srv.AccountID(),
			Token: e.Srv.AdminToken(), HTTPClient: &http.Client{Transport: e.Srv.Transport()}})
		if err != nil {
			t.Fatal(err)
		}
		ms := e.Srv.Machines()
		if len(ms) != 1 {
			t.Fatalf("machines = %d", len(ms))
		}
		if _, err := admin.SpawnProcess(context.Background(), ms[0].ID, "4242@1", map[string]any{"leaseId": "lost"}); err != nil {
			t.Fatal(err)
		}
		db := filepath.Join(e.Dir, "agent.db")
		garbage := make([]byte, 64<<10)
		for i := range garbage {
			garbage[i] = byte(i*7 + 13)
		}
		if err := os.WriteFile(db, garbage, 0o600); err != nil {
			t.Fatal(err)
		}

		if err := e.Start(); err != nil {
			t.Fatal(err)
		}
		mon = e.StartMonitor(time.Second)
		defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble
		live := []*app{acquire(t, e), acquire(t, e)}
		waitSettled(t, e, live, 15*time.Minute)
		if st, _ := e.StatusDirect(); st.State != "active" {
			t.Errorf("after the corrupt cache: state %q", st.State)
		}
		checkLimit(t, mon, limit)
		noPanics(t, e)
		closeAll(live)
	})
}
