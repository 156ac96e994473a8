package agent

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/agent/heartbeat"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/internal/paths"
	"github.com/keygen-agent/keygen-agent/internal/version"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Version is the agent's version, owned by internal/version (set there at
// link time), reported in agent.hello, the machine's metadata and the
// Keygen User-Agent.
var Version = version.Get()

// Fingerprinter computes this machine's identity. *fingerprint.Cache
// satisfies it.
type Fingerprinter interface {
	Get(ctx context.Context) (*fingerprint.Result, error)
}

// ProcessWatcher tells whether an OS process is alive and when it exits.
// The default uses package ipc's pidfd / kqueue / process-handle watchers.
type ProcessWatcher interface {
	WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error)
	Alive(pid int, startTime uint64) bool
}

// Deps are the agent's collaborators. Every field is optional: a nil one
// gets the production default built from Config (tests replace them).
type Deps struct {
	// HTTPClient reaches Keygen; default: keygen's default client.
	HTTPClient *http.Client
	// Store is an already-open cache; default: open DataDir/agent.db in Run.
	Store *cache.Store
	// Fingerprinter; default: fingerprint.NewCache with Config.AppID.
	Fingerprinter Fingerprinter
	// Processes; default: the OS watcher from package ipc.
	Processes ProcessWatcher
	// Now is the local clock; default time.Now. Tests inject it to roll the
	// clock back.
	Now func() time.Time
	// Rand seeds the jitter of revalidations and heartbeat pings (one draw,
	// uniform in [0, 1), at New; see Agent.draw); default math/rand/v2's
	// Float64. The model test seeds it so a seed replays the same timers.
	Rand func() float64
	// IDs is the randomness of the ids the agent makes: lease ids and its
	// instance id (instance.go). Default crypto/rand.Reader. Must be safe
	// for concurrent use. The model test seeds it so a seed replays the
	// same ids.
	IDs    io.Reader
	Logger *slog.Logger
	// LogLevel, when set, is adjusted on config reload.
	LogLevel *slog.LevelVar
	// ConfigFile is watched for changes when set; Reload re-reads it with
	// ConfigLoad.
	ConfigFile string
	ConfigLoad func() (Config, []string, error)
	// NoWatch disables the fsnotify watchers (config file, import folder).
	// Tests inside testing/synctest bubbles set it: an inotify read is not
	// durably blocking, so the bubble's clock could not advance.
	NoWatch bool
	// IPC tunes the server Run puts on its listener.
	IPC IPCOptions
}

// IPCOptions tune the IPC server; zero values are ipc's defaults. The
// admin group comes from Config.AdminGroup.
type IPCOptions struct {
	// PeerFunc replaces the kernel's peer credentials (in-memory
	// listeners in tests).
	PeerFunc       func(net.Conn) (ipc.Peer, error)
	MaxConns       int
	MaxMessageSize int
	// Per-uid shares (ipc.ServerConfig); tests whose fake peers all share
	// one uid raise them.
	MaxConnsPerUID    int
	MaxInFlightPerUID int
}

// LeaseStopBudget bounds how long Run's shutdown spends ending leases
// (waiting for spawns in flight, then killing Keygen processes). It is
// kept well under the service manager's stop timeout
// (installer.StopTimeout) so the cache is closed cleanly after it;
// cmd/keygen-agent's tests check the margin.
const LeaseStopBudget = 3 * time.Second

// Agent is the daemon core. Create it with New and call Run with the
// listener it serves.
type Agent struct {
	deps   Deps
	salt   uint64 // the timers' jitter (draw), from Deps.Rand
	log    *slog.Logger
	now    func() time.Time
	mux    *ipc.Mux
	budget *budget.Budget
	sched  *heartbeat.Scheduler[schedKey]
	procs  ProcessWatcher

	cfgMu sync.RWMutex
	cfg   Config

	// Set once Run has initialised them; guarded by ready.
	ready   chan struct{}
	store   *cache.Store
	fp      atomic.Pointer[fingerprint.Result]
	keys    keygen.PublicKeys
	certs   certMemo // the last cached certificates opened (certmemo.go)
	initErr error

	apiMu sync.RWMutex
	api   *keygen.Client // authenticated with the current license key

	lic    licenseState
	klc    klcState   // check-in, entitlements, leasing strategies, license changes (klc.go)
	usage  usageState // license.use (uses.go)
	clock  *agentClock
	leases *leaseTable
	ev     evidenceState
	conns  connSet

	syncNow chan chan error
	wake    chan struct{}
	// kick asks the license loop for a sync without waiting for it.
	kick chan struct{}
	// stopping is set when Run begins its shutdown.
	stopping atomic.Bool
	// halt bounds the Keygen calls that end leases; cancelled when the
	// shutdown's LeaseStopBudget is spent.
	halt context.Context
	// replayMu serialises outbox replays.
	replayMu sync.Mutex
	// claims marks the outbox entries being sent (killcharge.go).
	claims outboxClaims
	// persistQ carries lease-record writes to runPersister.
	persistMu     sync.RWMutex
	persistQ      chan func() error
	persistClosed bool
	persisted     chan struct{}
	// watching is closed once the file watchers are set up (or skipped).
	watching chan struct{}
	wg       sync.WaitGroup
	runCtx   context.Context
	abort    context.CancelCauseFunc // ends Run with an error (a faulted cache)
}

