package agent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// licenseOnlyOpts is an environment in license-only mode.
func licenseOnlyOpts(o envOptions) envOptions {
	o.cfg.Activation = ActivationNone
	return o
}

// noMachineTraffic fails when the agent created, looked up or deleted a
// machine, or spawned a process: license-only mode has none.
func noMachineTraffic(t *testing.T, e *env) {
	t.Helper()
	if n := len(e.srv.Machines()); n != 0 {
		t.Errorf("machines in Keygen = %d, want 0", n)
	}
	if n := len(e.srv.Processes()); n != 0 {
		t.Errorf("processes in Keygen = %d, want 0", n)
	}
	for route, n := range e.srv.Stats().Routes {
		if strings.Contains(route, "/machines") || strings.Contains(route, "/processes") {
			t.Errorf("license-only mode called %s (%d times)", route, n)
		}
	}
}

func TestLicenseOnlyOnlineValidWithoutMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}}))
		st := e.status()
		if !st.Valid || !st.Online || st.Activation != ActivationNone || st.OfflineSource != sourceLicenseFile {
			t.Fatalf("status = %+v", st)
		}
		if st.Machine == nil || st.Machine.ID != "" {
			t.Fatalf("status machine = %+v, want the fingerprint only", st.Machine)
		}
		if len(st.Entitlements) != 2 {
			t.Fatalf("entitlements = %v, want the license file's two", st.Entitlements)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 1 {
			t.Fatalf("license check-outs = %d, want 1", n)
		}
		// A revalidation keeps the fresh file (Keygen's touch moves the
		// license's `updated`, which is not a reason to check out again).
		if err := e.a.requestSync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 1 {
			t.Fatalf("license check-outs after a revalidation = %d, want 1", n)
		}
		noMachineTraffic(t, e)
		noBadTransitions(t, e)
	})
}

// The license file is refreshed at half its TTL and when the license
// changes in what matters (a validation shows a new expiry).
func TestLicenseOnlyRefreshesLicenseFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{cfg: Config{CertificateTTL: Duration(4 * time.Hour)}}))
		time.Sleep(2*time.Hour + time.Minute)
		if err := e.a.requestSync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 2 {
			t.Fatalf("license check-outs past half the TTL = %d, want 2", n)
		}
		exp := time.Now().Add(365 * 24 * time.Hour).UTC().Truncate(time.Second)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Expiry = &exp })
		if err := e.a.requestSync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 3 {
			t.Fatalf("license check-outs after the expiry moved = %d, want 3", n)
		}
		ds, err := e.a.openLicenseFile()
		if err != nil || ds.License.Expiry == nil || !ds.License.Expiry.Equal(exp) {
			t.Fatalf("license file after the change: %v, %+v", err, ds)
		}
	})
}

// Offline, validity comes from the verified license file until it
// expires; then offline_expired. A restart keeps both states.
func TestLicenseOnlyOfflineUntilLicenseFileExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{
			policy: devserver.PolicySpec{MaxProcesses: intp(2)},
			cfg:    Config{CertificateTTL: Duration(2 * time.Hour)},
		}))
		ds, err := e.a.openLicenseFile()
		if err != nil {
			t.Fatal(err)
		}
		st := goOfflineNow(t, e)
		if st.State != string(StateOffline) || !st.Valid || st.OfflineSource != sourceLicenseFile ||
			st.OfflineUntil == nil || !st.OfflineUntil.Equal(*ds.Expiry) {
			t.Fatalf("offline status = %+v (license file expires %v)", st, ds.Expiry)
		}
		if !strings.Contains(st.Detail, "license file") {
			t.Fatalf("offline detail = %q", st.Detail)
		}
		holdLease(t, e, 401)
		// A restart while offline: the cached license file opens again.
		e.stop()
		e.start()
		e.waitFor("offline from the license file after a restart", func() bool {
			st := e.status()
			return st.State == string(StateOffline) && st.Valid && st.OfflineSource == sourceLicenseFile
		})
		holdLease(t, e, 402)
		time.Sleep(time.Until(*ds.Expiry) + time.Minute)
		st = e.status()
		if st.State != string(StateOfflineExpired) || st.Valid {
			t.Fatalf("past the license file's expiry: %+v", st)
		}
		c := e.dial(agenttest.PeerFor(403))
		defer c.Close()
		e.procs.Spawn(403)
		if _, code, err := c.Acquire(acquireParams()); err == nil || code != ipc.CodeOfflineExpired {
			t.Fatalf("acquire past the license file's expiry: %v (%s)", err, code)
		}
		e.stop()
		e.start()
		e.waitFor("offline_expired after a restart", func() bool {
			st := e.status()
			return st.State == string(StateOfflineExpired) && !st.Valid
		})
		e.srv.SetFaults(devserver.Faults{})
		noMachineTraffic(t, e)
		noBadTransitions(t, e)
	})
}

