package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestAdminMethodsNeedAdmin(t *testing.T) {
	for _, admin := range []bool{false, true} {
		t.Run(fmt.Sprint("admin=", admin), func(t *testing.T) {
			mux := NewMux()
			mux.Register(MethodLeasesList, PermAdmin, func(ctx context.Context, _ json.RawMessage) (any, error) {
				return LeasesListResult{Leases: []LeaseInfo{}}, nil
			})
			_, path := testServer(t, ServerConfig{Mux: mux, PeerFunc: fixedPeer(Peer{PID: 42, UID: "1000", Admin: admin})})
			c := testDial(t, path)
			var r LeasesListResult
			err := c.Call(t.Context(), MethodLeasesList, nil, &r)
			if admin && err != nil {
				t.Fatalf("admin refused: %v", err)
			}
			if !admin && !IsCode(err, CodePermissionDenied) {
				t.Fatalf("non-admin: got %v, want PERMISSION_DENIED", err)
			}
			if !admin {
				var e *Error
				errors.As(err, &e)
				if e.RPCCode != -32005 {
					t.Errorf("rpc code %d", e.RPCCode)
				}
			}
		})
	}
}

func TestProtocolErrorsKeepServing(t *testing.T) {
	mux := NewMux()
	mux.Register(MethodStatus, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return Status{State: "ready", Valid: true}, nil
	})
	_, path := testServer(t, ServerConfig{Mux: mux, MaxMessageSize: 1024})
	r := testRaw(t, path)
	cases := []struct {
		line    string
		rpc     int
		code    string
		id      any
		msgPart string
	}{
		{`{"jsonrpc":"2.0","id":1,`, -32700, CodeParseError, nil, "not valid JSON"},
		{`hello there`, -32700, CodeParseError, nil, "not valid JSON"},
		{`[{"jsonrpc":"2.0","id":1,"method":"license.status"}]`, -32600, CodeInvalidRequest, nil, "batch"},
		{`"just a string"`, -32600, CodeInvalidRequest, nil, "object"},
		{`{"jsonrpc":"1.0","id":2,"method":"license.status"}`, -32600, CodeInvalidRequest, float64(2), "2.0"},
		{`{"id":3,"method":"license.status"}`, -32600, CodeInvalidRequest, float64(3), "2.0"},
		{`{"jsonrpc":"2.0","id":{"x":1},"method":"license.status"}`, -32600, CodeInvalidRequest, nil, "id"},
		{`{"jsonrpc":"2.0","id":"a","method":""}`, -32600, CodeInvalidRequest, "a", "method"},
		{`{"jsonrpc":"2.0","id":4,"method":"license.status","params":7}`, -32600, CodeInvalidRequest, float64(4), "params"},
		{`{"jsonrpc":"2.0","id":5,"method":"no.such"}`, -32601, CodeMethodNotFound, float64(5), "no.such"},
		{`{"jsonrpc":"2.0","id":6,"method":"agent.hello","params":{"protocol":99}}`, -32009, CodeUnsupportedVersion, float64(6), "99"},
	}
	for _, tc := range cases {
		r.send(tc.line)
		m := r.recv()
		rpc, code := errOf(t, m)
		if rpc != tc.rpc || code != tc.code || m["id"] != tc.id || m["jsonrpc"] != "2.0" {
			t.Errorf("%s: got rpc=%d code=%s id=%v, want %d %s %v", tc.line, rpc, code, m["id"], tc.rpc, tc.code, tc.id)
		}
		if msg := m["error"].(map[string]any)["message"].(string); !strings.Contains(msg, tc.msgPart) {
			t.Errorf("%s: message %q lacks %q", tc.line, msg, tc.msgPart)
		}
	}
	// A blank line and a client notification get no answer; the
	// connection still serves.
	r.send("")
	r.send(`{"jsonrpc":"2.0","method":"license.status"}`)
	r.send(`{"jsonrpc":"2.0","id":"ok","method":"license.status"}`)
	if m := r.recv(); m["id"] != "ok" || m["result"].(map[string]any)["state"] != "ready" {
		t.Fatalf("after errors: %v", m)
	}
	// Oversize: an error, then the connection is closed.
	r.send(`{"jsonrpc":"2.0","id":9,"method":"license.status","params":{"pad":"` + strings.Repeat("x", 2000) + `"}}`)
	m := r.recv()
	if rpc, code := errOf(t, m); rpc != -32600 || code != CodeMessageTooLarge {
		t.Fatalf("oversize: %v", m)
	}
	if _, err := r.br.ReadByte(); err == nil {
		t.Fatal("connection still open after an oversize message")
	}
	// The server is still up.
	c := testDial(t, path)
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestErrorFunnel(t *testing.T) {
	var logs logBuffer
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return nil, &Error{Code: CodeProcessLimitExceeded, Message: "2 of 2 processes in use", Data: map[string]any{"limit": 2, "count": 2}}
	})
	mux.Register(MethodStatus, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return nil, fmt.Errorf("open cache /secret/path: %w", errors.New("boom"))
	})
	mux.Register(MethodCheckout, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		panic("handler bug")
	})
	_, path := testServer(t, ServerConfig{Mux: mux, Logger: logs.logger()})
	c := testDial(t, path)
	_, err := c.Acquire(t.Context(), AcquireParams{})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeProcessLimitExceeded || e.RPCCode != -32001 {
		t.Fatalf("got %#v", err)
	}
	if n, ok := e.DataInt("limit"); !ok || n != 2 {
		t.Errorf("limit = %d %v", n, ok)
	}
	if !errors.Is(err, &Error{Code: CodeProcessLimitExceeded}) {
		t.Error("errors.Is by code failed")
	}
	_, err = c.Status(t.Context())
	if !IsCode(err, CodeInternal) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("internal error leaked or wrong: %v", err)
	}
	if n := strings.Count(logs.String(), "/secret/path"); n != 1 {
		t.Errorf("internal error logged %d times, want once:\n%s", n, logs.String())
	}
	if err := c.Call(t.Context(), MethodCheckout, nil, nil); !IsCode(err, CodeInternal) {
		t.Fatalf("panic: %v", err)
	}
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatalf("server down after a handler panic: %v", err)
	}
}