// New checks the configuration and builds an Agent. It does no I/O; Run
// serves the socket at once, answering "starting" until it has opened the
// cache and computed the fingerprint.
func New(cfg Config, deps Deps) (*Agent, error) {
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Rand == nil {
		deps.Rand = rand.Float64
	}
	if deps.IDs == nil {
		deps.IDs = crand.Reader
	}
	keys, err := keygen.ParsePublicKeys(cfg.PublicKey, cfg.RSAPublicKey, cfg.ECDSAPublicKey)
	if err != nil && !cfg.Insecure {
		return nil, fmt.Errorf("%w: public key: %v", ErrConfig, err)
	}
	a := &Agent{
		deps:     deps,
		log:      deps.Logger,
		now:      deps.Now,
		cfg:      cfg,
		keys:     keys,
		ready:    make(chan struct{}),
		watching: make(chan struct{}),
		syncNow:  make(chan chan error),
		kick:     make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		procs:    deps.Processes,
	}
	if a.procs == nil {
		a.procs = osProcesses{}
	}
	a.clock = newAgentClock(a.now)
	a.salt = uint64(deps.Rand() * (1 << 53))
	a.budget = budget.New(budget.Config{
		Windows: []budget.Window{
			{Limit: cfg.RateLimit.PerShort, Period: cfg.RateLimit.Short.D()},
			{Limit: cfg.RateLimit.PerLong, Period: cfg.RateLimit.Long.D()},
		},
	})
	a.sched = heartbeat.New(heartbeat.Config{Concurrency: 8}, a.fireHeartbeat)
	a.leases = newLeaseTable()
	a.conns.init()
	a.lic.view = licenseView{State: StateStarting, Detail: "the agent is starting"}
	a.mux = ipc.NewMux()
	a.registerHandlers(a.mux)
	return a, nil
}

// config returns a snapshot of the live configuration.
func (a *Agent) config() Config {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return a.cfg
}

// client returns the Keygen client for the current license key.
func (a *Agent) client() *keygen.Client {
	a.apiMu.RLock()
	defer a.apiMu.RUnlock()
	return a.api
}

func (a *Agent) newClient(licenseKey string) (*keygen.Client, error) {
	return a.newClientFor(licenseKey, a.bearerToken())
}

// newClientFor builds a Keygen client for a license key and bearer token.
func (a *Agent) newClientFor(licenseKey, token string) (*keygen.Client, error) {
	cfg := a.config()
	kc := keygen.Config{
		BaseURL:        cfg.APIURL,
		Account:        cfg.Account,
		Environment:    cfg.Environment,
		APIVersion:     cfg.APIVersion,
		LicenseKey:     licenseKey,
		Token:          token,
		AgentVersion:   Version,
		HTTPClient:     a.deps.HTTPClient,
		Now:            a.now,
		TrustedNow:     a.clock.now,
		OnResponse:     a.observeResponse,
		BeforeRequest:  a.beforeRequest,
		RSAPublicKey:   cfg.RSAPublicKey,
		ECDSAPublicKey: cfg.ECDSAPublicKey,
	}
	if !cfg.Insecure {
		kc.PublicKey = cfg.PublicKey
	}
	return keygen.NewClient(kc)
}