// A license file of another license is refused, whether imported or
// found in the cache.
func TestLicenseOnlyForeignLicenseFileRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{}))
		other := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: e.policy.ID, Permissions: devserver.LicensePermissions})
		c, err := e.a.newClientFor(other.Key, "")
		if err != nil {
			t.Fatal(err)
		}
		// Unencrypted, so that it opens with any key: only its license
		// says whose it is.
		co, err := c.CheckoutLicense(context.Background(), other.ID, keygen.CheckoutOptions{Algorithm: "base64+ed25519"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.a.importCertificate(co.Certificate); !errors.Is(err, errForeignLicenseFile) {
			t.Fatalf("import of another license's file: %v", err)
		}
		if err := e.a.store.PutCertificate(certLicense, co.Certificate, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.openLicenseFile(); !errors.Is(err, errForeignLicenseFile) {
			t.Fatalf("open of another license's file from the cache: %v", err)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		if err := e.a.requestSync(context.Background()); err == nil {
			t.Fatal("sync succeeded offline")
		}
		if st := e.status(); st.Valid || st.OfflineSource != "" || st.State != string(StateOfflineExpired) {
			t.Fatalf("offline on another license's file: %+v", st)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}

// Leases are local, limited by the license's maxProcesses: no Keygen
// process, no heartbeat, nothing queued, online or offline.
func TestLicenseOnlyLeasesLimitedByMaxProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}}))
		holdLease(t, e, 501)
		holdLease(t, e, 502)
		e.procs.Spawn(503)
		c := e.dial(agenttest.PeerFor(503))
		defer c.Close()
		var res ipc.AcquireResult
		code, err := c.Call(ipc.MethodAcquire, acquireParams(), &res)
		if code != ipc.CodeProcessLimitExceeded || err == nil || !strings.Contains(err.Error(), "2 of 2") {
			t.Fatalf("third acquire: %v (%s)", err, code)
		}
		st := e.status()
		if st.Leases.Active != 2 || st.Leases.Limit == nil || *st.Leases.Limit != 2 {
			t.Fatalf("lease usage = %+v", st.Leases)
		}
		if out, _ := e.a.store.Outbox(); len(out) != 0 {
			t.Fatalf("outbox = %+v, want empty", out)
		}
		for _, l := range e.a.listLeases().Leases {
			if l.ProcessID != "" || l.NextPing != nil {
				t.Fatalf("lease %+v has a Keygen process or a ping", l)
			}
		}
		// Offline the limit holds the same way, from the license file.
		goOfflineNow(t, e)
		if _, code, err := c.Acquire(acquireParams()); code != ipc.CodeProcessLimitExceeded {
			t.Fatalf("third acquire offline: %v (%s)", err, code)
		}
		e.srv.SetFaults(devserver.Faults{})
		noMachineTraffic(t, e)
	})
}

// maxProcesses nil is unlimited (license.rb: max_processes? is
// max_processes.present?).
func TestLicenseOnlyUnlimitedLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{}))
		for pid := 600; pid < 610; pid++ {
			holdLease(t, e, pid)
		}
		if st := e.status(); st.Leases.Limit != nil || st.Leases.Active != 10 {
			t.Fatalf("lease usage = %+v", st.Leases)
		}
		noMachineTraffic(t, e)
	})
}

