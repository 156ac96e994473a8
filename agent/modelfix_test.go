package agent

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
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