// observeResponse feeds every Keygen response into the request budget and,
// when its signature was verified, into the trusted-time watermark.
func (a *Agent) observeResponse(info keygen.ResponseInfo) {
	obs := budget.Observation{Status: info.Status, Remaining: -1, Limit: -1}
	if info.RateLimit.Limit > 0 {
		obs.Remaining, obs.Limit = info.RateLimit.Remaining, info.RateLimit.Limit
		obs.Reset = info.RateLimit.Reset
	}
	obs.RetryAfter = info.RateLimit.RetryAfter
	a.budget.Observe(obs)
	// A nonce-bound answer (a validation) is taken once its nonce matched:
	// observeValidation.
	if info.Verified && !info.NonceBound && !info.Date.IsZero() {
		a.advanceWatermark(info.Date)
	}
}

// Run serves ln, initialises the cache, fingerprint and Keygen client,
// reconciles leases left by a previous run, and keeps the license and
// leases current until ctx is cancelled or serving fails. It returns nil
// on a clean cancel and an error when initialisation or serving failed;
// either way it has stopped serving and closed ln.
//
// The shutdown stops accepting connections first, then refuses
// lease.acquire (STOPPING), ends the leases within LeaseStopBudget, closes
// the connections, and closes the cache last.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		return fmt.Errorf("%w: Run needs a listener", ErrConfig)
	}
	ctx, a.abort = context.WithCancelCause(ctx)
	defer a.abort(nil)
	a.runCtx = ctx
	halt, stopHalt := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHalt()
	a.halt = halt
	cfg := a.config()
	srv := ipc.NewServer(ipc.ServerConfig{
		Mux: a.mux, Logger: a.log, AdminGroup: cfg.AdminGroup,
		OnConnect: a.connOpened, OnClose: a.connClosed,
		PeerFunc: a.deps.IPC.PeerFunc, MaxConns: a.deps.IPC.MaxConns, MaxMessageSize: a.deps.IPC.MaxMessageSize,
		MaxConnsPerUID: a.deps.IPC.MaxConnsPerUID, MaxInFlightPerUID: a.deps.IPC.MaxInFlightPerUID,
	})
	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		err := srv.Serve(ln)
		if a.stopping.Load() || errors.Is(err, ipc.ErrServerClosed) {
			return
		}
		if err == nil {
			err = errors.New("the listener stopped accepting")
		}
		serveErr = fmt.Errorf("serving %s: %w", ln.Addr(), err)
		a.log.Error("serving the socket failed; stopping", "err", serveErr)
		stopLoop()
	}()
	// stopServing closes the listener first (no new connections), then,
	// after the leases are ended, the connections.
	stopServing := func() error {
		a.stopping.Store(true)
		_ = ln.Close()
		<-served
		_ = srv.Close()
		return serveErr
	}

	if err := a.init(loopCtx); err != nil {
		a.initErr = err
		a.fire(evInitFailed, licenseView{State: StateError, Code: "INIT_FAILED", Detail: err.Error()})
		close(a.ready)
		close(a.watching)
		a.stopping.Store(true)
		a.leases.close()
		_ = stopServing()
		return err
	}
	close(a.ready)

	a.persistMu.Lock()
	a.persistQ, a.persisted = make(chan func() error, 1024), make(chan struct{})
	a.persistMu.Unlock()
	go func() {
		defer close(a.persisted)
		a.runPersister()
	}()

	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		_ = a.sched.Run(schedCtx)
	}()

	pingRestored := a.restoreLeases(loopCtx)
	a.startWatchers(loopCtx)
	a.licenseLoop(loopCtx, pingRestored)

	// Shutdown: stop accepting, refuse new leases, end the leases within
	// the budget (kill Keygen processes; connections closing from now on
	// leave their leases to it), close the connections, then stop the
	// scheduler and close the cache.
	a.stopping.Store(true)
	_ = ln.Close()
	a.leases.close()
	leaseCtx, cancel := context.WithTimeout(halt, LeaseStopBudget)
	a.shutdownLeases(leaseCtx)
	cancel()
	stopHalt()
	err := stopServing()
	stopSched()
	a.wg.Wait()
	a.persistMu.Lock()
	a.persistClosed = true
	close(a.persistQ)
	a.persistMu.Unlock()
	<-a.persisted
	if a.deps.Store == nil && a.store != nil {
		if cerr := a.store.Close(); cerr != nil {
			a.log.Warn("closing cache", "err", cerr)
		}
	}
	if cerr := context.Cause(ctx); errors.Is(cerr, cache.ErrCorrupt) {
		return cerr
	}
	return err
}

