// Package chaos is the fault suite: tests that try to break the agent
// (crashes, outages, rate-limit storms, bad signatures, clock roll-backs,
// corrupt caches, IPC floods) and check its invariants after each.
//
// This file holds the small in-process environment the tests (and the scale
// rows of `go run ./bench`) share: a devserver, an agent built as a library
// with a fake fingerprint and a fake process table, an ipc server on an
// in-memory or Unix-socket listener that gives every accepted connection a
// distinct synthetic peer, raw protocol clients, and an invariant monitor.
// It works inside testing/synctest bubbles when the devserver is in memory
// and the listener is in memory.
package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Options shape an [Env].
type Options struct {
	Policy     devserver.PolicySpec
	Config     agent.Config // non-zero fields override the defaults the Env sets
	RateLimits []devserver.RateWindow
	// NoRateLimit disables the devserver's rate limiter.
	NoRateLimit bool
	// ListenTCP runs the devserver on loopback TCP (not inside synctest).
	ListenTCP bool
	// Socket, when set, serves the agent on this Unix socket (not inside
	// synctest); otherwise on an in-memory listener.
	Socket string
	// CullInterval of the devserver (default 2m).
	CullInterval time.Duration
	// MaxMessageSize of the ipc server (default 1 MiB).
	MaxMessageSize int
	// RealPeers uses the kernel's peer credentials and the OS process
	// watcher instead of synthetic peers (Socket only).
	RealPeers bool
	// DiscardLogs drops the agent's log instead of keeping it in Logs
	// (memory measurements).
	DiscardLogs bool
}

// Env is one devserver plus one agent.
type Env struct {
	Srv     *devserver.Server
	Product devserver.Product
	Policy  devserver.Policy
	License devserver.License
	Dir     string
	Cfg     agent.Config
	Procs   *FakeProcs
	Logs    *SyncBuffer
	// Offset is added to the agent's clock (ns); set it to roll back time.
	Offset atomic.Int64

	opts    Options
	fp      *FakeFP
	nextPID atomic.Int64

	Agent  *agent.Agent
	ipcSrv *ipc.Server
	ln     net.Listener
	mem    *memListener
	cancel context.CancelFunc
	done   chan error
}

// NewEnv creates the devserver, its account and a data directory. Call
// [Env.Start] to run the agent and [Env.Close] when done.
func NewEnv(o Options) (*Env, error) {
	srv, err := devserver.New(devserver.Options{NoListen: !o.ListenTCP, RateLimits: o.RateLimits,
		DisableRateLimit: o.NoRateLimit, CullInterval: o.CullInterval})
	if err != nil {
		return nil, err
	}
	prod := srv.CreateProduct("Chaos App")
	ps := o.Policy
	ps.ProductID = prod.ID
	if ps.AuthenticationStrategy == "" {
		ps.AuthenticationStrategy = "LICENSE"
	}
	if ps.Scheme == "" {
		ps.Scheme = "ED25519_SIGN"
	}
	ps.Floating = true
	pol := srv.CreatePolicy(ps)
	lic := srv.CreateLicense(devserver.LicenseSpec{PolicyID: pol.ID})
	srv.CreateEntitlement("FEATURE_A", "Feature A")
	srv.AttachEntitlements(lic.ID, "FEATURE_A")
	dir, err := os.MkdirTemp("", "kga-chaos")
	if err != nil {
		srv.Close()
		return nil, err
	}
	e := &Env{Srv: srv, Product: prod, Policy: pol, License: lic, Dir: dir, Procs: NewFakeProcs(),
		Logs: &SyncBuffer{}, opts: o, fp: newFakeFP()}
	e.nextPID.Store(10_000)
	cfg := o.Config
	cfg.Account = srv.AccountID()
	cfg.Product = prod.ID
	cfg.PublicKey = srv.PublicKeyHex()
	cfg.APIURL = srv.URL()
	cfg.LicenseKey = lic.Key
	cfg.DataDir = dir
	e.Cfg = cfg
	return e, nil
}

// Now is the agent's clock: real (or bubble) time plus Offset.
func (e *Env) Now() time.Time { return time.Now().Add(time.Duration(e.Offset.Load())) }

