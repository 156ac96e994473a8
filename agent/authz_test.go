package agent

import (
	"context"
	"encoding/json"
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

// Keygen's defaults, against the dev server: the tests in this file fail
// on an agent that authenticates only with the license key, always
// includes license.policy, or heartbeats every 300 s without a policy.

// Under Keygen's default authenticationStrategy (TOKEN) a license key may
// not activate: the agent says so with both remedies, backs off instead of
// retrying at every revalidation, and works once given a license token.
func TestTokenPolicyWithoutTokenExplainsAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN"},
			license: devserver.LicenseSpec{Permissions: devserver.DefaultLicensePermissions}})
		e.start()
		defer e.stop()
		e.waitFor("auth refused", func() bool { return e.status().State == string(StateAuthRefused) })
		st := e.status()
		if st.Code != "LICENSE_NOT_ALLOWED" || st.Valid || !strings.Contains(st.Detail, "license_token") || !strings.Contains(st.Detail, "LICENSE or MIXED") {
			t.Fatalf("status = %+v", st)
		}
		before := e.srv.Stats().Routes["POST /machines"]
		time.Sleep(3 * time.Hour) // 18 revalidations at 10m without back-off
		attempts := e.srv.Stats().Routes["POST /machines"] - before
		t.Logf("activation attempts in 3h after LICENSE_NOT_ALLOWED: %d", attempts)
		if attempts > 5 {
			t.Errorf("%d activation attempts in 3h after a LICENSE_NOT_ALLOWED; want a back-off", attempts)
		}
		// `activate --token`: the agent syncs at once with the token.
		tok := e.srv.CreateToken("license", e.license.ID)
		raw, _ := json.Marshal(ipc.ActivateParams{Key: e.license.Key, Token: tok})
		if _, err := e.a.handleActivate(context.Background(), raw); err != nil {
			t.Fatalf("activate with token: %v", err)
		}
		if st := e.status(); st.State != string(StateActive) || !st.Valid {
			t.Fatalf("after activate --token: %+v", st)
		}
		if rec, _ := e.a.store.Certificate(certMachine); rec == nil {
			t.Error("no machine file cached")
		}
		if strings.Contains(e.logs.String(), tok) {
			t.Error("the token was logged")
		}
	})
}

// A token configured for a LICENSE policy is refused (TOKEN_NOT_ALLOWED);
// with the key known the agent falls back to it.
func TestTokenNotAllowedFallsBackToKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{AuthenticationStrategy: "LICENSE"}})
		e.cfg.LicenseToken = e.srv.CreateToken("license", e.license.ID)
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		if !strings.Contains(e.logs.String(), "does not allow token authentication") {
			t.Error("fallback not logged")
		}
	})
}

// A license with Keygen's default permissions (no policy.read): the
// check-out is retried without license.policy (once; remembered), and a
// 60 s heartbeat policy keeps its machine alive from the machine record's
// heartbeatDuration.
func TestHeartbeatFromMachineRecordWhenPolicyUnreadable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 60
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{RequireHeartbeat: true, HeartbeatDuration: &hb, MaxProcesses: intp(2)},
			license: devserver.LicenseSpec{Permissions: devserver.DefaultLicensePermissions}})
		if slices.Contains(e.license.Permissions, "policy.read") || slices.Contains(e.license.Permissions, "*") {
			t.Fatalf("the dev server's default license permissions include policy.read: %v", e.license.Permissions)
		}
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		if _, _, err := e.a.openMachineFile(); err != nil {
			t.Fatalf("cached machine file: %v", err)
		}
		if !e.a.refusedIncludes()["license.policy"] {
			t.Error("the refused include is not remembered")
		}
		for range 10 {
			time.Sleep(time.Duration(hb) * time.Second)
			ms := e.srv.Machines()
			if len(ms) != 1 || ms[0].HeartbeatStatus != "ALIVE" {
				t.Fatalf("machine = %+v", ms)
			}
		}
		// A forced check-out asks once, without the refused include.
		const route = "POST /machines/{id}/actions/check-out"
		before := e.srv.Stats().Routes[route]
		if err := e.a.ensureCertificate(t.Context(), e.a.view().License, true); err != nil {
			t.Fatal(err)
		}
		if n := e.srv.Stats().Routes[route] - before; n != 1 {
			t.Errorf("%d check-out requests, want 1 (the refusal remembered)", n)
		}
		v := e.a.view()
		if !v.PolicyAssumed || v.Policy.ProcessLeasingStrategy != "PER_MACHINE" || v.Policy.OverageStrategy != "NO_OVERAGE" {
			t.Errorf("assumed policy = %+v (assumed %v)", v.Policy, v.PolicyAssumed)
		}
		// Leases still work, with the limit from the machine record.
		c := e.dial(agenttest.PeerFor(300))
		defer c.Close()
		e.procs.Spawn(300)
		if _, _, err := c.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		if st := e.status(); st.Leases.Limit == nil || *st.Leases.Limit != 2 {
			t.Errorf("lease limit = %v", st.Leases.Limit)
		}
	})
}

