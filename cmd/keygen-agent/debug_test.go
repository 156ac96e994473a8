//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// verbOutBuffer is a bytes.Buffer safe for a concurrent reader.
type verbOutBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *verbOutBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *verbOutBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func fakeAgent(t *testing.T) (string, chan *ipc.Conn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	ln, err := ipc.Listen(path, ipc.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mux := ipc.NewMux()
	mux.Register(ipc.MethodPeer, ipc.PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		p, _ := ipc.PeerFromContext(ctx)
		return p, nil
	})
	mux.Register(ipc.MethodAcquire, ipc.PermAny, func(ctx context.Context, p json.RawMessage) (any, error) {
		return ipc.AcquireResult{LeaseID: "L1", ProcessID: "P1", Entitlements: []string{"PRO"}}, nil
	})
	mux.Register(ipc.MethodLeasesList, ipc.PermAdmin, func(ctx context.Context, p json.RawMessage) (any, error) {
		return ipc.LeasesListResult{}, nil
	})
	conns := make(chan *ipc.Conn, 4)
	s := ipc.NewServer(ipc.ServerConfig{Mux: mux, OnConnect: func(c *ipc.Conn) { conns <- c },
		PeerFunc: func(nc net.Conn) (ipc.Peer, error) { return ipc.Peer{PID: os.Getpid(), UID: "1000"}, nil }})
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return path, conns
}

func runVerb(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb verbOutBuffer
	code := run(ctx, args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDebugVerb(t *testing.T) {
	path, _ := fakeAgent(t)
	code, out, _ := runVerb(t, t.Context(), "debug", "--socket", path, "peer")
	if code != exitOK || !strings.Contains(out, "pid:        "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("peer: %d %q", code, out)
	}
	code, out, _ = runVerb(t, t.Context(), "debug", "--socket", path, "call", "lease.acquire", `{"app":"x"}`)
	if code != exitOK || !strings.Contains(out, `"lease_id": "L1"`) {
		t.Fatalf("call: %d %q", code, out)
	}
	code, out, errs := runVerb(t, t.Context(), "debug", "--socket", path, "call", "leases.list")
	if code != exitDenied || !strings.Contains(out, "PERMISSION_DENIED") || !strings.Contains(errs, "administrator") {
		t.Fatalf("admin call: %d %q %q", code, out, errs)
	}
	if code, _, _ := runVerb(t, t.Context(), "debug", "--socket", path, "call", "x", "{bad"); code != exitUsage {
		t.Fatalf("bad JSON: %d", code)
	}
	if code, _, errs := runVerb(t, t.Context(), "debug", "--socket", path+"-none", "peer"); code != exitUnavailable || !strings.Contains(errs, "cannot reach") {
		t.Fatalf("no agent: %d %q", code, errs)
	}
}

func TestLeaseVerb(t *testing.T) {
	path, conns := fakeAgent(t)
	done := make(chan int, 1)
	var out verbOutBuffer
	go func() {
		done <- run(t.Context(), []string{"lease", "--socket", path, "--json", "--app", "demo"}, strings.NewReader(""), &out, &verbOutBuffer{})
	}()
	var c *ipc.Conn
	select {
	case c = <-conns:
	case <-time.After(10 * time.Second):
		t.Fatal("lease verb did not connect")
	}
	// Wait for the acquired event before revoking (the verb prints it).
	for !strings.Contains(out.String(), `"event":"acquired"`) {
		select {
		case code := <-done:
			t.Fatalf("lease exited early: %d %s", code, out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := c.Notify(ipc.NotifyLeaseRevoked, ipc.LeaseRevoked{LeaseID: "L1", Reason: "test", Code: ipc.CodeLicenseInvalid}); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != exitDenied || !strings.Contains(out.String(), `"entitlements":["PRO"]`) || !strings.Contains(out.String(), `"event":"revoked"`) {
			t.Fatalf("%d %s", code, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lease verb did not exit on revocation")
	}
}
