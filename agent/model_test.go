package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// The model-based sequence test (issue 14, "Check it like a distributed
// system"): seeded random sequences of events (model_events_test.go) run
// against a real Agent and the in-memory dev server inside a
// testing/synctest bubble, so hours of fake time take milliseconds. After
// every event a small reference model checks the invariants:
//
//   - I1: never more live leases than the limit the agent may enforce; once
//     synced, no Keygen process of this machine that no lease owns, and
//     never more than the limit.
//   - I2: within one heartbeat plus the adoption window after an app dies,
//     neither its lease nor its Keygen process remains; a lease whose app
//     exited while its connection stays open is revoked on that connection;
//     a dead app gets no lease.
//   - I3: an app holding a lease on a license Keygen considers valid keeps it
//     through outages shorter than the grace, restarts, rate limiting and
//     local admin mistakes (wrong key, offline deactivate, bad imports).
//   - I4: once a signed answer says the license is invalid, no lease is
//     granted, online or offline, until a signed answer says it is valid;
//     such an answer makes the status invalid at once.
//   - I5: with a correct local clock and a healthy Keygen the agent reaches
//     the right state within one revalidation, whatever happened before.
//   - I6: nothing unsigned is trusted (under a signature fault the agent
//     learns nothing new), no panic, no goroutine left at the end (synctest
//     fails a bubble whose goroutines outlive it).
//
// Issue 16's license model adds (events in model_events_test.go):
//
//   - I7 (metered uses, license.use against the policy's maxUses): online,
//     the agent never reports success for uses Keygen did not count (it
//     refused them: USES_LIMIT_EXCEEDED); Keygen's count never exceeds
//     maxUses; no count the agent reports (online, or offline from the last
//     count plus the queue) exceeds maxUses; once Keygen has been healthy
//     for a revalidation, Keygen's count equals the uses the agent
//     accepted (the offline queue was replayed, once).
//   - I8 (entitlement-gated acquires): a lease asking for an entitlement
//     the license never had is never granted; one asking for an
//     entitlement detached in Keygen is not granted while the agent is
//     online with a healthy Keygen (it asks Keygen); a settled agent grants
//     a gated lease whose entitlements the license has.
//   - I9 (check-in, the sequences of the check-in variant: a daily
//     requireCheckIn policy): with Keygen healthy, the license valid and
//     the clock right from a while before the due date, Keygen never finds
//     the license OVERDUE; offline past Keygen's due date the agent's
//     status is not valid (Keygen would answer OVERDUE).
//   - License-only mode (activation = "none", a quarter of the seeds for
//     the whole sequence): I1 with the license's maxProcesses as the limit
//     and no Keygen machine or process of this agent at all; I4 holds with
//     the license file as the offline certificate.
//
// Environment:
//
//	KEYGEN_MODEL_SEED=N     run only seed N (replays a reported failure)
//	KEYGEN_MODEL_SEQS=N     run N sequences (default modelDefaultSeqs)
//	KEYGEN_MODEL_FIRST=N    start at seed N (default 1)
//	KEYGEN_MODEL_EVENTS=N   events per sequence (default 200)
//	KEYGEN_MODEL_KEEP=i,j,… replay only these event indexes of the seed
//	KEYGEN_MODEL_MINIMIZE=1 shrink each failing trace and print the result
//	KEYGEN_MODEL_STRICT=1   fail on known violations too
//	KEYGEN_MODEL_LOGS=N     print the last N agent log lines of a failure (default 40)
//	KEYGEN_MODEL_DIGEST=1|2 log per-event outcome digests (model_digest_test.go)

// modelDefaultSeqs is the CI budget: 80 sequences of 200 events. Under
// -race on the 2-core box a sequence costs about a second of CPU and they
// run two at a time: 50 took 29 s, 100 took 61 s; without -race 200 take
// about 30 s (KEYGEN_MODEL_SEQS=200).
const (
	modelDefaultSeqs   = 80
	modelDefaultEvents = 200
)

// knownViolations are invariant violations the model found that the
// agent's code does not fix yet; the comment above each names the code at
// fault (KEYGEN_MODEL_MINIMIZE=1 prints a seed's shortest trace). A sequence that hits
// one is reported with t.Log, loudly, and stops there; it does not fail
// the test. Empty this list as the fixes land: a fixed violation then
// stays fixed. KEYGEN_MODEL_STRICT=1 fails on these too.
var knownViolations = map[string]string{
	// Empty: seeds 1-600 run clean in strict mode (KEYGEN_MODEL_STRICT=1).
	// What the last listed ones turned out to be (issue 14, round 2):
	//   - I3/lease-revoked-active-in-app-start-wait (seed 15; it failed
	//     on Linux too, every run): the model's fault. The limit was
	//     lowered during an outage; the agent granted offline within the
	//     cached file's limit, and once online Keygen refused the queued
	//     spawn, so the agent ended the newest lease. Such grants are
	//     excused now.
	//   - I3/re-acquire-refused-LICENSE_INVALID (seed 62) and
	//     I3/lease-revoked-clock_tampered (seeds 66, 74): the model's
	//     fault. The clock moved while Keygen was away, which the model
	//     excuses, but only as time passed and after checking I3; a
	//     restart or a re-acquire right after the move found the clock
	//     behind first. The excuse is applied before I3 now.
	//   - I3/lease-revoked-active-in-advance (seed 89): replays clean,
	//     strict, every run since the agent's jitter is seeded.
	//   - I4/granted-after-signed-invalid-reused (seeds 58, 99): the
	//     model's fault: the refusal reached the agent on another
	//     goroutine in the very instant the app re-claimed its restored
	//     lease. Such a grant is ordered before the refusal; the model
	//     now requires the refusal to revoke it (I4/granted-as-refused-
	//     kept) instead.
	// Seeds 101-300 then found, each fixed (agent fixes pinned in
	// agent/modelfix_test.go): an import undoing a deactivation (199), a
	// refusal beaten by an older imported file under a skewed Date
	// (225), a refusal ignored while the view read clock_tampered (239),
	// and model errors (134, 136, 175: re-acquire on a license Keygen had
	// refused; 178: grace counted from a healthy spell too short to sync;
	// 102: a clock moved just before a fault; 230: a crashed app's seat
	// counted; 239: config reloads without defaults). Seeds 301-600 found
	// a re-spawn for a released lease (546, fixed), answers in flight
	// across a signature fault (498, model), and a lease revoked at a
	// stale limit (378: with the Date 47 min behind the files' clock, the
	// cached machine file was deleted as "issued in the future" and the
	// older license file's limit applied; fixed).
	//
	// Issue 16's license model (uses I7, entitlement-gated acquires I8,
	// check-in I9, the license-only variant; the draws changed, so every
	// seed is a new sequence): seeds 1-300 strict found, each fixed (agent
	// fixes pinned in agent/modelfix_test.go):
	//   - I4/status-valid-after-signed-invalid-online (seeds 7, 36, 37):
	//     agent. A gated acquire's validation answered SUSPENDED, EXPIRED
	//     or NOT_FOUND (signed) and the agent only woke the license loop,
	//     refusing ENTITLEMENTS_MISSING from the machine file with the
	//     status still active. Applied at once now
	//     (TestGatedAcquireAppliesSignedRefusal).
	//   - I7/keygen-count-differs (seed 96, then 66): agent. After a Date
	//     skew cleared, the increment's answer looked out of the replay
	//     window, call relearnt the clock and sent the increment again:
	//     Keygen counted use(2) as 4 (TestUseNotResentAfterClockRelearn).
	//   - I7/online-decrement-not-counted (seeds 49, 96, 122, 133): agent,
	//     in the first version of that fix, which read the count after a
	//     signed 403 too (TestUseRefusalUnderMovedClockReported).
	//   - I7/keygen-count-differs (seed 222): agent. Restarted offline, it
	//     took the use count from a certificate older than the last usage
	//     answer and accepted uses past maxUses; Keygen refused the replay
	//     (TestOfflineUsesCountFromNewestAnswer).
	//   - I7/keygen-count-differs (seed 136): model. Uses queued while
	//     Keygen refuses the license are refused at replay (a suspended,
	//     expired or banned license's login gets 403 on every route:
	//     concerns/authentication.rb).
	//   - I3/lease-revoked-active-in-advance (seed 226): model. License-only
	//     leases are local (never r.Offline): granted within the old limit
	//     until the next sync, then the newest revoked, as designed.
	//   - I3/lease-revoked-offline_expired (seed 166): model. A clock moved
	//     during one fault (5xx) and a second fault (outage) followed with
	//     no healthy spell: the excuse was dropped at the second fault.
	//   - The observer counted OVERDUE as a refusal for I4: model. A license
	//     may check in while overdue (license_policy.rb check_in?,
	//     permits_controller.rb check_in), which the agent does on that
	//     answer; I9 checks check-ins instead.
	//   - Apps the agent closed for idling (ipc.DefaultIdleTimeout) after a
	//     reconnect failed every license.use UNAVAILABLE: model; they
	//     reconnect now (ensureConn).
}

