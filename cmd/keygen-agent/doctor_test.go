package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kardianos/service"
	"github.com/keygen-agent/keygen-agent/installer"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/internal/version"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// noService is a service manager on which keygen-agent is not installed.
type noService struct{}

func (noService) Install() error   { return nil }
func (noService) Uninstall() error { return nil }
func (noService) Start() error     { return installer.ErrNotInstalled }
func (noService) Stop() error      { return installer.ErrNotInstalled }
func (noService) Restart() error   { return installer.ErrNotInstalled }
func (noService) Status() (service.Status, error) {
	return service.StatusUnknown, service.ErrNotInstalled
}

func useNoService(t *testing.T) {
	t.Helper()
	old := serviceBackend
	serviceBackend = func(*installer.Plan) (installer.Backend, error) { return noService{}, nil }
	t.Cleanup(func() { serviceBackend = old })
}

// doctorEnv returns a getenv that answers KEYGEN_* from vars only (the
// test's own environment must not leak in) and the rest from the process.
func doctorEnv(vars map[string]string) func(string) string {
	return func(k string) string {
		if strings.HasPrefix(k, "KEYGEN_") {
			return vars[k]
		}
		return os.Getenv(k)
	}
}

// runDoctorWith runs the doctor verb with an injected environment.
func runDoctorWith(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb agenttest.SyncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	code := runDoctor(&env{ctx: ctx, args: args, stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: doctorEnv(vars)})
	return code, out.String(), errb.String()
}

func decodeChecks(t *testing.T, out string) map[string]doctorCheck {
	t.Helper()
	var list []doctorCheck
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("doctor --json output: %v\n%s", err, out)
	}
	m := map[string]doctorCheck{}
	for _, c := range list {
		if c.Check == "" || c.Detail == "" {
			t.Errorf("incomplete check %+v", c)
		}
		switch c.Status {
		case checkOK, checkWarn, checkFail:
		default:
			t.Errorf("check %s: status %q", c.Check, c.Status)
		}
		if c.Status != checkOK && c.Fix == "" {
			t.Errorf("check %s is %s without a fix: %+v", c.Check, c.Status, c)
		}
		m[c.Check] = c
	}
	return m
}

// startDev runs `keygen-agent dev` in-process and returns its ready line.
func startDev(t *testing.T, dir string) map[string]string {
	t.Helper()
	return startDevArgs(t, dir)
}

