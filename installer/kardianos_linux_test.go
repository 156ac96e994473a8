package installer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kardianos/service"
)

// forcedSystemd makes kardianos pick its systemd backend on a host without
// systemd as PID 1.
type forcedSystemd struct{ service.System }

func (forcedSystemd) Detect() bool { return true }

// TestSystemdMatchesKardianos installs our plan's user unit with kardianos
// itself (a fake systemctl on PATH, HOME in a temp dir) and checks that the
// file it writes equals Plan.ServiceText: our renderer and kardianos' v1.3
// template engine agree on our template.
func TestSystemdMatchesKardianos(t *testing.T) {
	var sd service.System
	saved := service.AvailableSystems()
	for _, s := range saved {
		if s.String() == "linux-systemd" {
			sd = s
		}
	}
	if sd == nil {
		t.Skip("kardianos systemd backend not registered")
	}
	service.ChooseSystem(forcedSystemd{sd})
	defer service.ChooseSystem(saved...)

	home := t.TempDir()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\n[ \"$1\" = --version ] && echo 'systemd 255'\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("PATH", bin)

	p, err := NewPlan(Options{OS: "linux", User: true, Home: home, Executable: "/opt/vendor app/keygen-agent",
		Env: map[string]string{"B": "2", "A": "1"}, Getenv: fakeEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Service
	s, err := service.New(noopProgram{}, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Install(); err != nil {
		t.Fatalf("kardianos install: %v", err)
	}
	got, err := os.ReadFile(p.ServiceFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != p.ServiceText {
		t.Errorf("kardianos wrote:\n%s\nplan says:\n%s", got, p.ServiceText)
	}
	if st, err := ServiceStatus(p, s); err != nil || st == StateNotInstalled {
		t.Errorf("status after install: %v %v", st, err)
	}
}
