//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// buildAgent builds the real binary into a temporary directory.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keygen-agent")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// cleanEnv is the test's environment without KEYGEN_* variables, so a
// developer's settings cannot change what the subprocesses do.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYGEN_") {
			env = append(env, kv)
		}
	}
	return env
}

// runBin runs the binary to completion and returns its exit code and output.
func runBin(t *testing.T, bin string, args ...string) (int, []byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out, stderr.String()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return 0, nil, ""
}

// TestE2EDev is issue 8's check: `dev` as a real subprocess, its JSON line,
// then `lease`, `status --json` and `leases --json` against it, a killed
// client's lease released, and a clean SIGINT stop.
func TestE2EDev(t *testing.T) {
	bin := buildAgent(t)

	dev := exec.Command(bin, "dev", "--heartbeat-duration", "120", "--log-level", "debug")
	dev.Env = cleanEnv()
	devOut, err := dev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	devErr := &agenttest.SyncBuffer{}
	dev.Stderr = devErr
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	devDone := make(chan error, 1)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = dev.Process.Kill()
			<-devDone
		}
	})
	lines := make(chan string, 1)
	go func() {
		rd := bufio.NewReader(devOut)
		l, _ := rd.ReadString('\n')
		lines <- l
		rest, _ := io.ReadAll(rd)
		if len(bytes.TrimSpace(rest)) > 0 {
			lines <- string(rest)
		}
		close(lines)
		devDone <- dev.Wait()
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("dev printed no JSON line; stderr:\n%s", devErr.String())
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatalf("dev line %q: %v\nstderr:\n%s", line, err, devErr.String())
	}
	for _, k := range []string{"socket", "api_url", "account", "license_key", "public_key", "admin_token", "data_dir"} {
		if info[k] == "" {
			t.Fatalf("dev line lacks %s: %s", k, line)
		}
	}
	sock, dataDir := info["socket"], info["data_dir"]

	status := func() (int, ipc.Status) {
		t.Helper()
		code, out, errs := runBin(t, bin, "status", "--json", "--socket", sock)
		var st ipc.Status
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatalf("status --json (exit %d): %v\n%s\n%s", code, err, out, errs)
		}
		return code, st
	}
	// The agent activates in the background after the line is printed.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, st := status()
		if code == exitOK && st.State == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not active: exit %d %+v\n%s", code, st, devErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The next steps follow the line on stderr.
	if !strings.Contains(devErr.String(), "keygen-agent lease --socket "+sock) {
		t.Errorf("no next steps on stderr:\n%s", devErr.String())
	}

	// lease: a real client process holding one lease.
	lease := exec.Command(bin, "lease", "--socket", sock, "--app", "e2e", "--json")
	lease.Env = cleanEnv()
	leaseOut, err := lease.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	leaseErr := &agenttest.SyncBuffer{}
	lease.Stderr = leaseErr
	if err := lease.Start(); err != nil {
		t.Fatal(err)
	}
	leaseDone := make(chan error, 1)
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = lease.Process.Kill()
			<-leaseDone
		}
	})
	events := make(chan map[string]any, 8)
	go func() {
		sc := bufio.NewScanner(leaseOut)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
		close(events)
		leaseDone <- lease.Wait()
	}()
	var leaseID string
	select {
	case ev, ok := <-events:
		if !ok || ev["event"] != "acquired" {
			t.Fatalf("lease: first event %v; stderr:\n%s", ev, leaseErr.String())
		}
		leaseID, _ = ev["lease_id"].(string)
		if ents, _ := ev["entitlements"].([]any); len(ents) == 0 {
			t.Errorf("acquired without entitlements: %v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("lease did not acquire; stderr:\n%s", leaseErr.String())
	}

	code, st := status()
	if code != exitOK || st.State != "active" || !st.Valid || st.Leases.Active != 1 {
		t.Fatalf("status with one lease: exit %d %+v", code, st)
	}

	leases := func() []ipc.LeaseInfo {
		t.Helper()
		code, out, errs := runBin(t, bin, "leases", "--json", "--socket", sock)
		if code != exitOK {
			t.Fatalf("leases --json: exit %d: %s", code, errs)
		}
		var res ipc.LeasesListResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("leases --json: %v\n%s", err, out)
		}
		return res.Leases
	}
	admin := os.Getuid() == 0
	if admin {
		ls := leases()
		if len(ls) != 1 || ls[0].PID != lease.Process.Pid || ls[0].LeaseID != leaseID || ls[0].App != "e2e" {
			t.Fatalf("leases: %+v, want one lease %s of pid %d", ls, leaseID, lease.Process.Pid)
		}
	} else {
		t.Log("not root: leases (an admin method) not checked; using status")
	}

	// A client killed without releasing loses its lease: the agent sees the
	// connection close.
	killed = true
	if err := lease.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-leaseDone
	deadline = time.Now().Add(10 * time.Second)
	for {
		var n int
		if admin {
			n = len(leases())
		} else {
			_, st := status()
			n = st.Leases.Active
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed client's lease is still listed after 10s\n%s", devErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Ctrl-C: dev stops cleanly and removes its temporary data directory.
	stopped = true
	if err := dev.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-devDone:
		if err != nil {
			t.Fatalf("dev after SIGINT: %v\nstderr:\n%s", err, devErr.String())
		}
	case <-time.After(10 * time.Second):
		_ = dev.Process.Kill()
		<-devDone
		t.Fatalf("dev did not exit within 10s of SIGINT\nstderr:\n%s", devErr.String())
	}
	for extra := range lines {
		t.Errorf("dev printed more than one line on stdout: %q", extra)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev left its data directory %s: %v", dataDir, err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev left its socket %s: %v", sock, err)
	}
	if logs := devErr.String(); strings.Contains(logs, info["license_key"]) || strings.Contains(logs, info["admin_token"]) {
		t.Error("a secret is in dev's log")
	}
}
