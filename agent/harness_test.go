package agent

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
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// The harness runs a devserver (in memory, so it works inside synctest
// bubbles), an Agent with fake fingerprint, process watcher and clock
// offset, and an ipc.Server on an in-memory listener. Test clients speak the
// wire protocol directly over net.Pipe with a Peer the test chooses.

type env struct {
	t       testing.TB
	srv     *devserver.Server
	policy  devserver.Policy
	license devserver.License
	dir     string
	fp      *fakeFP
	procs   *fakeProcs
	offset  atomic.Int64 // local clock offset, ns
	logs    *syncBuffer

	a      *Agent
	ipcSrv *ipc.Server
	ln     *memListener
	cancel context.CancelFunc
	done   chan error
	cfg    Config
	// noWatch is set for synctest bubbles (see Deps.NoWatch).
	noWatch bool
	// deps carries extra dependencies (config file and loader).
	deps Deps
	// waitLimit bounds waitFor; default 2 minutes.
	waitLimit time.Duration
}

type envOptions struct {
	policy      devserver.PolicySpec
	license     devserver.LicenseSpec
	cfg         Config
	rateLimits  []devserver.RateWindow
	noRateLimit bool
}

func intp(n int) *int { return &n }

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	srv, err := devserver.New(devserver.Options{NoListen: true, RateLimits: o.rateLimits, DisableRateLimit: o.noRateLimit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	prod := srv.CreateProduct("Demo App")
	ps := o.policy
	ps.ProductID = prod.ID
	if ps.AuthenticationStrategy == "" {
		ps.AuthenticationStrategy = "LICENSE"
	}
	if ps.Scheme == "" {
		ps.Scheme = "ED25519_SIGN"
	}
	pol := srv.CreatePolicy(ps)
	ls := o.license
	ls.PolicyID = pol.ID
	lic := srv.CreateLicense(ls)
	srv.CreateEntitlement("FEATURE_A", "Feature A")
	srv.CreateEntitlement("FEATURE_B", "Feature B")
	srv.AttachEntitlements(lic.ID, "FEATURE_A", "FEATURE_B")
	dir, err := os.MkdirTemp("", "kga-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{noWatch: true, t: t, srv: srv, policy: pol, license: lic, dir: dir, fp: newFakeFP(), procs: newFakeProcs(), logs: &syncBuffer{}}
	cfg := o.cfg
	cfg.Account = srv.AccountID()
	cfg.Product = prod.ID
	cfg.PublicKey = srv.PublicKeyHex()
	cfg.APIURL = "http://devserver.invalid"
	cfg.LicenseKey = lic.Key
	cfg.DataDir = dir
	e.cfg = cfg
	return e
}

func (e *env) now() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }

// start runs a fresh Agent on the same data directory (a restart).
func (e *env) start() {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	deps := e.deps
	deps.HTTPClient = &http.Client{Transport: e.srv.Transport(), Timeout: 30 * time.Second}
	deps.Fingerprinter = e.fp
	if e.procs != nil {
		deps.Processes = e.procs
	}
	deps.Now, deps.Logger, deps.NoWatch = e.now, log, e.noWatch
	a, err := New(e.cfg, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	e.a = a
	e.ln = newMemListener()
	e.ipcSrv = ipc.NewServer(ipc.ServerConfig{
		Mux: a.Mux(), Logger: log, OnConnect: a.ConnOpened, OnClose: a.ConnClosed,
		PeerFunc: e.ln.peerOf,
	})
	go e.ipcSrv.Serve(e.ln)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- a.Run(ctx) }()
	<-a.ready
	<-a.watching
}

// stop shuts the agent down cleanly.
func (e *env) stop() {
	e.t.Helper()
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("Run returned %v", err)
	}
	e.ipcSrv.Close()
}

// crash abandons the agent without its shutdown: its goroutines are stopped
// but no Keygen process is killed and the cache keeps its leases. Used to
// simulate kill -9.
func (e *env) crash() {
	e.t.Helper()
	e.a.lm.mu.Lock()
	for _, l := range e.a.lm.leases {
		if l.stopWatch != nil {
			l.stopWatch()
		}
	}
	e.a.lm.leases = map[string]*lease{} // shutdown finds nothing to kill
	e.a.lm.mu.Unlock()
	e.cancel()
	<-e.done
	e.ipcSrv.Close()
}

// waitFor polls cond on the (possibly fake) clock.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	limit := e.waitLimit
	if limit == 0 {
		limit = 2 * time.Minute // fake time is free
	}
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s\nlogs:\n%s", what, e.logs.String())
		}
		time.Sleep(max(10*time.Millisecond, limit/2000))
	}
}

func (e *env) status() *ipc.Status { return e.a.status() }