type violation struct {
	inv, key, msg string
	step          int
}

func (v *violation) id() string { return v.inv + "/" + v.key }

// modelApp is one app instance as the model sees it.
type modelApp struct {
	idx      int
	pid      int
	c        *agenttest.Client
	alive    bool // the OS process runs
	connOpen bool // its connection to the current agent is open
	forked   bool // exited, a child keeps the connection
	held     bool // the model believes it holds a lease
	mustLose bool // granted as a signed refusal arrived: the agent must revoke it
	leaseID  string
	revoked  int       // lease.revoked seen when the lease was granted
	excuse   string    // why losing its lease is allowed ("" = it must keep it)
	diedAt   time.Time // when the process exited
	ents     []string  // the entitlements its acquires ask for
}

// verdicts records, from the HTTP transport, the signed answers about the
// right license: the newest decides whether leases may be granted (I4).
type verdicts struct {
	mu       sync.Mutex
	invalid  bool   // the newest signed verdict says invalid
	code     string // its code
	at       time.Time
	sigFault bool // a signature fault is active: answers are not signed
	skewed   bool // a Date skew fault is active
	seen     int  // signed verdicts observed
	anyAfter bool // some signed answer arrived since the last reset (I6)
}

func (v *verdicts) set(invalid bool, code string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sigFault {
		return
	}
	v.invalid, v.code, v.at = invalid, code, time.Now()
	v.seen++
}

func (v *verdicts) get() (invalid bool, code string, at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.invalid, v.code, v.at
}

// observer wraps the dev server's transport and records verdicts.
type observer struct {
	rt       http.RoundTripper
	v        *verdicts
	rightKey string
}

var invalidAuthCodes = map[string]bool{"LICENSE_SUSPENDED": true, "LICENSE_EXPIRED": true, "LICENSE_BANNED": true}

func (o *observer) RoundTrip(r *http.Request) (*http.Response, error) {
	validate := strings.HasSuffix(r.URL.Path, "/licenses/actions/validate-key")
	key := ""
	if validate && r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		var doc struct {
			Meta struct {
				Key string `json:"key"`
			} `json:"meta"`
		}
		_ = json.Unmarshal(b, &doc)
		key = doc.Meta.Key
	} else if k, ok := strings.CutPrefix(r.Header.Get("Authorization"), "License "); ok {
		key = k
	}
	resp, err := o.rt.RoundTrip(r)
	if err != nil || key != o.rightKey || resp.Header.Get("Keygen-Signature") == "" {
		return resp, err
	}
	if !(validate && resp.StatusCode == 200) && resp.StatusCode != 403 {
		return resp, err // no verdict: leave the body alone
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if rerr != nil {
		return resp, err
	}
	switch {
	case validate && resp.StatusCode == 200:
		var doc struct {
			Meta struct {
				Valid bool   `json:"valid"`
				Code  string `json:"code"`
			} `json:"meta"`
		}
		if json.Unmarshal(b, &doc) == nil && doc.Meta.Code != "" {
			// Machine-scope codes (NO_MACHINE, HEARTBEAT_*, ...) are about
			// this machine's activation, not the license: only license
			// verdicts decide I4. Nor OVERDUE: the license may check
			// in while overdue (license_policy.rb check_in? lets the
			// license itself; permits_controller.rb check_in does not
			// look at overdue), which the agent does on that answer,
			// so it is no refusal; I9 checks check-ins.
			switch doc.Meta.Code {
			case "VALID", "SUSPENDED", "BANNED", "EXPIRED", "NOT_FOUND":
				o.v.set(!doc.Meta.Valid, doc.Meta.Code)
			}
		}
	case resp.StatusCode == 403:
		var doc struct {
			Errors []struct {
				Code string `json:"code"`
			} `json:"errors"`
		}
		if json.Unmarshal(b, &doc) == nil && len(doc.Errors) > 0 && invalidAuthCodes[doc.Errors[0].Code] {
			o.v.set(true, doc.Errors[0].Code)
		}
	}
	return resp, err
}

type modelRun struct {
	t      testing.TB
	seed   uint64
	e      *env
	events []modelEvent
	trace  []string
	v      *verdicts
	now    func() time.Time

	apps    []*modelApp
	nextPID int

	// The world as the model knows it.
	suspended, expired, deleted bool
	limit, maxLimitSinceSync    int
	hb, maxHB                   int // process heartbeat, seconds
	activated                   bool
	fault                       evKind // 0 (evAdvance) = none
	faultSince                  time.Time
	// outageSince: when the agent may last have synced, for the grace.
	// A healthy spell too short for the agent to be sure to reach Keygen
	// (less than a revalidation) does not end the outage: seed 178 had
	// faults-clear, 6 s, 5xx-burst, and the agent, which never saw Keygen
	// in those 6 s, ran out of its grace counted from its last sync, 57
	// min before the model's faultSince.
	outageSince        time.Time
	clockOff           time.Duration
	clockOffWhileFault bool
	clockMovedAt       time.Time // the last clock-jump or clock-fix
	// skewTaint: a date-skew fault happened and Keygen has not been healthy
	// for a revalidation since. The dev server's DateSkew shifts only the
	// signed Date header, not the issued time of the machine files it
	// signs; a real Keygen stamps both from one clock (Time.current in
	// signature_headers.rb and machine_checkout_service.rb). Given those
	// contradictory signed times the agent cannot place the machine file
	// on Keygen's clock and rejects it (issued in the future), so an
	// outage in that window may end leases: the agent fails closed on
	// evidence a real Keygen would not produce (seeds 29, 39).
	skewTaint          bool
	stableSince        time.Time // last change that I5 lets the agent catch up with
	revalidate         time.Duration
	sigStart           *ipc.Status // status when a signature fault began (I6)
	sigSettle          time.Time   // until then, answers to requests sent before the fault may arrive
	oldCert, otherCert []byte
	agentKeyWrong      bool
	lastStatus         *ipc.Status
	cur                evKind // the event being applied
	faults             devserver.Faults
	stopped            bool
	starts             uint64 // agents started (seeds their jitter)
	stats              map[string]int

	// Issue 16's license model.
	variant      modelVariant
	ents         map[string]bool // the license's entitlements in Keygen
	usesAccepted int             // uses the agent accepted (online or queued)
	// usesLoose: queued uses may rightly be lost (the license was refused
	// or changed while they waited): the next settled check takes Keygen's
	// count as the new base instead of comparing.
	usesLoose  bool
	usesQueued bool // uses were queued offline since the last settled check
	// Check-in variant: the start of the current spell in which the agent
	// can be expected to check in (zero: not in one), and the due date
	// that an ended spell covered from ciLead before it to past it.
	ciGoodStart, ciCovered time.Time
	digest                 modelDigest
}

// seededFloat64 is a Deps.Rand for the agent: a PCG stream of (seed,
// stream), safe for the agent's goroutines.
func seededFloat64(seed, stream uint64) func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, stream))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

const (
	modelGrace    = 3 * time.Hour
	modelAdoption = 60 * time.Second
)

func newModelRun(t testing.TB, seed uint64, events []modelEvent) *modelRun {
	limit := 3
	variant := drawVariant(seed)
	pol := devserver.PolicySpec{MaxProcesses: intp(limit), Floating: true, MaxMachines: intp(3), MaxUses: intp(variant.maxUses)}
	if variant.checkIn {
		// The shortest interval Keygen allows (policy.rb validates
		// check_in_interval in day/week/month/year).
		pol.RequireCheckIn, pol.CheckInInterval, pol.CheckInIntervalCount = true, "day", 1
	}
	cfg := Config{OfflineGrace: Duration(modelGrace), AdoptionWindow: Duration(modelAdoption)}
	if variant.licenseOnly {
		cfg.Activation = ActivationNone
	}
	e := newEnv(t, envOptions{policy: pol, cfg: cfg, seed: seed}) // the dev server's 5xx draws replay with the seed
	if variant.checkIn {
		// The license was created (and last checked in) a while ago.
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) {
			last := time.Now().Add(variant.checkInLead - 24*time.Hour)
			l.Created, l.LastCheckIn = last, &last
		})
	}
	m := &modelRun{t: t, seed: seed, e: e, events: events, v: &verdicts{}, limit: limit, maxLimitSinceSync: limit,
		hb: 600, maxHB: 600, activated: true, revalidate: 10 * time.Minute, nextPID: 1000,
		variant: variant, ents: map[string]bool{"FEATURE_A": true, "FEATURE_B": true}, stats: map[string]int{}}
	if variant.licenseOnly {
		m.stats["seqs-license-only"]++
	}
	if variant.checkIn {
		m.stats["seqs-check-in"]++
	}
	m.now = time.Now
	// A fatal error mid-sequence still stops the agent and closes the apps'
	// connections, so the bubble ends with no goroutine left.
	t.Cleanup(m.shutdown)
	return m
}

