package devserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options configure a [Server]. The zero value is a listening server on a
// random loopback port with Keygen Cloud's defaults.
type Options struct {
	Addr             string           // listen address, default "127.0.0.1:0"
	NoListen         bool             // no socket: use [Server.Transport] (synctest bubbles)
	Now              func() time.Time // clock, default time.Now
	CullInterval     time.Duration    // culling period, default 2m; <0 disables background culling
	RateLimits       []RateWindow     // default 60 per 30s and 500 per 5m
	DisableRateLimit bool
	RateLimitAdmin   bool // also rate-limit admin tokens (exempt by default)
	// SignHostWithPort signs the Host header as sent (host:port) instead
	// of Keygen's host without the port. keygen-go verifies signatures
	// against its API URL's host including the port, so it needs this (or
	// a portless URL) to talk to a dev server on 127.0.0.1:<random port>
	// with signature checks on.
	SignHostWithPort bool
	Logger           *slog.Logger
	// Seed seeds the draws of the injected faults (whether a request gets
	// a 5xx under ServerErrorRate, and 500 or 503), so that a test replays
	// them; 0 draws a random seed.
	Seed uint64
}

// RateWindow is one fixed rate-limit window per credential and IP.
type RateWindow struct {
	Name   string // X-RateLimit-Window value, e.g. "30s"
	Limit  int
	Period time.Duration
}

// DefaultRateLimits are Keygen Cloud's client-side figures.
var DefaultRateLimits = []RateWindow{{Name: "30s", Limit: 60, Period: 30 * time.Second}, {Name: "5m", Limit: 500, Period: 5 * time.Minute}}

// Server is a running in-memory Keygen account.
type Server struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	keys    *keys
	account string
	admin   string
	mux     *http.ServeMux

	ln      net.Listener
	srv     *http.Server
	url     string
	done    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once

	faultMu   sync.Mutex
	faults    Faults
	faultSeed uint64                // Options.Seed, or a random one
	faultRnd  map[string]*rand.Rand // per route, guarded by faultMu (drawServerError)
	lnClosed  bool                  // the Refuse fault closed the listener
	holds     map[string][]chan struct{}

	rl *rateLimiter

	mu       sync.Mutex
	products []*Product
	policies []*Policy
	licenses []*License
	// usesLocked: licenses whose row another update holds (LockUses).
	usesLocked   map[string]int
	users        []*User
	entitlements []*Entitlement
	licenseEnts  map[string][]string // license id -> entitlement ids
	tokens       map[string]*token
	// defaultLicensePerms is the account setting default_license_permissions
	// (nil: Keygen's defaults).
	defaultLicensePerms []string
	machines            []*machine
	components          []*component
	processes           []*process
	stats               Stats
}

// Stats counts requests the server has seen.
type Stats struct {
	Total       int
	Routes      map[string]int // "POST /processes/{id}/actions/ping" -> count
	RateLimited int            // 429 responses
	Faults      int            // requests answered by an injected fault
}

// New starts a server with a fresh account. Call [Server.Close] when done.
func New(o Options) (*Server, error) {
	k, err := newKeys()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:        o,
		log:         o.Logger,
		now:         o.Now,
		keys:        k,
		account:     newID(),
		done:        make(chan struct{}),
		licenseEnts: map[string][]string{},
		tokens:      map[string]*token{},
		stats:       Stats{Routes: map[string]int{}},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "devserver")
	if s.now == nil {
		s.now = time.Now
	}
	windows := o.RateLimits
	if len(windows) == 0 {
		windows = DefaultRateLimits
	}
	s.rl = newRateLimiter(windows)
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s.faultSeed = seed
	s.admin = s.CreateToken("admin", "")
	s.mux = s.routes()

	s.url = "http://devserver.invalid"
	if !o.NoListen {
		addr := o.Addr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("devserver listen %s: %w", addr, err)
		}
		s.ln = ln
		s.url = "http://" + ln.Addr().String()
		s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
		s.serve(ln)
	}
	if o.CullInterval >= 0 {
		d := o.CullInterval
		if d == 0 {
			d = 2 * time.Minute
		}
		s.wg.Add(1)
		go s.cullLoop(d)
	}
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("serve", "err", err)
		}
	}()
}

func (s *Server) cullLoop(d time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.Cull()
		}
	}
}

// URL is the server's base URL, e.g. "http://127.0.0.1:41234"
// ("http://devserver.invalid" with [Options.NoListen]). API paths are
// URL()+"/v1/accounts/"+AccountID()+"/...".
func (s *Server) URL() string { return s.url }

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s }

// Close stops the listener, the culling loop and pending hung requests.
func (s *Server) Close() error {
	var err error
	s.closeMu.Do(func() {
		close(s.done)
		if s.srv != nil {
			err = s.srv.Close()
		}
		s.faultMu.Lock()
		if s.ln != nil {
			_ = s.ln.Close()
		}
		s.faultMu.Unlock()
		s.wg.Wait()
	})
	return err
}

// AccountID is the account's UUID (the keyid of its signatures).
func (s *Server) AccountID() string { return s.account }

// AdminToken is an admin bearer token created at New.
func (s *Server) AdminToken() string { return s.admin }

