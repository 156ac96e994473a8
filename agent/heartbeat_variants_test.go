package agent

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Item 6: the policy's heartbeat variants (heartbeatCullStrategy,
// heartbeatResurrectionStrategy, heartbeatBasis), as keygen-api implements
// them (machine.rb heartbeat_status / resurrection_period_passed?,
// machine_heartbeat_worker.rb and process_heartbeat_worker.rb, which
// destroy a dead record under DEACTIVATE_DEAD once any revive window has
// passed and keep it under KEEP_DEAD). For each: the agent's machine and
// process heartbeats keep a live app licensed over many windows; after an
// outage longer than the window (and any revive window) it re-activates
// the machine and re-spawns the process under the same lease — the
// machine limit of 1 showing that a dead machine Keygen keeps is removed
// first; after a short outage inside a revive window Keygen resurrects the
// same records.
func TestHeartbeatPolicyVariants(t *testing.T) {
	const hb = 120 // seconds
	cases := []struct {
		cull, revive, basis string
		requireHeartbeat    bool
		// shortOutage: an outage past the window but inside the revive
		// window, after which the same machine must be resurrected.
		shortOutage time.Duration
	}{
		{cull: "DEACTIVATE_DEAD", revive: "NO_REVIVE", basis: "FROM_CREATION", requireHeartbeat: true},
		{cull: "DEACTIVATE_DEAD", revive: "NO_REVIVE", basis: "FROM_FIRST_PING", requireHeartbeat: true},
		{cull: "KEEP_DEAD", revive: "NO_REVIVE", basis: "FROM_CREATION", requireHeartbeat: true},
		{cull: "KEEP_DEAD", revive: "NO_REVIVE", basis: "FROM_FIRST_PING", requireHeartbeat: true},
		{cull: "DEACTIVATE_DEAD", revive: "5_MINUTE_REVIVE", basis: "FROM_CREATION", requireHeartbeat: true, shortOutage: hb*time.Second + 3*time.Minute},
		{cull: "KEEP_DEAD", revive: "10_MINUTE_REVIVE", basis: "FROM_FIRST_PING", requireHeartbeat: true, shortOutage: hb*time.Second + 5*time.Minute},
		{cull: "KEEP_DEAD", revive: "ALWAYS_REVIVE", basis: "FROM_CREATION", requireHeartbeat: true, shortOutage: 2 * time.Hour},
		// Machine heartbeats optional: only the processes heartbeat.
		{cull: "DEACTIVATE_DEAD", revive: "NO_REVIVE", basis: "FROM_FIRST_PING"},
		{cull: "KEEP_DEAD", revive: "NO_REVIVE", basis: "FROM_FIRST_PING"},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/%s/%s/require=%v", tc.cull, tc.revive, tc.basis, tc.requireHeartbeat)
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := hb
				e := activeEnv(t, envOptions{policy: devserver.PolicySpec{
					RequireHeartbeat: tc.requireHeartbeat, HeartbeatDuration: &d,
					HeartbeatCullStrategy: tc.cull, HeartbeatResurrectionStrategy: tc.revive, HeartbeatBasis: tc.basis,
					MaxMachines: intp(1), MaxProcesses: intp(2),
				}})
				c := holdLease(t, e, 610)
				// Back online, the first heartbeat that reaches Keygen has
				// the agent sync, well before its offline backoff (up to 5
				// minutes) would.
				e.waitLimit = 90 * time.Second
				wantMachine := "ALIVE"
				if !tc.requireHeartbeat {
					wantMachine = "NOT_STARTED"
				}
				// Kept alive over many windows, with the cull worker running.
				for range 8 {
					time.Sleep(hb * time.Second)
					e.srv.Cull()
					checkLive(t, e, wantMachine, "")
				}
				first := e.srv.Machines()[0].ID

				if tc.shortOutage > 0 {
					e.srv.SetFaults(devserver.Faults{Refuse: true})
					time.Sleep(tc.shortOutage)
					e.srv.Cull()
					if ms := e.srv.Machines(); len(ms) != 1 || ms[0].HeartbeatStatus != "DEAD" {
						t.Fatalf("after the short outage Keygen's machine = %+v, want DEAD and kept", ms)
					}
					e.srv.SetFaults(devserver.Faults{})
					e.waitFor("resurrected", func() bool { return liveOn(e, first, wantMachine) })
					checkLive(t, e, wantMachine, first)
				}

				// An outage longer than the window and every revive window
				// but ALWAYS_REVIVE's.
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				time.Sleep(hb*time.Second + 20*time.Minute)
				e.srv.Cull()
				ms := e.srv.Machines()
				switch {
				case !tc.requireHeartbeat:
					// Only the processes died; the machine never pinged.
					if len(ms) != 1 || ms[0].ID != first {
						t.Fatalf("machine without required heartbeats after the outage: %+v", ms)
					}
				case tc.revive == "ALWAYS_REVIVE" || tc.cull == "KEEP_DEAD":
					if len(ms) != 1 || ms[0].HeartbeatStatus != "DEAD" {
						t.Fatalf("KEEP_DEAD machine after the outage: %+v", ms)
					}
				default:
					if len(ms) != 0 {
						t.Fatalf("DEACTIVATE_DEAD machine not culled: %+v", ms)
					}
				}
				e.srv.SetFaults(devserver.Faults{})
				wantID := ""
				if tc.revive == "ALWAYS_REVIVE" || !tc.requireHeartbeat {
					wantID = first
				}
				e.waitFor("licensed again after the long outage", func() bool {
					ms := e.srv.Machines()
					return len(ms) == 1 && (wantID == "" || ms[0].ID == wantID) && liveOn(e, ms[0].ID, wantMachine)
				})
				// And kept alive afterwards.
				for range 4 {
					time.Sleep(hb * time.Second)
					e.srv.Cull()
					checkLive(t, e, wantMachine, wantID)
				}
				if c.Revoked() != 0 {
					t.Fatalf("the app's lease was revoked (%d)", c.Revoked())
				}
				noBadTransitions(t, e)
			})
		})
	}
}

// liveOn: the agent is active, the machine machineID has heartbeat status
// wantMachine, and exactly one live Keygen process runs on it.
func liveOn(e *env, machineID, wantMachine string) bool {
	if st := e.status(); st.State != string(StateActive) || !st.Valid {
		return false
	}
	ok := false
	for _, m := range e.srv.Machines() {
		if m.ID == machineID {
			ok = m.HeartbeatStatus == wantMachine
		}
	}
	n := 0
	for _, p := range e.srv.Processes() {
		if p.Status != "DEAD" {
			if p.MachineID != machineID {
				return false
			}
			n++
		}
	}
	return ok && n == 1 && len(e.a.leases.liveIDs()) == 1
}

func checkLive(t *testing.T, e *env, wantMachine, machineID string) {
	t.Helper()
	ms := e.srv.Machines()
	if len(ms) != 1 || (machineID != "" && ms[0].ID != machineID) {
		t.Fatalf("machines = %+v (want one, id %q)", ms, machineID)
	}
	if !liveOn(e, ms[0].ID, wantMachine) {
		t.Fatalf("not live: status %+v\nmachines %+v\nprocesses %+v\nlogs:\n%s", e.status(), ms, e.srv.Processes(), e.logs.Tail(40))
	}
}