func (m *modelRun) shutdown() {
	if m.stopped {
		return
	}
	m.stopped = true
	if m.e.cancel != nil {
		m.e.cancel()
		<-m.e.done
	}
	for _, a := range m.apps {
		if a.connOpen {
			a.c.Close()
			a.connOpen = false
		}
	}
}

// startAgent is env.start with the observing transport.
func (m *modelRun) startAgent() {
	e := m.e
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	deps := e.deps
	deps.HTTPClient = &http.Client{Transport: &observer{rt: e.srv.Transport(), v: m.v, rightKey: e.license.Key}, Timeout: 30 * time.Second}
	deps.Fingerprinter, deps.Processes = e.fp, e.procs
	deps.Now, deps.Logger, deps.NoWatch = e.now, log, true
	// The agent's jitter comes from the seed (one stream per agent start),
	// so a seed replays the same timers, not only the same events.
	m.starts++
	deps.Rand = seededFloat64(m.seed, m.starts)
	deps.IDs = m.digest.ids(m.seed) // lease and agent ids (model_digest_test.go)
	deps.ConfigLoad = func() (Config, []string, error) {
		c := e.cfg
		c.RevalidateInterval = Duration(m.revalidate)
		c.LogLevel = "debug"
		// As LoadConfig does: without its defaults a config edit set
		// clock_tolerance (and every other unset key) to zero, which no
		// config file can (seed 239: 0 s tolerance, then clock_tampered
		// from a Date a fraction of a second ahead).
		c.applyDefaults()
		return c, nil, nil
	}
	e.ln = agenttest.NewMemListener()
	deps.IPC.PeerFunc = e.ln.PeerOf
	a, err := New(e.cfg, deps)
	if err != nil {
		m.t.Fatal(err)
	}
	e.a = a
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- a.Run(ctx, e.ln) }()
	<-a.ready
	<-a.watching
}

// setup starts the agent, waits for it to be active, and prepares the
// certificates the import events use.
func (m *modelRun) setup() {
	e := m.e
	m.startAgent()
	// Let the agent settle first: a poll that found it a moment short of
	// active slept waitFor's step, shifting the whole run's clock by it.
	synctest.Wait()
	e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
	kc, err := keygen.NewClient(keygen.Config{BaseURL: e.cfg.APIURL, Account: e.cfg.Account, LicenseKey: e.license.Key,
		PublicKey: e.cfg.PublicKey, HTTPClient: &http.Client{Transport: e.srv.Transport()}})
	if err != nil {
		m.t.Fatal(err)
	}
	ctx := context.Background()
	if m.variant.licenseOnly {
		m.setupLicenseOnly(kc)
		return
	}
	co, err := kc.CheckoutMachine(ctx, e.fp.Result().Fingerprint, keygen.CheckoutOptions{Encrypt: true, TTL: time.Hour,
		Include: []string{"license", "license.entitlements", "license.policy", "components"}})
	if err != nil {
		m.t.Fatal(err)
	}
	m.oldCert = co.Certificate
	const otherFP = "0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e"
	if _, err := kc.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: e.license.ID, Fingerprint: otherFP}); err != nil {
		m.t.Fatal(err)
	}
	co, err = kc.CheckoutMachine(ctx, otherFP, keygen.CheckoutOptions{Encrypt: true, Include: []string{"license"}})
	if err != nil {
		m.t.Fatal(err)
	}
	m.otherCert = co.Certificate
	m.stableSince = time.Now()
}

func (m *modelRun) logf(format string, args ...any) {
	m.trace = append(m.trace, fmt.Sprintf("  %s", fmt.Sprintf(format, args...)))
}

// setupLicenseOnly prepares the imports of license-only mode: an old
// (1 h TTL) license file of this license and another license's file.
func (m *modelRun) setupLicenseOnly(kc *keygen.Client) {
	e := m.e
	ctx := context.Background()
	inc := licenseFileIncludes
	co, err := kc.CheckoutLicense(ctx, e.license.ID, keygen.CheckoutOptions{Encrypt: true, TTL: time.Hour, Include: inc})
	if err != nil {
		m.t.Fatal(err)
	}
	m.oldCert = co.Certificate
	other := e.srv.CreateLicense(devserver.LicenseSpec{PolicyID: e.policy.ID, Permissions: devserver.LicensePermissions})
	ko, err := keygen.NewClient(keygen.Config{BaseURL: e.cfg.APIURL, Account: e.cfg.Account, LicenseKey: other.Key,
		PublicKey: e.cfg.PublicKey, HTTPClient: &http.Client{Transport: e.srv.Transport()}})
	if err != nil {
		m.t.Fatal(err)
	}
	co, err = ko.CheckoutLicense(ctx, other.ID, keygen.CheckoutOptions{Encrypt: true, Include: inc})
	if err != nil {
		m.t.Fatal(err)
	}
	m.otherCert = co.Certificate
	m.stableSince = time.Now()
}

// serverValid: does Keygen consider the license valid now?
func (m *modelRun) serverValid() bool {
	return !m.suspended && !m.expired && !m.deleted && !m.keygenOverdue()
}

// keygenLicense is the license as Keygen has it now.
func (m *modelRun) keygenLicense() (devserver.License, bool) {
	if m.deleted {
		return devserver.License{}, false
	}
	return m.e.srv.License(m.e.license.ID)
}

// checkInDue is when Keygen finds the license overdue (check-in variant):
// a day after the last check-in (license.rb check_in_overdue?).
func (m *modelRun) checkInDue() (time.Time, bool) {
	if !m.variant.checkIn {
		return time.Time{}, false
	}
	l, ok := m.keygenLicense()
	if !ok || l.LastCheckIn == nil {
		return time.Time{}, false
	}
	return l.LastCheckIn.Add(24 * time.Hour), true
}

func (m *modelRun) keygenOverdue() bool {
	due, ok := m.checkInDue()
	return ok && time.Now().After(due)
}

// keygenUses is Keygen's use count of the license.
func (m *modelRun) keygenUses() (int, bool) {
	l, ok := m.keygenLicense()
	return l.Uses, ok
}

// noteCheckIn records when the agent cannot be expected to check in:
// Keygen unhealthy, the license refused, no (right) activation, or a
// moved clock (check-in variant).
func (m *modelRun) noteCheckIn() {
	if !m.variant.checkIn {
		return
	}
	now := time.Now()
	good := m.keygenHealthy() && !m.suspended && !m.expired && !m.deleted && m.activated && !m.agentKeyWrong && m.clockOff == 0
	if good {
		if m.ciGoodStart.IsZero() {
			m.ciGoodStart = now
		}
		return
	}
	if due, ok := m.checkInDue(); ok && !m.ciGoodStart.IsZero() && !m.ciGoodStart.After(due.Add(-ciLead)) && !now.Before(due) {
		m.ciCovered = due
	}
	m.ciGoodStart = time.Time{}
}

// ciLead: how long before the due date a healthy spell must begin for the
// agent to be expected to check in: two revalidations (it checks in at a
// revalidation once the date is within its margin, checkin.go) and slack.
const ciLead = 2*10*time.Minute + 2*time.Minute

func (m *modelRun) keygenHealthy() bool { return m.fault == evAdvance || m.fault == evLatency }

