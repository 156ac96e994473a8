package ipc

import (
	"bytes"
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
	"strings"
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
	Mux    *Mux
	Logger *slog.Logger
	// MaxMessageSize is the longest line a non-admin peer may send,
	// default [DefaultMaxMessageSize]; MaxAdminMessageSize is an admin's,
	// default MaxMessageSize if that is set, else
	// [DefaultMaxAdminMessageSize] (license.import carries a whole machine
	// file).
	MaxMessageSize      int
	MaxAdminMessageSize int
	MaxConns            int           // default 1024, admins included
	WriteTimeout        time.Duration // per write, default 10s
	OutQueue            int           // queued outgoing messages per conn, default 256
	// OutQueueBytes bounds the bytes queued for one connection (default
	// 64 KiB; one message of any size fits an empty queue). A peer that lets either bound fill is not reading: it is
	// disconnected.
	OutQueueBytes int
	MaxInFlight   int // concurrent requests per conn, default 64; excess get BUSY
	// MaxConnsPerUID is how many connections one non-admin uid may hold
	// (default 256); AdminReserve is how many of MaxConns only admins may
	// use (default 32, at most half of MaxConns), so root's CLI always
	// gets in.
	MaxConnsPerUID int
	AdminReserve   int
	// MaxInFlightPerUID bounds one non-admin uid's requests in flight over
	// all its connections (default 256): waiting lease.acquire calls
	// included.
	MaxInFlightPerUID int
	// IdleTimeout closes a connection that has not sent one complete
	// request this long after connecting (default 30s). Connections that
	// did send one are never timed out: apps hold them for their leases.
	IdleTimeout time.Duration
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
	// Now is the clock of the refusal-log limiter; nil means time.Now.
	Now func() time.Time
}

// Defaults of [ServerConfig]'s limits.
const (
	DefaultMaxMessageSize      = 64 << 10
	DefaultMaxAdminMessageSize = 1 << 20
	DefaultOutQueueBytes       = 64 << 10
	DefaultMaxConnsPerUID      = 256
	DefaultAdminReserve        = 32
	DefaultMaxInFlightPerUID   = 256
	DefaultIdleTimeout         = 30 * time.Second
	// maxEcho bounds how much of a peer's own text an error repeats.
	maxEcho = 64
)

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

	mu       sync.Mutex
	conns    map[uint64]*Conn
	perUID   map[string]*uidShare // non-admin peers only
	lns      map[net.Listener]struct{}
	closed   bool
	nextID   atomic.Uint64
	wg       sync.WaitGroup
	refusals logLimiter
	// refusing bounds the refusals being answered at once: each may take
	// up to refuseTimeout, so they run beside the accept loop.
	refusing chan struct{}
}

// maxRefusing is how many refused connections may be answered at once;
// beyond that a refused connection is closed without its BUSY answer.
const maxRefusing = 32

// refuseTimeout bounds answering one refused connection.
const refuseTimeout = time.Second

