package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener hands out in-memory connections, each with the Peer the
// test chose, so tests can play several users (and run under synctest).
type pipeListener struct {
	ch     chan net.Conn
	peers  sync.Map // server-side net.Conn -> Peer
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// dial connects as p and returns a line client.
func (l *pipeListener) dial(t testing.TB, p Peer) *pipeClient {
	srv, cli := net.Pipe()
	l.peers.Store(srv, p)
	l.ch <- srv
	t.Cleanup(func() { cli.Close() })
	return &pipeClient{t: t, c: cli, br: bufio.NewReader(cli)}
}

func (l *pipeListener) peerFunc(nc net.Conn) (Peer, error) {
	if p, ok := l.peers.Load(nc); ok {
		return p.(Peer), nil
	}
	return Peer{}, errors.New("unknown pipe")
}

type pipeClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// send writes one line from a goroutine (a pipe write blocks until the
// server reads it).
func (p *pipeClient) send(line string) {
	go func() { _, _ = p.c.Write([]byte(line + "\n")) }()
}

// recv reads one line; ok is false if the connection closed first.
func (p *pipeClient) recv() (line string, ok bool) {
	_ = p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := p.br.ReadString('\n')
	return b, err == nil
}

func (p *pipeClient) recvMap() map[string]any {
	p.t.Helper()
	line, ok := p.recv()
	if !ok {
		p.t.Fatalf("connection closed, want a message")
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		p.t.Fatalf("bad JSON %q", line)
	}
	return m
}

func pipeServer(t testing.TB, cfg ServerConfig) (*Server, *pipeListener) {
	l := newPipeListener()
	cfg.PeerFunc = l.peerFunc
	if cfg.Mux == nil {
		cfg.Mux = NewMux()
		cfg.Mux.Register(MethodStatus, PermAny, func(context.Context, json.RawMessage) (any, error) {
			return Status{State: "ready"}, nil
		})
	}
	s := NewServer(cfg)
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return s, l
}

var (
	user1 = Peer{PID: 100, UID: "1000"}
	user2 = Peer{PID: 200, UID: "1001"}
	user3 = Peer{PID: 300, UID: "1002"}
	root  = Peer{PID: 1, UID: "0", Admin: true}
)

const statusLine = `{"jsonrpc":"2.0","id":1,"method":"license.status"}`

// A peer that never reads can make the agent hold at most OutQueueBytes
// (plus the batch being written), whatever the size of each message.
func TestOutQueueBoundedInBytes(t *testing.T) {
	conns := make(chan *Conn, 1)
	_, l := pipeServer(t, ServerConfig{OnConnect: func(c *Conn) { conns <- c }})
	l.dial(t, user1) // never reads
	sc := within(t, conns, "conn")
	payload := map[string]string{"pad": strings.Repeat("x", 16<<10)}
	total := 0
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = sc.Notify(NotifyLicenseChanged, payload)
		total += 16 << 10
	}
	if !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("Notify: %v, want ErrSlowConsumer", err)
	}
	if limit := DefaultOutQueueBytes + 64<<10 + 32<<10; total > limit {
		t.Fatalf("queued %d bytes for a peer that does not read before closing it; want at most %d", total, limit)
	}
}