func (m *modelRun) setFault(k evKind, f devserver.Faults) {
	wasHealthy := m.keygenHealthy()
	prevLatency := m.faults.Latency
	m.fault = k
	if wasHealthy && !m.keygenHealthy() && (m.outageSince.IsZero() || time.Since(m.faultSince) > m.revalidate+time.Minute) {
		m.outageSince = time.Now()
	}
	if wasHealthy || m.keygenHealthy() {
		m.faultSince = time.Now()
	}
	m.faults = f
	m.e.srv.SetFaults(f)
	sig := k == evBadSig || k == ev5xx
	m.v.mu.Lock()
	m.v.sigFault = sig
	m.v.skewed = k == evDateSkew
	m.v.mu.Unlock()
	if k == evBadSig {
		m.sigStart = m.e.status()
		// The dev server takes a request's faults when it arrives: one
		// sent under a latency fault is answered, genuinely signed, up to
		// that latency after the signature fault began (seed 498: a
		// validation sent 8 s before the fault made the agent active).
		m.sigSettle = time.Now().Add(prevLatency + time.Second)
	} else {
		m.sigStart = nil
	}
	if k != evAdvance {
		// A fault that begins before the agent could relearn a clock
		// moved while Keygen was healthy (it relearns at the next
		// revalidation, or when an answer's Date falls outside the
		// window) leaves it, offline, the same evidence as a clock rolled
		// back offline (seed 102: clock-fix of a clock 1h27m fast, then a
		// 429 storm in the same instant: clock_tampered).
		recent := !m.clockMovedAt.IsZero() && time.Since(m.clockMovedAt) <= m.revalidate+time.Minute
		// A fault that follows another, with no healthy spell between,
		// keeps the evidence of a clock moved during the first (seed 166:
		// 5xx-burst; clock-jump(+33m); clock-fix; 16 min; outage: the
		// agent, never online since, kept the forward reading and its
		// offline window ended 56 min early).
		m.clockOffWhileFault = m.clockOff != 0 || recent || (!wasHealthy && m.clockOffWhileFault)
	}
	if k == evDateSkew {
		m.skewTaint = true
	} else if m.skewTaint && !m.keygenHealthy() {
		// Leases granted from now on are excused where they are granted.
		m.excuseAll("Keygen's signed Date disagreed with its machine files (date-skew), then Keygen went away")
	}
	m.unstable()
}

func (m *modelRun) unstable() { m.stableSince = time.Now() }

// excuseAll: every held lease may be lost from now on, for why.
func (m *modelRun) excuseAll(why string) {
	for _, a := range m.apps {
		if a.held && a.excuse == "" {
			a.excuse = why
		}
	}
}

func (m *modelRun) heldCount() int {
	n := 0
	for _, a := range m.apps {
		if a.held {
			n++
		}
	}
	return n
}

// heldInAgent counts the apps the model believes hold a lease that the
// agent still has: a crashed app's lease may end while another app waits
// for a seat (seed 230: app-crash; app-start-wait(51s) was granted the
// seat the crashed app's lease gave back during the wait, before check
// ran again).
func (m *modelRun) heldInAgent() int {
	leases := m.agentLeases()
	n := 0
	for _, a := range m.apps {
		if !a.held {
			continue
		}
		for _, l := range leases[a.pid] {
			if l.LeaseID == a.leaseID {
				n++
				break
			}
		}
	}
	return n
}