// The interval comes from the machine record when the policy is unknown.
func TestMachineHeartbeatIntervalFromMachineRecord(t *testing.T) {
	e := newEnv(t, envOptions{})
	a, err := New(e.cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	v := licenseView{License: &keygen.License{}, Machine: &keygen.Machine{RequireHeartbeat: true, HeartbeatDuration: 60}}
	if d := a.machineHeartbeatInterval(v); d != time.Minute {
		t.Errorf("interval = %v, want 1m", d)
	}
	v.Machine = &keygen.Machine{HeartbeatDuration: 600}
	if d := a.machineHeartbeatInterval(v); d != 0 {
		t.Errorf("interval without requireHeartbeat = %v", d)
	}
}

// Machine uniqueness across licenses: the fingerprint is activated under
// another license and the lookup is scoped to ours (404).
func TestFingerprintTakenUnderAnotherLicense(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MachineUniquenessStrategy: "UNIQUE_PER_POLICY"}})
		other := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: e.policy.ID})
		kc, err := keygen.NewClient(keygen.Config{BaseURL: "http://devserver.invalid", Account: e.srv.AccountID(), LicenseKey: other.Key,
			PublicKey: e.srv.PublicKeyHex(), HTTPClient: &http.Client{Transport: e.srv.Transport()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kc.ActivateMachine(t.Context(), keygen.ActivateParams{LicenseID: other.ID, Fingerprint: e.fp.Result().Fingerprint}); err != nil {
			t.Fatal(err)
		}
		e.start()
		defer e.stop()
		e.waitFor("refused", func() bool { return e.status().Code == "FINGERPRINT_TAKEN_ELSEWHERE" })
		if st := e.status(); st.Valid || !strings.Contains(st.Detail, "activated under another license; deactivate it there") {
			t.Fatalf("status = %+v", st)
		}
	})
}

// Policies requiring scopes: the agent sends the machine (once known),
// product and environment; what it cannot send is explained.
func TestRequiredScopes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{RequireMachineScope: true, RequireProductScope: true,
			RequireFingerprintScope: true, RequireComponentsScope: true}})
		e.start()
		defer e.stop()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	})
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{RequireUserScope: true}})
		e.start()
		defer e.stop()
		e.waitFor("invalid", func() bool { return e.status().Code == "USER_SCOPE_REQUIRED" })
		if st := e.status(); !strings.Contains(st.Detail, "requireUserScope") {
			t.Errorf("detail = %q", st.Detail)
		}
	})
}

// A dead machine heartbeat under a policy that resurrects: the agent pings
// (Keygen revives the machine) instead of deactivating and re-activating,
// which would spend an activation token's activations.
func TestDeadHeartbeatResurrectsInsteadOfReactivating(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 60
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{RequireHeartbeat: true, HeartbeatDuration: &hb,
			HeartbeatCullStrategy: "KEEP_DEAD", HeartbeatResurrectionStrategy: "ALWAYS_REVIVE"}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		id := e.srv.Machines()[0].ID
		e.stop()
		time.Sleep(5 * time.Minute)
		e.srv.Cull()
		if ms := e.srv.Machines(); len(ms) != 1 || ms[0].HeartbeatStatus != "DEAD" {
			t.Fatalf("machines while stopped = %+v", ms)
		}
		activations := e.srv.Stats().Routes["POST /machines"]
		e.start()
		defer e.stop()
		e.waitFor("active again", func() bool { return e.status().State == string(StateActive) })
		ms := e.srv.Machines()
		if len(ms) != 1 || ms[0].ID != id || ms[0].HeartbeatStatus == "DEAD" {
			t.Errorf("machines after restart = %+v, want %s revived", ms, id)
		}
		if n := e.srv.Stats().Routes["POST /machines"] - activations; n != 0 {
			t.Errorf("%d re-activations", n)
		}
	})
}

