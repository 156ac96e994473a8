package agent

import (
	"encoding/json"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// verifyOpts are what the app of agenttest.PeerFor(pid) knows for itself.
func verifyOpts(e *env, pid int) leaseverify.Options {
	p := agenttest.PeerFor(pid)
	return leaseverify.Options{PublicKey: e.srv.PublicKeyHex(), PID: p.PID, StartTime: p.StartTime,
		Fingerprints: []string{agenttest.DefaultResult().Fingerprint}, Now: e.now, MaxAge: time.Hour}
}

// A real lease from the devserver carries evidence that verifies with the
// account key alone, for its own process and nobody else's; a heartbeat
// refreshes it.
func TestLeaseEvidenceVerifies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 600
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3), HeartbeatDuration: &hb}})
		e.procs.Spawn(500)
		c := e.dial(agenttest.PeerFor(500))
		defer c.Close()
		r, _, err := c.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		res, err := leaseverify.VerifyLease(r.LeaseID, r.Evidence, verifyOpts(e, 500))
		if err != nil {
			t.Fatalf("%v\nevidence %+v", err, r.Evidence)
		}
		if res.Offline || res.ProcessID != r.ProcessID {
			t.Fatalf("result %+v, lease %+v", res, r)
		}
		// The same evidence presented to another process, or for another lease.
		if _, err := leaseverify.VerifyLease(r.LeaseID, r.Evidence, verifyOpts(e, 501)); !leaseverify.IsCheck(err, leaseverify.CheckProcess) {
			t.Errorf("another process: %v", err)
		}
		if _, err := leaseverify.VerifyLease("lease_other", r.Evidence, verifyOpts(e, 500)); !leaseverify.IsCheck(err, leaseverify.CheckLease) {
			t.Errorf("another lease: %v", err)
		}
		// After heartbeats the evidence is fresh: a MaxAge shorter than the
		// lease's age still passes.
		time.Sleep(2 * time.Hour)
		r2, _, err := c.Acquire(acquireParams())
		if err != nil || !r2.Reused {
			t.Fatalf("re-acquire: %+v %v", r2, err)
		}
		o := verifyOpts(e, 500)
		o.MaxAge = 15 * time.Minute
		if _, err := leaseverify.VerifyLease(r2.LeaseID, r2.Evidence, o); err != nil {
			t.Fatalf("after heartbeats: %v", err)
		}
		if _, err := leaseverify.VerifyLease(r.LeaseID, r.Evidence, o); !leaseverify.IsCheck(err, leaseverify.CheckDate) {
			t.Errorf("the first evidence, two hours later: %v", err)
		}
	})
}

// Offline, the evidence is the machine file alone; when Keygen is back
// the queued spawn lands and lease.confirmed brings signed evidence.
func TestLeaseEvidenceOfflineThenConfirmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		e.a.goOffline(&keygen.UnavailableError{Err: errors.New("connection refused")})
		e.procs.Spawn(600)
		c := e.dial(agenttest.PeerFor(600))
		defer c.Close()
		r, _, err := c.Acquire(ipc.AcquireParams{App: "demo", Confirm: true})
		if err != nil || !r.Offline {
			t.Fatalf("offline acquire: %+v %v", r, err)
		}
		if r.Evidence == nil || r.Evidence.Status != leaseverify.StatusOffline {
			t.Fatalf("evidence %+v", r.Evidence)
		}
		res, err := leaseverify.VerifyLease(r.LeaseID, r.Evidence, verifyOpts(e, 600))
		if err != nil || !res.Offline {
			t.Fatalf("offline evidence: %+v %v", res, err)
		}
		o := verifyOpts(e, 600)
		o.RequireOnline = true
		if _, err := leaseverify.VerifyLease(r.LeaseID, r.Evidence, o); !leaseverify.IsCheck(err, leaseverify.CheckOffline) {
			t.Fatalf("RequireOnline: %v", err)
		}
		e.srv.SetFaults(devserver.Faults{})
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		n, ok := c.NextNote(ipc.NotifyLeaseConfirmed, 10*time.Minute)
		if !ok {
			t.Fatalf("no lease.confirmed\n%s", e.logs.Tail(40))
		}
		var lc ipc.LeaseConfirmed
		if err := json.Unmarshal(n.Params, &lc); err != nil {
			t.Fatal(err)
		}
		if lc.LeaseID != r.LeaseID || lc.ProcessID == "" {
			t.Fatalf("lease.confirmed %+v", lc)
		}
		if _, err := leaseverify.VerifyLease(lc.LeaseID, lc.Evidence, o); err != nil {
			t.Fatalf("confirmed evidence: %v", err)
		}
	})
}