func TestConcurrentRequestsOnOneConn(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	mux := NewMux()
	mux.Register(MethodStatus, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-release
		return Status{State: "slow"}, nil
	})
	_, path := testServer(t, ServerConfig{Mux: mux})
	r := testRaw(t, path)
	r.send(`{"jsonrpc":"2.0","id":1,"method":"license.status"}`)
	within(t, started, "slow handler")
	r.send(`{"jsonrpc":"2.0","id":2,"method":"agent.hello","params":{"protocol":1}}`)
	if m := r.recv(); m["id"] != float64(2) {
		t.Fatalf("the fast request did not overtake the slow one: %v", m)
	}
	close(release)
	if m := r.recv(); m["id"] != float64(1) {
		t.Fatalf("got %v", m)
	}
}

func TestCloseCancelsHandlerContext(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	closed := make(chan uint64, 1)
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return nil, ctx.Err()
	})
	_, path := testServer(t, ServerConfig{Mux: mux, OnClose: func(c *Conn) {
		select {
		case <-c.Context().Done():
		default:
			t.Error("OnClose before the context was cancelled")
		}
		closed <- c.ID()
	}})
	r := testRaw(t, path)
	r.send(`{"jsonrpc":"2.0","id":1,"method":"lease.acquire","params":{"wait_ms":600000}}`)
	within(t, started, "handler start")
	r.c.Close()
	if err := within(t, cancelled, "handler ctx cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("ctx err %v", err)
	}
	within(t, closed, "OnClose")
}

