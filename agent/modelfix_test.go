package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Regressions for the violations the model test (model_test.go) found
// after the issue 14 fixes; each names its invariant and key.

// I4/granted-after-signed-invalid-reused (model seed 4, minimal trace
// app-start; suspend; latency; app-start; agent-crash): the agent persisted
// Keygen's signed SUSPENDED and crashed before it revoked the lease. After
// the restart, while the first validation is still in flight (status
// starting), the app reconnects: its restored lease must not be handed
// back, since the newest signed fact refuses the license.
func TestRestoredLeaseNotReusedAfterPersistedRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)},
			cfg: Config{AdoptionWindow: Duration(60 * time.Second)}})
		c := holdLease(t, e, 100)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		// Keygen's refusal is persisted; the crash comes before the leases
		// are ended.
		e.a.recordVerdict(licenseView{State: StateSuspended, Code: "SUSPENDED", Detail: "is suspended", Online: true})
		e.crash()
		c.Close()
		e.srv.SetFaults(devserver.Faults{Latency: 8 * time.Second})
		e.start()
		synctest.Wait()
		if st := e.status(); st.State != string(StateStarting) {
			t.Fatalf("status = %s, want starting (the first validation is slow)", st.State)
		}
		c2 := e.dial(agenttest.PeerFor(100))
		defer c2.Close()
		r, code, err := c2.Acquire(acquireParams())
		if err == nil {
			t.Fatalf("restored lease handed back (reused=%v) after Keygen's signed refusal", r.Reused)
		}
		if code != ipc.CodeLicenseInvalid {
			t.Fatalf("acquire: %v, want %s", err, ipc.CodeLicenseInvalid)
		}
		e.srv.SetFaults(devserver.Faults{})
		e.waitFor("suspended", func() bool { return e.status().State == string(StateSuspended) })
		noBadTransitions(t, e)
	})
}

// I5/state-active-VALID-want-valid-false (model seed 1, minimal trace
// deactivate; outage; activate-right; ...): `activate` after a deactivate,
// with Keygen unreachable, answered OFFLINE_EXPIRED yet left the
// deactivated mark cleared, so the agent activated the machine by itself
// once Keygen was back, taking a seat nobody was told about. A failed
// activation leaves the machine deactivated, and keeps a deactivation
// queued offline.
func TestOfflineActivateLeavesMachineDeactivated(t *testing.T) {
	for _, queued := range []bool{false, true} {
		t.Run(map[bool]string{false: "online-deactivate", true: "offline-deactivate"}[queued], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
				var raw json.RawMessage
				if queued {
					e.srv.SetFaults(devserver.Faults{Refuse: true})
					raw, _ = json.Marshal(ipc.DeactivateParams{Offline: true})
				}
				if _, err := e.a.handleDeactivate(context.Background(), raw); err != nil {
					t.Fatalf("deactivate: %v", err)
				}
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				_, err := e.a.handleActivate(context.Background(), activateRaw(e.license.Key))
				if ipcCode(err) != ipc.CodeOfflineExpired {
					t.Fatalf("activate with Keygen unreachable: %v", err)
				}
				if st := e.status(); st.State != string(StateNotActivated) {
					t.Errorf("status after the failed activate = %s, want not_activated", st.State)
				}
				e.srv.SetFaults(devserver.Faults{})
				time.Sleep(30 * time.Minute)
				synctest.Wait()
				if st := e.status(); st.State != string(StateNotActivated) || st.Valid {
					t.Errorf("status = %s valid=%v, want not_activated", st.State, st.Valid)
				}
				if n := len(e.srv.Machines()); n != 0 {
					t.Errorf("Keygen has %d machines, want 0 (activated without being asked, or the queued deactivation lost)", n)
				}
				noBadTransitions(t, e)
			})
		})
	}
}

