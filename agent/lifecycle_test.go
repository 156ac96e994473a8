package agent

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// brokenListener fails Accept for good once broken (as accept(2) does on a
// socket whose file was revoked), instead of reporting a clean close.
type brokenListener struct {
	*agenttest.MemListener
	broken atomic.Bool
}

func (l *brokenListener) Accept() (net.Conn, error) {
	c, err := l.MemListener.Accept()
	if err != nil && l.broken.Load() {
		return nil, errors.New("accept: bad file descriptor")
	}
	return c, err
}

func (l *brokenListener) breakNow() {
	l.broken.Store(true)
	l.MemListener.Close()
}

// When serving fails, Run ends with an error (so the daemon exits non-zero
// and the service manager restarts it) after ending the leases; it does not
// keep running without a socket until someone cancels it.
func TestServeErrorEndsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(2)}})
		var bl *brokenListener
		e.listen = func(m *agenttest.MemListener) net.Listener {
			bl = &brokenListener{MemListener: m}
			return bl
		}
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.procs.Spawn(40)
		c := e.dial(agenttest.PeerFor(40))
		defer c.Close()
		if _, _, err := c.Acquire(acquireParams()); err != nil {
			t.Fatal(err)
		}
		bl.breakNow()
		select {
		case err := <-e.done:
			if err == nil || !strings.Contains(err.Error(), "serving") {
				t.Fatalf("Run returned %v, want a serving error", err)
			}
		case <-time.After(time.Hour):
			t.Fatal("Run kept running after serving failed")
		}
		if n := e.liveProcesses(); n != 0 {
			t.Fatalf("%d Keygen processes alive after Run ended", n)
		}
		select {
		case <-c.Done():
		case <-time.After(time.Minute):
			t.Fatal("the app's connection stayed open after Run ended")
		}
	})
}

// An acquire whose spawn is in flight when the shutdown begins: the
// shutdown waits for it and kills its process, and acquires arriving while
// stopping are refused with STOPPING. No Keygen process outlives Run.
func TestAcquireRacingShutdownLeavesNoProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.procs.Spawn(50)
		e.procs.Spawn(51)
		c1 := e.dial(agenttest.PeerFor(50))
		defer c1.Close()
		c2 := e.dial(agenttest.PeerFor(51))
		defer c2.Close()

		release := e.srv.Hold("POST /processes")
		first := make(chan error, 1)
		go func() {
			_, _, err := c1.Acquire(acquireParams())
			first <- err
		}()
		synctest.Wait() // c1's spawn is held by the devserver
		e.cancel()
		e.waitFor("stopping", func() bool { return e.a.stopping.Load() })
		if _, code, err := c2.Acquire(acquireParams()); code != ipc.CodeStopping {
			t.Fatalf("acquire while stopping: code %q err %v, want STOPPING", code, err)
		}
		release()
		if err := <-e.done; err != nil {
			t.Fatalf("Run returned %v", err)
		}
		<-first // granted then ended, or refused: either way no process may remain
		if n := e.liveProcesses(); n != 0 {
			t.Fatalf("%d Keygen processes alive after shutdown: %+v", n, e.srv.Processes())
		}
	})
}

// A spawn still held when the lease budget runs out: Run does not wait for
// it past the budget, and the cancelled request leaves no process behind.
func TestShutdownDoesNotWaitPastItsBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		e.procs.Spawn(60)
		c := e.dial(agenttest.PeerFor(60))
		defer c.Close()
		release := e.srv.Hold("POST /processes")
		defer release()
		first := make(chan string, 1)
		go func() {
			_, code, _ := c.Acquire(acquireParams())
			first <- code
		}()
		synctest.Wait()
		start := time.Now()
		e.cancel()
		if err := <-e.done; err != nil {
			t.Fatalf("Run returned %v", err)
		}
		if d := time.Since(start); d > LeaseStopBudget+time.Second {
			t.Fatalf("shutdown took %v, budget %v", d, LeaseStopBudget)
		}
		if code := <-first; code == "" {
			t.Fatal("the held acquire was granted after the shutdown")
		}
		if n := e.liveProcesses(); n != 0 {
			t.Fatalf("%d Keygen processes alive after shutdown", n)
		}
	})
}

func TestShutdownKillsAllProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		for pid := 80; pid < 84; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
		}
		e.stop()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("processes after shutdown = %d", n)
		}
	})
}
