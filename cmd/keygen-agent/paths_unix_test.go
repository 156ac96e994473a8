//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runUnsafe runs `run` with a config naming dataDir and socket, under a
// context already cancelled: an agent that started would stop at once with
// exit 0, so the test needs no timer.
func runUnsafe(t *testing.T, dataDir, socket string) (int, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	body := fmt.Sprintf("account = \"acme\"\npublic_key = %q\ndata_dir = %q\nsocket = %q\napi_url = \"http://127.0.0.1:1\"\n",
		hex.EncodeToString(pub), dataDir, socket)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"run", "--config", cfg}, strings.NewReader(""), &out, &errb)
	return code, errb.String()
}

// Issue 15 item 5, first attack: a 0777 data directory in which another
// user planted agent.db.pid -> /some/file. The agent refuses to start
// (exit 3, naming the directory and the fix) and writes nothing.
func TestRunRefusesWritableDataDir(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(data, "agent.db.pid")); err != nil {
		t.Fatal(err)
	}
	code, errs := runUnsafe(t, data, filepath.Join(base, "sock", "agent.sock"))
	if code != exitConfig {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitConfig, errs)
	}
	if !strings.Contains(errs, "refusing to use "+data) || !strings.Contains(errs, "chmod go-w") {
		t.Errorf("stderr does not name the directory and the fix:\n%s", errs)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("victim overwritten: %q", b)
	}
	for _, p := range []string{filepath.Join(data, "agent.db"), filepath.Join(base, "sock")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v)", p, err)
		}
	}
}

// Issue 15 item 5, second attack: the socket in a directory another user
// owns, who could replace the socket with a fake agent's.
func TestRunRefusesSocketDirOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to another user")
	}
	base := t.TempDir()
	sockDir := filepath.Join(base, "sock")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sockDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "data")
	code, errs := runUnsafe(t, data, filepath.Join(sockDir, "agent.sock"))
	if code != exitConfig {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitConfig, errs)
	}
	if !strings.Contains(errs, "refusing to use "+sockDir) || !strings.Contains(errs, "owned by uid 65534") {
		t.Errorf("stderr does not name the directory and its owner:\n%s", errs)
	}
	if _, err := os.Lstat(filepath.Join(sockDir, "agent.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket was created (%v)", err)
	}
}

// The same checks accept the directories the agent makes itself: it gets
// past them and listens (then stops on the cancelled context).
func TestRunAcceptsOwnDirs(t *testing.T) {
	base := t.TempDir()
	code, errs := runUnsafe(t, filepath.Join(base, "data"), filepath.Join(base, "sock", "agent.sock"))
	if code == exitConfig || strings.Contains(errs, "refusing") {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	if !strings.Contains(errs, "keygen-agent listening") {
		t.Fatalf("the agent did not listen; stderr:\n%s", errs)
	}
}