// An error never echoes more than a few bytes of the caller's own input.
func TestUnknownMethodEchoBounded(t *testing.T) {
	_, l := pipeServer(t, ServerConfig{})
	c := l.dial(t, user1)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"` + strings.Repeat("m", 32<<10) + `"}`)
	line, ok := c.recv()
	if !ok {
		t.Fatal("no answer")
	}
	if len(line) > 1024 {
		t.Fatalf("METHOD_NOT_FOUND answer is %d bytes: it echoes the whole method name", len(line))
	}
	if !strings.Contains(line, "method not found: mmm") {
		t.Fatalf("answer %q", line)
	}
}

// The default line limit fits the protocol: 64 KiB for a user, 1 MiB for an
// admin (license.import carries a machine file).
func TestDefaultLineLimits(t *testing.T) {
	_, l := pipeServer(t, ServerConfig{})
	line := `{"jsonrpc":"2.0","id":1,"method":"no.such","params":{"pad":"` + strings.Repeat("x", 100<<10) + `"}}`

	u := l.dial(t, user1)
	u.send(line)
	m := u.recvMap()
	if _, code := errOf(t, m); code != CodeMessageTooLarge {
		t.Fatalf("user, 100 KiB line: %v, want MESSAGE_TOO_LARGE", m)
	}
	if max := m["error"].(map[string]any)["data"].(map[string]any)["max"]; max != float64(DefaultMaxMessageSize) {
		t.Errorf("max = %v", max)
	}

	a := l.dial(t, root)
	a.send(line)
	if _, code := errOf(t, a.recvMap()); code != CodeMethodNotFound {
		t.Fatalf("admin, 100 KiB line: %s, want METHOD_NOT_FOUND", code)
	}
}

// One user cannot take every connection: per-uid shares, and a reserve only
// admins may use.
func TestConnectionShares(t *testing.T) {
	var logs logBuffer
	_, l := pipeServer(t, ServerConfig{MaxConns: 6, MaxConnsPerUID: 2, AdminReserve: 2, Logger: logs.logger()})
	ok := func(c *pipeClient, who string) {
		t.Helper()
		c.send(statusLine)
		if m := c.recvMap(); m["result"] == nil {
			t.Fatalf("%s refused: %v", who, m)
		}
	}
	refused := func(c *pipeClient, who string) {
		t.Helper()
		m := c.recvMap()
		if _, code := errOf(t, m); code != CodeBusy {
			t.Fatalf("%s: %v, want BUSY", who, m)
		}
		if _, open := c.recv(); open {
			t.Fatalf("%s: connection left open", who)
		}
	}
	a1, a2 := l.dial(t, user1), l.dial(t, user1)
	ok(a1, "user1 #1")
	ok(a2, "user1 #2")
	refused(l.dial(t, user1), "user1 #3 (over its share)")
	b1, b2 := l.dial(t, user2), l.dial(t, user2)
	ok(b1, "user2 #1")
	ok(b2, "user2 #2")
	// 4 user connections = MaxConns - AdminReserve: the rest is root's.
	refused(l.dial(t, user3), "user3 (reserve)")
	ok(l.dial(t, root), "root #1")
	ok(l.dial(t, root), "root #2")
	// A closed connection frees its share.
	a1.c.Close()
	waitFor(t, func() bool {
		c := l.dial(t, user1)
		c.send(statusLine)
		m := c.recvMap()
		return m["result"] != nil
	})
	if n := strings.Count(logs.String(), "refusing connection"); n != 1 {
		t.Errorf("%d refusal WARNs within 10s, want 1 (rate-limited):\n%s", n, logs.String())
	}
}

// waitFor retries cond; it guards against a slow goroutine, not timing.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition never held")
}

// 50 refused connections log one WARN, with the count of those suppressed
// in the next one.
func TestRefusalLogRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logBuffer
		_, l := pipeServer(t, ServerConfig{MaxConns: 1, Logger: logs.logger()})
		hold := l.dial(t, user1)
		hold.send(statusLine)
		hold.recvMap()
		for i := 0; i < 50; i++ {
			c := l.dial(t, user2)
			c.recv()
			c.c.Close()
		}
		if n := strings.Count(logs.String(), "refusing connection"); n != 1 {
			t.Fatalf("%d refusal WARNs for 50 refusals in a burst, want 1", n)
		}
		time.Sleep(11 * time.Second)
		c := l.dial(t, user2)
		c.recv()
		if !strings.Contains(logs.String(), "suppressed=49") {
			t.Fatalf("the next WARN does not count the suppressed ones:\n%s", logs.String())
		}
	})
}

// A connection that never sends a request is closed after IdleTimeout; one
// that did is kept however long it idles (it may hold a lease).
func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, l := pipeServer(t, ServerConfig{IdleTimeout: 5 * time.Second})
		silent := l.dial(t, user1)
		talker := l.dial(t, user2)
		talker.send(statusLine)
		talker.recvMap()
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if n := len(s.Conns()); n != 1 {
			t.Fatalf("%d connections after the idle timeout, want 1 (the silent one closed)", n)
		}
		if _, open := silent.recv(); open {
			t.Fatal("silent connection still open")
		}
		time.Sleep(time.Hour)
		talker.send(statusLine)
		if m := talker.recvMap(); m["result"] == nil {
			t.Fatalf("talker after an hour: %v", m)
		}
	})
}

// One user's requests in flight are bounded over all its connections, so
// it cannot park unbounded waiting calls (lease.acquire with wait_ms).
func TestInFlightSharePerUID(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return struct{}{}, nil
	})
	mux.Register(MethodStatus, PermAny, func(context.Context, json.RawMessage) (any, error) {
		return Status{State: "ready"}, nil
	})
	s, l := pipeServer(t, ServerConfig{Mux: mux, MaxInFlightPerUID: 3})
	a, b := l.dial(t, user1), l.dial(t, user1)
	acquire := `{"jsonrpc":"2.0","id":7,"method":"lease.acquire"}`
	a.send(acquire)
	a.send(acquire)
	b.send(acquire)
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		sh := s.perUID[user1.UID]
		return sh != nil && sh.inflight == 3
	})
	b.send(acquire)
	if _, code := errOf(t, b.recvMap()); code != CodeBusy {
		t.Fatalf("4th request in flight from one uid: %s, want BUSY", code)
	}
	// Another user is not affected.
	c := l.dial(t, user2)
	c.send(statusLine)
	if m := c.recvMap(); m["result"] == nil {
		t.Fatalf("other user: %v", m)
	}
}
