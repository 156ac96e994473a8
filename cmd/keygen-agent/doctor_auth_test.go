package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Under Keygen's default TOKEN policy, a license key validates but cannot
// log in: doctor's authenticated call says so with both remedies, and
// passes once a license token is configured.
func TestDoctorAuthUnderTokenPolicy(t *testing.T) {
	useNoService(t)
	srv, err := devserver.New(devserver.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	vars := map[string]string{
		"KEYGEN_API_URL": srv.URL(), "KEYGEN_ACCOUNT": srv.AccountID(), "KEYGEN_PUBLIC_KEY": srv.PublicKeyHex(),
		"KEYGEN_LICENSE_KEY": demo.License.Key, "KEYGEN_PRODUCT": demo.Product.ID,
	}
	sock := filepath.Join(dir, "none.sock")
	_, out, _ := runDoctorWith(t, vars, "--socket", sock, "--data-dir", dir, "--json")
	checks := decodeChecks(t, out)
	if c := checks["auth"]; c.Status != checkFail || !strings.Contains(c.Detail, "LICENSE_NOT_ALLOWED") ||
		!strings.Contains(c.Fix, "license_token") || !strings.Contains(c.Fix, "LICENSE or MIXED") {
		t.Errorf("auth with the key under TOKEN: %+v", c)
	}
	if c := checks["signature"]; c.Status != checkOK {
		t.Errorf("signature (validate-key needs no login): %+v", c)
	}

	tok := srv.CreateToken("license", demo.License.ID)
	vars["KEYGEN_LICENSE_TOKEN"] = tok
	_, out, _ = runDoctorWith(t, vars, "--socket", sock, "--data-dir", dir, "--json")
	checks = decodeChecks(t, out)
	if c := checks["auth"]; c.Status != checkOK || !strings.Contains(c.Detail, demo.License.ID) {
		t.Errorf("auth with the token: %+v", c)
	}
	if c := checks["settings"]; c.Status != checkOK || !strings.Contains(c.Detail, "machine record") ||
		!(strings.Contains(c.Detail, "from the policy") || strings.Contains(c.Detail, "assumed")) {
		t.Errorf("settings: %+v", c)
	}
	if strings.Contains(out, tok) || strings.Contains(out, demo.License.Key) {
		t.Error("the report contains a credential")
	}
}
