package agent

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// adminClient talks to the env's dev server as the account's admin.
func (e *env) adminClient() *keygen.Client {
	e.t.Helper()
	c, err := keygen.NewClient(keygen.Config{BaseURL: e.cfg.APIURL, Account: e.srv.AccountID(), Token: e.srv.AdminToken(),
		PublicKey: e.srv.PublicKeyHex(), HTTPClient: &http.Client{Transport: e.srv.Transport()}})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func missingOf(err error) []string {
	var ie *ipc.Error
	if !errors.As(err, &ie) || ie.Code != ipc.CodeEntitlementsMissing {
		return nil
	}
	m, _ := ie.Data.(map[string]any)
	s, _ := m["missing"].([]string)
	return s
}

// TestAcquireEntitlements: lease.acquire with entitlements is refused with
// ENTITLEMENTS_MISSING and data.missing, online (Keygen's entitlements
// scope) and offline (the verified machine file).
func TestAcquireEntitlements(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)},
			cfg: Config{OfflineGrace: Duration(72 * time.Hour)}})
		check := func(phase string) {
			t.Helper()
			for i, tc := range []struct {
				want    []string
				missing []string
			}{
				{[]string{"FEATURE_A"}, nil},
				{[]string{"FEATURE_B", "FEATURE_A", "FEATURE_A"}, nil},
				{[]string{"FEATURE_A", "PRO", "EXPORT"}, []string{"EXPORT", "PRO"}},
			} {
				pid := 700 + i
				if phase == "offline" {
					pid += 100
				}
				e.procs.Spawn(pid)
				c := e.dial(agenttest.PeerFor(pid))
				p := acquireParams()
				p.Entitlements = tc.want
				_, code, err := c.Acquire(p)
				switch {
				case tc.missing == nil && err != nil:
					t.Errorf("%s %v: %v", phase, tc.want, err)
				case tc.missing != nil && code != ipc.CodeEntitlementsMissing:
					t.Errorf("%s %v: code %q err %v, want ENTITLEMENTS_MISSING", phase, tc.want, code, err)
				case tc.missing != nil && !strings.Contains(err.Error(), strings.Join(tc.missing, ", ")):
					t.Errorf("%s %v: message %v does not name %v", phase, tc.want, err, tc.missing)
				}
				c.Close()
				if tc.missing != nil {
					want, _ := normaliseEntitlements(tc.want)
					got := missingOf(e.a.requireEntitlements(t.Context(), want, e.a.view()))
					if !slices.Equal(got, tc.missing) {
						t.Errorf("%s %v: data.missing = %v, want %v", phase, tc.want, got, tc.missing)
					}
				}
			}
			e.procs.Spawn(999)
			if _, code, _ := e.dial(agenttest.PeerFor(999)).Acquire(ipc.AcquireParams{Entitlements: []string{" "}}); code != ipc.CodeInvalidRequest {
				t.Errorf("%s: blank entitlement code: %q", phase, code)
			}
		}
		check("online")
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		if err := e.a.requestSync(t.Context()); err == nil {
			t.Fatal("sync succeeded with Keygen refusing connections")
		}
		if st := e.status(); st.State != string(StateOffline) {
			t.Fatalf("state %s", st.State)
		}
		check("offline")
	})
}

// TestEntitlementRemovedAppliesAtOnce: an entitlement removed in Keygen
// refuses the next acquire at once (online check), and the machine file
// is re-checked out so status and offline checks follow.
func TestEntitlementRemovedAppliesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		c := e.dial(agenttest.PeerFor(500))
		defer c.Close()
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) {})
		detachEntitlement(t, e, "FEATURE_B")
		e.procs.Spawn(500)
		p := acquireParams()
		p.Entitlements = []string{"FEATURE_B"}
		if _, code, _ := c.Acquire(p); code != ipc.CodeEntitlementsMissing {
			t.Fatalf("acquire after removal: %q", code)
		}
		e.waitFor("status without FEATURE_B", func() bool { return slices.Equal(e.status().Entitlements, []string{"FEATURE_A"}) })
		if _, ok := c.NextNote(ipc.NotifyLicenseChanged, time.Minute); !ok {
			t.Error("no license.changed after the entitlement was removed")
		}
	})
}