func TestSlowReaderDoesNotBlockOthers(t *testing.T) {
	var logs logBuffer
	conns := make(chan *Conn, 2)
	mux := NewMux()
	mux.Register(MethodStatus, PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return Status{State: "ready"}, nil
	})
	s, path := testServer(t, ServerConfig{Mux: mux, OutQueue: 4, Logger: logs.logger(), OnConnect: func(c *Conn) { conns <- c }})
	stuck := testRaw(t, path) // never reads
	_ = stuck
	sc := within(t, conns, "stuck conn")
	big := map[string]string{"pad": strings.Repeat("x", 256<<10)}
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = sc.Notify(NotifyLicenseChanged, big)
	}
	if !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("Notify to a peer that does not read: %v, want ErrSlowConsumer", err)
	}
	within(t, sc.Done(), "slow conn closed")
	// Another client is served normally.
	c := testDial(t, path)
	within(t, conns, "second conn")
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "not reading") {
		t.Errorf("slow consumer not logged: %s", logs.String())
	}
	// The slow connection's Done fires before the server drops it from
	// its set; wait for that rather than race it.
	waitFor(t, func() bool { return len(s.Conns()) == 1 })
}

func TestMaxConns(t *testing.T) {
	conns := make(chan *Conn, 2)
	_, path := testServer(t, ServerConfig{MaxConns: 1, OnConnect: func(c *Conn) { conns <- c }})
	testDial(t, path)
	within(t, conns, "first conn")
	r := testRaw(t, path)
	if _, code := errOf(t, r.recv()); code != CodeBusy {
		t.Fatalf("second conn: %s", code)
	}
}

// A connection refused after its peer is known (the uid's share is used
// up) reads BUSY too. Over a Windows pipe the client's blank line is
// still unread here (PeerFunc: no impersonation read), which is what lost
// the answer when the server wrote it before reading (issue 17).
func TestPerUIDRefusalReadsBusy(t *testing.T) {
	conns := make(chan *Conn, 2)
	_, path := testServer(t, ServerConfig{MaxConnsPerUID: 1, OnConnect: func(c *Conn) { conns <- c },
		PeerFunc: func(net.Conn) (Peer, error) { return Peer{UID: "1000", PID: 1}, nil }})
	testDial(t, path)
	within(t, conns, "first conn")
	r := testRaw(t, path)
	if _, code := errOf(t, r.recv()); code != CodeBusy {
		t.Fatalf("second conn of the uid: %s", code)
	}
}

