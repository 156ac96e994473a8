package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// The license lifecycle's regressions (issue 14's defects 1, 2, 3, 4, 7 and
// 10), each against the dev server under synctest. Every test also checks
// that no transition outside lifecycleTable happened.

func ipcCode(err error) string {
	var ie *ipc.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}

func noBadTransitions(t *testing.T, e *env) {
	t.Helper()
	if n := e.a.lic.badTransitions.Load(); n != 0 {
		t.Errorf("%d transitions outside the lifecycle table\nlogs:\n%s", n, e.logs.Tail(40))
	}
}

// holdLease connects app pid and acquires a lease.
func holdLease(t *testing.T, e *env, pid int) *agenttest.Client {
	t.Helper()
	e.procs.Spawn(pid)
	c := e.dial(agenttest.PeerFor(pid))
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.Acquire(acquireParams()); err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return c
}

func activateRaw(key string) json.RawMessage {
	raw, _ := json.Marshal(ipc.ActivateParams{Key: key})
	return raw
}

// Defect 1: a mistyped key is refused by Keygen and changes nothing: the
// lease stays, the machine record and file stay, the state stays active.
func TestDefect1_MistypedActivateKeepsLicense(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 100)
		_, err := e.a.handleActivate(context.Background(), activateRaw("TYPO-0000-0000"))
		if err == nil || ipcCode(err) != ipc.CodeLicenseInvalid || !strings.Contains(err.Error(), "not changed") {
			t.Fatalf("activate with a mistyped key: %v", err)
		}
		synctest.Wait()
		if st := e.status(); st.State != string(StateActive) || !st.Valid || st.Machine == nil || st.Machine.ID == "" {
			t.Fatalf("status after the refused key = %+v", st)
		}
		if c.Revoked() != 0 || len(e.a.leases.liveIDs()) != 1 {
			t.Fatalf("leases touched: %d revoked, %d live", c.Revoked(), len(e.a.leases.liveIDs()))
		}
		if rec, _ := e.a.store.Machine(); rec == nil {
			t.Error("machine record dropped")
		}
		if _, _, err := e.a.openMachineFile(); err != nil {
			t.Errorf("machine file: %v", err)
		}
		if e.a.licenseKey() != e.license.Key {
			t.Error("the stored key changed")
		}
		// Keygen unreachable: the same, with the unreachable code.
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		other := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: e.policy.ID})
		if _, err := e.a.handleActivate(context.Background(), activateRaw(other.Key)); ipcCode(err) != ipc.CodeOfflineExpired {
			t.Fatalf("activate offline: %v", err)
		}
		if len(e.a.leases.liveIDs()) != 1 || e.a.licenseKey() != e.license.Key {
			t.Fatal("an unreachable Keygen changed the license")
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// A good new key is activated before the old one is let go.
func TestActivateNewKeySwitches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 101)
		other := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: e.policy.ID, Permissions: devserver.LicensePermissions})
		st, err := e.a.handleActivate(context.Background(), activateRaw(other.Key))
		if err != nil {
			t.Fatalf("activate a good new key: %v", err)
		}
		if s := st.(*ipc.Status); s.State != string(StateActive) || s.License == nil || s.License.ID != other.ID {
			t.Fatalf("status = %+v", s)
		}
		if _, ok := c.NextNote(ipc.NotifyLeaseRevoked, time.Minute); !ok {
			t.Error("the old license's lease was not revoked")
		}
		noBadTransitions(t, e)
	})
}

// Defect 2: deactivate with Keygen unreachable fails before changing
// anything; with --offline it drops the local state and Keygen gets the
// deactivation once it is reachable.
func TestDefect2_OfflineDeactivateChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 110)
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_, err := e.a.handleDeactivate(context.Background(), nil)
		if ipcCode(err) != ipc.CodeOfflineExpired || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("deactivate offline: %v", err)
		}
		synctest.Wait()
		if c.Revoked() != 0 || len(e.a.leases.liveIDs()) != 1 {
			t.Fatal("the failed deactivation revoked leases")
		}
		if rec, _ := e.a.store.Machine(); rec == nil || e.a.deactivated() {
			t.Fatal("the failed deactivation dropped local state")
		}
		// --offline: local state goes now, Keygen's machine later.
		raw, _ := json.Marshal(ipc.DeactivateParams{Offline: true})
		res, err := e.a.handleDeactivate(context.Background(), raw)
		if err != nil {
			t.Fatalf("deactivate --offline: %v", err)
		}
		if st := res.(*ipc.Status); st.State != string(StateNotActivated) || st.Valid {
			t.Fatalf("status = %+v", st)
		}
		if len(e.a.leases.liveIDs()) != 0 {
			t.Fatal("leases kept after deactivate --offline")
		}
		if len(e.srv.Machines()) != 1 {
			t.Fatal("Keygen's machine gone while unreachable?")
		}
		e.srv.SetFaults(devserver.Faults{})
		e.waitFor("queued deactivation sent", func() bool { return len(e.srv.Machines()) == 0 })
		if b, _ := e.a.store.Meta(metaPendingDeactivation); len(b) != 0 {
			t.Error("pending deactivation not cleared")
		}
		noBadTransitions(t, e)
	})
}