// I3/lease-revoked-offline_expired (model seed 15, minimal trace
// app-start; bad-signature; import-expired; advance(17m); advance(45m)): a
// 1 h machine file checked out in the same second as the agent's cached
// one-month file was imported (newer by milliseconds) and replaced it; an
// hour later the agent was offline_expired and revoked the lease, well
// within the 3 h grace. An import never shortens offline use.
func TestImportShorterFileRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)},
			cfg: Config{OfflineGrace: Duration(3 * time.Hour)}})
		c := holdLease(t, e, 100)
		cached, err := e.a.store.Certificate(certMachine)
		if err != nil || cached == nil {
			t.Fatalf("cached machine file: %v", err)
		}
		kc, err := keygen.NewClient(keygen.Config{BaseURL: e.cfg.APIURL, Account: e.cfg.Account, LicenseKey: e.license.Key,
			PublicKey: e.cfg.PublicKey, HTTPClient: &http.Client{Transport: e.srv.Transport()}})
		if err != nil {
			t.Fatal(err)
		}
		co, err := kc.CheckoutMachine(context.Background(), e.fp.Result().Fingerprint, keygen.CheckoutOptions{Encrypt: true, TTL: time.Hour,
			Include: []string{"license", "license.entitlements", "license.policy", "components"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.a.importCertificate(co.Certificate); !errors.Is(err, errShorterCertificate) {
			t.Fatalf("importing a shorter file: %v", err)
		}
		if cur, _ := e.a.store.Certificate(certMachine); string(cur.Raw) != string(cached.Raw) {
			t.Fatal("the shorter file replaced the cached one")
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		time.Sleep(62 * time.Minute)
		synctest.Wait()
		if st := e.status(); st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("status 62 min into a 3 h grace = %s valid=%v, want offline valid", st.State, st.Valid)
		}
		if c.Revoked() != 0 {
			t.Fatal("lease revoked within the grace")
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// I4/status-valid-after-signed-invalid-online (model seed 26, minimal
// trace app-start; date-skew(+2h11m); delete; app-crash): the dead app's
// process kill was refused for its Date (outside the window on corrected
// time), so the agent relearned the clock from a nonce-bound validation;
// that validation said NOT_FOUND, signed and fresh, and was ignored: the
// status stayed active until the next revalidation.
func TestRelearnClockValidationRefusalApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 100)
		e.srv.SetFaults(devserver.Faults{DateSkew: 2*time.Hour + 11*time.Minute})
		req, _ := http.NewRequest(http.MethodDelete, e.cfg.APIURL+"/v1/accounts/"+e.cfg.Account+"/licenses/"+e.license.ID, nil)
		req.Header.Set("Authorization", "Bearer "+e.srv.AdminToken())
		req.Header.Set("Accept", "application/vnd.api+json")
		resp, err := e.srv.Transport().RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("deleting the license: %v %v", err, resp)
		}
		resp.Body.Close()
		// The app crashes: the agent kills its Keygen process.
		e.procs.Exit(100)
		c.Close()
		synctest.Wait()
		if st := e.status(); st.Valid || st.State != string(StateInvalid) || st.Code != "NOT_FOUND" {
			t.Fatalf("status after Keygen answered NOT_FOUND = %s/%s valid=%v\nlogs:\n%s", st.State, st.Code, st.Valid, e.logs.Tail(20))
		}
		noBadTransitions(t, e)
	})
}

