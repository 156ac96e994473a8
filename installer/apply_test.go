package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kardianos/service"
)

// fakeBackend behaves like kardianos' systemd backend on a host: Install
// refuses an existing file and writes the service text, Status of a stopped
// or absent service is an "exit status 1" error (the sysv/systemd quirk).
type fakeBackend struct {
	p       *Plan
	running bool
	calls   []string
}

func (f *fakeBackend) file() string { return f.p.Path(f.p.ServiceFile) }

func (f *fakeBackend) Install() error {
	f.calls = append(f.calls, "install")
	if _, err := os.Stat(f.file()); err == nil {
		return fmt.Errorf("Init already exists: %s", f.file())
	}
	if err := os.MkdirAll(filepath.Dir(f.file()), 0o755); err != nil {
		return err
	}
	return os.WriteFile(f.file(), []byte(f.p.ServiceText), 0o644)
}

func (f *fakeBackend) Uninstall() error {
	f.calls = append(f.calls, "uninstall")
	return os.Remove(f.file())
}

func (f *fakeBackend) Start() error { f.calls = append(f.calls, "start"); f.running = true; return nil }
func (f *fakeBackend) Stop() error  { f.calls = append(f.calls, "stop"); f.running = false; return nil }
func (f *fakeBackend) Restart() error {
	f.calls = append(f.calls, "restart")
	f.running = true
	return nil
}

func (f *fakeBackend) Status() (service.Status, error) {
	if f.running {
		return service.StatusRunning, nil
	}
	return service.StatusUnknown, errors.New("exit status 1")
}

func rootPlan(t *testing.T, root string, mod func(*Options)) *Plan {
	t.Helper()
	o := Options{Root: root, Executable: "/usr/bin/keygen-agent", Home: "/home/u", Getenv: fakeEnv(nil),
		ConfigPath: "/etc/keygen-agent/agent.toml", DataDir: "/var/lib/keygen-agent", SocketDir: "/run/keygen-agent"}
	if mod != nil {
		mod(&o)
	}
	p, err := NewPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestApplyIdempotent(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("unix modes")
	}
	ctx := context.Background()
	root := t.TempDir()
	g, err := user.LookupGroupId(fmt.Sprint(os.Getgid()))
	if err != nil {
		t.Skip("no group name for own gid")
	}
	cfg, _ := RenderConfig(ConfigValues{Account: "acme", PublicKey: "ab", LicenseKey: "KEY-1", DataDir: "/var/lib/keygen-agent"})
	p := rootPlan(t, root, func(o *Options) { o.Config = cfg; o.Group = g.Name })
	fb := &fakeBackend{p: p}

	r, err := Apply(ctx, p, fb)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != StateNotInstalled || strings.Join(fb.calls, ",") != "install" {
		t.Fatalf("first apply: state %v calls %v", r.State, fb.calls)
	}
	for path, want := range map[string]fs.FileMode{
		"etc/keygen-agent": 0o755, "var/lib/keygen-agent": 0o700, "run/keygen-agent": 0o750,
		"etc/keygen-agent/agent.toml": 0o600, // holds a license key
	} {
		if got := mode(t, filepath.Join(root, path)); got != want {
			t.Errorf("%s mode %#o, want %#o", path, got, want)
		}
	}
	got, _ := os.ReadFile(filepath.Join(root, "etc/keygen-agent/agent.toml"))
	if string(got) != string(cfg) {
		t.Errorf("config content %q", got)
	}
	unit, _ := os.ReadFile(p.Path(p.ServiceFile))
	if string(unit) != p.ServiceText {
		t.Error("unit not written")
	}

	// Twice over: nothing to do, no error from an existing service.
	for i := 0; i < 2; i++ {
		fb.calls = nil
		r, err = Apply(ctx, p, fb)
		if err != nil {
			t.Fatalf("apply again: %v", err)
		}
		if r.State != StateStopped || len(fb.calls) != 0 || r.ServiceChanged {
			t.Fatalf("re-apply: state %v calls %v changed %v", r.State, fb.calls, r.ServiceChanged)
		}
	}

	// A changed definition is rewritten; a skeleton config never replaces
	// the existing one.
	p2 := rootPlan(t, root, func(o *Options) { o.Env = map[string]string{"X": "1"}; o.Group = g.Name })
	fb2 := &fakeBackend{p: p2}
	r, err = Apply(ctx, p2, fb2)
	if err != nil {
		t.Fatal(err)
	}
	if !r.ServiceChanged || strings.Join(fb2.calls, ",") != "uninstall,install" {
		t.Fatalf("update: changed %v calls %v", r.ServiceChanged, fb2.calls)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/keygen-agent/agent.toml")); string(got) != string(cfg) {
		t.Error("skeleton replaced an existing config")
	}
	if m := mode(t, filepath.Join(root, "etc/keygen-agent/agent.toml")); m != 0o600 {
		t.Errorf("kept config mode %#o", m)
	}
}

