package agent

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
)

func tableLease(id string, pid int) *lease {
	return &lease{id: id, pid: pid, start: 1, conns: map[uint64]*ipc.Conn{}}
}

// Waiters get freed seats first come first served; a seat given back by
// cancel goes to the next waiter; a waiter whose wait ends leaves the queue.
func TestLeaseTableSeatsFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := newLeaseTable()
		limit := 1
		s, err := tb.reserve(t.Context(), &limit, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		l0 := tableLease("l0", 1)
		if err := s.commit(l0); err != nil {
			t.Fatal(err)
		}
		var lr *limitReached
		if _, err := tb.reserve(t.Context(), &limit, 100, false); !errors.As(err, &lr) || lr.waited || lr.used != 1 {
			t.Fatalf("full table without wait: %v", err)
		}
		order := make(chan int, 3)
		seats := make(chan *seat, 3)
		for i := range 3 {
			ctx := t.Context()
			if i == 1 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Second)
				defer cancel()
			}
			go func() {
				s, err := tb.reserve(ctx, &limit, 100, true)
				if err != nil {
					if i != 1 || !errors.As(err, &lr) || !lr.waited {
						t.Errorf("waiter %d: %v", i, err)
					}
					return
				}
				order <- i
				seats <- s
			}()
			synctest.Wait()
		}
		time.Sleep(2 * time.Second) // waiter 1 gives up
		tb.remove(l0)
		synctest.Wait()
		if got := <-order; got != 0 {
			t.Fatalf("first seat went to waiter %d", got)
		}
		if tb.used() != 1 {
			t.Fatalf("used = %d with one handed-over seat", tb.used())
		}
		(<-seats).cancel()
		synctest.Wait()
		if got := <-order; got != 2 {
			t.Fatalf("cancelled seat went to waiter %d", got)
		}
		s2 := <-seats
		if err := s2.commit(tableLease("l2", 2)); err != nil {
			t.Fatal(err)
		}
		s2.cancel() // after commit: nothing
		if tb.used() != 1 || tb.count() != 1 {
			t.Fatalf("used %d count %d", tb.used(), tb.count())
		}
	})
}

// Shutdown: close wakes the waiters with errStopping and refuses new seats;
// drain waits for the seat in flight, returns its lease, and refuses
// commits after it.
func TestLeaseTableCloseAndDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := newLeaseTable()
		limit := 2
		inFlight, _ := tb.reserve(t.Context(), &limit, 100, false)
		late, _ := tb.reserve(t.Context(), &limit, 100, false)
		waited := make(chan error, 1)
		go func() {
			_, err := tb.reserve(t.Context(), &limit, 100, true)
			waited <- err
		}()
		synctest.Wait()
		tb.close()
		if err := <-waited; !errors.Is(err, errStopping) {
			t.Fatalf("waiter at close: %v", err)
		}
		if _, err := tb.reserve(t.Context(), &limit, 100, false); !errors.Is(err, errStopping) {
			t.Fatalf("reserve after close: %v", err)
		}
		drained := make(chan []leaseProc, 1)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		go func() { drained <- tb.drain(ctx) }()
		synctest.Wait()
		if err := inFlight.commit(tableLease("a", 1)); err != nil {
			t.Fatalf("commit before drain: %v", err)
		}
		synctest.Wait()
		select {
		case <-drained:
			t.Fatal("drain returned with a seat still in flight")
		default:
		}
		time.Sleep(time.Minute) // the late spawn outlives the budget
		lps := <-drained
		if len(lps) != 1 || lps[0].leaseID != "a" {
			t.Fatalf("drained %+v", lps)
		}
		if err := late.commit(tableLease("b", 2)); !errors.Is(err, errStopping) {
			t.Fatalf("commit after drain: %v", err)
		}
		if tb.count() != 0 || tb.used() != 0 {
			t.Fatalf("count %d used %d after drain", tb.count(), tb.used())
		}
	})
}

// agent.hello is the agent's: its capabilities are the methods it serves.
func TestHelloListsServedMethods(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{})
		c := e.dial(agenttest.PeerFor(7))
		defer c.Close()
		var h ipc.HelloResult
		if _, err := c.Call(ipc.MethodHello, ipc.HelloParams{Protocol: ipc.ProtocolVersion}, &h); err != nil {
			t.Fatal(err)
		}
		if len(h.Capabilities) != len(ipc.Methods) || h.State != string(StateActive) || h.AgentVersion != Version {
			t.Fatalf("hello = %+v", h)
		}
		for i, m := range h.Capabilities {
			if i > 0 && h.Capabilities[i-1] >= m {
				t.Fatalf("capabilities not sorted: %v", h.Capabilities)
			}
		}
	})
}
