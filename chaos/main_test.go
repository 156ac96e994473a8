package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// The test binary doubles as an app process for the real-process tests:
// with CHAOS_HELPER set it connects to the agent at CHAOS_SOCKET, acquires
// a lease, reports on stdout, and lives until its stdin is closed.
func TestMain(m *testing.M) {
	if mode := os.Getenv("CHAOS_HELPER"); mode != "" {
		os.Exit(helperMain(mode, os.Getenv("CHAOS_SOCKET")))
	}
	if mode := os.Getenv("CHAOS_ATTACK"); mode != "" {
		os.Exit(attackMain(mode, os.Getenv("CHAOS_SOCKET")))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binDir holds the agent binary built by the real-process tests.
var binDir string

// helperMain is one app instance. mode "reconnect" uses the Go client's
// Reconnect (re-acquires after an agent restart); "plain" does not, so its
// lease is abandoned when the agent goes away while the process lives on.
func helperMain(mode, socket string) int {
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	var held atomic.Pointer[ipc.Lease]
	c, err := ipc.DialOptions(context.Background(), ipc.ClientOptions{
		Path: socket, Reconnect: mode == "reconnect", App: "chaos-helper",
		Backoff: ipc.Backoff{Initial: 50 * time.Millisecond, Max: 300 * time.Millisecond},
		OnReconnect: func() {
			if l := held.Load(); l != nil {
				cur := l.Current()
				say("RECONNECTED %d %s %s reused=%v", os.Getpid(), cur.LeaseID, cur.ProcessID, cur.Reused)
			}
		},
	})
	if err != nil {
		say("ERROR dial %v", err)
		return 1
	}
	var lease *ipc.Lease
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	for {
		lease, err = c.Acquire(ctx, ipc.AcquireParams{})
		if err == nil || !ipc.IsCode(err, ipc.CodeStarting) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err != nil {
		say("ERROR acquire %v", err)
		return 1
	}
	held.Store(lease)
	say("ACQUIRED %d %s %s", os.Getpid(), lease.ID, lease.ProcessID)
	go func() {
		r, ok := <-lease.Revoked()
		if ok {
			say("REVOKED %s %s", r.Code, r.Reason)
		}
	}()
	// Live until the parent closes stdin.
	buf := make([]byte, 1)
	for {
		if _, err := os.Stdin.Read(buf); err != nil {
			break
		}
	}
	c.Close()
	return 0
}
