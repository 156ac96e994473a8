//go:build unix

package ipc

import (
	"net"
	"os"
	"path/filepath"
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