func (a *Agent) init(ctx context.Context) error {
	cfg := a.config()
	store := a.deps.Store
	if store == nil {
		var err error
		store, err = cache.Open(paths.CacheFile(cfg.DataDir), cache.Options{Logger: a.log, Now: a.now, OnFault: a.storeFault})
		if err != nil {
			return fmt.Errorf("opening cache: %w", err)
		}
	}
	a.store = store
	if r := store.Recovered(); r != nil {
		a.log.Error("cache was corrupt and has been set aside; starting clean and re-fetching from Keygen",
			"moved_to", r.QuarantinedTo, "reason", r.Reason)
	}
	a.loadClock()
	if ls, err := store.LastSync(); err == nil {
		a.lic.mu.Lock()
		a.lic.lastSync = ls
		a.lic.mu.Unlock()
	}
	fpr := a.deps.Fingerprinter
	if fpr == nil {
		fpr = fingerprint.NewCache(fingerprint.Options{AppID: cfg.AppID})
	}
	a.deps.Fingerprinter = fpr
	res, err := fpr.Get(ctx)
	if err != nil {
		return fmt.Errorf("fingerprint: %w", err)
	}
	a.fp.Store(res)
	key := a.licenseKey()
	api, err := a.newClient(key)
	if err != nil {
		return fmt.Errorf("%w: keygen client: %v", ErrConfig, err)
	}
	a.apiMu.Lock()
	a.api = api
	a.apiMu.Unlock()
	return nil
}

// isReady reports whether Run has finished initialising.
func (a *Agent) isReady() bool {
	select {
	case <-a.ready:
		return a.initErr == nil
	default:
		return false
	}
}

// Every Keygen request, each page of a list included, passes the shared
// request budget (keygen.Config.BeforeRequest). The priority and the
// longest wait travel in the call's context.
type (
	priorityKey struct{}
	maxWaitKey  struct{}
)

// errBudgetWait: the request budget did not let a request through within
// the caller's limit. Offline-class for the caller, but Keygen itself was
// not found unreachable.
var errBudgetWait = fmt.Errorf("the request budget is exhausted: %w", context.DeadlineExceeded)

// call runs one Keygen API call at priority p under the shared budget.
func (a *Agent) call(ctx context.Context, p budget.Priority, f func(ctx context.Context, c *keygen.Client) error) error {
	ctx = context.WithValue(ctx, priorityKey{}, p)
	err := a.authenticated(ctx, f)
	if dateOutOfWindow(err) && a.relearnClock(ctx) {
		// The local clock moved since the last validation: relearned, retry.
		err = a.authenticated(ctx, f)
	}
	a.observeAnswer(err)
	return err
}

// withMaxBudgetWait bounds how long calls made with ctx wait for the
// budget; the requests themselves keep ctx's own deadline.
func withMaxBudgetWait(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, maxWaitKey{}, d)
}

// beforeRequest is the keygen client's hook: wait for the budget.
func (a *Agent) beforeRequest(ctx context.Context, _, _ string) error {
	p, ok := ctx.Value(priorityKey{}).(budget.Priority)
	if !ok {
		p = budget.PriorityRefresh
	}
	wait := a.budget.WaitAs
	if ok, _ := ctx.Value(withinShareKey{}).(bool); ok {
		wait = a.budget.WaitWithinShare
	}
	if d, ok := ctx.Value(maxWaitKey{}).(time.Duration); ok && d > 0 {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if err := wait(wctx, p, budgetOwner(ctx)); err != nil {
			switch {
			case errors.Is(err, budget.ErrShareSpent):
				return errShareSpent
			case ctx.Err() != nil:
				return ctx.Err()
			}
			return errBudgetWait
		}
		return nil
	}
	if err := wait(ctx, p, budgetOwner(ctx)); errors.Is(err, budget.ErrShareSpent) {
		return errShareSpent
	} else if err != nil {
		return err
	}
	return nil
}

// go runs f on a goroutine owned by the agent: Run waits for it.
func (a *Agent) goOwned(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// offline reports whether err means Keygen could not be reached (or could
// not be trusted, or would not answer for now: 429), as opposed to an
// answer from Keygen. A cancelled caller is neither.
func offline(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	return keygen.IsOffline(err) || errors.Is(err, keygen.ErrRateLimited) || errors.Is(err, context.DeadlineExceeded)
}
