//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDoctorPermissions(t *testing.T) {
	useNoService(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "agent.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfgPath, []byte("account = \"acme\"\npublic_key = \"00\"\nlicense_key = \"K\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doctor := func() map[string]doctorCheck {
		t.Helper()
		_, out, _ := runDoctorWith(t, nil, "--config", cfgPath, "--socket", filepath.Join(dir, "s"), "--data-dir", data, "--json", "--timeout", "1s")
		return decodeChecks(t, out)
	}
	checks := doctor()
	if c := checks["config-perms"]; c.Status != checkOK || !strings.Contains(c.Detail, "0600") {
		t.Errorf("0600 config: %+v", c)
	}
	if c := checks["data-dir-perms"]; c.Status != checkWarn || c.Fix != "chmod 700 "+data {
		t.Errorf("0755 data dir: %+v", c)
	}
	if c := checks["cache-perms"]; c.Status != checkWarn || !strings.Contains(c.Fix, "chmod 600") {
		t.Errorf("0644 cache: %+v", c)
	}
	for mode, want := range map[os.FileMode]string{0o640: checkWarn, 0o644: checkFail, 0o602: checkFail} {
		if err := os.Chmod(cfgPath, mode); err != nil {
			t.Fatal(err)
		}
		if c := doctor()["config-perms"]; c.Status != want || c.Fix == "" {
			t.Errorf("config %04o: %+v, want %s", mode, c, want)
		}
	}
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	if c := doctor()["data-dir-perms"]; c.Status != checkFail {
		t.Errorf("0777 data dir: %+v", c)
	}
}