func (e *env) liveProcesses() int {
	n := 0
	for _, p := range e.srv.Processes() {
		if p.Status != "DEAD" {
			n++
		}
	}
	return n
}

// --- fakes ---

type fakeFP struct {
	mu  sync.Mutex
	res fingerprint.Result
}

func newFakeFP() *fakeFP {
	return &fakeFP{res: fingerprint.Result{
		Fingerprint: "f1a2b3c4d5e6f708f1a2b3c4d5e6f708f1a2b3c4d5e6f708f1a2b3c4d5e6f708",
		Components: []fingerprint.Component{
			{Name: "cpu", Fingerprint: "c0c0c0c0aa"},
			{Name: "disk-0", Fingerprint: "d1d1d1d1bb"},
			{Name: "nic-0", Fingerprint: "e2e2e2e2cc"},
		},
		Attributes: fingerprint.Attributes{Platform: "linux/amd64", Hostname: "test-host", Cores: 4, Memory: 8 << 30},
	}}
}

func (f *fakeFP) Get(context.Context) (*fingerprint.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.res
	r.Components = append([]fingerprint.Component(nil), f.res.Components...)
	return &r, nil
}

// fakeProcs is a process table the test controls.
type fakeProcs struct {
	mu    sync.Mutex
	alive map[int]bool
	exits map[int][]chan struct{}
}

func newFakeProcs() *fakeProcs {
	return &fakeProcs{alive: map[int]bool{}, exits: map[int][]chan struct{}{}}
}

func (p *fakeProcs) spawn(pid int) {
	p.mu.Lock()
	p.alive[pid] = true
	p.mu.Unlock()
}

func (p *fakeProcs) exit(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.alive[pid] = false
	for _, ch := range p.exits[pid] {
		close(ch)
	}
	delete(p.exits, pid)
}

func (p *fakeProcs) WatchExit(ctx context.Context, pid int, _ uint64) (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.alive[pid] {
		return nil, errors.New("no such process")
	}
	ch := make(chan struct{})
	p.exits[pid] = append(p.exits[pid], ch)
	return ch, nil
}

func (p *fakeProcs) Alive(pid int, _ uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[pid]
}

// memListener hands out net.Pipe connections with a chosen Peer.
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

func (l *memListener) peerOf(c net.Conn) (ipc.Peer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[c]
	if !ok {
		return ipc.Peer{}, errors.New("unknown conn")
	}
	return p, nil
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// client is a raw protocol client for tests.
type client struct {
	t      testing.TB
	conn   net.Conn
	mu     sync.Mutex
	nextID int
	resps  map[int]chan rpcResp
	notes  chan rpcNote
	closed chan struct{}
}

type rpcErr struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

type rpcResp struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpcErr         `json:"error"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

type rpcNote struct {
	Method string
	Params json.RawMessage
}

// dial connects as peer.
func (e *env) dial(peer ipc.Peer) *client {
	e.t.Helper()
	s, c := net.Pipe()
	e.ln.mu.Lock()
	e.ln.peers[s] = peer
	e.ln.mu.Unlock()
	select {
	case e.ln.conns <- s:
	case <-time.After(time.Minute):
		e.t.Fatal("listener did not accept")
	}
	cl := &client{t: e.t, conn: c, resps: map[int]chan rpcResp{}, notes: make(chan rpcNote, 64), closed: make(chan struct{})}
	go cl.read()
	return cl
}

func (c *client) read() {
	defer close(c.closed)
	sc := bufio.NewScanner(c.conn)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		var r rpcResp
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		if r.Method != "" {
			select {
			case c.notes <- rpcNote{r.Method, r.Params}:
			default:
			}
			continue
		}
		c.mu.Lock()
		ch := c.resps[r.ID]
		delete(c.resps, r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// call sends one request and returns the result or the error's data code.
func (c *client) call(method string, params any, out any) (code string, err error) {
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
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return "", err
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
		return "", io.EOF
	}
}

func (c *client) acquire(p ipc.AcquireParams) (*ipc.AcquireResult, string, error) {
	var res ipc.AcquireResult
	code, err := c.call(ipc.MethodAcquire, p, &res)
	if err != nil {
		return nil, code, err
	}
	return &res, "", nil
}

func (c *client) close() { c.conn.Close() }

// nextNote waits for a notification with the given method.
func (c *client) nextNote(method string, within time.Duration) (rpcNote, bool) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case n := <-c.notes:
			if n.Method == method {
				return n, true
			}
		case <-t.C:
			return rpcNote{}, false
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

func peerFor(pid int) ipc.Peer {
	return ipc.Peer{PID: pid, UID: "1000", StartTime: uint64(pid) * 7, Exe: "/usr/bin/demo"}
}

var adminPeer = ipc.Peer{PID: 1, UID: "0", Admin: true, StartTime: 1}

var _ = cache.ErrLocked
var _ = filepath.Join
