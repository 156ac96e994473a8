package keygen_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// A spawned, read and pinged process keeps the signed response as Keygen
// sent it, and an app holding only the public key verifies it together
// with an unencrypted machine file.
func TestProcessSignedResponse(t *testing.T) {
	srv := newDevserver(t, devserver.Options{CullInterval: -1})
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, MaxProcesses: new(2)})
	if err != nil {
		t.Fatal(err)
	}
	c := devClient(t, srv, withKey(demo.License.Key))
	ctx := t.Context()
	m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: demo.License.ID, Fingerprint: "fp-ev", Components: comps("disk")})
	if err != nil {
		t.Fatal(err)
	}
	co, err := c.CheckoutMachine(ctx, m.ID, keygen.CheckoutOptions{Algorithm: "base64+ed25519", Include: []string{"components"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.SpawnProcess(ctx, m.ID, "4242@77", map[string]any{"leaseId": "lease_x"})
	if err != nil {
		t.Fatal(err)
	}
	ping, err := c.PingProcess(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*keygen.SignedResponse{"spawn": p.Signed, "ping": ping.Signed} {
		if s == nil || s.Signature == "" || s.Digest == "" || s.Host == "" {
			t.Fatalf("%s: signed response %+v", name, s)
		}
		if _, err := http.ParseTime(s.Date); err != nil {
			t.Fatalf("%s: date %q", name, s.Date)
		}
		ev := &leaseverify.Evidence{Status: leaseverify.StatusSigned, MachineFile: string(co.Certificate), Process: &leaseverify.SignedResponse{
			Body: s.Body, Signature: s.Signature, Digest: s.Digest, Date: s.Date, RequestTarget: s.RequestTarget, Host: s.Host}}
		o := leaseverify.Options{PublicKey: srv.PublicKeyHex(), PID: 4242, StartTime: 77, Fingerprints: []string{"fp-ev"}, MaxAge: time.Minute}
		res, err := leaseverify.VerifyLease("lease_x", ev, o)
		if err != nil {
			t.Fatalf("%s: %v (target %q)", name, err, s.RequestTarget)
		}
		if res.ProcessID != p.ID || res.MachineID != m.ID {
			t.Errorf("%s: %+v", name, res)
		}
		o.PID = 4243
		if _, err := leaseverify.VerifyLease("lease_x", ev, o); !leaseverify.IsCheck(err, leaseverify.CheckProcess) {
			t.Errorf("%s, another process: %v", name, err)
		}
	}
	if p.Signed.RequestTarget != "post /v1/accounts/"+srv.AccountID()+"/processes" {
		t.Errorf("target %q", p.Signed.RequestTarget)
	}
}
