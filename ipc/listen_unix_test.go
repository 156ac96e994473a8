//go:build unix

package ipc

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// testListen listens on a socket in a short temp dir (macOS limits socket
// paths to 104 bytes, so no t.TempDir).
func testListen(t testing.TB) (net.Listener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s", "agent.sock")
	ln, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, path
}

func relisten(t testing.TB, path string) net.Listener {
	t.Helper()
	ln, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestListenSocketGroupExistingDir pins socket_group for a directory ipc
// did not create (the daemon, systemd or launchd made it root:root 0750):
// it still gets the group, so the group's members can reach the socket.
// A directory shared with other files is never re-moded; Listen refuses
// it when the group could not traverse it. Needs root to chown.
func TestListenSocketGroupExistingDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to another group")
	}
	const gid = 54321
	base, err := os.MkdirTemp("", "kga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	statGID := func(p string) (uint32, os.FileMode) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Gid, fi.Mode().Perm()
	}

	own := filepath.Join(base, "own")
	if err := os.Mkdir(own, 0o750); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(own, "agent.sock")
	ln, err := Listen(sock, ListenOptions{Group: strconv.Itoa(gid)})
	if err != nil {
		t.Fatal(err)
	}
	if g, m := statGID(own); g != gid || m != 0o750 {
		t.Errorf("existing socket dir: gid %d mode %v, want %d 0750", g, m, gid)
	}
	if g, m := statGID(sock); g != gid || m != 0o660 {
		t.Errorf("socket: gid %d mode %v, want %d 0660", g, m, gid)
	}
	ln.Close()
	// A restart finds the directory with its (stale) socket: still its own.
	if err := os.Chown(own, -1, 0); err != nil {
		t.Fatal(err)
	}
	ln, err = Listen(sock, ListenOptions{Group: strconv.Itoa(gid)})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if g, _ := statGID(own); g != gid {
		t.Errorf("restart: socket dir gid %d, want %d", g, gid)
	}

	// Shared and closed to the group: refused, left as it was.
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "other"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(filepath.Join(shared, "agent.sock"), ListenOptions{Group: strconv.Itoa(gid)}); err == nil {
		ln.Close()
		t.Error("Listen in a shared directory the group cannot traverse succeeded")
	}
	if g, m := statGID(shared); g != 0 || m != 0o750 {
		t.Errorf("shared dir changed: gid %d mode %v", g, m)
	}
	// Shared but traversable by everyone: served, left as it was.
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err = Listen(filepath.Join(shared, "agent.sock"), ListenOptions{Group: strconv.Itoa(gid)})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if g, m := statGID(shared); g != 0 || m != 0o755 {
		t.Errorf("shared dir changed: gid %d mode %v", g, m)
	}
}