// A suspension in Keygen ends the leases at the next validation, and the
// signed refusal wins over the older license file offline and after a
// restart: no lease.
func TestLicenseOnlySuspendedWinsOverLicenseFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}}))
		c := holdLease(t, e, 701)
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		if err := e.a.requestSync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st := e.status(); st.State != string(StateSuspended) || st.Valid {
			t.Fatalf("after the suspension: %+v", st)
		}
		e.waitFor("the lease revoked", func() bool { return c.Revoked() == 1 })
		st := goOfflineNow(t, e)
		if st.State != string(StateSuspended) || st.Valid {
			t.Fatalf("offline after the suspension: %+v", st)
		}
		e.procs.Spawn(702)
		c2 := e.dial(agenttest.PeerFor(702))
		defer c2.Close()
		if _, code, err := c2.Acquire(acquireParams()); code != ipc.CodeLicenseInvalid {
			t.Fatalf("acquire offline after the suspension: %v (%s)", err, code)
		}
		e.stop()
		e.start()
		e.waitFor("suspended after a restart", func() bool { return e.status().State == string(StateSuspended) })
		if _, code, err := c2.Acquire(acquireParams()); code != ipc.CodeLicenseInvalid && err == nil {
			t.Fatalf("acquire after a restart: %v (%s)", err, code)
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// A policy that needs a machine gives a clear invalid state.
func TestLicenseOnlyPolicyNeedsMachine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy devserver.PolicySpec
		code   string
	}{
		{"fingerprint scope", devserver.PolicySpec{RequireFingerprintScope: true}, "FINGERPRINT_SCOPE_REQUIRED"},
		{"strict", devserver.PolicySpec{Strict: true}, "NO_MACHINE"},
		{"strict floating", devserver.PolicySpec{Strict: true, Floating: true}, "NO_MACHINES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, licenseOnlyOpts(envOptions{policy: tc.policy}))
				e.start()
				t.Cleanup(e.stop)
				e.waitFor("invalid", func() bool { return e.status().State == string(StateInvalid) })
				st := e.status()
				if st.Valid || st.Code != tc.code || !strings.Contains(st.Detail, `activation = "machine"`) {
					t.Fatalf("status = %+v", st)
				}
				noMachineTraffic(t, e)
				noBadTransitions(t, e)
			})
		})
	}
}

// activate KEY vets the new key without a machine; a key whose policy
// needs one is refused and the current license keeps running.
// deactivate drops the local state only.
func TestLicenseOnlyAdminCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}}))
		c := holdLease(t, e, 801)
		scoped := e.srv.CreatePolicy(devserver.PolicySpec{ProductID: e.policy.ProductID, AuthenticationStrategy: "LICENSE",
			Scheme: "ED25519_SIGN", RequireFingerprintScope: true})
		needsMachineKey := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: scoped.ID, Permissions: devserver.LicensePermissions})
		_, err := e.a.handleActivate(context.Background(), activateRaw(needsMachineKey.Key))
		if ipcCode(err) != ipc.CodeLicenseInvalid || !strings.Contains(err.Error(), `activation = "machine"`) {
			t.Fatalf("activate with a key whose policy needs a machine: %v", err)
		}
		if e.a.licenseKey() != e.license.Key || c.Revoked() != 0 || !e.status().Valid {
			t.Fatal("the refused key changed the running license")
		}
		other := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: e.policy.ID, Permissions: devserver.LicensePermissions})
		res, err := e.a.handleActivate(context.Background(), activateRaw(other.Key))
		if err != nil {
			t.Fatal(err)
		}
		if st := res.(*ipc.Status); !st.Valid || st.License == nil || st.License.ID != other.ID {
			t.Fatalf("status after activate = %+v", st)
		}
		e.waitFor("the old license's lease revoked", func() bool { return c.Revoked() == 1 })
		holdLease(t, e, 802)
		res, err = e.a.handleDeactivate(context.Background(), json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if st := res.(*ipc.Status); st.State != string(StateNotActivated) || st.Valid {
			t.Fatalf("status after deactivate = %+v", st)
		}
		if rec, _ := e.a.store.Certificate(certLicense); rec != nil {
			t.Fatal("license file kept after deactivate")
		}
		if _, err := e.a.handleActivate(context.Background(), activateRaw(other.Key)); err != nil {
			t.Fatalf("activate again: %v", err)
		}
		if st := e.status(); !st.Valid || st.OfflineSource != sourceLicenseFile {
			t.Fatalf("status after activating again = %+v", st)
		}
		noMachineTraffic(t, e)
		noBadTransitions(t, e)
	})
}

// Check-ins are license-scoped and keep working.
func TestLicenseOnlyChecksIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{policy: devserver.PolicySpec{RequireCheckIn: true,
			CheckInInterval: "day", CheckInIntervalCount: 1}}))
		time.Sleep(49 * time.Hour)
		e.waitFor("a sync", func() bool { return e.status().Online })
		if st := e.status(); !st.Valid || st.NextCheckIn == nil || !st.NextCheckIn.After(time.Now()) {
			t.Fatalf("after 49 h: %+v", st)
		}
		if l, _ := e.srv.License(e.license.ID); l.LastCheckIn == nil {
			t.Fatal("no check-in")
		}
		noMachineTraffic(t, e)
	})
}

