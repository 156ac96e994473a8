package chaos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// attackMain is one hostile local process (see attack_linux_test.go): with
// CHAOS_ATTACK set, the test binary, started as an unprivileged uid, runs
// attack mode against the agent's socket for CHAOS_SECONDS, then exits.
func attackMain(mode, sock string) int {
	secs, _ := strconv.Atoi(os.Getenv("CHAOS_SECONDS"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(max(secs, 1))*time.Second)
	defer cancel()
	dial := func() net.Conn {
		for ctx.Err() == nil {
			c, err := net.Dial("unix", sock)
			if err == nil {
				go func() { <-ctx.Done(); c.Close() }()
				return c
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	mib := bytes.Repeat([]byte("x"), 1<<20)
	var wg sync.WaitGroup
	switch mode {
	case "unread": // 1 MiB lines with an unknown method, never reading
		line := append(append([]byte(`{"jsonrpc":"2.0","id":1,"method":"`), mib...), []byte("\"}\n")...)
		for c := dial(); c != nil; c = dial() {
			for ctx.Err() == nil {
				if _, err := c.Write(line); err != nil {
					break
				}
			}
		}
	case "slowloris": // 200 connections, each holding an unterminated 1 MiB line
		for range 200 {
			wg.Go(func() {
				if c := dial(); c != nil {
					_, _ = c.Write(mib)
					<-ctx.Done()
				}
			})
		}
	case "waiters": // 8 connections x 64 waiting acquires with 1 MiB metadata
		line := []byte(`{"jsonrpc":"2.0","id":1,"method":"lease.acquire","params":{"wait_ms":600000,"metadata":{"m":"` + string(mib) + `"}}}` + "\n")
		for range 8 {
			wg.Go(func() {
				c := dial()
				if c == nil {
					return
				}
				go func() { _, _ = bufio.NewReader(c).WriteTo(discard{}) }()
				for range 64 {
					if _, err := c.Write(line); err != nil {
						return
					}
				}
				<-ctx.Done()
			})
		}
	case "idle": // 1,030 connections that never send anything
		for range 1030 {
			wg.Go(func() {
				if c := dial(); c != nil {
					<-ctx.Done()
				}
			})
		}
	case "hog": // acquire/release in a loop: spend the request budget
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					c, err := ipc.Dial(ctx, sock)
					if err != nil {
						continue
					}
					for ctx.Err() == nil {
						var r ipc.AcquireResult
						if err := c.Call(ctx, ipc.MethodAcquire, ipc.AcquireParams{App: "hog"}, &r); err != nil {
							break
						}
						_ = c.Call(ctx, ipc.MethodRelease, ipc.ReleaseParams{LeaseID: r.LeaseID}, nil)
					}
					c.Close()
				}
			})
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown attack", mode)
		return 2
	}
	wg.Wait()
	<-ctx.Done()
	return 0
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