// I4/status-valid-after-signed-invalid-offline (model seed 27: expire;
// outage; date-skew(-3h); 5xx-burst): the refusal was recorded at corrected
// time, which a Date 3 h behind put before the cached machine file's
// issued time; offline, that "newer" file won and the agent ran offline
// valid=true on a license Keygen had refused. A refusal is newer than
// every file in the cache when it arrives.
func TestRefusalUnderSkewedDateBeatsCachedFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		time.Sleep(30 * time.Minute)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		e.srv.SetFaults(devserver.Faults{DateSkew: -3 * time.Hour})
		_ = e.a.requestSync(context.Background())
		synctest.Wait()
		if st := e.status(); st.Valid || st.State != string(StateSuspended) {
			t.Fatalf("status after the refusal = %s valid=%v", st.State, st.Valid)
		}
		// Offline, once corrected time (3 h behind the files' clock) has
		// passed the cached file's issued time.
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		time.Sleep(3*time.Hour + 10*time.Minute)
		_ = e.a.requestSync(context.Background())
		synctest.Wait()
		if st := e.status(); st.Valid || st.Online {
			t.Fatalf("offline after a signed refusal: status %s valid=%v online=%v: %s", st.State, st.Valid, st.Online, st.Detail)
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// I4/granted-after-signed-invalid-online (model seed 18, minimal trace
// date-skew(+2h17m); expire; app-start): the spawn's answer was refused
// for its Date, the clock relearned from a validation that said EXPIRED
// (state expired at once), and the retried spawn's lease was still
// granted. A lease is not granted when the license was refused while its
// process was being spawned; the process is killed.
func TestNoGrantWhenRefusedDuringSpawn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.srv.SetFaults(devserver.Faults{DateSkew: 2*time.Hour + 17*time.Minute})
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) {
			exp := time.Now().Add(-time.Second)
			l.Expiry = &exp
		})
		e.procs.Spawn(100)
		c := e.dial(agenttest.PeerFor(100))
		defer c.Close()
		r, code, err := c.Acquire(acquireParams())
		if err == nil {
			t.Fatalf("lease %s granted on a license Keygen answered EXPIRED (status %s)", r.LeaseID, e.status().State)
		}
		if code != ipc.CodeLicenseInvalid {
			t.Fatalf("acquire: %v, want %s", err, ipc.CodeLicenseInvalid)
		}
		synctest.Wait()
		if n := e.liveProcesses(); n != 0 {
			t.Errorf("%d Keygen processes alive after the refused acquire", n)
		}
		if n := len(e.a.leases.liveIDs()); n != 0 {
			t.Errorf("%d leases held", n)
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// The scheduler sleeps on the monotonic clock; its deadlines came from the
// local wall clock. Model seed 46 (clock-jump(-8760h), then an offline
// kill queued): the outbox retry was due a year ago, fired, was set a year
// ago again, and the agent spun forever. The same mix left restored leases
// no adoption window when the local clock was slow (F9,
// I3/re-acquire-refused-PROCESS_LIMIT_EXCEEDED). With the clock a year
// slow, a restarted agent still gives a live app its adoption window.
func TestSchedulerDeadlinesIgnoreWallClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)},
			cfg: Config{AdoptionWindow: Duration(60 * time.Second)}})
		c := holdLease(t, e, 100)
		e.offset.Store(int64(-365 * 24 * time.Hour))
		e.crash()
		c.Close()
		e.start()
		synctest.Wait()
		ids := e.a.leases.liveIDs()
		if len(ids) != 1 {
			t.Fatalf("%d leases after the restart, want the restored one (released at once?)", len(ids))
		}
		if due, ok := e.a.sched.Due(schedKey{kind: schedAdopt, lease: ids[0]}); !ok || due.Before(time.Now().Add(59*time.Second)) {
			t.Fatalf("adoption deadline %v (scheduled %v), want a minute from now %v", due, ok, time.Now())
		}
		c2 := e.dial(agenttest.PeerFor(100))
		defer c2.Close()
		r, _, err := c2.Acquire(acquireParams())
		if err != nil || !r.Reused {
			t.Fatalf("re-acquire after the restart: %+v %v, want the restored lease", r, err)
		}
	})
}

// I5/state-offline-OFFLINE-want-valid-false (model seed 199, deactivate;
// ...; import-expired): a machine file checked out before an online
// deactivation was imported afterwards and put the agent back to offline
// valid=true, with Keygen reachable and the machine gone there. An import
// never undoes a deactivation with an older file; a file Keygen issued
// after it (the machine activated again, e.g. from the dashboard) is
// taken, and the machine is active again.
func TestImportBeforeDeactivationRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		kc, err := keygen.NewClient(keygen.Config{BaseURL: e.cfg.APIURL, Account: e.cfg.Account, LicenseKey: e.license.Key,
			PublicKey: e.cfg.PublicKey, HTTPClient: &http.Client{Transport: e.srv.Transport()}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		fp := e.fp.Result().Fingerprint
		checkout := func() []byte {
			co, err := kc.CheckoutMachine(ctx, fp, keygen.CheckoutOptions{Encrypt: true, TTL: 24 * time.Hour,
				Include: []string{"license", "license.entitlements", "license.policy", "components"}})
			if err != nil {
				t.Fatal(err)
			}
			return co.Certificate
		}
		old := checkout()
		time.Sleep(time.Minute)
		if _, err := e.a.handleDeactivate(ctx, nil); err != nil {
			t.Fatalf("deactivate: %v", err)
		}
		if err := e.a.importCertificate(old); err == nil {
			t.Fatal("a machine file issued before the deactivation was imported")
		}
		time.Sleep(12 * time.Minute)
		synctest.Wait()
		if st := e.status(); st.State != string(StateNotActivated) || st.Valid {
			t.Fatalf("status = %s valid=%v, want not_activated", st.State, st.Valid)
		}
		// Activated again in Keygen; its newer file is taken.
		if _, err := kc.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: e.license.ID, Fingerprint: fp}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		if err := e.a.importCertificate(checkout()); err != nil {
			t.Fatalf("importing a file issued after the deactivation: %v", err)
		}
		if e.a.deactivated() {
			t.Fatal("still marked deactivated after importing a newer machine file")
		}
		noBadTransitions(t, e)
	})
}

