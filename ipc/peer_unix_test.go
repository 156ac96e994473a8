//go:build unix

package ipc

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

func TestPeerCredentialsAreTheCaller(t *testing.T) {
	_, path := testServer(t, ServerConfig{})
	c := testDial(t, path)
	p, err := c.Peer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() {
		t.Errorf("PID %d, want %d", p.PID, os.Getpid())
	}
	if p.UID != strconv.Itoa(os.Getuid()) {
		t.Errorf("UID %s, want %d", p.UID, os.Getuid())
	}
	if p.Admin != (os.Getuid() == 0) {
		t.Errorf("Admin %v for uid %d", p.Admin, os.Getuid())
	}
	if st, err := procwatch.StartTime(os.Getpid()); err != nil || p.StartTime != st {
		t.Errorf("StartTime %d, want %d (%v)", p.StartTime, st, err)
	}
	if exe, _ := os.Executable(); p.Exe != "" && p.Exe != exe {
		t.Errorf("Exe %q, want %q", p.Exe, exe)
	}
}

func TestAdminGroupFromPeerGroups(t *testing.T) {
	if os.Getuid() == 0 {
		// root is admin regardless; check the group path resolves instead.
		if _, err := lookupGroupID(strconv.Itoa(os.Getgid())); err != nil {
			t.Fatal(err)
		}
	}
	// Our own gid as the admin group makes us admin.
	_, path := testServer(t, ServerConfig{AdminGroup: strconv.Itoa(os.Getgid())})
	c := testDial(t, path)
	p, err := c.Peer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Admin {
		t.Fatalf("member of the admin group not admin: %+v", p)
	}
}

func TestListenStaleAndSecond(t *testing.T) {
	dir, err := os.MkdirTemp("", "kga")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "run", "agent.sock")

	ln, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v", di.Mode())
	}
	// A second agent fails clearly and leaves the first one's socket.
	if _, err := Listen(path, ListenOptions{}); !errors.Is(err, ErrAlreadyListening) {
		t.Fatalf("second Listen: %v", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("first listener lost its socket: %v", err)
	} else {
		c.Close()
	}
	// A crashed agent leaves a stale socket: replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal("stale socket not left behind")
	}
	ln2, err := Listen(path, ListenOptions{Mode: 0o600})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
	// Not a socket: never removed.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, ListenOptions{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	// Too long for sun_path.
	long := filepath.Join(dir, strings.Repeat("d", maxSocketPath), "a.sock")
	if _, err := Listen(long, ListenOptions{}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("long path: %v", err)
	}
	if _, err := Listen(filepath.Join(dir, "g.sock"), ListenOptions{Group: "no-such-group-kga"}); err == nil {
		t.Fatal("unknown group accepted")
	}
}