// A suspended license may not log in, so deactivation is refused: the
// error says why and what to do rather than looking like an outage.
func TestDeactivateRefusedExplained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{})
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		_, err := e.a.handleDeactivate(context.Background(), nil)
		if err == nil || !strings.Contains(err.Error(), "LICENSE_SUSPENDED") || !strings.Contains(err.Error(), "reinstate") {
			t.Fatalf("deactivate error = %v", err)
		}
	})
}

// An activation token whose activations are used up: the agent says so
// with the remedy instead of a generic refusal.
func TestTokenActivationsExhaustedExplained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 60
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN", RequireHeartbeat: true, HeartbeatDuration: &hb},
			license: devserver.LicenseSpec{Permissions: devserver.DefaultLicensePermissions}})
		body := strings.NewReader(`{"data":{"type":"tokens","attributes":{"maxActivations":1}}}`)
		req, _ := http.NewRequest(http.MethodPost, "http://devserver.invalid/v1/accounts/"+e.srv.AccountID()+"/licenses/"+e.license.ID+"/tokens", body)
		req.Header.Set("Authorization", "Bearer "+e.srv.AdminToken())
		req.Header.Set("Content-Type", "application/vnd.api+json")
		resp, err := (&http.Client{Transport: e.srv.Transport()}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Data struct {
				Attributes struct {
					Token string `json:"token"`
				} `json:"attributes"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Data.Attributes.Token == "" {
			t.Fatalf("token: %v (status %d)", err, resp.StatusCode)
		}
		resp.Body.Close()
		e.cfg.LicenseToken = doc.Data.Attributes.Token
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.stop()
		// Stopped past the heartbeat window: Keygen culls the machine
		// (DEACTIVATE_DEAD, NO_REVIVE), so a new activation is needed.
		time.Sleep(5 * time.Minute)
		e.srv.Cull()
		e.start()
		defer e.stop()
		e.waitFor("refused", func() bool { return e.status().Code == "TOKEN_ACTIVATIONS_EXCEEDED" })
		if st := e.status(); st.State != string(StateAuthRefused) || !strings.Contains(st.Detail, "maxActivations") {
			t.Fatalf("status = %+v", st)
		}
	})
}

// A license token added to the config is used at once by a live reload,
// without waiting out the back-off.
func TestReloadWithTokenSyncsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{AuthenticationStrategy: "TOKEN"},
			license: devserver.LicenseSpec{Permissions: devserver.DefaultLicensePermissions}})
		next := e.cfg
		e.deps.ConfigLoad = func() (Config, []string, error) { c := next; c.applyDefaults(); return c, nil, c.Validate() }
		e.start()
		defer e.stop()
		e.waitFor("auth refused", func() bool { return e.status().State == string(StateAuthRefused) })
		time.Sleep(time.Hour) // well into the back-off
		next.LicenseToken = e.srv.CreateToken("license", e.license.ID)
		e.a.Reload()
		deadline := time.Now().Add(time.Minute)
		for e.status().State != string(StateActive) {
			if time.Now().After(deadline) {
				t.Fatalf("not active within a minute of the reload: %+v", e.status())
			}
			time.Sleep(time.Second)
		}
	})
}

// status says where the leasing, overage and matching strategies come
// from: read from the policy when the license may read it, assumed from
// the config under Keygen's default permissions (no policy.read).
func TestStatusNamesPolicySource(t *testing.T) {
	for _, tc := range []struct {
		name   string
		perms  []string
		source string
		lease  string
	}{
		{"default permissions", devserver.DefaultLicensePermissions, PolicySourceConfig, "PER_MACHINE"},
		{"policy.read granted", append(slices.Clone(devserver.DefaultLicensePermissions), "policy.read"), PolicySourceKeygen, "PER_LICENSE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := activeEnv(t, envOptions{policy: devserver.PolicySpec{ProcessLeasingStrategy: "PER_LICENSE", OverageStrategy: "ALLOW_2X_OVERAGE"},
					license: devserver.LicenseSpec{Permissions: tc.perms}})
				st := e.status()
				if st.License == nil || st.License.PolicySource != tc.source || st.License.Strategy != tc.lease {
					t.Fatalf("license = %+v, want policy_source %q and strategy %q", st.License, tc.source, tc.lease)
				}
				wantOverage := "ALLOW_2X_OVERAGE"
				if tc.source == PolicySourceConfig {
					wantOverage = "NO_OVERAGE" // the config's strict default
				}
				if st.License.Overage != wantOverage || st.License.ComponentMatching == "" {
					t.Errorf("overage %q (want %q), matching %q", st.License.Overage, wantOverage, st.License.ComponentMatching)
				}
			})
		})
	}
}
