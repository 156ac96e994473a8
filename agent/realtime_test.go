package agent

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/internal/procwatch"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// These tests run on the real clock: they involve real OS processes and
// real file-system events. They poll with deadlines; how fast things happen
// is measured by the benchmarks, not asserted here.

func realEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := newEnv(t, o)
	e.noWatch = false
	e.procs = nil
	return e
}

// startReal starts the agent with the OS process watcher.
func (e *env) startReal() {
	e.t.Helper()
	e.procs = nil
	e.start()
}

func TestRealChildExitKillsProcess(t *testing.T) {
	e := realEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}})
	e.noWatch = true
	e.startReal()
	defer e.stop()
	e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	defer cmd.Process.Kill()
	st, err := procwatch.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The child's connection is made on its behalf: the agent sees the
	// child's PID as the peer (as SO_PEERCRED would report it).
	c := e.dial(ipc.Peer{PID: cmd.Process.Pid, UID: "1000", StartTime: st})
	defer c.Close()
	if _, _, err := c.Acquire(acquireParams()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.Processes()); n != 1 {
		t.Fatalf("processes = %d", n)
	}
	killed := time.Now()
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
	e.waitFor("Keygen process killed after the app died", func() bool { return len(e.srv.Processes()) == 0 })
	t.Logf("Keygen process killed %v after the app was killed (connection still open)", time.Since(killed))
}

func TestConfigReload(t *testing.T) {
	e := realEnv(t, envOptions{})
	cfgPath := filepath.Join(e.dir, "agent.toml")
	write := func(grace string) {
		t.Helper()
		body := "offline_grace = \"" + grace + "\"\nlog_level = \"debug\"\n"
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("1h")
	base := e.cfg
	e.cfg.OfflineGrace = Duration(time.Hour)
	load := func() (Config, []string, error) {
		return Load(LoadOptions{File: cfgPath, Getenv: func(string) string { return "" }, Override: base})
	}
	e.deps.ConfigFile, e.deps.ConfigLoad = cfgPath, load
	e.noWatch = false
	e.startReal()
	defer e.stop()
	e.waitLimit = 20 * time.Second
	grace := func() time.Duration { return e.a.config().OfflineGrace.D() }

	// In place.
	write("2h")
	e.waitFor("in-place edit applied", func() bool { return grace() == 2*time.Hour })
	// Replaced by rename, as editors save.
	tmp := cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte("offline_grace = \"3h\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cfgPath); err != nil {
		t.Fatal(err)
	}
	e.waitFor("rename-save applied", func() bool { return grace() == 3*time.Hour })
	// An invalid edit is rejected and the old configuration kept.
	if err := os.WriteFile(cfgPath, []byte("offline_grace = [broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitFor("invalid edit logged", func() bool { return strings.Contains(e.logs.String(), "config reload rejected") })
	if grace() != 3*time.Hour {
		t.Fatalf("grace after invalid edit = %v", grace())
	}
	// And the watch survived all of it.
	write("4h")
	e.waitFor("edit after invalid one applied", func() bool { return grace() == 4*time.Hour })
}

func TestImportFolder(t *testing.T) {
	e := realEnv(t, envOptions{})
	e.noWatch = false
	e.startReal()
	defer e.stop()
	e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	// A machine file checked out elsewhere (here: over the API directly).
	c, err := keygen.NewClient(keygen.Config{BaseURL: "http://devserver.invalid", Account: e.srv.AccountID(), LicenseKey: e.license.Key,
		PublicKey: e.srv.PublicKeyHex(), HTTPClient: &http.Client{Transport: e.srv.Transport()}})
	if err != nil {
		t.Fatal(err)
	}
	co, err := c.CheckoutMachine(t.Context(), e.fp.Result().Fingerprint, keygen.CheckoutOptions{Encrypt: true, Include: []string{"license", "license.entitlements"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := e.a.config().ImportDir
	if err := os.WriteFile(filepath.Join(dir, "good.lic"), co.Certificate, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(co.Certificate), "\n", "\nAAAA", 3)
	if err := os.WriteFile(filepath.Join(dir, "bad.lic"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitFor("both files handled", func() bool {
		p, _ := filepath.Glob(filepath.Join(dir, "processed", "*good.lic"))
		r, _ := filepath.Glob(filepath.Join(dir, "rejected", "*bad.lic"))
		return len(p) == 1 && len(r) == 1
	})
	reasons, _ := filepath.Glob(filepath.Join(dir, "rejected", "*.reason"))
	if len(reasons) != 1 {
		t.Fatalf("reason files: %v", reasons)
	}
	if b, _ := os.ReadFile(reasons[0]); len(b) == 0 {
		t.Error("empty reason")
	}
	if rec, _ := e.a.store.Certificate(certMachine); rec == nil || string(rec.Raw) != string(co.Certificate) {
		t.Error("imported certificate not stored")
	}
}

// No license key or token may appear in the agent's logs, whatever happens.
func TestLogsCarryNoSecrets(t *testing.T) {
	e := realEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(1)}})
	e.noWatch = true
	e.procs = agenttest.NewFakeProcs()
	e.start()
	e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	e.procs.Spawn(9)
	e.procs.Spawn(10)
	a, b := e.dial(agenttest.PeerFor(9)), e.dial(agenttest.PeerFor(10))
	_, _, _ = a.Acquire(acquireParams())
	_, _, _ = b.Acquire(acquireParams())
	adm := e.dial(agenttest.AdminPeer)
	_, _ = adm.Call(ipc.MethodActivate, ipc.ActivateParams{Key: "key/not-a-real-key-but-secret-0123456789"}, nil)
	e.srv.SetFaults(devserver.Faults{Refuse: true})
	_ = e.a.requestSync(t.Context())
	a.Close()
	b.Close()
	adm.Close()
	e.stop()
	logs := e.logs.String()
	for _, secret := range []string{e.license.Key, "key/not-a-real-key-but-secret-0123456789", e.srv.AdminToken()} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a secret appears in the logs:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "lease acquired") {
		t.Fatalf("logs look empty:\n%s", logs)
	}
}
