package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestVersionLdflags builds the binary with the one -X flag a release uses
// and checks that `version` reports it.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not available")
	}
	bin := filepath.Join(t.TempDir(), "keygen-agent.exe")
	build := exec.Command(gobin, "build", "-o", bin,
		"-ldflags", "-X github.com/keygen-agent/keygen-agent/internal/version.Version=9.8.7-test", ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	var info map[string]string
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("version --json: %v: %s", err, out)
	}
	if info["version"] != "9.8.7-test" {
		t.Errorf("version %q, want 9.8.7-test", info["version"])
	}
}