// PublicKeyHex is the account's Ed25519 public key as 64 hex characters.
func (s *Server) PublicKeyHex() string { return fmt.Sprintf("%x", []byte(s.keys.ed[32:])) }

// RSAPublicKeyPEM is the account's RSA-2048 public key (SPKI PEM). The key
// is generated on first use.
func (s *Server) RSAPublicKeyPEM() string { return spkiPEM(&s.keys.rsaKey().PublicKey) }

// ECDSAPublicKeyPEM is the account's ECDSA P-256 public key (SPKI PEM).
func (s *Server) ECDSAPublicKeyPEM() string { return spkiPEM(&s.keys.ec.PublicKey) }

// Faults switch failures on for subsequent requests.
type Faults struct {
	Refuse          bool          // refuse connections (Transport: connection-refused error)
	Hang            bool          // hold requests until the client gives up
	Latency         time.Duration // delay every response (server clock)
	ServerErrorRate float64       // 0..1 share of unsigned 503/500 answers
	RateLimitStorm  bool          // every request gets 429
	BadSignature    bool          // corrupt Keygen-Signature
	NoSignature     bool          // omit Keygen-Signature
	TruncateBody    bool          // cut bodies in half (Content-Length kept)
	DateSkew        time.Duration // shift the (signed) Date header, e.g. -10m

	// Routes, when set, limits the faults to these route keys (as in
	// [Stats.Routes], e.g. "POST /processes/{id}/actions/ping").
	Routes []string
}

func (f Faults) applies(route string) bool {
	if len(f.Routes) == 0 {
		return true
	}
	for _, r := range f.Routes {
		if r == route {
			return true
		}
	}
	return false
}

// Hold makes requests for route (a route key such as "POST /processes")
// wait before they are served until release is called, so tests can order
// concurrent requests. Holds stack: each release lifts one hold.
func (s *Server) Hold(route string) (release func()) {
	ch := make(chan struct{})
	s.faultMu.Lock()
	if s.holds == nil {
		s.holds = map[string][]chan struct{}{}
	}
	s.holds[route] = append(s.holds[route], ch)
	s.faultMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.faultMu.Lock()
			hs := s.holds[route]
			for i, h := range hs {
				if h == ch {
					s.holds[route] = append(hs[:i:i], hs[i+1:]...)
				}
			}
			s.faultMu.Unlock()
			close(ch)
		})
	}
}

// waitHold blocks while route is held; false if ctx or the server ended.
func (s *Server) waitHold(ctx context.Context, route string) bool {
	for {
		s.faultMu.Lock()
		hs := s.holds[route]
		var h chan struct{}
		if len(hs) > 0 {
			h = hs[len(hs)-1]
		}
		s.faultMu.Unlock()
		if h == nil {
			return true
		}
		select {
		case <-h:
		case <-ctx.Done():
			return false
		case <-s.done:
			return false
		}
	}
}

// SetFaults replaces the active faults. Refuse closes the listener, so
// new connections are refused by the OS.
func (s *Server) SetFaults(f Faults) { s.setFaults(f, false) }

// setFaults replaces the faults; keepListening (the admin route) keeps the
// listener open under Refuse so the fault can be cleared over HTTP: other
// requests then have their connection dropped instead.
func (s *Server) setFaults(f Faults, keepListening bool) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = f
	if s.srv == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	closeIt := f.Refuse && !keepListening
	if closeIt == s.lnClosed {
		return
	}
	if closeIt {
		_ = s.ln.Close()
		s.lnClosed = true
		return
	}
	ln, err := net.Listen("tcp", s.ln.Addr().String())
	if err != nil {
		s.log.Warn("relisten after refuse fault", "err", err)
		return
	}
	s.ln, s.lnClosed = ln, false
	s.serve(ln)
}

func (s *Server) currentFaults() Faults {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.faults
}

// Stats returns a copy of the request counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Routes = make(map[string]int, len(s.stats.Routes))
	for k, v := range s.stats.Routes {
		st.Routes[k] = v
	}
	return st
}

// Transport is an in-memory http.RoundTripper that serves requests with
// [Server.Handler] without a socket, so it works inside testing/synctest
// bubbles. Use it with [Server.URL] (any host works). The Refuse fault makes
// it fail like a refused connection; Hang holds until the request's context
// is done.
func (s *Server) Transport() http.RoundTripper { return memTransport{s} }

type memTransport struct{ s *Server }

var errRefused = errors.New("connect: connection refused")

func (t memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.s.currentFaults().Refuse && !strings.HasSuffix(req.URL.Path, FaultsPath) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		t.s.count("", true, false)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: fakeAddr(req.URL.Host), Err: errRefused}
	}
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	sr := req.Clone(req.Context())
	sr.Body = io.NopCloser(bytesReader(body))
	sr.ContentLength = int64(len(body))
	sr.RequestURI = req.URL.RequestURI()
	sr.RemoteAddr = "127.0.0.1:49152"
	if sr.Host == "" {
		sr.Host = req.URL.Host
	}
	w := newMemWriter()
	t.s.ServeHTTP(w, sr)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	return w.response(req), nil
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// waitFor waits d on the server's timers (fake under synctest), or until ctx
// or the server is done.
func (s *Server) waitFor(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}
