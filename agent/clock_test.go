package agent

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Issue 14 defect 6: trusted time never locks out a good machine. The
// local clock is the harness's offset; Keygen's is the bubble's.

// A clock that was 3 h fast and then corrected is valid within one
// revalidation, without dropping the lease it held (it was clock_tampered
// for 3 h, revoking leases).
func TestDefect6_ClockFastThenCorrected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 100)
		defer c.Close()

		e.offset.Store(int64(3 * time.Hour))
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatalf("sync with the clock 3h fast: %v", err)
		}
		st := e.status()
		if st.State != string(StateActive) || !st.Valid {
			t.Fatalf("clock 3h fast: %+v", st)
		}
		if st.ClockSkew == nil || st.ClockSkew.Seconds > -3*3600+5 || st.ClockSkew.Seconds < -3*3600-5 {
			t.Fatalf("clock 3h fast: clock_skew = %+v, want about -10800 s", st.ClockSkew)
		}
		time.Sleep(30 * time.Minute)

		e.offset.Store(0)
		if st := e.status(); !st.Valid || st.State == string(StateClockTampered) {
			t.Fatalf("clock corrected, before revalidation: %+v", st)
		}
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatalf("sync after the correction: %v", err)
		}
		st = e.status()
		if st.State != string(StateActive) || !st.Valid || st.ClockSkew != nil {
			t.Fatalf("clock corrected, after revalidation: %+v (clock_skew %+v)", st, st.ClockSkew)
		}
		if n := e.a.leases.count(); n != 1 {
			t.Fatalf("leases after the correction = %d, want the one held", n)
		}
		time.Sleep(20 * time.Minute) // heartbeats on the corrected clock
		if st := e.status(); !st.Valid || e.a.leases.count() != 1 {
			t.Fatalf("20 min later: %+v, %d leases", st, e.a.leases.count())
		}
	})
}

// A wrong local clock, by any amount either way, still activates and runs
// (6 minutes fast reported "Keygen is unreachable"), with clock_skew.
func TestDefect6_WrongClockActivates(t *testing.T) {
	for _, skew := range []time.Duration{6 * time.Minute, 365 * 24 * time.Hour, -365 * 24 * time.Hour, -2 * time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
				e.offset.Store(int64(skew))
				e.start()
				defer e.stop()
				e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
				st := e.status()
				if !st.Valid || !st.Online || len(st.Entitlements) != 2 {
					t.Fatalf("status = %+v", st)
				}
				if st.ClockSkew == nil {
					t.Errorf("no clock_skew with the clock %v off", skew)
				}
				c := holdLease(t, e, 100)
				defer c.Close()
				time.Sleep(time.Hour) // revalidations, heartbeats, certificate checks
				if st := e.status(); !st.Valid || st.State != string(StateActive) || e.a.leases.count() != 1 {
					t.Fatalf("an hour later: %+v, %d leases\n%s", st, e.a.leases.count(), e.logs.String())
				}
			})
		})
	}
}

// Offline, a clock rolled back cannot extend offline use; a clock set
// forward ends it, but cannot lock the machine out once Keygen answers
// again (the forward reading used to stay in the watermark and the
// validation answer looked a year old: "Keygen is unreachable").
func TestDefect6_OfflineRollbackAndForward(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{cfg: Config{OfflineGrace: Duration(72 * time.Hour)}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		if err := e.a.requestSync(t.Context()); err == nil {
			t.Fatal("sync succeeded with Keygen refusing connections")
		}
		if st := e.status(); st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("offline: %+v", st)
		}
		time.Sleep(70 * time.Hour)
		_ = e.status()
		e.offset.Store(int64(-60 * time.Hour))
		for range 5 {
			if st := e.status(); st.Valid {
				t.Fatalf("clock rolled back 60h offline: %+v", st)
			}
			time.Sleep(time.Hour)
		}
		e.offset.Store(0)
		if st := e.status(); st.Valid || st.State != string(StateOfflineExpired) {
			t.Fatalf("clock restored after the grace: %+v", st)
		}

		// Forward a year, offline: offline use is over...
		e.offset.Store(int64(365 * 24 * time.Hour))
		if st := e.status(); st.Valid {
			t.Fatalf("clock a year ahead offline: %+v", st)
		}
		// ...and Keygen back: active, the clock still a year ahead.
		e.srv.SetFaults(devserver.Faults{})
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatalf("sync with Keygen back, clock a year ahead: %v", err)
		}
		if st := e.status(); st.State != string(StateActive) || !st.Valid || st.ClockSkew == nil {
			t.Fatalf("online, clock a year ahead: %+v", st)
		}
		// The clock is fixed: still active, and offline use works again.
		e.offset.Store(0)
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatalf("sync with the clock fixed: %v", err)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		if st := e.status(); st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("offline with the clock fixed: %+v", st)
		}
	})
}

// A self-hosted Keygen whose clock is 3 h fast signs Dates 3 h ahead: the
// agent activates and runs (it went clock_tampered), and keeps running
// when that server's clock is fixed, online and then offline.
func TestDefect6_ServerDateThreeHoursAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.srv.SetFaults(devserver.Faults{DateSkew: 3 * time.Hour})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		c := holdLease(t, e, 100)
		defer c.Close()
		time.Sleep(30 * time.Minute)
		st := e.status()
		if st.State != string(StateActive) || !st.Valid || st.ClockSkew == nil || st.ClockSkew.Seconds < 3*3600-5 {
			t.Fatalf("server 3h ahead: %+v (clock_skew %+v)", st, st.ClockSkew)
		}
		e.srv.SetFaults(devserver.Faults{})
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatalf("sync after the server's clock was fixed: %v", err)
		}
		if st := e.status(); st.State != string(StateActive) || st.ClockSkew != nil || e.a.leases.count() != 1 {
			t.Fatalf("server fixed: %+v, %d leases", st, e.a.leases.count())
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		if st := e.status(); st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("offline after the server's clock was fixed: %+v", st)
		}
	})
}

// Trusted time survives a restart: a clock fast once and corrected before
// a restart does not lock the machine out (it stayed clock_tampered across
// restarts); a clock rolled back while offline stays caught after one.
func TestDefect6_RestartPersists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{OfflineGrace: Duration(72 * time.Hour)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.offset.Store(int64(3 * time.Hour))
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		e.stop()

		e.offset.Store(0)
		e.start()
		e.waitFor("active after the restart", func() bool {
			st := e.status()
			return st.State == string(StateActive) && st.ClockSkew == nil
		})

		// Offline, restart with the clock rolled back: still caught.
		time.Sleep(10 * time.Minute)
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		time.Sleep(48 * time.Hour)
		if st := e.status(); st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("offline: %+v", st)
		}
		e.stop()
		e.offset.Store(int64(-40 * time.Hour))
		e.start()
		defer e.stop()
		e.waitFor("a verdict after the restart", func() bool { return e.status().State != string(StateStarting) })
		time.Sleep(30 * time.Hour) // past the real end of the grace
		if st := e.status(); st.Valid {
			t.Fatalf("restarted offline with the clock rolled back 40h, 78h after the last sync: %+v", st)
		}
	})
}
