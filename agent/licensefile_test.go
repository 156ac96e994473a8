package agent

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

const routeLicenseCheckout = "POST /licenses/{id}/actions/check-out"

func permsWithout(drop ...string) []string {
	var out []string
	for _, p := range devserver.LicensePermissions {
		if !slices.Contains(drop, p) {
			out = append(out, p)
		}
	}
	return out
}

// goOfflineNow makes Keygen unreachable and has the agent sync at once.
func goOfflineNow(t *testing.T, e *env) *ipc.Status {
	t.Helper()
	e.srv.SetFaults(devserver.Faults{Refuse: true})
	if err := e.a.requestSync(context.Background()); err == nil {
		t.Fatal("sync succeeded with Keygen refusing connections")
	}
	return e.status()
}

// Item 2: a license that may not check out machine files (no
// machine.check-out) gets a license file, and offline use rests on it,
// across a restart (verified on every read).
func TestLicenseFileWhenMachineFileRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{
			policy:  devserver.PolicySpec{MaxProcesses: intp(2)},
			license: devserver.LicenseSpec{Permissions: permsWithout("machine.check-out")},
		})
		if st := e.status(); st.OfflineSource != "license_file" {
			t.Fatalf("online offline_source = %q, want license_file", st.OfflineSource)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 1 {
			t.Fatalf("license check-outs = %d, want 1", n)
		}
		if rec, _ := e.a.store.Certificate(certLicense); rec == nil {
			t.Fatal("no license file cached")
		}
		// A second sync keeps the fresh license file.
		if err := e.a.requestSync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 1 {
			t.Fatalf("license check-outs after a resync = %d, want 1", n)
		}
		st := goOfflineNow(t, e)
		if st.State != string(StateOffline) || !st.Valid || st.OfflineSource != "license_file" {
			t.Fatalf("offline status = %+v", st)
		}
		if len(st.Entitlements) != 2 {
			t.Fatalf("offline entitlements from the license file = %v", st.Entitlements)
		}
		holdLease(t, e, 301)
		// Restart offline: the cached license file opens again.
		e.stop()
		e.start()
		e.waitFor("offline from the license file", func() bool {
			st := e.status()
			return st.State == string(StateOffline) && st.Valid && st.OfflineSource == "license_file"
		})
		// A tampered license file is not trusted.
		rec, _ := e.a.store.Certificate(certLicense)
		raw := slices.Clone(rec.Raw)
		raw[len(raw)/2] ^= 0x01
		if err := e.a.store.PutCertificate(certLicense, raw, rec.FetchedAt); err != nil {
			t.Fatal(err)
		}
		if err := e.a.requestSync(context.Background()); err == nil {
			t.Fatal("sync succeeded offline")
		}
		if st := e.status(); st.Valid || st.OfflineSource != "" {
			t.Fatalf("tampered license file trusted: %+v", st)
		}
		e.srv.SetFaults(devserver.Faults{})
		noBadTransitions(t, e)
	})
}

// With a machine file the agent checks out no license file, and status
// names the machine file.
func TestMachineFileIsTheOfflineSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}})
		if st := e.status(); st.OfflineSource != "machine_file" {
			t.Fatalf("offline_source = %q", st.OfflineSource)
		}
		st := goOfflineNow(t, e)
		if !st.Valid || st.OfflineSource != "machine_file" {
			t.Fatalf("offline status = %+v", st)
		}
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 0 {
			t.Fatalf("license check-outs = %d, want 0", n)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}

// Without license.check-out either (Keygen: license_policy.rb check_out?
// refuses), there is no offline use, and the refused check-out is not
// repeated at every sync.
func TestLicenseFileRefusedIsNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{
			license: devserver.LicenseSpec{Permissions: permsWithout("machine.check-out", "license.check-out")},
		})
		for range 3 {
			if err := e.a.requestSync(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		// Refused with both includes, with entitlements only, without
		// any; then no more.
		if n := e.srv.Stats().Routes[routeLicenseCheckout]; n != 3 {
			t.Fatalf("license check-outs = %d, want 3", n)
		}
		if st := e.status(); st.OfflineSource != "" {
			t.Fatalf("offline_source = %q with no certificate", st.OfflineSource)
		}
		st := goOfflineNow(t, e)
		if st.Valid || st.Code != "OFFLINE_EXPIRED" {
			t.Fatalf("offline without any certificate: %+v", st)
		}
		e.srv.SetFaults(devserver.Faults{})
	})
}