// Start runs a fresh agent on the data directory (a restart when one ran
// before) and waits until it has initialised.
func (e *Env) Start() error {
	log := slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if e.opts.DiscardLogs {
		log = slog.New(slog.DiscardHandler)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if !e.opts.ListenTCP {
		hc.Transport = e.Srv.Transport()
	}
	deps := agent.Deps{HTTPClient: hc, Fingerprinter: e.fp, Processes: e.Procs, Now: e.Now, Logger: log, NoWatch: true}
	peerFunc := e.peerOf
	if e.opts.RealPeers && e.opts.Socket != "" {
		deps.Processes, peerFunc = nil, nil
	}
	a, err := agent.New(e.Cfg, deps)
	if err != nil {
		return err
	}
	e.Agent = a
	if e.opts.Socket != "" {
		ln, err := ipc.Listen(e.opts.Socket, ipc.ListenOptions{Mode: 0o600})
		if err != nil {
			return err
		}
		e.ln = ln
	} else {
		e.mem = newMemListener()
		e.ln = e.mem
	}
	e.ipcSrv = ipc.NewServer(ipc.ServerConfig{
		Mux: a.Mux(), Logger: log, OnConnect: a.ConnOpened, OnClose: a.ConnClosed,
		PeerFunc: peerFunc, MaxConns: 4096, MaxMessageSize: e.opts.MaxMessageSize,
	})
	go func() { _ = e.ipcSrv.Serve(e.ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- a.Run(ctx) }()
	// Ready once the status answers something other than "starting".
	for {
		st, err := e.StatusDirect()
		if err == nil && st.State != "starting" {
			return nil
		}
		select {
		case err := <-e.done:
			return fmt.Errorf("agent stopped while starting: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Stop shuts the agent down cleanly (its leases' processes are killed).
func (e *Env) Stop() error {
	if e.cancel == nil {
		return nil
	}
	e.cancel()
	err := <-e.done
	e.ipcSrv.Close()
	e.ln.Close()
	e.cancel = nil
	return err
}

// Close stops the agent and the devserver and removes the data directory.
func (e *Env) Close() {
	_ = e.Stop()
	e.Srv.Close()
	os.RemoveAll(e.Dir)
}

// peerOf gives every connection a distinct live synthetic peer, or the one
// chosen by DialPeer.
func (e *Env) peerOf(c net.Conn) (ipc.Peer, error) {
	if e.mem != nil {
		if p, ok := e.mem.peer(c); ok {
			return p, nil
		}
	}
	pid := int(e.nextPID.Add(1))
	e.Procs.Spawn(pid)
	return PeerFor(pid), nil
}

// PeerFor is the synthetic peer with this pid.
func PeerFor(pid int) ipc.Peer {
	return ipc.Peer{PID: pid, UID: "1000", StartTime: uint64(pid) * 7, Exe: "/usr/bin/chaos-app"}
}

// AdminPeer is a root peer.
var AdminPeer = ipc.Peer{PID: 1, UID: "0", Admin: true, StartTime: 1}

// Fingerprint is the agent's (fake) machine fingerprint.
func (e *Env) Fingerprint() string { return e.fp.res.Fingerprint }

// Dial connects a new client with a fresh synthetic peer.
func (e *Env) Dial() (*Client, error) {
	if e.mem != nil {
		return e.DialPeer(PeerFor(int(e.nextPID.Add(1))))
	}
	conn, err := net.Dial("unix", e.opts.Socket)
	if err != nil {
		return nil, err
	}
	return NewClient(conn), nil
}

// DialPeer connects as peer (in-memory listener only); the peer is marked
// alive in the fake process table unless it is the admin.
func (e *Env) DialPeer(p ipc.Peer) (*Client, error) {
	if e.mem == nil {
		return nil, errors.New("DialPeer needs the in-memory listener")
	}
	if !p.Admin {
		e.Procs.Spawn(p.PID)
	}
	s, c := net.Pipe()
	if err := e.mem.push(s, p); err != nil {
		return nil, err
	}
	return NewClient(c), nil
}

// StatusDirect reads license.status through an admin in-memory connection,
// or through a fresh socket connection.
func (e *Env) StatusDirect() (*ipc.Status, error) {
	var c *Client
	var err error
	if e.mem != nil {
		c, err = e.DialPeer(AdminPeer)
	} else {
		c, err = e.Dial()
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var st ipc.Status
	if _, err := c.Call(ipc.MethodStatus, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ServerProcesses counts the processes on the devserver (all rows, dead
// ones too) and those not ALIVE.
func (e *Env) ServerProcesses() (total, notAlive int) {
	for _, p := range e.Srv.Processes() {
		total++
		if p.Status != "ALIVE" {
			notAlive++
		}
	}
	return total, notAlive
}

// --- fakes ---

// FakeFP is a fixed fingerprint.
type FakeFP struct{ res fingerprint.Result }

func newFakeFP() *FakeFP {
	return &FakeFP{res: fingerprint.Result{
		Fingerprint: "c4a05c1e0f0e4b7a9d1e2f3a4b5c6d7ec4a05c1e0f0e4b7a9d1e2f3a4b5c6d7e",
		Components: []fingerprint.Component{
			{Name: "cpu", Fingerprint: "c0c0c0c0aa"},
			{Name: "disk-0", Fingerprint: "d1d1d1d1bb"},
		},
		Attributes: fingerprint.Attributes{Platform: "linux/amd64", Hostname: "chaos-host", Cores: 4, Memory: 8 << 30},
	}}
}

// Get implements agent.Fingerprinter.
func (f *FakeFP) Get(context.Context) (*fingerprint.Result, error) {
	r := f.res
	r.Components = append([]fingerprint.Component(nil), f.res.Components...)
	return &r, nil
}

// FakeProcs is a process table the test controls.
type FakeProcs struct {
	mu    sync.Mutex
	alive map[int]bool
	exits map[int][]chan struct{}
}

// NewFakeProcs returns an empty table.
func NewFakeProcs() *FakeProcs {
	return &FakeProcs{alive: map[int]bool{}, exits: map[int][]chan struct{}{}}
}

// Spawn marks pid alive.
func (p *FakeProcs) Spawn(pid int) {
	p.mu.Lock()
	p.alive[pid] = true
	p.mu.Unlock()
}

// Exit marks pid dead and fires its watchers.
func (p *FakeProcs) Exit(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.alive[pid] = false
	for _, ch := range p.exits[pid] {
		close(ch)
	}
	delete(p.exits, pid)
}

// WatchExit implements agent.ProcessWatcher.
func (p *FakeProcs) WatchExit(ctx context.Context, pid int, _ uint64) (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.alive[pid] {
		return nil, errors.New("no such process")
	}
	ch := make(chan struct{})
	p.exits[pid] = append(p.exits[pid], ch)
	return ch, nil
}

// Alive implements agent.ProcessWatcher.
func (p *FakeProcs) Alive(pid int, _ uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[pid]
}

// memListener hands out net.Pipe connections.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	peers  map[net.Conn]ipc.Peer
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{}), peers: map[net.Conn]ipc.Peer{}}
}

func (l *memListener) push(c net.Conn, p ipc.Peer) error {
	l.mu.Lock()
	l.peers[c] = p
	l.mu.Unlock()
	select {
	case l.conns <- c:
		return nil
	case <-l.closed:
		return net.ErrClosed
	}
}

func (l *memListener) peer(c net.Conn) (ipc.Peer, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[c]
	delete(l.peers, c)
	return p, ok
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// --- raw protocol client ---

// Client speaks the wire protocol directly over any connection.
type Client struct {
	conn    net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	nextID  int
	resps   map[int]chan rpcResp
	revoked atomic.Int64
	notes   chan Note
	closed  chan struct{}
}

// Note is a notification.
type Note struct {
	Method string
	Params json.RawMessage
}

type rpcErr struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

type rpcResp struct {
	ID     *int            `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpcErr         `json:"error"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// NewClient starts reading conn.
func NewClient(conn net.Conn) *Client {
	c := &Client{conn: conn, resps: map[int]chan rpcResp{}, notes: make(chan Note, 256), closed: make(chan struct{})}
	go c.read()
	return c
}

func (c *Client) read() {
	defer close(c.closed)
	sc := bufio.NewScanner(c.conn)
	sc.Buffer(make([]byte, 0, 4<<10), 4<<20)
	for sc.Scan() {
		var r rpcResp
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		if r.Method != "" {
			if r.Method == ipc.NotifyLeaseRevoked {
				c.revoked.Add(1)
			}
			select {
			case c.notes <- Note{r.Method, r.Params}:
			default:
			}
			continue
		}
		if r.ID == nil {
			continue
		}
		c.mu.Lock()
		ch := c.resps[*r.ID]
		delete(c.resps, *r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// Revoked counts lease.revoked notifications received.
func (c *Client) Revoked() int { return int(c.revoked.Load()) }

// Notes returns the notification channel (lossy when not drained).
func (c *Client) Notes() <-chan Note { return c.notes }

// Call sends one request and returns the error's data.code on failure.
func (c *Client) Call(method string, params any, out any) (code string, err error) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan rpcResp, 1)
	c.resps[id] = ch
	c.mu.Unlock()
	req := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	b, _ := json.Marshal(req)
	c.wmu.Lock()
	_, err = c.conn.Write(append(b, '\n'))
	c.wmu.Unlock()
	if err != nil {
		return "UNAVAILABLE", err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			var d struct {
				Code string `json:"code"`
			}
			_ = json.Unmarshal(r.Error.Data, &d)
			return d.Code, fmt.Errorf("%s: %s", d.Code, r.Error.Message)
		}
		if out != nil {
			return "", json.Unmarshal(r.Result, out)
		}
		return "", nil
	case <-c.closed:
		return "UNAVAILABLE", io.EOF
	}
}

// Acquire calls lease.acquire.
func (c *Client) Acquire() (*ipc.AcquireResult, string, error) {
	var r ipc.AcquireResult
	code, err := c.Call(ipc.MethodAcquire, ipc.AcquireParams{App: "chaos", AppVersion: "1.0.0"}, &r)
	if err != nil {
		return nil, code, err
	}
	return &r, "", nil
}

// Release calls lease.release.
func (c *Client) Release(id string) error {
	_, err := c.Call(ipc.MethodRelease, ipc.ReleaseParams{LeaseID: id}, nil)
	return err
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Done is closed when the connection's reader ends.
func (c *Client) Done() <-chan struct{} { return c.closed }

// SyncBuffer is a concurrency-safe log sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// Tail returns the last n lines.
func (s *SyncBuffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(s.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// --- invariants ---

// Monitor samples the devserver and the agent periodically and records the
// invariants' worst values.
type Monitor struct {
	e     *Env
	every time.Duration
	stop  chan struct{}
	done  chan struct{}

	mu sync.Mutex
	// MaxServer is the most processes (all rows) ever seen on the machine.
	MaxServer int
	// MaxActive is the most leases the agent ever reported active.
	MaxActive int
	// Samples taken.
	Samples int
}

// StartMonitor samples every d (fake time inside synctest).
func (e *Env) StartMonitor(d time.Duration) *Monitor {
	m := &Monitor{e: e, every: d, stop: make(chan struct{}), done: make(chan struct{})}
	go m.loop()
	return m
}

func (m *Monitor) loop() {
	defer close(m.done)
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.Sample()
		select {
		case <-m.stop:
			m.Sample()
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample now.
func (m *Monitor) Sample() {
	perMachine := map[string]int{}
	for _, p := range m.e.Srv.Processes() {
		perMachine[p.MachineID]++
	}
	active := -1
	if m.e.mem != nil && m.e.Agent != nil {
		if st, err := m.e.StatusDirect(); err == nil {
			active = st.Leases.Active
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Samples++
	for _, n := range perMachine {
		m.MaxServer = max(m.MaxServer, n)
	}
	m.MaxActive = max(m.MaxActive, active)
}

// Stop ends sampling (after one last sample).
func (m *Monitor) Stop() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// Max returns the worst values seen.
func (m *Monitor) Max() (server, active int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.MaxServer, m.MaxActive
}