// detachEntitlement removes code from the env's license through Keygen's
// API (DELETE /licenses/{id}/entitlements).
func detachEntitlement(t *testing.T, e *env, code string) {
	t.Helper()
	if !e.srv.DetachEntitlements(e.license.ID, code) {
		t.Fatalf("detach %s", code)
	}
}

// TestLeasingOverageMatrix: for every process leasing strategy × overage
// strategy, the limit the agent enforces on this machine, online and
// offline, is what Keygen allows (machine_process.rb): max processes
// raised by the overage, counted per machine, per license (minus the
// processes on other machines) or per owner (a machine without owner
// counting with the other machines without owner).
func TestLeasingOverageMatrix(t *testing.T) {
	const max = 4
	overages := map[string]int{"NO_OVERAGE": 4, "ALLOW_1_25X_OVERAGE": 5, "ALLOW_1_5X_OVERAGE": 6, "ALLOW_2X_OVERAGE": 8, "ALWAYS_ALLOW_OVERAGE": -1}
	for _, leasing := range []string{"PER_MACHINE", "PER_LICENSE", "PER_USER"} {
		for overage, allowed := range overages {
			t.Run(leasing+"/"+overage, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(max), Floating: true, MaxMachines: intp(4),
						ProcessLeasingStrategy: leasing, OverageStrategy: overage}, cfg: Config{OfflineGrace: Duration(72 * time.Hour)}})
					// Another machine of the license (no owner) runs one process.
					admin := e.adminClient()
					other, err := admin.ActivateMachine(t.Context(), keygen.ActivateParams{LicenseID: e.license.ID, Fingerprint: "other-machine"})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := admin.SpawnProcess(t.Context(), other.ID, "1", nil); err != nil {
						t.Fatal(err)
					}
					e.start()
					defer e.stop()
					e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
					want := allowed
					if want > 0 && leasing != "PER_MACHINE" {
						want-- // the other machine's process counts
					}
					lim := e.status().Leases.Limit
					if (want < 0) != (lim == nil) || (lim != nil && *lim != want) {
						t.Fatalf("online limit %s, want %d", fmtLimit(lim), want)
					}
					probe := want
					if probe < 0 {
						probe = 10 // unlimited: more than any overage allows
					}
					granted := 0
					for i := range probe + 1 {
						pid := 2000 + i
						e.procs.Spawn(pid)
						c := e.dial(agenttest.PeerFor(pid))
						defer c.Close()
						if _, code, err := c.Acquire(acquireParams()); err == nil {
							granted++
						} else if code != ipc.CodeProcessLimitExceeded {
							t.Fatalf("acquire %d: %v", i, err)
						}
					}
					if want >= 0 && granted != want {
						t.Fatalf("granted %d, want %d", granted, want)
					}
					// Keygen agrees: the next spawn on this machine is refused
					// (or, unlimited, accepted).
					_, err = admin.SpawnProcess(t.Context(), e.a.machineID(), "probe", nil)
					if want >= 0 && !errors.Is(err, keygen.ErrProcessLimitExceeded) {
						t.Fatalf("Keygen accepted a spawn past the agent's limit: %v", err)
					}
					if want < 0 && err != nil {
						t.Fatalf("Keygen refused a spawn under ALWAYS_ALLOW_OVERAGE: %v", err)
					}
					// Offline, from the last known counts: the same limit.
					e.srv.SetFaults(devserver.Faults{Refuse: true})
					_ = e.a.requestSync(t.Context())
					st := e.status()
					if st.State != string(StateOffline) {
						t.Fatalf("state %s", st.State)
					}
					if (want < 0) != (st.Leases.Limit == nil) || (st.Leases.Limit != nil && *st.Leases.Limit != want) {
						t.Fatalf("offline limit %s, want %d", fmtLimit(st.Leases.Limit), want)
					}
				})
			})
		}
	}
}