func TestHelloAndNotifications(t *testing.T) {
	conns := make(chan *Conn, 1)
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, p json.RawMessage) (any, error) {
		var ap AcquireParams
		if err := json.Unmarshal(p, &ap); err != nil {
			return nil, Errorf(CodeInvalidRequest, "params: %v", err)
		}
		if ap.App != "app" || ap.AppVersion != "1.2" {
			return nil, Errorf(CodeInvalidRequest, "app %q %q", ap.App, ap.AppVersion)
		}
		return AcquireResult{LeaseID: "L1", ProcessID: "P1", Entitlements: []string{"PRO"}, HeartbeatInterval: 600}, nil
	})
	_, path := testServer(t, ServerConfig{Mux: withBasics(mux, "9.9"), OnConnect: func(c *Conn) { conns <- c }})
	c, err := DialOptions(t.Context(), ClientOptions{Path: path, App: "app", AppVersion: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := within(t, conns, "conn")
	h, err := c.Hello(t.Context())
	if err != nil || h.Protocol != ProtocolVersion || h.AgentVersion != "9.9" || h.State != "ready" {
		t.Fatalf("hello %+v %v", h, err)
	}
	if sc.Protocol() != ProtocolVersion {
		t.Errorf("negotiated %d", sc.Protocol())
	}
	l, err := c.Acquire(t.Context(), AcquireParams{})
	if err != nil {
		t.Fatal(err)
	}
	if l.ID != "L1" || l.Entitlements[0] != "PRO" {
		t.Fatalf("%+v", l)
	}
	if err := sc.Notify(NotifyLicenseChanged, map[string]any{"valid": false}); err != nil {
		t.Fatal(err)
	}
	if n := within(t, c.Notifications(), "license.changed"); n.Method != NotifyLicenseChanged {
		t.Fatalf("%+v", n)
	}
	if err := sc.Notify(NotifyLeaseRevoked, LeaseRevoked{LeaseID: "L1", Reason: "suspended", Code: CodeLicenseInvalid}); err != nil {
		t.Fatal(err)
	}
	rv := within(t, l.Revoked(), "lease.revoked")
	if rv.LeaseID != "L1" || rv.Code != CodeLicenseInvalid {
		t.Fatalf("%+v", rv)
	}
	if _, ok := <-l.Revoked(); ok {
		t.Error("Revoked not closed after the revocation")
	}
}

func TestClientReconnectReacquires(t *testing.T) {
	n := 0
	newMux := func(prefix string) *Mux {
		mux := NewMux()
		mux.Register(MethodAcquire, PermAny, func(ctx context.Context, p json.RawMessage) (any, error) {
			var ap AcquireParams
			_ = json.Unmarshal(p, &ap)
			if ap.App != "app" {
				return nil, Errorf(CodeInvalidRequest, "app %q", ap.App)
			}
			return AcquireResult{LeaseID: prefix, Entitlements: []string{"E"}}, nil
		})
		return mux
	}
	ln, path := testListen(t)
	s1 := NewServer(ServerConfig{Mux: withBasics(newMux("first"), "test")})
	go s1.Serve(ln)
	reconnected := make(chan struct{}, 1)
	c, err := DialOptions(t.Context(), ClientOptions{Path: path, Reconnect: true, Backoff: Backoff{Initial: 5 * 1e6, Max: 20 * 1e6},
		OnReconnect: func() { reconnected <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Acquire(t.Context(), AcquireParams{App: "app"})
	if err != nil {
		t.Fatal(err)
	}
	s1.Close() // the agent "restarts"
	ln2 := relisten(t, path)
	s2 := NewServer(ServerConfig{Mux: withBasics(newMux("second"), "test")})
	go s2.Serve(ln2)
	defer s2.Close()
	within(t, reconnected, "reconnect")
	if cur := l.Current(); cur.LeaseID != "second" || l.ID != "first" {
		t.Fatalf("lease after reconnect: %+v (first %s)", cur, l.ID)
	}
	_ = n
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestClientWithoutReconnectLosesLease(t *testing.T) {
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, p json.RawMessage) (any, error) {
		return AcquireResult{LeaseID: "L"}, nil
	})
	s, path := testServer(t, ServerConfig{Mux: mux})
	c := testDial(t, path)
	l, err := c.Acquire(t.Context(), AcquireParams{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if r := within(t, l.Revoked(), "revocation on disconnect"); r.Code != CodeUnavailable {
		t.Fatalf("%+v", r)
	}
	if err := c.Call(t.Context(), MethodHello, nil, nil); !IsCode(err, CodeUnavailable) {
		t.Fatalf("call after disconnect: %v", err)
	}
}

func TestMuxDuplicatePanics(t *testing.T) {
	m := NewMux()
	h := func(context.Context, json.RawMessage) (any, error) { return nil, nil }
	m.Register("a", PermAny, h)
	defer func() {
		if recover() == nil {
			t.Fatal("duplicate Register did not panic")
		}
	}()
	m.Register("a", PermAny, h)
}

// The server has no methods of its own: agent.hello and agent.peer are
// answered only by the mux's owner (the agent), so there is one answer.
func TestServerHasNoBuiltinMethods(t *testing.T) {
	ln, path := testListen(t)
	s := NewServer(ServerConfig{Mux: NewMux()})
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c := testDial(t, path)
	for _, m := range []string{MethodHello, MethodPeer} {
		if err := c.Call(t.Context(), m, nil, nil); !IsCode(err, CodeMethodNotFound) {
			t.Errorf("%s: %v, want METHOD_NOT_FOUND", m, err)
		}
	}
}

func TestDialNoAgent(t *testing.T) {
	_, path := testListen(t)
	_ = path
	_, err := Dial(t.Context(), path+"-missing")
	if !IsCode(err, CodeUnavailable) {
		t.Fatalf("got %v", err)
	}
	var _ net.Listener
}
