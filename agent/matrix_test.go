package agent

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// TestKeygenDefaultsMatrix runs the agent against the dev server under
// Keygen's defaults and the common variants. In each it must reach active,
// cache a machine file that verifies, serve leases, keep its machine and
// processes alive over several heartbeat windows, and stay licensed
// offline. Licenses get Keygen's default permissions (no policy.read)
// unless a case says otherwise.
func TestKeygenDefaultsMatrix(t *testing.T) {
	hb := func(s int) *int { return &s }
	cases := []struct {
		name   string
		policy devserver.PolicySpec
		token  bool // configure a license token
		all    bool // every permission a license may hold (else Keygen's defaults)
	}{
		{name: "TOKEN with a license token", policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN"}, token: true},
		{name: "LICENSE", policy: devserver.PolicySpec{AuthenticationStrategy: "LICENSE"}},
		{name: "MIXED with the key", policy: devserver.PolicySpec{AuthenticationStrategy: "MIXED"}},
		{name: "MIXED with a token", policy: devserver.PolicySpec{AuthenticationStrategy: "MIXED"}, token: true},
		{name: "scopes required", policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN", RequireMachineScope: true,
			RequireProductScope: true, RequireFingerprintScope: true, RequireComponentsScope: true}, token: true},
		{name: "heartbeat 60s", policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN", RequireHeartbeat: true, HeartbeatDuration: hb(60)}, token: true},
		{name: "heartbeat 600s", policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN", RequireHeartbeat: true, HeartbeatDuration: hb(600)}, token: true},
		{name: "heartbeat 60s LICENSE", policy: devserver.PolicySpec{AuthenticationStrategy: "LICENSE", RequireHeartbeat: true, HeartbeatDuration: hb(60)}},
		{name: "heartbeat 60s, policy readable", policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN", RequireHeartbeat: true, HeartbeatDuration: hb(60)}, token: true, all: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tc.policy.MaxProcesses = intp(3)
				perms := devserver.DefaultLicensePermissions
				if tc.all {
					perms = devserver.LicensePermissions
				}
				e := newEnv(t, envOptions{policy: tc.policy, license: devserver.LicenseSpec{Permissions: perms},
					cfg: Config{OfflineGrace: Duration(72 * time.Hour)}})
				if tc.token {
					e.cfg.LicenseToken = e.srv.CreateToken("license", e.license.ID)
				}
				e.start()
				defer e.stop()
				e.waitFor("active", func() bool { return e.status().State == string(StateActive) })

				if _, _, err := e.a.openMachineFile(); err != nil {
					t.Fatalf("cached machine file: %v", err)
				}
				if v := e.a.view(); v.PolicyAssumed == tc.all {
					t.Errorf("policy assumed = %v with all permissions = %v", v.PolicyAssumed, tc.all)
				}
				c := e.dial(agenttest.PeerFor(500))
				defer c.Close()
				e.procs.Spawn(500)
				if _, _, err := c.Acquire(acquireParams()); err != nil {
					t.Fatalf("acquire online: %v", err)
				}
				if n := e.liveProcesses(); n != 1 {
					t.Fatalf("Keygen processes = %d", n)
				}
				// Three heartbeat windows: machine and process stay alive.
				window := 600 * time.Second
				if d := tc.policy.HeartbeatDuration; d != nil {
					window = time.Duration(*d) * time.Second
				}
				for i := range 3 {
					time.Sleep(window)
					e.srv.Cull()
					ms := e.srv.Machines()
					if len(ms) != 1 || (tc.policy.RequireHeartbeat && ms[0].HeartbeatStatus != "ALIVE") {
						t.Fatalf("window %d: machines = %+v", i, ms)
					}
					if n := e.liveProcesses(); n != 1 {
						t.Fatalf("window %d: live Keygen processes = %d", i, n)
					}
				}
				if st := e.status(); st.State != string(StateActive) || !st.Valid {
					t.Fatalf("after the windows: %+v", st)
				}

				// Keygen goes away: licensed from the machine file, and new
				// leases are served offline.
				e.srv.SetFaults(devserver.Faults{Refuse: true})
				if err := e.a.requestSync(t.Context()); err == nil {
					t.Fatal("sync succeeded with Keygen refusing connections")
				}
				st := e.status()
				if st.State != string(StateOffline) || !st.Valid {
					t.Fatalf("offline: %s", fmt.Sprintf("%+v", st))
				}
				c2 := e.dial(agenttest.PeerFor(501))
				defer c2.Close()
				e.procs.Spawn(501)
				if _, _, err := c2.Acquire(acquireParams()); err != nil {
					t.Fatalf("acquire offline: %v", err)
				}
				time.Sleep(24 * time.Hour)
				if st := e.status(); st.State != string(StateOffline) || !st.Valid {
					t.Fatalf("offline a day later: %+v", st)
				}
				e.srv.SetFaults(devserver.Faults{})
			})
		})
	}
}
