package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// EnvSocket names the environment variable that overrides the default
// socket or pipe path for clients.
const EnvSocket = "KEYGEN_AGENT_SOCKET"

// ErrClientClosed is returned by calls on a closed [Client].
var ErrClientClosed = errors.New("ipc: client closed")

// Backoff bounds the delay between reconnect attempts (with jitter).
type Backoff struct {
	Initial time.Duration // default 100ms
	Max     time.Duration // default 5s
}

// ClientOptions configures [DialOptions].
type ClientOptions struct {
	// Path is the socket or pipe; "" means $KEYGEN_AGENT_SOCKET, else
	// [DefaultSocketPath].
	Path string
	// Reconnect makes the client redial with backoff when the connection
	// drops, then re-acquire every lease it holds. Without it a dropped
	// connection revokes the leases (code UNAVAILABLE).
	Reconnect bool
	Backoff   Backoff
	// App and AppVersion fill AcquireParams left empty and identify the
	// client in agent.hello.
	App, AppVersion string
	Logger          *slog.Logger
	// OnVersionMismatch is called when agent.hello reports a protocol
	// other than [ProtocolVersion].
	OnVersionMismatch func(HelloResult)
	// OnReconnect is called after a reconnect, once leases were re-acquired.
	OnReconnect func()
	// Verify, when set, makes Acquire ask for confirmed evidence and check
	// it with [VerifyLease] before returning the lease: a lease that does
	// not verify is released and its *leaseverify.Error returned. Set at
	// least PublicKey and Fingerprints (or Components).
	Verify *leaseverify.Options
	// ServerUsers lists further accounts (uid numbers on unix, SIDs on
	// Windows) the agent may run as. By default a client talks only to an
	// agent running as root (LocalSystem) or as the client's own user, and
	// refuses any other with [ErrUntrustedServer] before sending anything.
	ServerUsers []string
}

// Client is an app's connection to the agent. It is safe for concurrent
// use; requests may be in flight concurrently.
//
// API maturity: stable.
type Client struct {
	opts  ClientOptions
	path  string
	trust serverTrust
	log   *slog.Logger

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	conn    net.Conn
	down    chan struct{} // closed when conn's reader exits
	pending map[uint64]chan *wireResponse
	nextID  uint64
	leases  map[*Lease]struct{}
	closed  bool
	notes   chan Notification
	done    chan struct{}
}

// Dial connects to the agent at path ("" = $KEYGEN_AGENT_SOCKET or
// [DefaultSocketPath]) without reconnecting.
//
// API maturity: stable.
func Dial(ctx context.Context, path string) (*Client, error) {
	return DialOptions(ctx, ClientOptions{Path: path})
}

// DialOptions connects to the agent. The first dial is not retried: a
// missing agent fails at once with code UNAVAILABLE.
//
// API maturity: stable.
func DialOptions(ctx context.Context, o ClientOptions) (*Client, error) {
	path := o.Path
	if path == "" {
		path = os.Getenv(EnvSocket)
	}
	if path == "" {
		path = DefaultSocketPath()
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = 100 * time.Millisecond
	}
	if o.Backoff.Max < o.Backoff.Initial {
		o.Backoff.Max = max(5*time.Second, o.Backoff.Initial)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	trust := defaultTrust(o.ServerUsers)
	conn, err := dialVerified(ctx, path, trust)
	if err != nil {
		e := &Error{Code: CodeUnavailable, Message: fmt.Sprintf("cannot reach the agent at %s: %v", path, err)}
		if errors.Is(err, ErrUntrustedServer) {
			return nil, causedError{e, err}
		}
		return nil, e
	}
	c := &Client{opts: o, path: path, trust: trust, log: o.Logger.With("component", "ipc-client"),
		pending: map[uint64]chan *wireResponse{}, leases: map[*Lease]struct{}{},
		notes: make(chan Notification, 64), done: make(chan struct{})}
	c.attach(conn)
	return c, nil
}

// causedError is an *Error that also unwraps to its cause, so callers may
// test for [ErrUntrustedServer] with errors.Is and for the code with
// [IsCode].
type causedError struct {
	err   *Error
	cause error
}

func (e causedError) Error() string   { return e.err.Error() }
func (e causedError) Unwrap() []error { return []error{e.err, e.cause} }

// dialVerified connects and checks who serves the other end before the
// connection is used.
func dialVerified(ctx context.Context, path string, t serverTrust) (net.Conn, error) {
	conn, err := dialTransport(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := verifyServer(conn, t); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Path returns the socket or pipe the client dials.
func (c *Client) Path() string { return c.path }

func (c *Client) attach(conn net.Conn) {
	c.mu.Lock()
	c.conn = conn
	c.down = make(chan struct{})
	down := c.down
	c.mu.Unlock()
	go c.readLoop(conn, down)
}

func unavailable(msg string) *Error { return &Error{Code: CodeUnavailable, Message: msg} }

// Call sends one request and decodes its result into result (if not nil).
// An error answer is returned as an *[Error]; a lost connection as an
// *Error with code UNAVAILABLE.
//
// API maturity: stable.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	var raw json.RawMessage
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("marshal %s params: %w", method, err)
		}
		raw = b
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClientClosed
	}
	conn, down := c.conn, c.down
	if conn == nil {
		c.mu.Unlock()
		return unavailable("not connected to the agent (reconnecting)")
	}
	c.nextID++
	id := c.nextID
	ch := make(chan *wireResponse, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	line, err := encodeLine(wireRequest{JSONRPC: "2.0", ID: json.RawMessage(strconv.FormatUint(id, 10)), Method: method, Params: raw})
	if err != nil {
		forget()
		return err
	}
	c.wmu.Lock()
	dl, _ := ctx.Deadline()
	_ = conn.SetWriteDeadline(dl)
	_, err = conn.Write(line)
	c.wmu.Unlock()
	if err != nil {
		forget()
		conn.Close()
		return unavailable("write to the agent: " + err.Error())
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return decodeError(r.Error)
		}
		if result != nil {
			if err := json.Unmarshal(r.Result, result); err != nil {
				return fmt.Errorf("decode %s result: %w", method, err)
			}
		}
		return nil
	case <-down:
		forget()
		return unavailable("connection to the agent lost")
	case <-ctx.Done():
		forget()
		return ctx.Err()
	}
}