// Defect 3: once Keygen's signed answer says the license is refused, an
// older cached machine file does not revive it offline, nor after a
// restart; a newer signed valid answer clears it.
func TestDefect3_StaleMachineFileCannotReviveRefusedLicense(t *testing.T) {
	cases := []struct {
		name   string
		refuse func(*devserver.License)
		undo   func(*devserver.License)
		state  State
	}{
		{"suspended", func(l *devserver.License) { l.Suspended = true }, func(l *devserver.License) { l.Suspended = false }, StateSuspended},
		{"expired", func(l *devserver.License) { past := time.Now().Add(-time.Hour); l.Expiry = &past }, func(l *devserver.License) { l.Expiry = nil }, StateExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
				e.start()
				running := true
				defer func() {
					if running {
						e.stop()
					}
				}()
				e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
				e.srv.UpdateLicense(e.license.ID, tc.refuse)
				_ = e.a.requestSync(t.Context())
				if st := e.status(); st.State != string(tc.state) || st.Valid {
					t.Fatalf("after the refusal: %+v", st)
				}
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				_ = e.a.requestSync(t.Context())
				st := e.status()
				if st.Valid || st.State != string(tc.state) || st.Online {
					t.Fatalf("offline after the refusal: %+v", st)
				}
				e.procs.Spawn(120)
				c := e.dial(agenttest.PeerFor(120))
				if _, _, err := c.Acquire(acquireParams()); err == nil {
					t.Fatal("lease granted offline on a refused license")
				}
				c.Close()
				// A restart while still offline: the verdict is persisted.
				e.stop()
				e.start()
				e.waitFor("synced", func() bool { return e.status().State != string(StateStarting) })
				time.Sleep(time.Second)
				if st := e.status(); st.Valid {
					t.Fatalf("offline after a restart: %+v", st)
				}
				noBadTransitions(t, e)
				// A newer signed valid answer clears it.
				e.srv.UpdateLicense(e.license.ID, tc.undo)
				e.srv.SetFaults(devserver.Faults{})
				_ = e.a.requestSync(t.Context())
				if st := e.status(); st.State != string(StateActive) || !st.Valid {
					t.Fatalf("after reinstating: %+v", st)
				}
				if e.a.verdict() != nil {
					t.Error("verdict not cleared by a valid answer")
				}
			})
		})
	}
}

// Defect 4: a refusal on any call (here an explicit check-out) updates the
// state at once, pushes license.changed and revokes the leases, without
// waiting for the next revalidation.
func TestDefect4_RefusalOnAnyCallUpdatesStateAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		c := holdLease(t, e, 130)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		_, err := e.a.handleCheckout(context.Background())
		if err == nil {
			t.Fatal("check-out of a suspended license succeeded")
		}
		if st := e.status(); st.State != string(StateSuspended) || st.Valid {
			t.Fatalf("status right after the refused check-out: %+v", st)
		}
		if _, ok := c.NextNote(ipc.NotifyLicenseChanged, time.Minute); !ok {
			t.Error("no license.changed")
		}
		if _, ok := c.NextNote(ipc.NotifyLeaseRevoked, time.Minute); !ok {
			t.Error("no lease.revoked within a minute (revalidation is every 10)")
		}
		noBadTransitions(t, e)
	})
}

// The same for a process heartbeat: the ping refused with
// LICENSE_SUSPENDED ends the lease within the ping's interval.
func TestRefusedPingRevokesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 60
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3), HeartbeatDuration: &hb}})
		c := holdLease(t, e, 131)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		if _, ok := c.NextNote(ipc.NotifyLeaseRevoked, 2*time.Minute); !ok {
			t.Fatalf("lease not revoked within 2 minutes of the suspension: %+v", e.status())
		}
		if st := e.status(); st.State != string(StateSuspended) {
			t.Fatalf("status = %+v", st)
		}
	})
}

