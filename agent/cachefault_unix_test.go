//go:build unix

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// agent.db truncated under a running agent: Run ends with an error (the
// daemon exits non-zero and the restart quarantines the file); nothing hangs.
func TestTruncatedCacheStopsTheAgent(t *testing.T) {
	e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(4)}})
	e.start()
	e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	e.procs.Spawn(9)
	c := e.dial(agenttest.PeerFor(9))
	if _, _, err := c.Acquire(acquireParams()); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(e.dir, "agent.db"), 4096); err != nil {
		t.Fatal(err)
	}
	// Keep the agent using its cache until it notices.
	stop, loopDone := make(chan struct{}), make(chan struct{})
	loopCtx, cancelLoop := context.WithCancel(t.Context())
	go func() {
		defer close(loopDone)
		for i := 10; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e.procs.Spawn(i)
			conn, err := e.ln.Dial(loopCtx, agenttest.PeerFor(i))
			if err != nil {
				return // the listener closed
			}
			cl := agenttest.NewClient(conn)
			_, _, _ = cl.Acquire(acquireParams())
			cl.Close()
			_ = e.a.requestSync(loopCtx)
		}
	}()
	var runErr error
	select {
	case runErr = <-e.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent neither stopped nor failed after agent.db was truncated; logs:\n%s", tail(e.logs.String()))
	}
	close(stop)
	cancelLoop()
	e.ln.Close()
	<-loopDone
	if !errors.Is(runErr, cache.ErrCorrupt) {
		t.Fatalf("Run returned %v, want an error matching cache.ErrCorrupt", runErr)
	}
	if !strings.Contains(e.logs.String(), "cache file was damaged while the agent ran") {
		t.Fatalf("fault not logged:\n%s", tail(e.logs.String()))
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}
