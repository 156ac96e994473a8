package agent

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// The harness runs a devserver (in memory, so it works inside synctest
// bubbles) and an Agent with fake fingerprint, process watcher and clock
// offset, serving an in-memory listener. Test clients speak the
// wire protocol directly over net.Pipe with a Peer the test chooses.

type env struct {
	t       testing.TB
	srv     *devserver.Server
	policy  devserver.Policy
	license devserver.License
	dir     string
	fp      *agenttest.FakeFP
	procs   *agenttest.FakeProcs
	offset  atomic.Int64 // local clock offset, ns
	logs    *agenttest.SyncBuffer

	a      *Agent
	ln     *agenttest.MemListener
	cancel context.CancelFunc
	done   chan error
	cfg    Config
	// noWatch is set for synctest bubbles (see Deps.NoWatch).
	noWatch bool
	// deps carries extra dependencies (config file and loader).
	deps Deps
	// waitLimit bounds waitFor; default 2 minutes.
	waitLimit time.Duration
	// listen, when set, wraps the in-memory listener Run serves.
	listen func(*agenttest.MemListener) net.Listener
}

type envOptions struct {
	policy      devserver.PolicySpec
	license     devserver.LicenseSpec
	cfg         Config
	rateLimits  []devserver.RateWindow
	noRateLimit bool
	seed        uint64 // devserver.Options.Seed
}

func intp(n int) *int { return &n }

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	srv, err := devserver.New(devserver.Options{NoListen: true, RateLimits: o.rateLimits, DisableRateLimit: o.noRateLimit, Seed: o.seed})
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
	if ls.Permissions == nil {
		ls.Permissions = devserver.LicensePermissions // the agent reads the policy; Keygen's defaults are tested in keygen/devserver
	}
	lic := srv.CreateLicense(ls)
	srv.CreateEntitlement("FEATURE_A", "Feature A")
	srv.CreateEntitlement("FEATURE_B", "Feature B")
	srv.AttachEntitlements(lic.ID, "FEATURE_A", "FEATURE_B")
	dir, err := os.MkdirTemp(testTempRoot(), "kga-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{noWatch: true, t: t, srv: srv, policy: pol, license: lic, dir: dir, fp: agenttest.NewFakeFP(agenttest.DefaultResult()), procs: agenttest.NewFakeProcs(), logs: &agenttest.SyncBuffer{}}
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
	e.ln = agenttest.NewMemListener()
	deps.IPC.PeerFunc = e.ln.PeerOf
	// Fake peers all share one uid: raise the per-uid shares.
	deps.IPC.MaxConns, deps.IPC.MaxConnsPerUID, deps.IPC.MaxInFlightPerUID = 1<<16, 1<<16, 1<<16
	a, err := New(e.cfg, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	e.a = a
	var ln net.Listener = e.ln
	if e.listen != nil {
		ln = e.listen(e.ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- a.Run(ctx, ln) }()
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
}

// crash abandons the agent without its shutdown: its goroutines are stopped
// but no Keygen process is killed and the cache keeps its leases. Used to
// simulate kill -9.
func (e *env) crash() {
	e.t.Helper()
	t := e.a.leases
	t.mu.Lock()
	for _, l := range t.byID {
		if l.stopWatch != nil {
			l.stopWatch()
		}
	}
	t.byID, t.byProc = map[string]*lease{}, map[procKey]*lease{} // shutdown finds nothing to kill
	t.mu.Unlock()
	e.cancel()
	<-e.done
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

// dial connects as peer.
func (e *env) dial(peer ipc.Peer) *agenttest.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := e.ln.Dial(ctx, peer)
	if err != nil {
		e.t.Fatalf("listener did not accept: %v", err)
	}
	return agenttest.NewClient(conn)
}
