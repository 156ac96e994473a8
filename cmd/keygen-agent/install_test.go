package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kardianos/service"
	"github.com/keygen-agent/keygen-agent/installer"
)

// cliFake is a service manager that writes the unit like kardianos does.
type cliFake struct {
	p       *installer.Plan
	running bool
	calls   []string
}

func (f *cliFake) Install() error {
	f.calls = append(f.calls, "install")
	os.MkdirAll(filepath.Dir(f.p.Path(f.p.ServiceFile)), 0o755)
	return os.WriteFile(f.p.Path(f.p.ServiceFile), []byte(f.p.ServiceText), 0o644)
}
func (f *cliFake) Uninstall() error {
	f.calls = append(f.calls, "uninstall")
	return os.Remove(f.p.Path(f.p.ServiceFile))
}
func (f *cliFake) Start() error   { f.calls = append(f.calls, "start"); f.running = true; return nil }
func (f *cliFake) Stop() error    { f.calls = append(f.calls, "stop"); f.running = false; return nil }
func (f *cliFake) Restart() error { f.calls = append(f.calls, "restart"); return nil }
func (f *cliFake) Status() (service.Status, error) {
	if f.running {
		return service.StatusRunning, nil
	}
	return service.StatusStopped, nil
}

func useFake(t *testing.T) *cliFake {
	f := &cliFake{}
	old := serviceBackend
	serviceBackend = func(p *installer.Plan) (installer.Backend, error) { f.p = p; return f, nil }
	t.Cleanup(func() { serviceBackend = old })
	return f
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestInstallDryRun(t *testing.T) {
	f := useFake(t)
	code, out, errs := runCLI("install", "--dry-run", "--account", "acme", "--public-key", "ab", "--license-key", "SECRET-KEY", "--executable", "/opt/kga")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if strings.Contains(out, "SECRET-KEY") || !strings.Contains(out, `license_key = "<redacted>"`) {
		t.Errorf("dry run leaks or lacks the license key line:\n%s", out)
	}
	if !strings.Contains(out, "(mode 0600, write)") || !strings.Contains(out, `account = "acme"`) {
		t.Errorf("dry run:\n%s", out)
	}
	if runtime.GOOS == "linux" && !strings.Contains(out, "RestartSec=2") {
		t.Errorf("dry run lacks the unit:\n%s", out)
	}
	if len(f.calls) != 0 || f.p != nil {
		t.Error("dry run touched the service manager")
	}
	if code, _, _ := runCLI("install", "--config", "x.toml", "--account", "a"); code != exitUsage {
		t.Errorf("--config with values: exit %d", code)
	}
}

func TestInstallUninstallRoot(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no service file on windows")
	}
	root := t.TempDir()
	f := useFake(t)
	for i := 0; i < 2; i++ {
		code, out, errs := runCLI("install", "--root", root, "--executable", "/opt/kga", "--account", "acme", "--public-key", "ab")
		if code != exitOK {
			t.Fatalf("install #%d: exit %d: %s", i, code, errs)
		}
		t.Logf("install #%d:\n%s", i, out)
	}
	if strings.Join(f.calls, ",") != "install" {
		t.Errorf("calls %v (install must be idempotent, and --root never starts)", f.calls)
	}
	p := f.p
	cfg, err := os.ReadFile(p.Path(p.ConfigPath))
	if err != nil || !strings.Contains(string(cfg), `account = "acme"`) || !strings.Contains(string(cfg), "data_dir = ") {
		t.Fatalf("config: %v\n%s", err, cfg)
	}
	os.WriteFile(filepath.Join(p.Path(p.DataDir), "cache.db"), []byte("x"), 0o600)

	var deactivated string
	old := deactivateAgent
	deactivateAgent = func(_ context.Context, socket string) error { deactivated = socket; return nil }
	defer func() { deactivateAgent = old }()
	code, out, errs := runCLI("uninstall", "--root", root, "--purge", "--deactivate")
	if code != exitOK {
		t.Fatalf("uninstall: exit %d: %s", code, errs)
	}
	if deactivated != p.SocketPath {
		t.Errorf("deactivate dialled %q, want %q", deactivated, p.SocketPath)
	}
	if _, err := os.Stat(p.Path(p.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("purge left the data dir:\n%s", out)
	}
	if code, _, errs := runCLI("uninstall", "--root", root); code != exitOK {
		t.Errorf("second uninstall: exit %d: %s", code, errs)
	}

	deactivateAgent = func(context.Context, string) error { return errors.New("connection refused") }
	if code, _, _ := runCLI("install", "--root", root, "--executable", "/opt/kga"); code != exitOK {
		t.Fatal("reinstall failed")
	}
	if code, _, _ := runCLI("uninstall", "--root", root, "--deactivate"); code != exitUnavailable {
		t.Errorf("uninstall --deactivate with no agent: exit %d, want %d", code, exitUnavailable)
	}
	if _, err := os.Stat(p.Path(p.ServiceFile)); err != nil {
		t.Error("failed deactivation must leave the service installed")
	}
}

func TestLifecycleNotInstalled(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("service file check")
	}
	useFake(t)
	if _, err := os.Stat("/etc/systemd/system/keygen-agent.service"); err == nil {
		t.Skip("keygen-agent really installed here")
	}
	for _, v := range []string{"start", "stop", "restart"} {
		code, _, errs := runCLI(v)
		if code != exitFailure || !strings.Contains(errs, "not installed") {
			t.Errorf("%s: exit %d %q", v, code, errs)
		}
		if code, _, _ := runCLI(v, "extra"); code != exitUsage {
			t.Errorf("%s extra: exit %d", v, code)
		}
	}
}
