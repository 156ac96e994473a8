package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func TestColdStartActivatesAndChecksOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		st := e.status()
		if !st.Valid || !st.Online {
			t.Fatalf("status = %+v", st)
		}
		if got := strings.Join(st.Entitlements, ","); got != "FEATURE_A,FEATURE_B" {
			t.Errorf("entitlements = %q", got)
		}
		if st.License == nil || st.License.ID != e.license.ID || st.License.MaxProcesses == nil || *st.License.MaxProcesses != 3 {
			t.Errorf("license = %+v", st.License)
		}
		ms := e.srv.Machines()
		if len(ms) != 1 || ms[0].Fingerprint != e.fp.Result().Fingerprint {
			t.Fatalf("machines on server = %+v", ms)
		}
		if st.Machine == nil || st.Machine.ID != ms[0].ID {
			t.Errorf("status machine = %+v, server %s", st.Machine, ms[0].ID)
		}
		if n := len(e.srv.Components()); n != 3 {
			t.Errorf("components on server = %d, want 3", n)
		}
		rec, err := e.a.store.Certificate(certMachine)
		if err != nil || rec == nil || !strings.HasPrefix(string(rec.Raw), "-----BEGIN MACHINE FILE-----") {
			t.Fatalf("cached certificate = %v, %v", rec, err)
		}
	})
}

func TestRestartOfflineThenGraceThenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{OfflineGrace: Duration(48 * time.Hour)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.stop()

		// Keygen goes away; a restart on the warm cache runs offline.
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		e.start()
		defer e.stop()
		e.waitFor("offline", func() bool { return e.status().State == string(StateOffline) })
		st := e.status()
		if !st.Valid || st.Online || st.OfflineUntil == nil {
			t.Fatalf("offline status = %+v", st)
		}
		if got := strings.Join(st.Entitlements, ","); got != "FEATURE_A,FEATURE_B" {
			t.Errorf("offline entitlements = %q", got)
		}
		// The grace runs out before the certificate (a month) does.
		time.Sleep(49 * time.Hour)
		st = e.status()
		if st.State != string(StateOfflineExpired) || st.Valid {
			t.Fatalf("after grace: %+v", st)
		}
		// Keygen is back: active again at the next retry.
		e.srv.SetFaults(devserver.Faults{})
		e.waitFor("active again", func() bool { return e.status().State == string(StateActive) })
	})
}

func TestCertificateExpiryEndsOffline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{OfflineGrace: Duration(1000 * time.Hour), CertificateTTL: Duration(2 * time.Hour)}})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		e.waitFor("offline", func() bool {
			_ = e.a.requestSync(t.Context())
			return e.status().State == string(StateOffline)
		})
		until := e.status().OfflineUntil
		if until == nil || until.Sub(time.Now()) > 2*time.Hour {
			t.Fatalf("offline until %v, want the certificate's expiry within 2h", until)
		}
		time.Sleep(2*time.Hour + time.Minute)
		if st := e.status(); st.State != string(StateOfflineExpired) {
			t.Fatalf("after certificate expiry: %+v", st)
		}
	})
}

func TestClockRollbackIsTampering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		// Online, Keygen's answers rule: a jump either way is a warning.
		e.offset.Store(int64(3 * time.Hour))
		if st := e.status(); st.State == string(StateClockTampered) {
			t.Fatalf("forward jump flagged: %+v", st)
		}
		e.offset.Store(int64(-2 * time.Hour))
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		if st := e.status(); st.State != string(StateActive) || st.ClockSkew == nil {
			t.Fatalf("online rollback: %+v", st)
		}
		// Offline, rolling back behind trusted time is tampering.
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		e.offset.Store(int64(-4 * time.Hour))
		st := e.status()
		if st.State != string(StateClockTampered) || st.Valid {
			t.Fatalf("after rollback offline: %+v", st)
		}
		c := e.dial(agenttest.PeerFor(100))
		defer c.Close()
		e.procs.Spawn(100)
		if _, code, err := c.Acquire(acquireParams()); err == nil || code != "LICENSE_INVALID" {
			t.Fatalf("acquire with tampered clock: code %q err %v", code, err)
		}
	})
}

func TestHardwareChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{ComponentMatchingStrategy: "MATCH_MOST"}})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		// Two of three components change (a new disk and NIC).
		e.fp.SetComponents([]fingerprint.Component{
			{Name: "cpu", Fingerprint: "c0c0c0c0aa"},
			{Name: "disk-0", Fingerprint: "ffffffff01"},
			{Name: "nic-0", Fingerprint: "ffffffff02"},
		})
		res, _ := e.fp.Get(t.Context())
		e.a.fp.Store(res)
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		st := e.status()
		if st.State != string(StateHardwareChanged) || st.Valid {
			t.Fatalf("status = %+v", st)
		}
		changes := map[string]string{}
		for _, c := range st.HardwareChanges {
			changes[c.Name] = c.Change
		}
		if changes["cpu"] != "matched" || changes["disk-0"] != "changed" || changes["nic-0"] != "changed" {
			t.Errorf("explanation = %v", changes)
		}
	})
}

func TestSuspendedWithinOneRevalidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{RevalidateInterval: Duration(5 * time.Minute)}})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		c := e.dial(agenttest.PeerFor(200))
		defer c.Close()
		e.procs.Spawn(200)
		if _, _, err := c.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		time.Sleep(6 * time.Minute) // one revalidation (5m ± 10%)
		st := e.status()
		if st.State != string(StateSuspended) || st.Valid {
			t.Fatalf("status = %+v", st)
		}
		if _, ok := c.NextNote("lease.revoked", time.Second); !ok {
			t.Error("no lease.revoked after suspension")
		}
		// A suspended license cannot authenticate any more (403
		// LICENSE_SUSPENDED), so the kill cannot be sent; the agent stops
		// pinging and Keygen lets the process die and culls it.
		time.Sleep(600*time.Second + 3*time.Minute)
		if n := len(e.srv.Processes()); n != 0 {
			t.Errorf("server processes after revocation = %d (still pinged?)", n)
		}
	})
}

// corruptCases each damage the cache between runs; the agent must start
// clean, re-fetch, and trust nothing it should not.
func TestCorruptCacheIsRefetched(t *testing.T) {
	cases := map[string]func(t *testing.T, path string){
		"garbage": func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("this is not a bbolt file at all, not even close"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"truncated": func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/3); err != nil {
				t.Fatal(err)
			}
		},
		"tampered certificate": func(t *testing.T, path string) {
			st, err := cache.Open(path, cache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			rec, _ := st.Certificate(certMachine)
			raw := []byte(strings.Replace(string(rec.Raw), "A", "B", 1))
			if err := st.PutCertificate(certMachine, raw, rec.FetchedAt); err != nil {
				t.Fatal(err)
			}
			st.Close()
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, envOptions{})
				e.start()
				e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
				e.stop()
				path := filepath.Join(e.dir, "agent.db")
				damage(t, path)
				// Offline first: nothing damaged may be trusted.
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				e.start()
				defer e.stop()
				e.waitFor("settled", func() bool { s := e.status().State; return s != string(StateStarting) })
				if st := e.status(); st.Valid {
					t.Fatalf("trusted a damaged cache offline: %+v", st)
				}
				e.srv.SetFaults(devserver.Faults{})
				e.waitFor("re-fetched", func() bool { return e.status().State == string(StateActive) })
				rec, err := e.a.store.Certificate(certMachine)
				if err != nil || rec == nil {
					t.Fatalf("no certificate after re-fetch: %v", err)
				}
				if _, _, err := e.a.openMachineFile(); err != nil {
					t.Fatalf("re-fetched certificate does not verify: %v", err)
				}
			})
		})
	}
}
