package ipc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// HandlerFunc handles one request. params is the raw "params" value (nil if
// absent). The ctx is cancelled when the connection closes; use
// [ConnFromContext] and [PeerFromContext] to learn who is calling. Return an
// *[Error] to answer with a specific code; any other error is reported to
// the caller as INTERNAL with a generic message and logged.
type HandlerFunc func(ctx context.Context, params json.RawMessage) (any, error)

// Perm is the privilege a method requires.
type Perm int

const (
	// PermAny methods may be called by any local peer.
	PermAny Perm = iota
	// PermAdmin methods may be called only by an admin peer ([Peer.Admin]).
	PermAdmin
)

// Mux maps method names to handlers and their required privilege.
type Mux struct {
	mu     sync.RWMutex
	routes map[string]route
}

type route struct {
	perm Perm
	h    HandlerFunc
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{routes: map[string]route{}} }

// Register adds a handler. It panics on an empty or duplicate name or a nil
// handler (programmer errors).
func (m *Mux) Register(method string, perm Perm, h HandlerFunc) {
	if method == "" || h == nil {
		panic("ipc: Register with empty method or nil handler")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.routes[method]; dup {
		panic("ipc: duplicate method " + method)
	}
	m.routes[method] = route{perm: perm, h: h}
}

// Methods returns the registered method names, sorted.
func (m *Mux) Methods() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.routes))
	for k := range m.routes {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (m *Mux) lookup(method string) (route, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.routes[method]
	return r, ok
}

// ServerConfig configures a [Server]. Zero values get defaults.
type ServerConfig struct {
	Mux            *Mux
	Logger         *slog.Logger
	MaxMessageSize int           // bytes per line, default 1 MiB
	MaxConns       int           // default 1024
	WriteTimeout   time.Duration // per write, default 10s
	OutQueue       int           // queued outgoing messages per conn, default 256
	MaxInFlight    int           // concurrent requests per conn, default 64; excess get BUSY
	// AdminGroup is a unix group (name or gid) whose members are admins in
	// addition to root. Ignored on Windows (elevated Administrators are).
	AdminGroup string
	// PeerFunc replaces the kernel peer lookup (tests).
	PeerFunc func(net.Conn) (Peer, error)
	// OnConnect runs after the peer is resolved, before the first request.
	OnConnect func(*Conn)
	// OnClose runs once per connection, after its context is cancelled and
	// every handler running on it has returned.
	OnClose func(*Conn)
}

// ErrServerClosed is returned by [Server.Serve] after [Server.Close].
var ErrServerClosed = errors.New("ipc: server closed")

// ErrConnClosed is returned when sending on a closed connection.
var ErrConnClosed = errors.New("ipc: connection closed")

// ErrSlowConsumer is returned by [Conn.Notify] when the peer stopped
// reading and its queue overflowed; the connection has been closed.
var ErrSlowConsumer = errors.New("ipc: peer is not reading; connection closed")

// Server serves the protocol on one or more listeners.
type Server struct {
	cfg      ServerConfig
	log      *slog.Logger
	adminGID int // -1: no admin group

	mu     sync.Mutex
	conns  map[uint64]*Conn
	lns    map[net.Listener]struct{}
	closed bool
	nextID atomic.Uint64
	wg     sync.WaitGroup
}

// NewServer returns a Server. A configured AdminGroup that does not resolve
// is logged and ignored (only root is admin then: fail closed).
func NewServer(c ServerConfig) *Server {
	if c.Mux == nil {
		c.Mux = NewMux()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 1024
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.OutQueue <= 0 {
		c.OutQueue = 256
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	s := &Server{cfg: c, log: c.Logger.With("component", "ipc"), adminGID: -1,
		conns: map[uint64]*Conn{}, lns: map[net.Listener]struct{}{}}
	if c.AdminGroup != "" {
		gid, err := lookupGroupID(c.AdminGroup)
		if err != nil {
			s.log.Warn("admin group not found; only root is admin", "group", c.AdminGroup, "err", err)
		} else {
			s.adminGID = gid
		}
	}
	return s
}

// Serve accepts connections on ln until [Server.Close] or a permanent
// accept error. It returns [ErrServerClosed] after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		s.accept(nc)
	}
}

func (s *Server) accept(nc net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		s.log.Warn("too many connections; refusing", "max", s.cfg.MaxConns)
		b, _ := encodeLine(wireResponse{JSONRPC: "2.0", ID: jsonNull,
			Error: encodeError(&Error{Code: CodeBusy, Message: "too many connections"})})
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = nc.Write(b)
		nc.Close()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{s: s, id: s.nextID.Add(1), nc: nc, cancel: cancel,
		out: make(chan []byte, s.cfg.OutQueue), done: make(chan struct{}),
		sem: make(chan struct{}, s.cfg.MaxInFlight)}
	c.ctx = context.WithValue(ctx, connKey{}, c)
	s.conns[c.id] = c
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c)
}