// I4/status-valid-after-signed-invalid-offline (model seed 225, minimal
// trace suspend; date-skew(-1h10m); advance(28m); outage; advance(50m);
// import-expired): Keygen's signed Date 70 min behind the clock its files
// carry put the recorded refusal (corrected time) before a machine file
// checked out before the suspension; imported offline, that file beat the
// refusal and the agent ran offline valid=true.
func TestRefusalBeatsOlderImportUnderSkewedDate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		kc, err := keygen.NewClient(keygen.Config{BaseURL: e.cfg.APIURL, Account: e.cfg.Account, LicenseKey: e.license.Key,
			PublicKey: e.cfg.PublicKey, HTTPClient: &http.Client{Transport: e.srv.Transport()}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		co, err := kc.CheckoutMachine(context.Background(), e.fp.Result().Fingerprint, keygen.CheckoutOptions{Encrypt: true, TTL: 24 * time.Hour,
			Include: []string{"license", "license.entitlements", "license.policy", "components"}})
		if err != nil {
			t.Fatal(err)
		}
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		e.srv.SetFaults(devserver.Faults{DateSkew: -70 * time.Minute})
		time.Sleep(28 * time.Minute)
		_ = e.a.requestSync(context.Background())
		synctest.Wait()
		if st := e.status(); st.Valid || st.State != string(StateSuspended) {
			t.Fatalf("status after the refusal = %s valid=%v", st.State, st.Valid)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		_ = e.a.importCertificate(co.Certificate)
		if st := e.status(); st.Valid {
			t.Fatalf("a file checked out before the suspension revived the license offline: %s valid=%v: %s", st.State, st.Valid, st.Detail)
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// I4/status-valid-after-signed-invalid-offline (model seed 239, minimal
// trace bad-signature; app-start; ...; 429-storm; faults-clear; suspend):
// clock_tolerance 0 (a model artefact: its config reload skipped the
// defaults; a config file may still set 100ms), and a process ping's
// signed Date a fraction of a second ahead of corrected time (the offset
// is only as good as the Date's one-second resolution and the round
// trip) read as clock_tampered. The ping's signed
// 403 LICENSE_SUSPENDED then counted as nothing new ("already invalid"),
// and a moment later the agent ran offline valid=true from its machine
// file. Two fixes, one test each.
func TestOffsetUncertaintyIsNotTampering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)},
			cfg: Config{ClockTolerance: Duration(100 * time.Millisecond)}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(context.Background())
		synctest.Wait()
		now, _ := e.a.trustedNow()
		e.a.clock.observeSigned(now.Add(600 * time.Millisecond))
		if st := e.status(); st.State != string(StateOffline) || !st.Valid {
			t.Fatalf("a signed Date 0.6 s ahead of corrected time: status %s valid=%v: %s", st.State, st.Valid, st.Detail)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}

func TestRefusalRecordedWhileClockTampered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)},
			cfg: Config{ClockTolerance: Duration(10 * time.Minute)}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(context.Background())
		synctest.Wait()
		e.offset.Store(int64(-time.Hour))
		if st := e.status(); st.State != string(StateClockTampered) {
			t.Fatalf("clock an hour back offline: status %s", st.State)
		}
		// A signed refusal arrives (a process ping's 403) while the view
		// reads clock_tampered.
		e.a.observeAnswer(&keygen.Error{Status: 403, Code: "LICENSE_SUSPENDED", Detail: "License is suspended"})
		e.offset.Store(0)
		synctest.Wait()
		if st := e.status(); st.Valid {
			t.Fatalf("clock put right after a signed LICENSE_SUSPENDED: status %s valid=%v: %s", st.State, st.Valid, st.Detail)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}