func (c *Client) readLoop(conn net.Conn, down chan struct{}) {
	fr := newFrameReader(conn, 64<<20)
	for {
		line, err := fr.next()
		if err != nil {
			break
		}
		var r wireResponse
		if err := json.Unmarshal(line, &r); err != nil {
			c.log.Warn("undecodable message from the agent", "err", err)
			continue
		}
		if r.Method != "" && len(r.ID) == 0 {
			c.dispatch(Notification{Method: r.Method, Params: r.Params})
			continue
		}
		id, err := strconv.ParseUint(string(r.ID), 10, 64)
		if err != nil {
			if r.Error != nil {
				c.log.Warn("agent error without request id", "code", decodeError(r.Error).Code, "message", r.Error.Message)
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- &r
		}
	}
	conn.Close()
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	close(down)
	closed := c.closed
	var lost []*Lease
	if !closed && !c.opts.Reconnect {
		for l := range c.leases {
			lost = append(lost, l)
		}
		clear(c.leases)
	}
	c.mu.Unlock()
	for _, l := range lost {
		l.revoke(LeaseRevoked{LeaseID: l.Current().LeaseID, Reason: "connection to the agent lost", Code: CodeUnavailable})
	}
	if !closed && c.opts.Reconnect {
		c.reconnect()
	}
}

func (c *Client) dispatch(n Notification) {
	if n.Method == NotifyLeaseRevoked {
		var r LeaseRevoked
		if json.Unmarshal(n.Params, &r) == nil {
			c.mu.Lock()
			var hit *Lease
			for l := range c.leases {
				if l.Current().LeaseID == r.LeaseID {
					hit = l
					delete(c.leases, l)
					break
				}
			}
			c.mu.Unlock()
			if hit != nil {
				hit.revoke(r)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case c.notes <- n:
	default:
		c.log.Warn("notification dropped: Notifications() is not drained", "method", n.Method)
	}
}

// reconnect redials with jittered exponential backoff until it succeeds
// or the client is closed, then re-acquires the held leases.
func (c *Client) reconnect() {
	delay := c.opts.Backoff.Initial
	for {
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-c.done:
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := dialVerified(ctx, c.path, c.trust)
		cancel()
		if err != nil {
			if errors.Is(err, ErrUntrustedServer) {
				c.log.Error("refusing the process now serving the agent's socket", "path", c.path, "err", err)
			}
			delay = min(2*delay, c.opts.Backoff.Max)
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			conn.Close()
			return
		}
		leases := make([]*Lease, 0, len(c.leases))
		for l := range c.leases {
			leases = append(leases, l)
		}
		c.mu.Unlock()
		c.attach(conn)
		c.log.Info("reconnected to the agent", "path", c.path, "leases", len(leases))
		for _, l := range leases {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var res AcquireResult
			err := c.Call(ctx, MethodAcquire, l.params, &res)
			for IsCode(err, CodeStarting) && ctx.Err() == nil { // a restarted agent answers before it is ready
				time.Sleep(50 * time.Millisecond)
				err = c.Call(ctx, MethodAcquire, l.params, &res)
			}
			cancel()
			switch {
			case err == nil:
				l.update(res)
			case IsCode(err, CodeUnavailable), errors.Is(err, ErrClientClosed):
				return // the reader of the new connection reconnects again
			default:
				c.mu.Lock()
				delete(c.leases, l)
				c.mu.Unlock()
				code := CodeInternal
				var e *Error
				if errors.As(err, &e) {
					code = e.Code
				}
				l.revoke(LeaseRevoked{LeaseID: l.Current().LeaseID, Reason: "could not re-acquire after reconnecting: " + err.Error(), Code: code})
			}
		}
		if c.opts.OnReconnect != nil {
			c.opts.OnReconnect()
		}
		return
	}
}

// Notifications returns every notification the agent sends (license.changed,
// lease.revoked, ...). The channel is buffered; notifications that find it
// full are dropped. It is closed by [Client.Close].
//
// API maturity: stable.
func (c *Client) Notifications() <-chan Notification { return c.notes }

// Close closes the connection (the agent releases this client's leases)
// and stops reconnecting.
//
// API maturity: stable.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	close(c.notes)
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		return conn.Close()
	}
	return nil
}

// Hello negotiates the protocol version.
//
// API maturity: stable.
func (c *Client) Hello(ctx context.Context) (*HelloResult, error) {
	name := "keygen-agent-go"
	if c.opts.App != "" {
		name = c.opts.App
		if c.opts.AppVersion != "" {
			name += "/" + c.opts.AppVersion
		}
	}
	var r HelloResult
	if err := c.Call(ctx, MethodHello, HelloParams{Protocol: ProtocolVersion, Client: name}, &r); err != nil {
		return nil, err
	}
	if r.Protocol != ProtocolVersion && c.opts.OnVersionMismatch != nil {
		c.opts.OnVersionMismatch(r)
	}
	return &r, nil
}

// Use records count uses of the license (license.use): Keygen's metered
// usage, limited by the policy's maxUses. A negative count takes uses
// back. Past the limit the error's code is [CodeUsesExceeded].
//
// API maturity: stable.
func (c *Client) Use(ctx context.Context, count int) (*UseResult, error) {
	var r UseResult
	if err := c.Call(ctx, MethodUse, UseParams{Count: count}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Status returns the license status.
//
// API maturity: stable.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.Call(ctx, MethodStatus, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Peer returns what the agent sees of this client (agent.peer).
func (c *Client) Peer(ctx context.Context) (*Peer, error) {
	var p Peer
	if err := c.Call(ctx, MethodPeer, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Acquire asks for a lease. The lease lives as long as this client's
// connection; with Reconnect it is re-acquired after the agent restarts.
//
// API maturity: stable.
func (c *Client) Acquire(ctx context.Context, p AcquireParams) (*Lease, error) {
	if p.App == "" {
		p.App = c.opts.App
	}
	if p.AppVersion == "" {
		p.AppVersion = c.opts.AppVersion
	}
	if c.opts.Verify != nil {
		p.Confirm = true
	}
	var r AcquireResult
	if err := c.Call(ctx, MethodAcquire, p, &r); err != nil {
		return nil, err
	}
	if c.opts.Verify != nil {
		if _, err := VerifyLease(&r, *c.opts.Verify); err != nil {
			if r.LeaseID != "" {
				_ = c.Call(ctx, MethodRelease, ReleaseParams{LeaseID: r.LeaseID}, nil)
			}
			return nil, err
		}
	}
	l := &Lease{ID: r.LeaseID, ProcessID: r.ProcessID, Entitlements: r.Entitlements,
		HeartbeatInterval: r.HeartbeatInterval, Offline: r.Offline,
		c: c, params: p, cur: r, revoked: make(chan LeaseRevoked, 1)}
	c.mu.Lock()
	c.leases[l] = struct{}{}
	c.mu.Unlock()
	return l, nil
}

// Release releases a lease by id (its first or its current id).
//
// API maturity: stable.
func (c *Client) Release(ctx context.Context, leaseID string) error {
	c.mu.Lock()
	for l := range c.leases {
		if l.ID == leaseID || l.Current().LeaseID == leaseID {
			leaseID = l.Current().LeaseID
			delete(c.leases, l)
			break
		}
	}
	c.mu.Unlock()
	return c.Call(ctx, MethodRelease, ReleaseParams{LeaseID: leaseID}, nil)
}

// Lease is a held seat. ID, ProcessID, Entitlements, HeartbeatInterval and
// Offline are as first acquired; [Lease.Current] reflects re-acquisition
// after a reconnect.
//
// API maturity: stable.
type Lease struct {
	ID                string
	ProcessID         string
	Entitlements      []string
	HeartbeatInterval int
	Offline           bool

	c       *Client
	params  AcquireParams
	mu      sync.Mutex
	cur     AcquireResult
	revoked chan LeaseRevoked
	once    sync.Once
}

// Current returns the lease as currently held.
func (l *Lease) Current() AcquireResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

func (l *Lease) update(r AcquireResult) {
	l.mu.Lock()
	l.cur = r
	l.mu.Unlock()
}

// Revoked receives one value, then is closed, when the agent revokes the
// lease or it is lost (connection dropped without Reconnect, or the
// re-acquire after a reconnect was refused).
func (l *Lease) Revoked() <-chan LeaseRevoked { return l.revoked }

func (l *Lease) revoke(r LeaseRevoked) {
	l.once.Do(func() {
		l.revoked <- r
		close(l.revoked)
	})
}

// Release releases the lease.
func (l *Lease) Release(ctx context.Context) error { return l.c.Release(ctx, l.ID) }