// TestLicenseChangedLimitRevokesNewest: max processes lowered in Keygen → at the
// next sync license.changed goes out and the newest leases are revoked
// with LIMIT_REDUCED; the oldest stay.
func TestLicenseChangedLimitRevokesNewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(4)}})
		var clients []*agenttest.Client
		for i := range 4 {
			pid := 3000 + i
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			time.Sleep(time.Second) // distinct creation times
		}
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.MaxProcesses = intp(2) })
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		for i, c := range clients {
			// Both notifications, in whichever order: drain for a second.
			var revoked *agenttest.Note
			changed := false
			timeout := time.After(time.Second)
		drain:
			for {
				select {
				case n := <-c.Notes():
					switch n.Method {
					case ipc.NotifyLicenseChanged:
						changed = true
					case ipc.NotifyLeaseRevoked:
						revoked = &n
					}
				case <-timeout:
					break drain
				}
			}
			if want := i >= 2; want != (revoked != nil) {
				t.Errorf("lease %d: revoked = %v", i, revoked != nil)
			} else if revoked != nil && !strings.Contains(string(revoked.Params), ipc.CodeLimitReduced) {
				t.Errorf("lease %d: revoked with %s", i, revoked.Params)
			}
			if !changed {
				t.Errorf("lease %d: no license.changed", i)
			}
		}
		if n := e.a.leases.count(); n != 2 {
			t.Fatalf("%d leases left", n)
		}
	})
}

// TestNoCheckoutOnTouch: Keygen moves the license's `updated` at every
// validation (LicenseValidationService#touch!); the agent does not check
// out again for that, only for what matters (here, a new expiry).
func TestNoCheckoutOnTouch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{})
		checkouts := func() int { return e.srv.Stats().Routes["POST /machines/{id}/actions/check-out"] }
		before := checkouts()
		for range 5 {
			e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Updated = l.Updated.Add(time.Minute) })
			if err := e.a.requestSync(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if n := checkouts() - before; n != 0 {
			t.Fatalf("%d check-outs for a touched license", n)
		}
		exp := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Expiry = &exp })
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := checkouts() - before; n != 1 {
			t.Fatalf("%d check-outs after the expiry changed, want 1", n)
		}
	})
}

// TestCheckIn: with requireCheckIn the agent checks in before the due date,
// status shows it, and the license never goes OVERDUE while online;
// offline past the due date it is invalid OVERDUE as Keygen would say.
func TestCheckIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{RequireCheckIn: true, CheckInInterval: "day", CheckInIntervalCount: 2},
			cfg: Config{OfflineGrace: Duration(30 * 24 * time.Hour)}})
		st := e.status()
		if st.NextCheckIn == nil {
			t.Fatal("status has no next_check_in")
		}
		for h := 0; h < 7*24; h += 6 {
			time.Sleep(6 * time.Hour)
			if st := e.status(); !st.Valid {
				t.Fatalf("after %dh: %s %s %s", h+6, st.State, st.Code, st.Detail)
			}
		}
		l, _ := e.srv.License(e.license.ID)
		if l.LastCheckIn == nil || time.Since(*l.LastCheckIn) > 48*time.Hour {
			t.Fatalf("last check-in %v", l.LastCheckIn)
		}
		due := *e.status().NextCheckIn
		if !due.After(time.Now()) {
			t.Fatalf("next check-in %v is past", due)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		if st := e.status(); st.State != string(StateOffline) {
			t.Fatalf("offline state %s", st.State)
		}
		time.Sleep(time.Until(due) + time.Minute)
		st = e.status()
		if st.Valid || st.Code != "OVERDUE" {
			t.Fatalf("past the due date offline: %s %s %v", st.State, st.Code, st.Valid)
		}
		fmt.Fprintln(testWriter{t}, "offline overdue:", st.Detail)
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