// uidShare is what one uid holds: connections and requests in flight.
type uidShare struct {
	conns, inflight int
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
	if c.MaxConns <= 0 {
		c.MaxConns = 1024
	}
	if c.MaxAdminMessageSize <= 0 {
		if c.MaxMessageSize > 0 {
			c.MaxAdminMessageSize = c.MaxMessageSize
		} else {
			c.MaxAdminMessageSize = DefaultMaxAdminMessageSize
		}
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.OutQueueBytes <= 0 {
		c.OutQueueBytes = DefaultOutQueueBytes
	}
	if c.MaxConnsPerUID <= 0 {
		c.MaxConnsPerUID = DefaultMaxConnsPerUID
	}
	if c.AdminReserve <= 0 {
		c.AdminReserve = DefaultAdminReserve
	}
	c.AdminReserve = min(c.AdminReserve, c.MaxConns/2)
	if c.MaxInFlightPerUID <= 0 {
		c.MaxInFlightPerUID = DefaultMaxInFlightPerUID
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
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
		conns: map[uint64]*Conn{}, perUID: map[string]*uidShare{}, lns: map[net.Listener]struct{}{},
		refusing: make(chan struct{}, maxRefusing)}
	s.refusals.every = 10 * time.Second
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
		// Answered beside the accept loop (a pipe client is answered only
		// as it reads: see refuse), at most maxRefusing at once.
		select {
		case s.refusing <- struct{}{}:
		default:
			if n, ok := s.refusals.allow(s.cfg.Now()); ok {
				s.log.Warn("refusing connection without an answer: too many refusals under way", "max", s.cfg.MaxConns, "suppressed", n)
			}
			nc.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.refusing }()
			s.refuse(nc, "too many connections", "max", s.cfg.MaxConns)
		}()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{s: s, id: s.nextID.Add(1), nc: nc, cancel: cancel,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
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
	return peerCredentials(nc, s.adminGID, s.log)
}

func (s *Server) serveConn(c *Conn) {
	defer s.wg.Done()
	// Windows identifies the connection by impersonating it, which needs
	// data read from the pipe first (this package's client sends a blank
	// line at once); elsewhere, or with PeerFunc, first is nil.
	var first []byte
	var err error
	if s.cfg.PeerFunc == nil {
		first, err = firstData(c.nc, s.cfg.IdleTimeout)
	}
	if err != nil {
		s.log.Debug("connection closed before its first message", "conn", c.id, "err", err)
		c.Close()
		s.forget(c)
		return
	}
	p, err := s.peerOf(c.nc)
	if err != nil {
		// Fail closed: a connection whose caller is unknown gets nothing.
		s.log.Warn("cannot resolve peer credentials; closing", "conn", c.id, "err", err)
		c.Close()
		s.forget(c)
		return
	}
	c.peer = p
	defer releasePeer(c.nc)
	if reason, ok := s.admit(c); !ok {
		s.forget(c)
		s.refuse(c.nc, reason, "uid", p.UID, "pid", p.PID)
		c.Close()
		return
	}
	defer s.release(c)
	go c.writeLoop()
	if s.cfg.OnConnect != nil {
		s.cfg.OnConnect(c)
	}
	c.readLoop(first)
	c.Close()
	c.inflight.Wait()
	if s.cfg.OnClose != nil {
		s.cfg.OnClose(c)
	}
	s.forget(c)
}

// admit checks a connection's share once its peer is known: a non-admin
// uid may hold MaxConnsPerUID connections, and non-admins together may not
// use the AdminReserve last connections.
func (s *Server) admit(c *Conn) (string, bool) {
	if c.peer.Admin {
		return "", true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.perUID[c.peer.UID]
	if sh != nil && sh.conns >= s.cfg.MaxConnsPerUID {
		return fmt.Sprintf("too many connections from this user (max %d)", s.cfg.MaxConnsPerUID), false
	}
	nonAdmin := 0
	for _, x := range s.perUID {
		nonAdmin += x.conns
	}
	if nonAdmin >= s.cfg.MaxConns-s.cfg.AdminReserve {
		return "too many connections", false
	}
	if sh == nil {
		sh = &uidShare{}
		s.perUID[c.peer.UID] = sh
	}
	sh.conns++
	c.counted = true
	return "", true
}

func (s *Server) release(c *Conn) {
	if !c.counted {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.perUID[c.peer.UID]; sh != nil {
		sh.conns--
		if sh.conns <= 0 && sh.inflight <= 0 {
			delete(s.perUID, c.peer.UID)
		}
	}
}

// takeInflight counts one request against the peer's uid share.
func (s *Server) takeInflight(c *Conn) bool {
	if !c.counted {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.perUID[c.peer.UID]
	if sh == nil || sh.inflight >= s.cfg.MaxInFlightPerUID {
		return false
	}
	sh.inflight++
	return true
}

func (s *Server) doneInflight(c *Conn) {
	if !c.counted {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.perUID[c.peer.UID]; sh != nil {
		sh.inflight--
		if sh.conns <= 0 && sh.inflight <= 0 {
			delete(s.perUID, c.peer.UID)
		}
	}
}

// refuse answers BUSY on nc and closes it, within refuseTimeout. The WARN
// is rate-limited: a peer opening connections in a loop must not flood
// the log.
//
// What the client sends meanwhile is read and discarded while the answer
// is written: a Windows pipe client sends a blank line on connect (see
// dialTransport) and go-winio's pipes have no buffer, so each side's write
// completes only as the other reads. Written first, the answer waited for
// a client that was waiting for its own write, until the write deadline
// closed the pipe and the client read EOF instead of BUSY (issue 17).
func (s *Server) refuse(nc net.Conn, reason string, attrs ...any) {
	if n, ok := s.refusals.allow(s.cfg.Now()); ok {
		s.log.Warn("refusing connection: "+reason, append(attrs, "suppressed", n)...)
	}
	b, _ := encodeLine(wireResponse{JSONRPC: "2.0", ID: jsonNull,
		Error: encodeError(&Error{Code: CodeBusy, Message: reason})})
	dl := time.Now().Add(refuseTimeout)
	_ = nc.SetDeadline(dl)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, int64(s.cfg.MaxMessageSize)))
	}()
	_, _ = nc.Write(b)
	nc.Close()
	<-drained
}

// logLimiter lets one message through per period and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now and how many were suppressed since the
// last message logged.
func (l *logLimiter) allow(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
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

	// The output queue, bounded in messages and bytes. closeAfter: close
	// once the queue is written; nothing more is queued.
	qmu        sync.Mutex
	queue      [][]byte
	queued     int // bytes in queue, including a batch being written
	closeAfter bool
	wake       chan struct{} // cap 1: the queue changed

	done      chan struct{}
	closeOnce sync.Once
	sem       chan struct{}
	inflight  sync.WaitGroup
	protocol  atomic.Int32
	counted   bool // holds a share in Server.perUID (non-admin)
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
	c.qmu.Lock()
	if c.closeAfter {
		c.qmu.Unlock()
		return ErrConnClosed
	}
	// One message always fits an empty queue (an admin's leases.list can
	// be large); more must fit OutQueueBytes.
	if len(c.queue) >= c.s.cfg.OutQueue || (c.queued > 0 && c.queued+len(b) > c.s.cfg.OutQueueBytes) {
		queued, n := c.queued, len(c.queue)
		c.qmu.Unlock()
		c.s.log.Warn("peer is not reading its messages; closing", "conn", c.id, "pid", c.peer.PID, "queued", n, "queued_bytes", queued)
		c.Close()
		return ErrSlowConsumer
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
	c.qmu.Unlock()
	c.signal()
	return nil
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeAfterFlush closes the connection once the messages queued so far
// are written.
func (c *Conn) closeAfterFlush() {
	c.qmu.Lock()
	c.closeAfter = true
	c.qmu.Unlock()
	c.signal()
}

func (c *Conn) writeLoop() {
	buf := make([]byte, 0, 4096)
	for {
		c.qmu.Lock()
		for len(c.queue) == 0 && !c.closeAfter {
			c.qmu.Unlock()
			select {
			case <-c.wake:
			case <-c.done:
				return
			}
			c.qmu.Lock()
		}
		// Write up to 64 KiB at once; the bytes stay counted in
		// c.queued until written.
		n := 0
		buf = buf[:0]
		for n < len(c.queue) && (n == 0 || len(buf)+len(c.queue[n]) <= 64<<10) {
			buf = append(buf, c.queue[n]...)
			n++
		}
		closeAfter := c.closeAfter && n == len(c.queue)
		c.qmu.Unlock()
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
		c.qmu.Lock()
		clear(c.queue[:n])
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
		c.queued -= len(buf)
		c.qmu.Unlock()
		if closeAfter {
			c.Close()
			return
		}
		if cap(buf) > 1<<20 {
			buf = make([]byte, 0, 4096)
		}
	}
}

func (c *Conn) readLoop(first []byte) {
	limit := c.s.cfg.MaxMessageSize
	if c.peer.Admin {
		limit = c.s.cfg.MaxAdminMessageSize
	}
	var r io.Reader = c.nc
	if len(first) > 0 {
		r = io.MultiReader(bytes.NewReader(first), c.nc)
	}
	fr := newFrameReader(r, limit)
	// A connection must send a complete request within IdleTimeout; after
	// that it may idle as long as it likes (it may hold a lease).
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout))
	idle := true
	for {
		line, err := fr.next()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, errFrameTooLarge):
				c.reply(jsonNull, nil, &Error{Code: CodeMessageTooLarge,
					Message: fmt.Sprintf("message exceeds %d bytes; closing the connection", limit),
					Data:    map[string]any{"max": limit}})
				c.closeAfterFlush()
				// Keep draining so a client still writing the oversize
				// message (pipes have small buffers) can read the error.
				_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
				_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 4*int64(limit)))
				c.Close()
			case idle && errors.As(err, &ne) && ne.Timeout():
				c.s.log.Debug("connection sent no request; closing", "conn", c.id, "pid", c.peer.PID, "after", c.s.cfg.IdleTimeout)
			}
			return
		}
		if blankLine(line) {
			continue
		}
		if idle {
			idle = false
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		c.handle(line)
	}
}

// echo bounds a peer-supplied string repeated in an error message.
func echo(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	return strings.ToValidUTF8(s[:maxEcho], "") + "…"
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
			c.reply(id, nil, &Error{Code: CodeMethodNotFound, Message: "method not found: " + echo(req.Method)})
		}
		return
	}
	if perm == PermAdmin && !c.peer.Admin {
		if !notify {
			c.reply(id, nil, &Error{Code: CodePermissionDenied,
				Message: echo(req.Method) + " requires an administrator (root, the agent's admin group, or an elevated Administrator)"})
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
	if !c.s.takeInflight(c) {
		<-c.sem
		if !notify {
			c.reply(id, nil, &Error{Code: CodeBusy, Message: fmt.Sprintf("too many requests in flight from this user (max %d)", c.s.cfg.MaxInFlightPerUID)})
		}
		return
	}
	c.inflight.Add(1)
	go func() {
		defer c.inflight.Done()
		defer func() { <-c.sem }()
		defer c.s.doneInflight(c)
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
