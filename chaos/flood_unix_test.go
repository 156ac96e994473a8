//go:build unix

package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// A flood of malformed and oversize messages from many clients on a real
// Unix socket, while well-behaved clients (the Go client library) keep
// acquiring, asking for status and releasing: every well-behaved call is
// answered correctly, the limit holds, and the server ends with exactly
// the leases still held.
func TestIPCFloodKeepsServingWellBehavedClients(t *testing.T) {
	dir, err := os.MkdirTemp("", "kgaf")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "a.sock")
	const limit = 8
	e := startEnv(t, Options{Policy: devserver.PolicySpec{MaxProcesses: intp(limit)}, Socket: sock,
		NoRateLimit: true, MaxMessageSize: 64 << 10,
		Config: agentConfigNoBudget()})
	mon := e.StartMonitor(5 * time.Millisecond)
	defer mon.Stop() // idempotent; also on t.Fatal, so no goroutine outlives the bubble

	attacks := [][]byte{
		[]byte("not json at all\n"),
		[]byte("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n"),
		[]byte("[1,2,3]\n"),
		[]byte("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.hello\"}]\n"),
		[]byte("{\"jsonrpc\":\"1.0\",\"id\":{},\"method\":\"license.status\"}\n"),
		[]byte("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"leases.release\",\"params\":{\"lease_id\":\"x\"}}\n"),
		[]byte("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"lease.acquire\",\"params\":[\"bad\"]}\n"),
		[]byte("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"nope\"}\n"),
		append(bytes.Repeat([]byte("["), 100_000), '\n'),
		{0xff, 0xfe, 0x00, 0x01, '\n'},
		append([]byte("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.hello\",\"params\":\""), append(bytes.Repeat([]byte("A"), 200<<10), []byte("\"}\n")...)...),
		bytes.Repeat([]byte("B"), 300<<10), // oversize, no newline at all
	}
	stop := make(chan struct{})
	var attackers sync.WaitGroup
	for i := range 40 {
		attackers.Go(func() {
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.Dial("unix", sock)
				if err != nil {
					continue // BUSY / too many connections is fair
				}
				_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
				for j := range 4 {
					if _, err := conn.Write(attacks[(i+round+j)%len(attacks)]); err != nil {
						break
					}
				}
				if round%3 == 0 {
					// Half a message, then vanish.
					_, _ = conn.Write([]byte(`{"jsonrpc":"2.0","id":1,"meth`))
				}
				conn.Close()
			}
		})
	}

	// Well-behaved clients: each is its own app (the listener gives every
	// connection a distinct synthetic peer).
	const good, rounds = 6, 25
	errs := make(chan error, good)
	var wg sync.WaitGroup
	for g := range good {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for r := range rounds {
				c, err := ipc.Dial(ctx, sock)
				if err != nil {
					errs <- fmt.Errorf("client %d round %d: dial: %v", g, r, err)
					return
				}
				if _, err := c.Hello(ctx); err != nil {
					errs <- fmt.Errorf("client %d round %d: hello: %v", g, r, err)
					c.Close()
					return
				}
				l, err := c.Acquire(ctx, ipc.AcquireParams{})
				if err != nil {
					errs <- fmt.Errorf("client %d round %d: acquire: %v", g, r, err)
					c.Close()
					return
				}
				st, err := c.Status(ctx)
				if err != nil || !st.Valid {
					errs <- fmt.Errorf("client %d round %d: status: %v %+v", g, r, err, st)
					c.Close()
					return
				}
				if err := l.Release(ctx); err != nil {
					errs <- fmt.Errorf("client %d round %d: release: %v", g, r, err)
					c.Close()
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(stop)
	attackers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// One app still holds a lease at the end.
	c, err := ipc.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Acquire(context.Background(), ipc.AcquireParams{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "server matches the one live lease", 10*time.Second, func() error {
		ps := e.Srv.Processes()
		if len(ps) != 1 || ps[0].Metadata["leaseId"] != l.ID {
			return fmt.Errorf("server processes: %d", len(ps))
		}
		return nil
	})
	checkLimit(t, mon, limit)
	noPanics(t, e)
}