func TestActivationConfig(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"", true}, {"machine", true}, {"none", true}, {"license", false}, {"NONE", false}} {
		c := Config{Account: "acct", DataDir: "/tmp/x", Insecure: true, Activation: tc.value}
		c.applyDefaults()
		err := c.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("activation %q: %v", tc.value, err)
		}
		if err != nil && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "activation must be one of machine, none")) {
			t.Errorf("activation %q: error %v", tc.value, err)
		}
		if tc.value == "" && c.Activation != ActivationMachine {
			t.Errorf("default activation = %q", c.Activation)
		}
	}
	cfg, _, err := ParseConfig([]byte("activation = \"none\"\n"))
	if err != nil || cfg.Activation != ActivationNone {
		t.Fatalf("parse: %v %+v", err, cfg.Activation)
	}
}

// Entitlement-gated acquire: Keygen's entitlements scope online (the
// validation without machine scopes), the license file offline.
func TestLicenseOnlyEntitlementGatedAcquire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{}))
		e.procs.Spawn(901)
		c := e.dial(agenttest.PeerFor(901))
		defer c.Close()
		check := func(when string) {
			t.Helper()
			if _, code, err := c.Acquire(ipc.AcquireParams{App: "demo", Entitlements: []string{"PRO"}}); code != ipc.CodeEntitlementsMissing {
				t.Fatalf("%s: acquire needing PRO: %v (%s)", when, err, code)
			}
			res, _, err := c.Acquire(ipc.AcquireParams{App: "demo", Entitlements: []string{"FEATURE_A"}})
			if err != nil {
				t.Fatalf("%s: acquire needing FEATURE_A: %v", when, err)
			}
			if err := c.Release(res.LeaseID); err != nil {
				t.Fatal(err)
			}
		}
		check("online")
		goOfflineNow(t, e)
		check("offline")
		e.srv.SetFaults(devserver.Faults{})
		noMachineTraffic(t, e)
	})
}

// A machine file left in the cache by machine mode is not what offline use
// rests on after a switch to license-only mode: the license file is.
func TestLicenseOnlyIgnoresMachineFileFromMachineMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.start()
		e.waitFor("active in machine mode", func() bool { return e.status().State == string(StateActive) })
		if _, _, err := e.a.openMachineFile(); err != nil {
			t.Fatalf("machine file: %v", err)
		}
		e.stop()
		e.cfg.Activation = ActivationNone
		e.start()
		t.Cleanup(e.stop)
		e.waitFor("active in license-only mode", func() bool { return e.status().State == string(StateActive) })
		if st := e.status(); st.OfflineSource != sourceLicenseFile || st.Machine == nil || st.Machine.ID != "" {
			t.Fatalf("online status = %+v", st)
		}
		if st := goOfflineNow(t, e); !st.Valid || st.OfflineSource != sourceLicenseFile {
			t.Fatalf("offline status = %+v", st)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}

// With Keygen's default license permissions (no policy.read: license.rb),
// the license file still carries the entitlements (entitlement.read is a
// default), so offline entitlement checks work; an entitlement removed in
// Keygen gets a new file at the next deep check.
func TestLicenseOnlyDefaultPermissions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, licenseOnlyOpts(envOptions{license: devserver.LicenseSpec{Permissions: devserver.DefaultLicensePermissions}}))
		ds, err := e.a.openLicenseFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := entitlementCodes(ds.Entitlements); len(got) != 2 || ds.Policy != nil {
			t.Fatalf("license file entitlements %v, policy %+v; want both entitlements and no policy", got, ds.Policy)
		}
		checkouts := e.srv.Stats().Routes[routeLicenseCheckout]
		e.srv.DetachEntitlements(e.license.ID, "FEATURE_B")
		time.Sleep(deepCheckEvery + 15*time.Minute) // past the next (jittered) revalidation
		e.waitFor("a new license file without FEATURE_B", func() bool {
			ds, err := e.a.openLicenseFile()
			return err == nil && len(ds.Entitlements) == 1
		})
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n <= checkouts {
			t.Fatalf("license check-outs = %d, want more than %d", n, checkouts)
		}
		e.waitFor("status without FEATURE_B", func() bool {
			st := e.status()
			return len(st.Entitlements) == 1 && st.Entitlements[0] == "FEATURE_A"
		})
	})
}
