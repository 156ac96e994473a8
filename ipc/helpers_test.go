package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testServer serves cfg on a fresh socket/pipe and returns its path. The
// mux gets withBasics' agent.hello and agent.peer unless it has its own.
func testServer(t testing.TB, cfg ServerConfig) (*Server, string) {
	t.Helper()
	ln, path := testListen(t)
	if cfg.Mux == nil {
		cfg.Mux = NewMux()
	}
	withBasics(cfg.Mux, "test")
	s := NewServer(cfg)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s, path
}

func testDial(t testing.TB, path string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn is a line-level client for protocol tests.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func testRaw(t testing.TB, path string) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialTransport(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReaderSize(c, 1<<20)}
}

func (r *rawConn) send(line string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(line + "\n")); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one message (a response or notification) as a generic map.
func (r *rawConn) recv() map[string]any {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.br.ReadBytes('\n')
	if err != nil {
		r.t.Fatalf("read: %v (got %q)", err, line)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		r.t.Fatalf("bad JSON from server %q: %v", line, err)
	}
	return m
}

func errOf(t testing.TB, m map[string]any) (int, string) {
	t.Helper()
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("expected an error, got %v", m)
	}
	data, _ := e["data"].(map[string]any)
	code, _ := data["code"].(string)
	return int(e["code"].(float64)), code
}

// logBuffer captures slog output.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func fixedPeer(p Peer) func(net.Conn) (Peer, error) {
	return func(net.Conn) (Peer, error) { return p, nil }
}

// within fails the test if ch does not become ready within a generous
// bound; it guards against hangs, it does not time behaviour.
func within[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func testContext(t testing.TB) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}

// withBasics registers, where m has none, an agent.hello answering with
// version and state "ready", and an agent.peer answering with the caller:
// the server has no built-in methods.
func withBasics(m *Mux, version string) *Mux {
	if _, ok := m.lookup(MethodHello); !ok {
		m.Register(MethodHello, PermAny, func(context.Context, json.RawMessage) (any, error) {
			return HelloResult{Protocol: ProtocolVersion, AgentVersion: version, Capabilities: m.Methods(), State: "ready"}, nil
		})
	}
	if _, ok := m.lookup(MethodPeer); !ok {
		m.Register(MethodPeer, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
			p, _ := PeerFromContext(ctx)
			return p, nil
		})
	}
	return m
}