// I3/lease-revoked-active-in-app-start-wait (model seed 546): an app
// exited while its lease's process ping was in flight (Keygen had culled
// the process during a 429 storm); the ping's 404 re-spawned a process for
// the lease just released. Keygen counted it, and the lease another app
// had been granted offline was refused and revoked once online. A
// released lease gets no new process.
func TestNoRespawnForReleasedLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 100)
		ids := e.a.leases.liveIDs()
		if len(ids) != 1 {
			t.Fatalf("%d leases", len(ids))
		}
		l, _, _ := e.a.leases.live(ids[0])
		if err := c.Release(ids[0]); err != nil {
			t.Fatalf("release: %v", err)
		}
		synctest.Wait()
		if n := e.liveProcesses(); n != 0 {
			t.Fatalf("%d Keygen processes after the release", n)
		}
		e.a.respawn(context.Background(), l) // the ping's 404, answered as the release happened
		synctest.Wait()
		if n := e.liveProcesses(); n != 0 {
			t.Fatalf("%d Keygen processes: a process was re-spawned for a released lease", n)
		}
	})
}

// I3/lease-revoked-active-in-advance (model seed 378, minimal trace
// app-start; app-start-wait; limit-up; app-start-wait; advance(24m);
// date-skew(-47m); app-start-wait; advance(8m)): Keygen's signed Date 47
// min behind the clock it stamps files with made the cached machine file
// (limit 4) and every fresh one "issued in the future" on corrected time;
// the cached file was deleted, the limit fell back to the older license
// file's 3, and the newest of four leases was revoked online with the
// license valid.
func TestSkewedDateKeepsNewestLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.srv.UpdatePolicy(e.policy.ID, func(p *devserver.Policy) { p.MaxProcesses = intp(4) })
		time.Sleep(11 * time.Minute) // a revalidation learns the new limit
		synctest.Wait()
		if st := e.status(); st.Leases.Limit == nil || *st.Leases.Limit != 4 {
			t.Fatalf("limit after the policy change: %s", fmtLimit(st.Leases.Limit))
		}
		var cs []interface{ Revoked() int }
		for pid := 100; pid < 104; pid++ {
			cs = append(cs, holdLease(t, e, pid))
		}
		e.srv.SetFaults(devserver.Faults{DateSkew: -47 * time.Minute})
		time.Sleep(11 * time.Minute)
		synctest.Wait()
		for i, c := range cs {
			if c.Revoked() != 0 {
				t.Errorf("lease %d revoked under a skewed Date: status %s, limit %s", i, e.status().State, fmtLimit(e.status().Leases.Limit))
			}
		}
		if n := len(e.a.leases.liveIDs()); n != 4 {
			t.Fatalf("%d leases, want 4", n)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}

// I4/status-valid-after-signed-invalid-online (model seeds 7, 36, 37,
// minimal trace app-start; suspend; app-start(entitlements [...])): a
// gated acquire validates with the entitlements scope, and Keygen, which
// decides the license's own state first (license_validation_service.rb),
// answered SUSPENDED (or EXPIRED, NOT_FOUND), signed. The agent only
// asked the license loop to sync and refused the app with
// ENTITLEMENTS_MISSING from the machine file, its status still active
// and valid. A signed refusal on any call changes the state at once
// (issue 14 item 4) and the app is told why.
func TestGatedAcquireAppliesSignedRefusal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		apply func(e *env)
		state State
	}{
		{"suspended", func(e *env) { e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true }) }, StateSuspended},
		{"expired", func(e *env) {
			e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { t := time.Now().Add(-time.Second); l.Expiry = &t })
		}, StateExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
				tc.apply(e)
				e.procs.Spawn(100)
				c := e.dial(agenttest.PeerFor(100))
				defer c.Close()
				p := acquireParams()
				p.Entitlements = []string{"FEATURE_A"}
				_, code, err := c.Acquire(p)
				if err == nil || code != ipc.CodeLicenseInvalid {
					t.Fatalf("gated acquire on a refused license: code %q err %v, want %s", code, err, ipc.CodeLicenseInvalid)
				}
				if st := e.status(); st.Valid || st.State != string(tc.state) {
					t.Fatalf("status right after Keygen's signed refusal: %s valid=%v, want %s invalid", st.State, st.Valid, tc.state)
				}
				noBadTransitions(t, e)
			})
		})
	}
}

