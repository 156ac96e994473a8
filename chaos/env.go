// Package chaos is the fault suite: tests that try to break the agent
// (crashes, outages, rate-limit storms, bad signatures, clock roll-backs,
// corrupt caches, IPC floods) and check its invariants after each.
//
// This file holds the small in-process environment the tests (and the scale
// rows of `go run ./bench`) share: a devserver, an agent built as a library
// with a fake fingerprint and a fake process table, an ipc server on an
// in-memory or Unix-socket listener that gives every accepted connection a
// distinct synthetic peer, raw protocol clients (the doubles and the client
// come from internal/agenttest), and an invariant monitor.
// It works inside testing/synctest bubbles when the devserver is in memory
// and the listener is in memory.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
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
	Procs   *agenttest.FakeProcs
	Logs    *agenttest.SyncBuffer
	// Offset is added to the agent's clock (ns); set it to roll back time.
	Offset atomic.Int64

	opts    Options
	fp      *agenttest.FakeFP
	nextPID atomic.Int64

	Agent  *agent.Agent
	ln     net.Listener
	mem    *agenttest.MemListener
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
	lic := srv.CreateLicense(devserver.LicenseSpec{PolicyID: pol.ID, Permissions: devserver.LicensePermissions}) // the agent reads the policy
	srv.CreateEntitlement("FEATURE_A", "Feature A")
	srv.AttachEntitlements(lic.ID, "FEATURE_A")
	dir, err := os.MkdirTemp("", "kga-chaos")
	if err != nil {
		srv.Close()
		return nil, err
	}
	e := &Env{Srv: srv, Product: prod, Policy: pol, License: lic, Dir: dir, Procs: agenttest.NewFakeProcs(),
		Logs: &agenttest.SyncBuffer{}, opts: o, fp: agenttest.NewFakeFP(agenttest.DefaultResult())}
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
	deps := agent.Deps{HTTPClient: hc, Fingerprinter: e.fp, Processes: e.Procs, Now: e.Now, Logger: log, NoWatch: true,
		IPC: agent.IPCOptions{PeerFunc: e.peerOf, MaxConns: 4096, MaxMessageSize: e.opts.MaxMessageSize,
			MaxConnsPerUID: 4096, MaxInFlightPerUID: 1 << 16}} // many app instances of one test user
	if e.opts.RealPeers && e.opts.Socket != "" {
		deps.Processes, deps.IPC.PeerFunc = nil, nil
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
		e.mem = agenttest.NewMemListener()
		e.ln = e.mem
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- a.Run(ctx, e.ln) }()
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
		if p, err := e.mem.PeerOf(c); err == nil {
			return p, nil
		}
	}
	pid := int(e.nextPID.Add(1))
	e.Procs.Spawn(pid)
	return agenttest.PeerFor(pid), nil
}

// Fingerprint is the agent's (fake) machine fingerprint.
func (e *Env) Fingerprint() string { return e.fp.Result().Fingerprint }

// AppParams are the lease.acquire parameters of a chaos app instance.
func AppParams() ipc.AcquireParams { return ipc.AcquireParams{App: "chaos", AppVersion: "1.0.0"} }

// Dial connects a new client with a fresh synthetic peer.
func (e *Env) Dial() (*agenttest.Client, error) {
	if e.mem != nil {
		return e.DialPeer(agenttest.PeerFor(int(e.nextPID.Add(1))))
	}
	conn, err := net.Dial("unix", e.opts.Socket)
	if err != nil {
		return nil, err
	}
	return agenttest.NewClient(conn), nil
}

// DialPeer connects as peer (in-memory listener only); the peer is marked
// alive in the fake process table unless it is the admin.
func (e *Env) DialPeer(p ipc.Peer) (*agenttest.Client, error) {
	if e.mem == nil {
		return nil, errors.New("DialPeer needs the in-memory listener")
	}
	if !p.Admin {
		e.Procs.Spawn(p.PID)
	}
	conn, err := e.mem.Dial(context.Background(), p)
	if err != nil {
		return nil, err
	}
	return agenttest.NewClient(conn), nil
}

// StatusDirect reads license.status through an admin in-memory connection,
// or through a fresh socket connection.
func (e *Env) StatusDirect() (*ipc.Status, error) {
	var c *agenttest.Client
	var err error
	if e.mem != nil {
		c, err = e.DialPeer(agenttest.AdminPeer)
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