// pick returns the i-th app matching ok, or nil.
func (m *modelRun) pick(n int, ok func(*modelApp) bool) *modelApp {
	var c []*modelApp
	for _, a := range m.apps {
		if ok(a) {
			c = append(c, a)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[n%len(c)]
}

func (m *modelRun) dialApp(a *modelApp) {
	a.c = m.e.dial(agenttest.PeerFor(a.pid))
	a.connOpen = true
}

// ensureConn redials a running app whose connection is gone: the agent
// closes a connection that sent no request within its first 30 s
// (ipc.DefaultIdleTimeout), as after reconnectAll for an app without a
// lease; the SDKs reconnect. Without this, such apps' license.use and
// re-acquires all failed UNAVAILABLE (about 1 in 5 uses in seeds 1-300).
func (m *modelRun) ensureConn(a *modelApp) {
	if a.connOpen {
		select {
		case <-a.c.Done():
			a.c.Close()
			a.connOpen = false
		default:
			return
		}
	}
	m.dialApp(a)
}

// acquire asks for a lease for a and checks I1/I4 on a grant.
func (m *modelRun) acquire(a *modelApp, wait time.Duration) *violation {
	p := acquireParams()
	p.WaitMS = int64(wait / time.Millisecond)
	p.Entitlements = a.ents
	revoked := a.c.Revoked()
	var pre *ipc.Status // the status as the app asked
	// call lets the agent finish what it was doing at this instant (an
	// answer from Keygen it is acting on) before the app asks, and notes
	// how many signed verdicts had arrived when it asked.
	var seen0 int
	call := func() (*ipc.AcquireResult, string, error) {
		synctest.Wait()
		m.v.mu.Lock()
		seen0 = m.v.seen
		m.v.mu.Unlock()
		pre = m.e.status()
		return a.c.Acquire(p)
	}
	r, code, err := call()
	for try := 0; code == ipc.CodeStarting && try < 30; try++ {
		time.Sleep(time.Second) // the SDKs retry STARTING shortly
		r, code, err = call()
	}
	if err != nil {
		m.logf("app #%d pid %d: refused %s", a.idx, a.pid, code)
		if v := m.checkEntitlementRefusal(a, code, err); v != nil {
			return v
		}
		// As in check's I3: only a license Keygen considers valid (seed
		// 175: a lease granted after the license expired, before the
		// agent heard of it, was refused on re-claim after a restart).
		if a.held && a.excuse == "" && code != ipc.CodeUnavailable && m.serverValid() && m.activated {
			return &violation{inv: "I3", key: "re-acquire-refused-" + code, msg: fmt.Sprintf("app #%d held a lease and was refused on re-acquire: %v", a.idx, err)}
		}
		a.held = false
		return nil
	}
	m.logf("app #%d pid %d: granted %s reused=%v offline=%v", a.idx, a.pid, r.LeaseID, r.Reused, r.Offline)
	if !a.alive {
		return &violation{inv: "I2", key: "dead-peer-granted", msg: fmt.Sprintf("app #%d (pid %d) has exited and was granted lease %s over its inherited connection", a.idx, a.pid, r.LeaseID)}
	}
	if v := m.checkEntitlementGrant(a, r, pre); v != nil {
		return v
	}
	wasHeld := a.held
	a.held, a.leaseID, a.revoked, a.mustLose = true, r.LeaseID, revoked, false
	if !wasHeld {
		a.excuse = ""
	}
	if m.skewTaint && !m.keygenHealthy() && m.fault != evDateSkew {
		a.excuse = "granted after a date-skew fault while Keygen is away"
	}
	// License-only mode's leases are local (r.Offline is never set):
	// the agent learns a lowered limit at its next sync, from the
	// validation and license file, and grants within the old one until
	// then, online or not (seed 226: limit-down, 429-storm, three grants
	// at limit 3, then the newest revoked once Keygen answered).
	if (r.Offline || m.variant.licenseOnly) && !wasHeld && m.heldCount() > m.limit {
		// Granted offline within the limit of the cached machine file,
		// beyond the one Keygen has now (lowered during the outage): once
		// online Keygen refuses the queued spawn (machine_process.rb
		// validates the limit on create) and the agent must end this
		// lease, the newest (seed 15: limit-down, bad-signature restart,
		// 5xx, two offline grants at limit 2).
		a.excuse = "granted offline beyond a process limit Keygen lowered meanwhile"
	}
	if inv, code, at := m.v.get(); inv {
		m.v.mu.Lock()
		during := m.v.seen != seen0
		m.v.mu.Unlock()
		if during && at.Equal(time.Now()) {
			// The refusal reached the agent in the same instant as the
			// request, on another goroutine (seeds 58, 99: after a
			// restart, the restored lease's first ping found its process
			// culled and the re-spawn was answered 403 LICENSE_EXPIRED
			// while the app re-claimed the lease): the grant is ordered
			// before the refusal, which must then revoke it (checked in
			// check, after the agent settled).
			m.logf("app #%d: granted as Keygen's signed %s arrived: it must be revoked", a.idx, code)
			a.excuse = "granted as Keygen's refusal arrived"
			a.mustLose = true
			return nil
		}
		st := m.e.status()
		return &violation{inv: "I4", key: "granted-after-signed-invalid-" + grantKind(r),
			msg: fmt.Sprintf("lease %s granted (reused=%v offline=%v) although Keygen said %s (signed) %v ago; status %s valid=%v online=%v",
				r.LeaseID, r.Reused, r.Offline, code, time.Since(at), st.State, st.Valid, st.Online)}
	}
	if held, allowed := m.heldInAgent(), max(m.limit, m.maxLimitSinceSync); !wasHeld && held > allowed && !r.Reused {
		return &violation{inv: "I1", key: "grant-over-limit", msg: fmt.Sprintf("granted a lease: %d held, limit %d", held, allowed)}
	}
	return nil
}

// checkEntitlementGrant is I8 on a grant: never an entitlement the license
// never had; not one detached in Keygen while the agent is online with a
// healthy Keygen, which it asks (entitlements.go).
func (m *modelRun) checkEntitlementGrant(a *modelApp, r *ipc.AcquireResult, pre *ipc.Status) *violation {
	if len(a.ents) > 0 {
		m.stats["gated-granted"]++
	}
	for _, c := range a.ents {
		if c == modelEntMissing {
			return &violation{inv: "I8", key: "granted-never-entitled", msg: fmt.Sprintf("app #%d asked for %s, which the license never had, and was granted lease %s (reused=%v offline=%v)", a.idx, c, r.LeaseID, r.Reused, r.Offline)}
		}
		if !m.ents[c] && m.keygenHealthy() && pre.Online && pre.Valid && !r.Reused {
			return &violation{inv: "I8", key: "granted-detached-online", msg: fmt.Sprintf("app #%d asked for %s, detached in Keygen, and was granted lease %s online (status %s)", a.idx, c, r.LeaseID, pre.State)}
		}
	}
	return nil
}

// checkEntitlementRefusal is I8 on a refusal: a settled agent does not
// refuse entitlements the license has (since before it settled).
func (m *modelRun) checkEntitlementRefusal(a *modelApp, code string, err error) *violation {
	if code != ipc.CodeEntitlementsMissing {
		return nil
	}
	m.stats["gated-refused-missing"]++
	for _, c := range a.ents {
		if !m.ents[c] {
			return nil
		}
	}
	settled := m.keygenHealthy() && m.clockOff == 0 && m.serverValid() && m.activated && !m.agentKeyWrong &&
		time.Since(m.stableSince) > 12*time.Minute
	if settled {
		return &violation{inv: "I8", key: "entitled-refused", msg: fmt.Sprintf("app #%d asked for %v, which the license has, and was refused: %v", a.idx, a.ents, err)}
	}
	return nil
}

// use is an evUse / evUseDecr: an app records uses (I7).
func (m *modelRun) use(ev modelEvent) *violation {
	a := m.pick(ev.n, func(a *modelApp) bool { return a.alive })
	if a == nil {
		return nil
	}
	m.ensureConn(a)
	count := useCount(ev.n)
	if ev.kind == evUseDecr {
		count = -1
	}
	synctest.Wait()
	before, _ := m.keygenUses()
	pre := m.e.status()
	var res ipc.UseResult
	code, err := a.c.Call(ipc.MethodUse, ipc.UseParams{Count: count}, &res)
	synctest.Wait()
	after, ok := m.keygenUses()
	maxUses := m.variant.maxUses
	if err != nil {
		m.logf("app #%d: use(%d) refused %s (Keygen's count %d -> %d)", a.idx, count, code, before, after)
		m.stats["uses-refused-"+code]++
		if code == ipc.CodeUsesExceeded && count > 0 && m.keygenHealthy() && pre.Online && pre.Valid && !m.usesQueued &&
			before+count <= maxUses && after == before {
			return &violation{inv: "I7", key: "uses-refused-below-limit", msg: fmt.Sprintf("use(%d) refused with Keygen at %d of %d: %v", count, before, maxUses, err)}
		}
		return nil
	}
	m.logf("app #%d: use(%d) -> uses %d offline=%v queued=%d (Keygen's count %d -> %d)", a.idx, count, res.Uses, res.Offline, res.Queued, before, after)
	m.stats["uses-accepted-"+onlineWord(!res.Offline)]++
	if res.Uses > maxUses {
		return &violation{inv: "I7", key: "reported-over-max-" + onlineWord(!res.Offline), msg: fmt.Sprintf("use(%d) reported %d uses, maxUses %d", count, res.Uses, maxUses)}
	}
	if !res.Offline && ok && count > 0 && after < before+count {
		return &violation{inv: "I7", key: "online-success-not-counted", msg: fmt.Sprintf("use(%d) reported success online, Keygen's count went %d -> %d", count, before, after)}
	}
	if !res.Offline && ok && count < 0 && after > before+count {
		return &violation{inv: "I7", key: "online-decrement-not-counted", msg: fmt.Sprintf("use(%d) reported success online, Keygen's count went %d -> %d", count, before, after)}
	}
	if res.Offline {
		m.usesQueued = true
	}
	if count > 0 || !res.Offline {
		// A queued decrement is not counted: Keygen lets only admin and
		// product tokens decrement (uses.go), so its replay is refused.
		m.usesAccepted += count
	}
	return nil
}

// usesMayBeLost: uses queued now may rightly be refused at replay.
func (m *modelRun) usesMayBeLost() {
	if m.usesQueued {
		m.usesLoose = true
	}
}

func (m *modelRun) newApp() *modelApp {
	m.nextPID++
	a := &modelApp{idx: len(m.apps), pid: m.nextPID, alive: true}
	m.e.procs.Spawn(a.pid)
	m.apps = append(m.apps, a)
	m.dialApp(a)
	return a
}

func (m *modelRun) appDies(a *modelApp, closeConn bool) {
	a.alive = false
	a.diedAt = time.Now()
	if closeConn && a.connOpen {
		a.c.Close()
		a.connOpen = false
	}
	m.e.procs.Exit(a.pid)
}

// reconnectAll: after the agent restarted, every running app reconnects
// and re-acquires the lease it held (as the SDKs do).
func (m *modelRun) reconnectAll() *violation {
	for _, a := range m.apps {
		if a.connOpen {
			a.c.Close()
			a.connOpen = false
		}
		if !a.alive {
			continue
		}
		m.dialApp(a)
		if a.held {
			if v := m.acquire(a, 0); v != nil {
				return v
			}
		}
	}
	return nil
}

func (m *modelRun) admin(method string, params any) (*ipc.Status, string, error) {
	c := m.e.dial(agenttest.AdminPeer)
	defer c.Close()
	var st ipc.Status
	code, err := c.Call(method, params, &st)
	return &st, code, err
}

func (m *modelRun) deleteLicense() {
	e := m.e
	req, _ := http.NewRequest(http.MethodDelete, e.cfg.APIURL+"/v1/accounts/"+e.cfg.Account+"/licenses/"+e.license.ID, nil)
	req.Header.Set("Authorization", "Bearer "+e.srv.AdminToken())
	req.Header.Set("Accept", "application/vnd.api+json")
	// The vendor's dashboard reaches Keygen whatever this machine's network does.
	e.srv.SetFaults(devserver.Faults{})
	resp, err := e.srv.Transport().RoundTrip(req)
	e.srv.SetFaults(m.faults)
	if err != nil {
		m.t.Fatalf("deleting the license: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		m.t.Fatalf("deleting the license: HTTP %d", resp.StatusCode)
	}
}

// apply runs one event and returns the first violation it found.
func (m *modelRun) apply(ev modelEvent) *violation {
	e := m.e
	switch ev.kind {
	case evAdvance:
		// Sleep in slices so time-driven checks see the states in between.
		for left := ev.d; left > 0; {
			step := min(left, time.Minute)
			if until := time.Until(m.sigSettle); until > 0 && until < step {
				step = until // check once the answers sent before a signature fault are in
			}
			time.Sleep(step)
			left -= step
			synctest.Wait()
			if v := m.checkTimed(); v != nil {
				return v
			}
		}
	case evAppStart, evAppStartWait:
		a := m.newApp()
		if ev.kind == evAppStart {
			a.ents = appEntitlements(ev.n)
		}
		return m.acquire(a, ev.d)
	case evAppExit:
		a := m.pick(ev.n, func(a *modelApp) bool { return a.alive })
		if a == nil {
			return nil
		}
		if a.held && a.connOpen {
			_ = a.c.Release(a.leaseID)
		}
		a.held = false
		m.appDies(a, true)
	case evAppCrash:
		a := m.pick(ev.n, func(a *modelApp) bool { return a.alive })
		if a == nil {
			return nil
		}
		m.appDies(a, true)
	case evForkExit:
		a := m.pick(ev.n, func(a *modelApp) bool { return a.alive && a.held && a.connOpen })
		if a == nil {
			return nil
		}
		a.forked = true
		m.appDies(a, false)
	case evChildAcquire:
		a := m.pick(ev.n, func(a *modelApp) bool { return a.forked && a.connOpen })
		if a == nil {
			return nil
		}
		return m.acquire(a, 0)
	case evRelease:
		a := m.pick(ev.n, func(a *modelApp) bool { return a.alive && a.held && a.connOpen })
		if a == nil {
			return nil
		}
		if err := a.c.Release(a.leaseID); err != nil {
			m.logf("app #%d: release: %v", a.idx, err)
		}
		a.held = false
	case evReacquire:
		a := m.pick(ev.n, func(a *modelApp) bool { return a.alive && !a.held })
		if a == nil {
			return nil
		}
		m.ensureConn(a)
		return m.acquire(a, 0)
	case evAgentCrash, evAgentRestart:
		if ev.kind == evAgentCrash {
			e.crash()
		} else {
			e.stop()
		}
		m.startAgent()
		m.unstable()
		return m.reconnectAll()
	case evOutage:
		m.setFault(ev.kind, devserver.Faults{Refuse: true})
	case ev5xx:
		m.setFault(ev.kind, devserver.Faults{ServerErrorRate: 1})
	case ev429:
		m.setFault(ev.kind, devserver.Faults{RateLimitStorm: true})
	case evLatency:
		m.setFault(ev.kind, devserver.Faults{Latency: ev.d})
	case evBadSig:
		m.setFault(ev.kind, devserver.Faults{BadSignature: true})
	case evDateSkew:
		m.setFault(ev.kind, devserver.Faults{DateSkew: ev.d})
	case evFaultsClear:
		if m.fault != evAdvance {
			m.setFault(evAdvance, devserver.Faults{})
		}
	case evClockJump:
		m.clockOff += ev.d
		m.clockMovedAt = time.Now()
		e.offset.Store(int64(m.clockOff))
		if !m.keygenHealthy() {
			m.clockOffWhileFault = true
		}
		m.unstable()
	case evClockFix:
		if m.clockOff != 0 && !m.keygenHealthy() {
			// Put right offline, the clock moved away from the offset the
			// agent last learned: offline, as evidence, it is a jump.
			m.clockOffWhileFault = true
		}
		m.clockOff = 0
		m.clockMovedAt = time.Now()
		e.offset.Store(0)
		m.unstable()
	case evSuspend, evReinstate, evExpire, evRenew:
		if m.deleted {
			return nil
		}
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) {
			switch ev.kind {
			case evSuspend:
				l.Suspended, m.suspended = true, true
			case evReinstate:
				l.Suspended, m.suspended = false, false
			case evExpire:
				t := time.Now().Add(-time.Second)
				l.Expiry, m.expired = &t, true
			case evRenew:
				t := time.Now().Add(365 * 24 * time.Hour)
				l.Expiry, m.expired = &t, false
			}
		})
		if !m.serverValid() {
			m.excuseAll(ev.kind.String())
			m.usesMayBeLost()
		}
		m.unstable()
	case evDelete:
		if m.deleted {
			return nil
		}
		m.deleteLicense()
		m.deleted = true
		m.excuseAll("license deleted")
		m.usesMayBeLost()
		m.unstable()
	case evLimitDown, evLimitUp:
		if m.deleted {
			return nil
		}
		if ev.kind == evLimitDown {
			m.limit = max(1, m.limit-1)
		} else {
			m.limit = min(6, m.limit+1)
		}
		m.maxLimitSinceSync = max(m.maxLimitSinceSync, m.limit)
		e.srv.UpdatePolicy(e.policy.ID, func(p *devserver.Policy) { p.MaxProcesses = intp(m.limit) })
		if m.heldCount() > m.limit {
			m.excuseAll("limit below the leases held")
		}
		m.unstable()
	case evHeartbeat:
		m.hb = ev.n
		m.maxHB = max(m.maxHB, ev.n)
		e.srv.UpdatePolicy(e.policy.ID, func(p *devserver.Policy) { p.HeartbeatDuration = intp(ev.n) })
		m.unstable()
	case evActivateWrong:
		st, code, err := m.admin(ipc.MethodActivate, ipc.ActivateParams{Key: "TYPO-" + strconv.Itoa(ev.n)})
		m.logf("activate wrong key: code %q err %v state %s", code, err, st.State)
		m.usesMayBeLost()
		if err == nil {
			m.agentKeyWrong = true
			return &violation{inv: "I3", key: "wrong-key-accepted", msg: "a mistyped key was accepted"}
		}
	case evActivateRight:
		st, code, err := m.admin(ipc.MethodActivate, ipc.ActivateParams{Key: e.license.Key})
		m.logf("activate right key: code %q err %v state %s", code, err, st.State)
		m.usesMayBeLost()
		if err == nil || code == ipc.CodeLicenseInvalid {
			m.activated = true
			m.agentKeyWrong = false
		}
		m.unstable()
	case evDeactivate:
		st, code, err := m.admin(ipc.MethodDeactivate, nil)
		m.logf("deactivate (fault %s): code %q err %v state %s", m.fault, code, err, st.State)
		m.usesMayBeLost()
		if err == nil {
			m.activated = false
			m.excuseAll("deactivated by an admin")
		}
		m.unstable()
	case evConfigEdit:
		if m.revalidate == 10*time.Minute {
			m.revalidate = 5 * time.Minute
		} else {
			m.revalidate = 10 * time.Minute
		}
		e.a.Reload()
		m.unstable()
	case evImportGood, evImportExpired, evImportOther:
		var cert []byte
		switch ev.kind {
		case evImportGood:
			rec, err := e.a.store.Certificate(e.a.offlineCertKind())
			if err != nil || rec == nil {
				return nil
			}
			cert = rec.Raw
		case evImportExpired:
			cert = m.oldCert
		default:
			cert = m.otherCert
		}
		_, code, err := m.admin(ipc.MethodImport, ipc.ImportParams{Certificate: string(cert)})
		m.logf("import: code %q err %v", code, err)
		if ev.kind == evImportOther && err == nil {
			return &violation{inv: "I6", key: "other-machine-file-accepted", msg: "another machine's file was imported"}
		}
	case evUse, evUseDecr:
		return m.use(ev)
	case evEntDetach, evEntAttach:
		if m.deleted {
			return nil
		}
		c := entCode(ev.n)
		if ev.kind == evEntDetach {
			e.srv.DetachEntitlements(e.license.ID, c)
		} else if !m.ents[c] {
			e.srv.AttachEntitlements(e.license.ID, c)
		}
		m.ents[c] = ev.kind == evEntAttach
		if ev.kind == evEntDetach {
			// Issue 16 item 7: a lease that needs a removed entitlement
			// may go once the agent learns of it.
			for _, a := range m.apps {
				if a.held && a.excuse == "" && slices.Contains(a.ents, c) {
					a.excuse = "its entitlement " + c + " was detached"
				}
			}
		}
		m.unstable()
	}
	return nil
}

// lossKey names an I3 violation by its likely cause, so that one defect
// gets one id whatever else the sequence did.
func lossKey(why string, cur evKind, state string) string {
	switch {
	case cur == evActivateWrong:
		return "lease-" + why + "-by-activate-wrong-key"
	case cur == evDeactivate:
		return "lease-" + why + "-by-failed-deactivate"
	case state == string(StateClockTampered) || state == string(StateOfflineExpired):
		return "lease-" + why + "-" + state
	}
	return "lease-" + why + "-" + state + "-in-" + cur.String()
}

func onlineWord(online bool) string {
	if online {
		return "online"
	}
	return "offline"
}

func grantKind(r *ipc.AcquireResult) string {
	switch {
	case r.Reused:
		return "reused"
	case r.Offline:
		return "offline"
	}
	return "online"
}

// agentLeases maps pid -> the agent's leases.
func (m *modelRun) agentLeases() map[int][]ipc.LeaseInfo {
	out := map[int][]ipc.LeaseInfo{}
	for _, l := range m.e.a.leases.infos() {
		out[l.PID] = append(out[l.PID], l)
	}
	return out
}

// check runs the invariants that hold at every step.
func (m *modelRun) check() *violation {
	e := m.e
	// A clock that moved while Keygen is away (or before the agent could
	// relearn it online) may end leases at once: offline, the agent cannot
	// tell a fast clock being corrected from a rollback, and issue 14
	// item 6 says a rolled-back clock must not extend offline use. Checked
	// here, before I3, not only as time passes (seed 62: outage;
	// clock-jump(+2h55m); clock-jump(+32m); clock-fix; agent-restart: the
	// restart found the clock 3h27m behind, and no advance came between).
	if m.clockOffWhileFault && !m.keygenHealthy() {
		m.excuseAll("clock changed while offline")
	}
	if m.keygenOverdue() {
		m.excuseAll("overdue for check-in in Keygen")
	}
	if !m.serverValid() {
		// Uses queued while Keygen refuses the license (the agent, offline,
		// may not know yet) are refused at replay: a license refused
		// authentication gets 403 on every route (concerns/
		// authentication.rb; seed 136: suspend;
		// 429-storm; use(3)).
		m.usesMayBeLost()
	}
	// I7: Keygen never counts more than maxUses.
	if n, ok := m.keygenUses(); ok && n > m.variant.maxUses {
		return &violation{inv: "I7", key: "keygen-over-max", msg: fmt.Sprintf("Keygen counts %d uses, maxUses %d", n, m.variant.maxUses)}
	}
	st := e.status()
	m.lastStatus = st
	leases := m.agentLeases()
	n := e.a.leases.count()

	// I1: live leases within the limit the agent may enforce.
	if allowed := max(m.limit, m.maxLimitSinceSync); n > allowed {
		return &violation{inv: "I1", key: "leases-over-limit", msg: fmt.Sprintf("%d leases in the agent, limit %d", n, allowed)}
	}
	// I4: a signed invalid verdict shows in the status at once.
	if inv, code, at := m.v.get(); inv && st.Valid {
		return &violation{inv: "I4", key: "status-valid-after-signed-invalid-" + onlineWord(st.Online),
			msg: fmt.Sprintf("Keygen said %s (signed) %v ago and the status is %s valid=%v online=%v", code, time.Since(at), st.State, st.Valid, st.Online)}
	}
	// I6: under a signature fault the agent learns nothing new. Falling
	// back to an earlier signed invalid verdict is not new: it was signed.
	inv, _, _ := m.v.get()
	if m.sigStart != nil && !time.Now().After(m.sigSettle) {
		m.sigStart = st
	}
	if m.sigStart != nil && !(inv && !st.Valid) && st.Online && st.State != string(StateClockTampered) && (st.State != m.sigStart.State || st.Valid != m.sigStart.Valid) {
		return &violation{inv: "I6", key: "unsigned-answer-trusted", msg: fmt.Sprintf("under %s the status went from %s/%v to %s/%v online", m.fault, m.sigStart.State, m.sigStart.Valid, st.State, st.Valid)}
	}
	// I3: running apps holding leases on a valid license keep them.
	for _, a := range m.apps {
		if !a.held {
			continue
		}
		has := false
		for _, l := range leases[a.pid] {
			if l.LeaseID == a.leaseID {
				has = true
			}
		}
		lost := !has || (a.connOpen && a.c.Revoked() > a.revoked)
		if !lost {
			if inv, code, _ := m.v.get(); a.mustLose && inv {
				return &violation{inv: "I4", key: "granted-as-refused-kept", msg: fmt.Sprintf("app #%d (pid %d) keeps lease %s, granted as Keygen's signed %s arrived; status %s valid=%v", a.idx, a.pid, a.leaseID, code, st.State, st.Valid)}
			}
			continue
		}
		if !a.alive {
			if a.forked && a.connOpen && a.c.Revoked() <= a.revoked {
				// The child still reads the connection: it must be told.
				a.held = false
				return &violation{inv: "I2", key: "fork-exit-not-revoked", msg: fmt.Sprintf("app #%d (pid %d) exited with its connection open: lease %s was dropped without lease.revoked", a.idx, a.pid, a.leaseID)}
			}
			a.held = false
			continue
		}
		if a.excuse == "" && m.serverValid() && m.activated {
			why := "dropped"
			if a.c.Revoked() > a.revoked {
				why = "revoked"
			}
			return &violation{inv: "I3", key: lossKey(why, m.cur, st.State),
				msg: fmt.Sprintf("app #%d (pid %d) lost lease %s (%s) on a license Keygen considers valid; status %s/%s valid=%v online=%v; fault %s, clock %+v",
					a.idx, a.pid, a.leaseID, why, st.State, st.Code, st.Valid, st.Online, m.fault, m.clockOff)}
		}
		a.held = false
	}
	return nil
}

// checkTimed runs the invariants that are about time passing.
func (m *modelRun) checkTimed() *violation {
	if v := m.check(); v != nil {
		return v
	}
	e := m.e
	now := time.Now()
	m.noteCheckIn()
	if v := m.checkLicenseModel(now); v != nil {
		return v
	}
	// Outages longer than the grace, or clock changes while offline, may
	// take leases away.
	if !m.keygenHealthy() && now.Sub(m.outageSince) > modelGrace-m.revalidate {
		m.excuseAll("outage longer than the grace")
	}
	if m.skewTaint && m.keygenHealthy() && now.Sub(m.faultSince) > m.revalidate*11/10+time.Minute {
		m.skewTaint = false
	}
	// I2: a dead app's lease and Keygen process go within one heartbeat
	// plus the adoption window.
	window := time.Duration(m.maxHB)*time.Second + modelAdoption + 30*time.Second
	procs := e.srv.Processes()
	leases := m.agentLeases()
	for _, a := range m.apps {
		if a.alive || now.Sub(a.diedAt) <= window {
			continue
		}
		if ls := leases[a.pid]; len(ls) > 0 {
			return &violation{inv: "I2", key: "dead-app-lease", msg: fmt.Sprintf("app #%d (pid %d) died %v ago and still has lease %s", a.idx, a.pid, now.Sub(a.diedAt), ls[0].LeaseID)}
		}
		kpid := keygenPID(a.pid, agenttest.PeerFor(a.pid).StartTime)
		for _, p := range procs {
			if p.PID == kpid && p.Status != "DEAD" {
				return &violation{inv: "I2", key: "dead-app-process", msg: fmt.Sprintf("app #%d (pid %d) died %v ago and its Keygen process %s is %s", a.idx, a.pid, now.Sub(a.diedAt), p.ID, p.Status)}
			}
		}
	}
	// Once stable (healthy Keygen, correct clock) for one revalidation:
	// The window is the longest revalidation interval (10 min): a config
	// edit that shortens it applies from the next wait on.
	settled := m.keygenHealthy() && m.clockOff == 0 && now.Sub(m.stableSince) > 11*time.Minute+time.Minute
	if !settled {
		return nil
	}
	st := e.status()
	// I5: the right state.
	want := m.serverValid() && m.activated
	if st.Valid != want || (want && !st.Online) {
		return &violation{inv: "I5", key: fmt.Sprintf("state-%s-%s-want-valid-%v", st.State, st.Code, want),
			msg: fmt.Sprintf("stable for %v: status %s/%s valid=%v online=%v, Keygen says the license is valid=%v (activated=%v): %s",
				now.Sub(m.stableSince), st.State, st.Code, st.Valid, st.Online, m.serverValid(), m.activated, st.Detail)}
	}
	m.maxLimitSinceSync = m.limit
	// I7: the queued uses were replayed, once.
	if n, ok := m.keygenUses(); ok && m.activated && !m.agentKeyWrong {
		if m.usesLoose {
			m.usesAccepted, m.usesLoose = n, false
		} else if n != m.usesAccepted {
			return &violation{inv: "I7", key: "keygen-count-differs", msg: fmt.Sprintf("settled: Keygen counts %d uses, the agent accepted %d", n, m.usesAccepted)}
		} else if m.usesQueued {
			m.stats["uses-replayed-and-matched"]++
		}
		m.usesQueued = false
	}
	// I1, synced: every live Keygen process of this machine is a lease's,
	// and there are no more than the limit.
	if st.Machine != nil && st.Machine.ID != "" && now.Sub(m.stableSince) > 12*time.Minute+time.Duration(m.maxHB)*time.Second {
		own := map[string]bool{}
		for _, ls := range leases {
			for _, l := range ls {
				own[l.ProcessID] = true
			}
		}
		alive := 0
		for _, p := range procs {
			if p.MachineID != st.Machine.ID || p.Status == "DEAD" {
				continue
			}
			alive++
			if !own[p.ID] {
				return &violation{inv: "I1", key: "orphan-process", msg: fmt.Sprintf("synced, and Keygen process %s (pid %s) belongs to no lease", p.ID, p.PID)}
			}
		}
		if alive > max(m.limit, m.heldCount()) {
			return &violation{inv: "I1", key: "processes-over-limit", msg: fmt.Sprintf("synced: %d live Keygen processes, limit %d", alive, m.limit)}
		}
	}
	return nil
}

// checkLicenseModel runs the time-driven checks of issue 16's license
// model: I9 (check-in) and license-only mode's I1.
func (m *modelRun) checkLicenseModel(now time.Time) *violation {
	e := m.e
	if due, ok := m.checkInDue(); ok && now.After(due) {
		// I9: healthy from well before the due date (two revalidations),
		// the agent checked in in time.
		if m.ciCovered.Equal(due) || (!m.ciGoodStart.IsZero() && !m.ciGoodStart.After(due.Add(-ciLead))) {
			return &violation{inv: "I9", key: "overdue-while-online", msg: fmt.Sprintf("Keygen finds the license overdue (due %v ago) though Keygen was healthy, the license valid and the clock right from %v before the due date to past it", now.Sub(due), ciLead)}
		}
		// I9: offline past the due date, not valid.
		offline := m.fault == evOutage || m.fault == ev5xx || m.fault == ev429 || m.fault == evBadSig
		if offline && m.clockOff == 0 && !m.clockOffWhileFault && now.Sub(due) > time.Minute && now.Sub(m.faultSince) > time.Minute {
			st := e.status()
			m.stats["offline-past-due-checks"]++
			if st.Valid {
				return &violation{inv: "I9", key: "valid-offline-past-due", msg: fmt.Sprintf("Keygen's check-in was due %v ago, Keygen is away (%s) and the status is %s/%s valid=%v online=%v", now.Sub(due), m.fault, st.State, st.Code, st.Valid, st.Online)}
			}
		}
	}
	if m.variant.licenseOnly {
		// I1, license-only mode: no machine and no Keygen process of this
		// agent (the other machine of setup is not the agent's).
		fp := e.fp.Result().Fingerprint
		for _, mc := range e.srv.Machines() {
			if mc.Fingerprint == fp {
				return &violation{inv: "I1", key: "license-only-machine", msg: fmt.Sprintf("license-only mode, and Keygen has machine %s for this fingerprint", mc.ID)}
			}
		}
		for _, p := range e.srv.Processes() {
			return &violation{inv: "I1", key: "license-only-process", msg: fmt.Sprintf("license-only mode, and Keygen has process %s (pid %s)", p.ID, p.PID)}
		}
	}
	return nil
}

// run executes the events; it returns the first violation.
func (m *modelRun) run() (v *violation) {
	m.trace = append(m.trace, "variant: "+m.variant.String())
	m.setup()
	m.ciGoodStart = time.Now()
	for i, ev := range m.events {
		m.trace = append(m.trace, fmt.Sprintf("%3d %s", i, ev))
		m.cur = ev.kind
		v = m.apply(ev)
		if v == nil {
			synctest.Wait()
			m.noteCheckIn()
			v = m.check()
		}
		m.record(i, v) // model_digest_test.go
		if v != nil {
			v.step = i
			break
		}
	}
	// The end: stop cleanly; synctest fails the bubble if anything is left.
	m.stopped = true
	m.e.stop()
	for _, a := range m.apps {
		if a.connOpen {
			a.c.Close()
			a.connOpen = false
		}
	}
	return v
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return n
}

// runModelSeq runs one sequence in its own bubble.
func runModelSeq(t *testing.T, seed uint64, events []modelEvent) (v *violation, trace []string, logs string) {
	v, trace, logs, _ = runModelSeqWith(t, seed, events, nil)
	return v, trace, logs
}

// runModelSeqWith is runModelSeq with the sequence's coverage counts (how
// often the license-model invariants were put to the test); done, when
// set, sees the run at its end.
func runModelSeqWith(t *testing.T, seed uint64, events []modelEvent, done func(*modelRun)) (v *violation, trace []string, logs string, stats map[string]int) {
	synctest.Test(t, func(t *testing.T) {
		m := newModelRun(t, seed, events)
		v = m.run()
		trace, logs, stats = m.trace, m.e.logs.Tail(modelLogTail()), m.stats
		if done != nil {
			done(m)
		}
		if l, ok := m.keygenLicense(); ok && m.variant.checkIn && l.LastCheckIn != nil && l.LastCheckIn.After(l.Created) {
			stats["checked-in"]++
		}
	})
	return v, trace, logs, stats
}

func TestModelSequences(t *testing.T) {
	seqs := envInt(t, "KEYGEN_MODEL_SEQS", modelDefaultSeqs)
	nEvents := envInt(t, "KEYGEN_MODEL_EVENTS", modelDefaultEvents)
	first := uint64(1)
	if s := os.Getenv("KEYGEN_MODEL_FIRST"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KEYGEN_MODEL_FIRST=%q: %v", s, err)
		}
		first = n
	}
	if s := os.Getenv("KEYGEN_MODEL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KEYGEN_MODEL_SEED=%q: %v", s, err)
		}
		first, seqs = n, 1
	}
	var keep []int
	if s := os.Getenv("KEYGEN_MODEL_KEEP"); s != "" {
		for f := range strings.SplitSeq(s, ",") {
			i, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("KEYGEN_MODEL_KEEP=%q: %v", s, err)
			}
			keep = append(keep, i)
		}
	}
	strict := os.Getenv("KEYGEN_MODEL_STRICT") != ""
	minimize := os.Getenv("KEYGEN_MODEL_MINIMIZE") != ""
	start := time.Now()
	var mu sync.Mutex
	total, known, stats := 0, map[string]int{}, map[string]int{}
	// The sequences run in parallel (each in its own bubble, with its own
	// dev server and cache: nothing is shared), as many at once as
	// -test.parallel allows (GOMAXPROCS): the summary comes once all are
	// done.
	t.Cleanup(func() {
		t.Logf("model: %d sequences, %d events drawn, %v wall time; violations by kind: %v", seqs, total, time.Since(start).Round(time.Millisecond), known)
		t.Logf("model: license-model coverage: %v", stats)
		for id, why := range knownViolations {
			t.Logf("knownViolations still listed: %s: %s", id, why)
		}
	})
	for seed := first; seed < first+uint64(seqs); seed++ {
		events := genEvents(seed, nEvents)
		if keep != nil {
			events = subset(events, keep)
		}
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			v, trace, logs, st := runModelSeqWith(t, seed, events, nil)
			mu.Lock()
			total += len(events)
			for k, n := range st {
				stats[k] += n
			}
			if v != nil {
				known[v.id()]++
			}
			mu.Unlock()
			if v == nil {
				return
			}
			why, isKnown := knownViolations[v.id()]
			report := fmt.Sprintf("%s violated (%s) at event %d: %s\nreplay: KEYGEN_MODEL_SEED=%d go test ./agent -run 'TestModelSequences'\ntrace:\n%s\nlast agent logs:\n%s",
				v.inv, v.key, v.step, v.msg, seed, strings.Join(trace, "\n"), logs)
			if minimize {
				idx := minimizeTrace(t, seed, events, v.id(), v.step)
				report += fmt.Sprintf("\nminimal trace (KEYGEN_MODEL_KEEP=%s):\n%s", joinInts(idx), strings.Join(eventStrings(subset(events, idx)), "\n"))
			}
			if isKnown && !strict {
				t.Logf("KNOWN VIOLATION %s (%s), not failing: %s", v.id(), why, report)
				return
			}
			t.Errorf("%s", report)
		})
	}
}

