package ipc

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

var pipeSeq atomic.Int64

// testListen creates a uniquely named pipe. Under Wine the first client
// after ListenPipe binds to go-winio's placeholder instance and hangs, so a
// throwaway dial with a short timeout goes first.
func testListen(t testing.TB) (net.Listener, string) {
	t.Helper()
	path := fmt.Sprintf(`\\.\pipe\kga-test-%d-%d`, os.Getpid(), pipeSeq.Add(1))
	ln, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	throwawayDial(ln, path)
	return ln, path
}

func throwawayDial(ln net.Listener, path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if c, err := dialTransport(ctx, path); err == nil {
		c.Close()
	}
}

func relisten(t testing.TB, path string) net.Listener {
	t.Helper()
	ln, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	throwawayDial(ln, path)
	return ln
}