// startDevArgs is startDev with extra dev flags.
func startDevArgs(t *testing.T, dir string, extra ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	stderr := &agenttest.SyncBuffer{}
	exit := make(chan int, 1)
	go func() {
		code := run(ctx, append([]string{"dev", "--data-dir", dir, "--log-level", "warn"}, extra...), strings.NewReader(""), pw, stderr)
		pw.Close()
		exit <- code
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case c := <-exit:
			if c != exitOK {
				t.Errorf("dev exit %d; stderr: %s", c, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("dev did not stop")
		}
	})
	lineCh := make(chan string, 1)
	go func() {
		rd := bufio.NewReader(pr)
		l, _ := rd.ReadString('\n')
		lineCh <- l
		_, _ = io.Copy(io.Discard, rd)
	}()
	var line string
	select {
	case line = <-lineCh:
	case c := <-exit:
		t.Fatalf("dev exited %d; stderr: %s", c, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no ready line; stderr: %s", stderr.String())
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	return info
}

func TestDoctorAgainstDev(t *testing.T) {
	useNoService(t)
	dir := t.TempDir() // 0755: tighten it as keygen-agent install would
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	info := startDev(t, dir)
	vars := map[string]string{
		"KEYGEN_API_URL": info["api_url"], "KEYGEN_ACCOUNT": info["account"], "KEYGEN_PUBLIC_KEY": info["public_key"],
		"KEYGEN_LICENSE_KEY": info["license_key"], "KEYGEN_PRODUCT": info["product"],
		"KEYGEN_LICENSE_TOKEN": info["license_token"],
	}
	// The agent activates in the background: wait until it is active.
	var checks map[string]doctorCheck
	var out string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var code int
		var errs string
		code, out, errs = runDoctorWith(t, vars, "--socket", info["socket"], "--data-dir", info["data_dir"], "--json")
		checks = decodeChecks(t, out)
		if code == exitOK && checks["certificate"].Status == checkOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("doctor exit %d; stderr %s\n%s", code, errs, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, c := range checks {
		if c.Status == checkFail {
			t.Errorf("%s failed: %+v", name, c)
		}
	}
	for _, name := range []string{"config", "socket", "keygen", "signature", "auth", "settings", "clock", "fingerprint", "certificate"} {
		if c, ok := checks[name]; !ok || c.Status != checkOK {
			t.Errorf("%s: %+v, want ok", name, c)
		}
	}
	if s := checks["socket"].Detail; !strings.Contains(s, "agent "+version.Get()) || !strings.Contains(s, "state ") {
		t.Errorf("socket detail %q lacks the agent version and state", s)
	}
	if s := checks["certificate"].Detail; !strings.Contains(s, "state active") || !strings.Contains(s, "last sync") {
		t.Errorf("certificate detail %q", s)
	}
	if c := checks["service"]; c.Status != checkWarn || !strings.Contains(c.Detail, "not installed") {
		t.Errorf("service: %+v", c)
	}
	for _, name := range []string{"data-dir-perms", "cache-perms"} {
		if c, ok := checks[name]; ok && c.Status != checkOK {
			t.Errorf("%s: %+v", name, c)
		}
	}
	if strings.Contains(out, info["license_key"]) || strings.Contains(out, info["license_token"]) {
		t.Error("the report contains the license key or token")
	}
	// dev's demo is Keygen's defaults: no policy.read, so the policy-only
	// settings are assumed.
	if s := checks["settings"].Detail; !strings.Contains(s, "assumed") {
		t.Errorf("settings detail %q", s)
	}

	// The text form: one line per check, status first.
	code, text, _ := runDoctorWith(t, vars, "--socket", info["socket"], "--data-dir", info["data_dir"])
	if code != exitOK {
		t.Fatalf("text: exit %d\n%s", code, text)
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) != len(checks) {
		t.Errorf("%d lines for %d checks:\n%s", len(lines), len(checks), text)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "ok    ") && !strings.HasPrefix(l, "warn  ") {
			t.Errorf("line %q", l)
		}
	}
}

func TestDoctorNoAgentBadKey(t *testing.T) {
	useNoService(t)
	srv, err := devserver.New(devserver.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, HeartbeatDuration: 600, Leasing: "PER_MACHINE"})
	if err != nil {
		t.Fatal(err)
	}
	wrong, _, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	vars := map[string]string{
		"KEYGEN_API_URL": srv.URL(), "KEYGEN_ACCOUNT": srv.AccountID(), "KEYGEN_PUBLIC_KEY": hex.EncodeToString(wrong),
		"KEYGEN_LICENSE_KEY": demo.License.Key,
	}
	sock := filepath.Join(dir, "none.sock")
	code, out, _ := runDoctorWith(t, vars, "--socket", sock, "--data-dir", dir, "--json")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d\n%s", code, exitFailure, out)
	}
	checks := decodeChecks(t, out)
	if c := checks["socket"]; c.Status != checkFail || !strings.Contains(c.Detail, sock) || !strings.Contains(c.Fix, "start") {
		t.Errorf("socket: %+v", c)
	}
	if c := checks["signature"]; c.Status != checkFail || !strings.Contains(c.Fix, "public_key") {
		t.Errorf("signature: %+v", c)
	}
	if c := checks["keygen"]; c.Status != checkOK {
		t.Errorf("keygen: %+v (the server is up; only the key is wrong)", c)
	}
	if c := checks["certificate"]; c.Status != checkWarn {
		t.Errorf("certificate without an agent: %+v", c)
	}

	// A malformed key, and the text form: fail lines carry their fix.
	vars["KEYGEN_PUBLIC_KEY"] = "not-a-key"
	code, text, _ := runDoctorWith(t, vars, "--socket", sock, "--data-dir", dir)
	if code != exitFailure {
		t.Fatalf("exit %d\n%s", code, text)
	}
	var fails int
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "fail  ") {
			fails++
			if !strings.Contains(l, " — fix: ") {
				t.Errorf("fail line without a fix: %q", l)
			}
		}
	}
	if fails < 2 || !strings.Contains(text, "fail  signature: public_key") || !strings.Contains(text, "fail  socket: ") {
		t.Errorf("want socket and signature failures:\n%s", text)
	}

	// Keygen down: the keygen check fails with a fix; bounded by --timeout.
	srv.Close()
	start := time.Now()
	code, out, _ = runDoctorWith(t, vars, "--socket", sock, "--data-dir", dir, "--json", "--timeout", "2s")
	if code != exitFailure || time.Since(start) > 20*time.Second {
		t.Fatalf("exit %d after %s", code, time.Since(start))
	}
	if c := decodeChecks(t, out)["keygen"]; c.Status != checkFail || !strings.Contains(c.Fix, "HTTPS_PROXY") {
		t.Errorf("keygen down: %+v", c)
	}
}

func TestDoctorConfigFile(t *testing.T) {
	useNoService(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfgPath, []byte("account = \"acme\"\npublic_key = \"00\"\nlicense_key = \"K\"\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runDoctorWith(t, nil, "--config", cfgPath, "--socket", filepath.Join(dir, "s"), "--data-dir", dir, "--json", "--timeout", "1s")
	if code != exitFailure {
		t.Fatalf("exit %d", code)
	}
	checks := decodeChecks(t, out)
	if c := checks["config"]; c.Status != checkWarn || !strings.Contains(c.Detail, "bogus") || !strings.Contains(c.Detail, cfgPath) ||
		!strings.Contains(c.Detail, "activation machine") {
		t.Errorf("config: %+v", c)
	}

	// An explicit --config that does not exist fails the config check.
	code, out, _ = runDoctorWith(t, nil, "--config", filepath.Join(dir, "missing.toml"), "--socket", filepath.Join(dir, "s"), "--json", "--timeout", "1s")
	if c := decodeChecks(t, out)["config"]; code != exitFailure || c.Status != checkFail {
		t.Errorf("missing config: exit %d %+v", code, c)
	}
	if code, _, _ := runDoctorWith(t, nil, "extra"); code != exitUsage {
		t.Errorf("positional argument: exit %d", code)
	}
}