func TestUninstallAndPurge(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("unix paths")
	}
	ctx := context.Background()
	root := t.TempDir()
	p := rootPlan(t, root, nil)
	fb := &fakeBackend{p: p}
	if _, err := Apply(ctx, p, fb); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, p.Path(p.ConfigPath)); m != 0o640 {
		t.Errorf("skeleton config mode %#o, want 0640", m)
	}
	if err := Start(p, fb); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "var/lib/keygen-agent/cache.db"), []byte("x"), 0o600)

	fb.calls = nil
	r, err := Uninstall(ctx, p, fb, UninstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.State != StateRunning || strings.Join(fb.calls, ",") != "stop,uninstall" {
		t.Fatalf("uninstall: state %v calls %v", r.State, fb.calls)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/keygen-agent/cache.db")); err != nil {
		t.Error("uninstall without purge removed data")
	}
	// Twice over, then purge: data and socket dirs go, the config stays.
	for i := 0; i < 2; i++ {
		fb.calls = nil
		if _, err := Uninstall(ctx, p, fb, UninstallOptions{Purge: i == 1}); err != nil {
			t.Fatalf("uninstall again: %v", err)
		}
		if len(fb.calls) != 0 {
			t.Fatalf("uninstall of an uninstalled service called %v", fb.calls)
		}
	}
	for _, gone := range []string{"var/lib/keygen-agent", "run/keygen-agent", "etc/systemd/system/keygen-agent.service"} {
		if _, err := os.Stat(filepath.Join(root, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there (%v)", gone, err)
		}
	}
	if _, err := os.Stat(p.Path(p.ConfigPath)); err != nil {
		t.Errorf("purge removed the config: %v", err)
	}
	if err := Start(p, fb); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("start after uninstall: %v", err)
	}
}

func TestPurgeRefusesRoot(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux paths")
	}
	root := t.TempDir()
	p := rootPlan(t, root, func(o *Options) { o.DataDir = "/" })
	if _, err := Uninstall(context.Background(), p, &fakeBackend{p: p}, UninstallOptions{Purge: true}); err == nil {
		t.Fatal("purge of / accepted")
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatal("root removed")
	}
}