// Close stops every listener, closes every connection and waits for their
// goroutines (including OnClose callbacks).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	conns := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// Conns returns the open connections.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Conn) int { return cmp.Compare(a.id, b.id) })
	return out
}

func (s *Server) peerOf(nc net.Conn) (Peer, error) {
	if s.cfg.PeerFunc != nil {
		return s.cfg.PeerFunc(nc)
	}
	return peerCredentials(nc, s.adminGID)
}

func (s *Server) serveConn(c *Conn) {
	defer s.wg.Done()
	p, err := s.peerOf(c.nc)
	if err != nil {
		// Fail closed: a connection whose caller is unknown gets nothing.
		s.log.Warn("cannot resolve peer credentials; closing", "conn", c.id, "err", err)
		c.Close()
		s.forget(c)
		return
	}
	c.peer = p
	go c.writeLoop()
	if s.cfg.OnConnect != nil {
		s.cfg.OnConnect(c)
	}
	c.readLoop()
	c.Close()
	c.inflight.Wait()
	if s.cfg.OnClose != nil {
		s.cfg.OnClose(c)
	}
	s.forget(c)
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c.id)
	s.mu.Unlock()
}

type connKey struct{}

// Conn is the server side of one client connection.
type Conn struct {
	s      *Server
	id     uint64
	nc     net.Conn
	peer   Peer
	ctx    context.Context
	cancel context.CancelFunc

	out       chan []byte // nil entry: flush then close
	done      chan struct{}
	closeOnce sync.Once
	sem       chan struct{}
	inflight  sync.WaitGroup
	protocol  atomic.Int32
}

// ID returns the connection's server-unique id.
func (c *Conn) ID() uint64 { return c.id }

// Peer returns the kernel-reported identity of the caller.
func (c *Conn) Peer() Peer { return c.peer }

// Context returns a context cancelled when the connection closes. It
// carries the Conn ([ConnFromContext]) and its Peer ([PeerFromContext]).
func (c *Conn) Context() context.Context { return c.ctx }

// Done is closed when the connection closes.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Protocol returns the protocol version negotiated by agent.hello (0 if the
// client did not say hello).
func (c *Conn) Protocol() int { return int(c.protocol.Load()) }

// Close closes the connection and cancels its context. It is idempotent.
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.cancel()
		c.nc.Close()
	})
}

// Notify queues a notification. It never blocks: if the peer's queue is
// full the peer is not reading, so the connection is closed and
// [ErrSlowConsumer] returned.
func (c *Conn) Notify(method string, params any) error {
	var raw json.RawMessage
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("marshal %s params: %w", method, err)
		}
		raw = b
	}
	b, err := encodeLine(wireRequest{JSONRPC: "2.0", Method: method, Params: raw})
	if err != nil {
		return err
	}
	return c.send(b)
}

func (c *Conn) send(b []byte) error {
	select {
	case <-c.done:
		return ErrConnClosed
	default:
	}
	select {
	case c.out <- b:
		return nil
	case <-c.done:
		return ErrConnClosed
	default:
		c.s.log.Warn("peer is not reading its messages; closing", "conn", c.id, "pid", c.peer.PID, "queued", cap(c.out))
		c.Close()
		return ErrSlowConsumer
	}
}

// closeAfterFlush closes the connection once the messages queued so far
// are written.
func (c *Conn) closeAfterFlush() {
	select {
	case c.out <- nil:
	default:
		c.Close()
	}
}

func (c *Conn) writeLoop() {
	buf := make([]byte, 0, 4096)
	for {
		var b []byte
		select {
		case b = <-c.out:
		case <-c.done:
			return
		}
		closeAfter := b == nil
		buf = append(buf[:0], b...)
	drain:
		for !closeAfter && len(buf) < 64<<10 {
			select {
			case more := <-c.out:
				if more == nil {
					closeAfter = true
					break drain
				}
				buf = append(buf, more...)
			default:
				break drain
			}
		}
		if len(buf) > 0 {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if _, err := c.nc.Write(buf); err != nil {
				select {
				case <-c.done:
				default:
					c.s.log.Info("write failed; closing", "conn", c.id, "err", err)
				}
				c.Close()
				return
			}
		}
		if closeAfter {
			c.Close()
			return
		}
		if cap(buf) > 1<<20 {
			buf = make([]byte, 0, 4096)
		}
	}
}

func (c *Conn) readLoop() {
	fr := newFrameReader(c.nc, c.s.cfg.MaxMessageSize)
	for {
		line, err := fr.next()
		if err != nil {
			if errors.Is(err, errFrameTooLarge) {
				c.reply(jsonNull, nil, &Error{Code: CodeMessageTooLarge,
					Message: fmt.Sprintf("message exceeds %d bytes; closing the connection", c.s.cfg.MaxMessageSize),
					Data:    map[string]any{"max": c.s.cfg.MaxMessageSize}})
				c.closeAfterFlush()
				// Keep draining so a client still writing the oversize
				// message (pipes have small buffers) can read the error.
				_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 4*int64(c.s.cfg.MaxMessageSize)))
				c.Close()
			}
			return
		}
		if blankLine(line) {
			continue
		}
		c.handle(line)
	}
}