// Defect 7: a check-out that cannot reach Keygen takes the failed-sync
// path (offline, unreachable code); a successful one answers with the
// status after its sync.
func TestDefect7_CheckoutOutageGoesOffline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.MaxProcesses = intp(5) })
		res, err := e.a.handleCheckout(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st := res.(*ipc.Status); st.License == nil || st.License.MaxProcesses == nil || *st.License.MaxProcesses != 5 {
			t.Fatalf("check-out answered the status before its sync: %+v", st.License)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_, err = e.a.handleCheckout(context.Background())
		if ipcCode(err) != ipc.CodeOfflineExpired || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("check-out offline: %v", err)
		}
		if st := e.status(); st.Online || st.State != string(StateOffline) {
			t.Fatalf("status after the failed check-out: %+v", st)
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// Defect 10: offline, the current components are compared with the
// machine file's under the policy's matching strategy.
func TestDefect10_OfflineChecksComponents(t *testing.T) {
	for _, tc := range []struct {
		strategy string
		changed  int // components replaced
		valid    bool
	}{
		{fingerprint.MatchAll, 3, false},
		{fingerprint.MatchAll, 1, false},
		{fingerprint.MatchAny, 2, true},
		{fingerprint.MatchAny, 3, false},
		{fingerprint.MatchMost, 1, true},
	} {
		t.Run(tc.strategy+"/"+string(rune('0'+tc.changed)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3), ComponentMatchingStrategy: tc.strategy},
					license: devserver.LicenseSpec{Permissions: devserver.LicensePermissions}})
				e.start()
				e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
				// The policy's strategy must reach the agent through the machine file.
				if ds, _, err := e.a.openMachineFile(); err != nil || len(ds.Components) != 3 || ds.Policy == nil ||
					ds.Policy.ComponentMatchingStrategy != tc.strategy {
					e.stop()
					t.Fatalf("machine file: %v %+v", err, ds)
				}
				e.stop()
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				cs := agenttest.DefaultResult().Components
				for i := range tc.changed {
					cs[i].Fingerprint = "ffffffff0" + string(rune('0'+i))
				}
				e.fp.SetComponents(cs)
				e.start()
				defer e.stop()
				e.waitFor("offline view", func() bool { return !e.status().Online && e.status().State != string(StateStarting) })
				st := e.status()
				if st.Valid != tc.valid {
					t.Fatalf("offline with %d of 3 components changed under %s: %+v", tc.changed, tc.strategy, st)
				}
				if !tc.valid && (st.State != string(StateHardwareChanged) || len(st.HardwareChanges) == 0) {
					t.Fatalf("status = %+v", st)
				}
				noBadTransitions(t, e)
			})
		})
	}
}

// docs/lifecycle.md draws exactly the table's edges.
func TestLifecycleDiagramMatchesTable(t *testing.T) {
	b, err := os.ReadFile("../docs/lifecycle.md")
	if err != nil {
		t.Fatal(err)
	}
	edge := regexp.MustCompile(`(?m)^\s*(\w+) --> (\w+) : (\w+)\s*$`)
	var drawn []string
	for _, m := range edge.FindAllStringSubmatch(string(b), -1) {
		drawn = append(drawn, m[1]+" -"+m[3]+"-> "+m[2])
	}
	var want []string
	for _, e := range lifecycleTable {
		from := string(e.From)
		if e.From == anyState {
			from = "any"
		}
		for _, to := range e.To {
			want = append(want, from+" -"+string(e.Event)+"-> "+string(to))
		}
	}
	slices.Sort(drawn)
	slices.Sort(want)
	if !slices.Equal(drawn, slices.Compact(want)) {
		t.Errorf("docs/lifecycle.md edges differ from lifecycleTable\ndrawn: %q\nwant:  %q", drawn, want)
	}
}

// The newest signed fact wins for imports too (found by the model test: an
// older machine file with a higher limit, imported after a policy change,
// let offline leases exceed the new limit): a file issued before the
// cached one is refused and the cached one kept.
func TestImportOlderMachineFileRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		old, err := e.a.store.Certificate(certMachine)
		if err != nil || old == nil {
			t.Fatalf("cached machine file: %v", err)
		}
		time.Sleep(2 * time.Hour)
		if err := e.a.ensureCertificate(context.Background(), nil, true); err != nil {
			t.Fatalf("fresh check-out: %v", err)
		}
		fresh, _ := e.a.store.Certificate(certMachine)
		if string(fresh.Raw) == string(old.Raw) {
			t.Fatal("the forced check-out did not replace the file")
		}
		err = e.a.importCertificate(old.Raw)
		if !errors.Is(err, errOlderCertificate) {
			t.Fatalf("importing the older file: %v", err)
		}
		if cur, _ := e.a.store.Certificate(certMachine); string(cur.Raw) != string(fresh.Raw) {
			t.Fatal("the older file replaced the newer one")
		}
		// The same file again is not "older": re-importing is harmless.
		if err := e.a.importCertificate(fresh.Raw); err != nil {
			t.Fatalf("re-importing the cached file: %v", err)
		}
	})
}