func TestServiceStatusMapping(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux plan")
	}
	root := t.TempDir()
	p := rootPlan(t, root, nil)
	for _, c := range []struct {
		file bool
		st   service.Status
		err  error
		want State
	}{
		{false, service.StatusRunning, nil, StateNotInstalled}, // file decides
		{true, service.StatusRunning, nil, StateRunning},
		{true, service.StatusStopped, nil, StateStopped},
		{true, service.StatusUnknown, errors.New("exit status 1"), StateStopped},
		{true, service.StatusUnknown, service.ErrNotInstalled, StateStopped}, // list-unit-files quirk
		{true, service.StatusUnknown, errors.New("service in failed state"), StateFailed},
	} {
		os.Remove(p.Path(p.ServiceFile))
		if c.file {
			os.MkdirAll(filepath.Dir(p.Path(p.ServiceFile)), 0o755)
			os.WriteFile(p.Path(p.ServiceFile), nil, 0o644)
		}
		got, err := ServiceStatus(p, statusOnly{c.st, c.err})
		if err != nil || got != c.want {
			t.Errorf("file=%v status=%v err=%v: got %v, %v; want %v", c.file, c.st, c.err, got, err, c.want)
		}
	}
	// Windows-style: no file; the backend decides.
	w := &Plan{OS: runtime.GOOS}
	if got, err := ServiceStatus(w, statusOnly{service.StatusUnknown, service.ErrNotInstalled}); err != nil || got != StateNotInstalled {
		t.Errorf("no file, ErrNotInstalled: %v %v", got, err)
	}
	if _, err := ServiceStatus(w, statusOnly{service.StatusUnknown, errors.New("access denied")}); err == nil {
		t.Error("no file, other error: want error")
	}
}

type statusOnly struct {
	st  service.Status
	err error
}

func (statusOnly) Install() error                    { return nil }
func (statusOnly) Uninstall() error                  { return nil }
func (statusOnly) Start() error                      { return nil }
func (statusOnly) Stop() error                       { return nil }
func (statusOnly) Restart() error                    { return nil }
func (s statusOnly) Status() (service.Status, error) { return s.st, s.err }

func TestStagingBackend(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux plan")
	}
	root := t.TempDir()
	p := rootPlan(t, root, nil)
	b, err := NewStagingBackend(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := Apply(context.Background(), p, b); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/keygen-agent.service")
	if dst, err := os.Readlink(link); err != nil || dst != "/etc/systemd/system/keygen-agent.service" {
		t.Errorf("wants link: %q %v", dst, err)
	}
	if err := Start(p, b); !errors.Is(err, ErrNoServiceManager) {
		t.Errorf("start in staging: %v", err)
	}
	if _, err := Uninstall(context.Background(), p, b, UninstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !errors.Is(err, fs.ErrNotExist) {
		t.Error("wants link left behind")
	}
	if _, err := NewBackend(p); err == nil {
		t.Error("NewBackend accepted a plan with a root")
	}
	if _, err := Apply(context.Background(), goldenPlan(t, "windows", false), b); !errors.Is(err, ErrUnsupported) {
		t.Errorf("apply of a foreign-OS plan: %v", err)
	}
}

// registeredBackend is a service without a file (the Windows SCM): it is
// installed from the start and Reconfigure reports what it updated.
type registeredBackend struct {
	fakeBackend
	changes []string
	updated int
}

func (f *registeredBackend) Status() (service.Status, error) { return service.StatusRunning, nil }
func (f *registeredBackend) Reconfigure() ([]string, error) {
	f.updated++
	return f.changes, nil
}

// TestApplyUpdatesRegisteredService pins issue 17 item 5: re-running
// install on a registered (file-less) service updates its configuration
// instead of leaving it as is.
func TestApplyUpdatesRegisteredService(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("unix paths")
	}
	p := rootPlan(t, t.TempDir(), nil)
	p.ServiceFile = ""
	b := &registeredBackend{fakeBackend: fakeBackend{p: p}, changes: []string{`command line: "C:\old\keygen-agent.exe" -> "C:\new\keygen-agent.exe"`}}
	r, err := Apply(context.Background(), p, b)
	if err != nil {
		t.Fatal(err)
	}
	if b.updated != 1 || !r.ServiceChanged || !strings.Contains(strings.Join(r.Actions, "\n"), `updated service keygen-agent: command line`) {
		t.Fatalf("updated %d, changed %v, actions %q", b.updated, r.ServiceChanged, r.Actions)
	}
	b.changes = nil
	r, err = Apply(context.Background(), p, b)
	if err != nil || r.ServiceChanged || !strings.Contains(strings.Join(r.Actions, "\n"), "up to date") {
		t.Fatalf("second run: %v %v %q", err, r.ServiceChanged, r.Actions)
	}
}
