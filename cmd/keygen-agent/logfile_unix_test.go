//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Under launchd the agent writes its log itself (--log-file) and bounds
// the file stderr goes to (--stderr-file): here a run that cannot start
// (a data directory writable by others) logs why to the log file, with
// the file's mode narrowed, and an oversized stderr file is cut at start.
func TestRunLogFile(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	cfg := filepath.Join(base, "agent.toml")
	body := fmt.Sprintf("account = \"acme\"\npublic_key = %q\ndata_dir = %q\nsocket = %q\napi_url = \"http://127.0.0.1:1\"\n",
		hex.EncodeToString(pub), data, filepath.Join(base, "sock", "agent.sock"))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(base, "keygen-agent.log")
	// launchd created the log 0644 (Umask 23) before the agent ran.
	if err := os.WriteFile(logPath, []byte("earlier run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	errPath := filepath.Join(base, "keygen-agent.stderr.log")
	stderr, err := os.OpenFile(errPath, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	stderr.WriteString(strings.Repeat("panic output of an old crash\n", (stderrMaxBytes/29)+100))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	code := run(ctx, []string{"run", "--config", cfg, "--log-file", logPath, "--stderr-file", errPath},
		strings.NewReader(""), &out, stderr)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d", code, exitConfig)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "earlier run\n") || !strings.Contains(string(b), "refusing to use "+data) {
		t.Errorf("log file:\n%s", b)
	}
	fi, _ := os.Stat(logPath)
	if want := os.FileMode(0o600); os.Geteuid() == 0 {
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("root's log mode %v, want 0640", fi.Mode().Perm())
		}
	} else if fi.Mode().Perm() != want {
		t.Errorf("log mode %v, want %v", fi.Mode().Perm(), want)
	}
	eb, _ := os.ReadFile(errPath)
	if len(eb) != 0 {
		t.Errorf("stderr file after start: %d bytes, want it cut to 0 (the log went to the log file): %.200q", len(eb), eb)
	}
	old, _ := os.Stat(errPath + ".1")
	if old == nil || old.Size() != stderrMaxBytes {
		t.Errorf("stderr's tail not kept in .1: %v", old)
	}
}