func subset(evs []modelEvent, idx []int) []modelEvent {
	out := make([]modelEvent, 0, len(idx))
	for _, i := range idx {
		if i >= 0 && i < len(evs) {
			out = append(out, evs[i])
		}
	}
	return out
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func eventStrings(evs []modelEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%3d %s", i, e)
	}
	return out
}

// minimizeTrace shrinks the failing event list (greedy delta debugging on
// event indexes) while the same violation id still occurs, and returns the
// indexes of the original sequence that remain.
func minimizeTrace(t *testing.T, seed uint64, events []modelEvent, id string, step int) []int {
	idx := make([]int, min(len(events), step+1)) // nothing after the failing event matters
	for i := range idx {
		idx[i] = i
	}
	fails := func(cand []int) bool {
		ok := false
		t.Run("shrink", func(t *testing.T) {
			v, _, _ := runModelSeq(t, seed, subset(events, cand))
			ok = v != nil && v.id() == id
		})
		return ok
	}
	// Cut everything after the failing step first.
	for chunk := len(idx) / 2; chunk >= 1; chunk /= 2 {
		for i := 0; i < len(idx); {
			cand := slices.Concat(idx[:i], idx[min(i+chunk, len(idx)):])
			if len(cand) < len(idx) && fails(cand) {
				idx = cand
				continue
			}
			i += chunk
		}
	}
	return idx
}

// modelLogTail is how many agent log lines a failure prints: 40, or
// KEYGEN_MODEL_LOGS=N.
func modelLogTail() int {
	if n, err := strconv.Atoi(os.Getenv("KEYGEN_MODEL_LOGS")); err == nil && n > 0 {
		return n
	}
	return 40
}