// blankLine reports whether a frame holds only spaces, tabs and carriage
// returns (skipped between requests).
func blankLine(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

func (c *Conn) handle(line []byte) {
	req, id, notify, perr := decodeRequest(line)
	if perr != nil {
		c.reply(id, nil, perr)
		return
	}
	h, perm, ok := c.s.route(req.Method)
	if !ok {
		if !notify {
			c.reply(id, nil, &Error{Code: CodeMethodNotFound, Message: "method not found: " + req.Method})
		}
		return
	}
	if perm == PermAdmin && !c.peer.Admin {
		if !notify {
			c.reply(id, nil, &Error{Code: CodePermissionDenied,
				Message: req.Method + " requires an administrator (root, the agent's admin group, or an elevated Administrator)"})
		}
		return
	}
	if req.Method == MethodHello {
		if err := c.negotiate(req.Params); err != nil {
			c.reply(id, nil, err)
			return
		}
	}
	select {
	case c.sem <- struct{}{}:
	default:
		if !notify {
			c.reply(id, nil, &Error{Code: CodeBusy, Message: fmt.Sprintf("too many requests in flight on this connection (max %d)", cap(c.sem))})
		}
		return
	}
	c.inflight.Add(1)
	go func() {
		defer c.inflight.Done()
		defer func() { <-c.sem }()
		res, err := c.call(req.Method, h, req.Params)
		if !notify {
			c.reply(id, res, err)
		}
	}()
}

func (c *Conn) call(method string, h HandlerFunc, params json.RawMessage) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.s.log.Error("handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
			res, err = nil, &Error{Code: CodeInternal, Message: "internal error"}
		}
	}()
	return h(c.ctx, params)
}

// negotiate checks agent.hello's protocol version before the handler runs.
func (c *Conn) negotiate(params json.RawMessage) *Error {
	var p HelloParams
	if len(params) > 0 && params[0] == '{' {
		if err := json.Unmarshal(params, &p); err != nil {
			return Errorf(CodeInvalidRequest, "agent.hello params: %v", err)
		}
	}
	if p.Protocol != 0 && p.Protocol != ProtocolVersion {
		return &Error{Code: CodeUnsupportedVersion,
			Message: fmt.Sprintf("protocol version %d is not supported; this agent speaks %d", p.Protocol, ProtocolVersion),
			Data:    map[string]any{"supported": []int{ProtocolVersion}, "requested": p.Protocol}}
	}
	c.protocol.Store(ProtocolVersion)
	return nil
}

// route finds the handler for method. The server has no built-in
// methods: agent.hello and agent.peer are the mux owner's, like every
// other method (the server only checks agent.hello's protocol version).
func (s *Server) route(method string) (HandlerFunc, Perm, bool) {
	r, ok := s.cfg.Mux.lookup(method)
	return r.h, r.perm, ok
}

// reply sends a response; err goes through the one error funnel.
func (c *Conn) reply(id json.RawMessage, res any, err error) {
	resp := wireResponse{JSONRPC: "2.0", ID: id}
	if err != nil {
		resp.Error = c.s.funnel(c, err)
	} else {
		b, merr := json.Marshal(res)
		if merr != nil {
			c.s.log.Error("cannot marshal result", "conn", c.id, "err", merr)
			resp.Error = encodeError(&Error{Code: CodeInternal, Message: "internal error"})
		} else {
			resp.Result = b
		}
	}
	b, merr := encodeLine(resp)
	if merr != nil {
		c.s.log.Error("cannot marshal response", "conn", c.id, "err", merr)
		return
	}
	_ = c.send(b)
}

// funnel maps any handler error onto the wire: an *Error keeps its code;
// a deadline becomes TIMEOUT; everything else is INTERNAL with a generic
// message, logged here once.
func (s *Server) funnel(c *Conn, err error) *wireError {
	var e *Error
	switch {
	case errors.As(err, &e):
		return encodeError(e)
	case errors.Is(err, context.DeadlineExceeded):
		return encodeError(&Error{Code: CodeTimeout, Message: "the operation timed out"})
	case errors.Is(err, context.Canceled):
		return encodeError(&Error{Code: CodeInternal, Message: "the operation was cancelled"})
	}
	s.log.Error("handler failed", "conn", c.id, "pid", c.peer.PID, "err", err)
	return encodeError(&Error{Code: CodeInternal, Message: "internal error"})
}

// ConnFromContext returns the connection a handler's ctx belongs to.
func ConnFromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// PeerFromContext returns the caller's Peer from a handler's ctx.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	c := ConnFromContext(ctx)
	if c == nil {
		return Peer{}, false
	}
	return c.peer, true
}