// I7/keygen-count-differs (model seed 96, then 66: date-skew(-2h31m);
// faults-clear; use(2): Keygen counted 4): the agent had learnt its
// clock offset from Keygen's skewed Date; once the Date was right again,
// the increment's answer looked out of the replay window, so call
// relearnt the clock and sent the increment again, and Keygen counted the
// uses twice. A usage change is not idempotent: when the first answer
// proves genuine on the relearnt clock, Keygen counted it and the agent
// reads the count instead of sending it again.
func TestUseNotResentAfterClockRelearn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3), MaxUses: intp(10)}})
		e.srv.SetFaults(devserver.Faults{DateSkew: -2 * time.Hour})
		if err := e.a.requestSync(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.srv.SetFaults(devserver.Faults{})
		c := e.dial(agenttest.AdminPeer)
		defer c.Close()
		var r ipc.UseResult
		if code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: 2}, &r); err != nil {
			t.Fatalf("use: %s %v", code, err)
		}
		if n := e.keygenUses(); n != 2 || r.Uses != 2 || r.Offline {
			t.Fatalf("use(2): Keygen counts %d, the agent reported %d (offline=%v); want 2 and 2 online", n, r.Uses, r.Offline)
		}
	})
}

// I7/online-decrement-not-counted (model seed 49: clock-jump(-55m);
// use-decrement): the first version of the fix above read the count after
// any answer refused for its Date, so Keygen's signed 403 to a decrement
// (license credentials may not decrement) was reported as done. A refusal
// changed nothing and must reach the app.
func TestUseRefusalUnderMovedClockReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3), MaxUses: intp(10)}})
		c := e.dial(agenttest.AdminPeer)
		defer c.Close()
		if code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: 2}, nil); err != nil {
			t.Fatalf("use: %s %v", code, err)
		}
		e.offset.Store(int64(-55 * time.Minute))
		code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: -1}, nil)
		if code != ipc.CodePermissionDenied {
			t.Fatalf("decrement under a moved clock: %s %v, want %s", code, err, ipc.CodePermissionDenied)
		}
		if n := e.keygenUses(); n != 2 {
			t.Fatalf("Keygen counts %d, want 2", n)
		}
	})
}

// I7/keygen-count-differs (model seed 222, license-only, maxUses 8): six
// uses were counted by Keygen (replayed from the queue), a revalidation
// followed, then the agent restarted while Keygen was away. Offline it
// took the count from the certificate (checked out when the license had 0
// uses), since the last usage answer was older than the last sync, and
// accepted 1 + 2 more uses: 9 > 8, and Keygen refused the replay. The
// offline limit must start from the newest count Keygen gave.
func TestOfflineUsesCountFromNewestAnswer(t *testing.T) {
	for _, mode := range []string{ActivationMachine, ActivationNone} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3), MaxUses: intp(8)},
					cfg: Config{Activation: mode}})
				c := e.dial(agenttest.AdminPeer)
				if code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: 6}, nil); err != nil {
					t.Fatalf("use: %s %v", code, err)
				}
				c.Close()
				time.Sleep(time.Minute)
				if err := e.a.requestSync(context.Background()); err != nil {
					t.Fatal(err)
				}
				e.crash()
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				e.start()
				e.waitFor("offline", func() bool { return e.status().State == string(StateOffline) })
				c = e.dial(agenttest.AdminPeer)
				defer c.Close()
				var r ipc.UseResult
				code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: 3}, &r)
				if code != ipc.CodeUsesExceeded {
					t.Fatalf("offline use(3) with Keygen at 6 of 8: %s %v (result %+v), want %s", code, err, r, ipc.CodeUsesExceeded)
				}
			})
		})
	}
}
