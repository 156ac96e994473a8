package agent

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
)

// The license lifecycle: one table of the states the license can be in and
// the events that move it (docs/lifecycle.md draws it). Every change of the
// license view goes through fire, which checks the transition against the
// table, persists signed verdicts and tells the apps. Two transitions are
// evaluated when the view is read rather than fired (view in state.go):
// the end of the offline window (offline → offline_expired, a timer) and a
// clock found behind trusted time (any → clock_tampered, a clock
// observation); both are in the table too.

// lcEvent is what drives the license state.
type lcEvent string

const (
	// evStarted: Run finished initialising (the first sync follows).
	evStarted lcEvent = "started"
	// evInitFailed: the cache or the fingerprint could not be set up.
	evInitFailed lcEvent = "init_failed"
	// evNoKey: no license key is configured or activated.
	evNoKey lcEvent = "no_key"
	// evDeactivated: an admin deactivated this machine (license.deactivate).
	evDeactivated lcEvent = "deactivated"
	// evVerdict: a verified answer from Keygen about the license or this
	// machine: a validation, or a refusal of an activation, ping, spawn or
	// check-out.
	evVerdict lcEvent = "verdict"
	// evAuthRefused: Keygen refused the agent's credential (not a verdict
	// on the license: the same license may be valid with another one).
	evAuthRefused lcEvent = "auth_refused"
	// evUnreachable: Keygen could not be reached or trusted; the state
	// derives from the persisted verdict and the cached machine file.
	evUnreachable lcEvent = "unreachable"
	// evImported: a machine file was imported while offline.
	evImported lcEvent = "imported"
	// evOfflineTimer: the offline window ended (evaluated on read).
	evOfflineTimer lcEvent = "offline_window_ends"
	// evClockBehind: the local clock is behind trusted time (evaluated on
	// read; the clock logic lives in state.go).
	evClockBehind lcEvent = "clock_behind"
)

// anyState stands for every state in the table's From column.
const anyState State = "*"

// lcEdge is one row of the lifecycle table: from From (anyState: from
// every state), Event leads to one of To.
type lcEdge struct {
	From  State
	Event lcEvent
	To    []State
}

// verdictStates are the states a verified answer may put the license in.
var verdictStates = []State{StateActive, StateExpired, StateSuspended, StateInvalid, StateHardwareChanged}

// offlineStates are the states derived without Keygen: the cached machine
// file (offline, offline_expired, or expired/suspended per the file) or the
// last signed verdict, which wins over an older file.
var offlineStates = []State{StateOffline, StateOfflineExpired, StateExpired, StateSuspended, StateInvalid, StateHardwareChanged}

// lifecycleTable is the state machine. docs/lifecycle.md draws exactly
// these edges (TestLifecycleDiagramMatchesTable).
var lifecycleTable = []lcEdge{
	{From: StateStarting, Event: evInitFailed, To: []State{StateError}},
	{From: anyState, Event: evNoKey, To: []State{StateUnlicensed}},
	{From: anyState, Event: evDeactivated, To: []State{StateNotActivated}},
	{From: anyState, Event: evVerdict, To: verdictStates},
	{From: anyState, Event: evAuthRefused, To: []State{StateAuthRefused}},
	{From: anyState, Event: evUnreachable, To: offlineStates},
	{From: anyState, Event: evImported, To: offlineStates},
	{From: StateOffline, Event: evOfflineTimer, To: []State{StateOfflineExpired}},
	{From: anyState, Event: evClockBehind, To: []State{StateClockTampered}},
}

// lcAllowed reports whether the table has from --ev--> to.
func lcAllowed(from State, ev lcEvent, to State) bool {
	for _, e := range lifecycleTable {
		if e.Event == ev && (e.From == from || e.From == anyState) && slices.Contains(e.To, to) {
			return true
		}
	}
	return false
}

// verdictState maps a validation code (and Keygen's valid flag) onto the
// license state: the one place where Keygen's codes become states.
func verdictState(code string, valid bool) State {
	switch {
	case code == "VALID":
		return StateActive
	case code == "EXPIRED":
		return StateExpired // valid under ALLOW_ACCESS/MAINTAIN_ACCESS
	case code == "SUSPENDED" || code == "BANNED":
		return StateSuspended
	case code == "COMPONENTS_SCOPE_MISMATCH":
		return StateHardwareChanged
	case valid: // TOO_MANY_* within the overage allowance
		return StateActive
	}
	return StateInvalid
}

// fire moves the license to v by event ev: the only way the view changes.
// A verified verdict is persisted (a refusal) or cleared (valid), so that
// offline state derives from the newest signed fact. A transition missing
// from the table is logged and counted (tests assert none happen).
func (a *Agent) fire(ev lcEvent, v licenseView) {
	a.lic.mu.Lock()
	from := a.lic.view.State
	a.lic.mu.Unlock()
	if !lcAllowed(from, ev, v.State) {
		a.lic.badTransitions.Add(1)
		a.log.Error("license lifecycle: transition not in the table", "from", from, "event", ev, "to", v.State)
	}
	if ev == evVerdict && v.Online {
		a.recordVerdict(v)
	}
	a.applyView(v)
}

// Cache meta key of the persisted verdict.
const metaVerdict = "license_verdict"

// verdictRecord is Keygen's last signed refusal of the license or of this
// machine. It outlives restarts and outages: offline, it wins over a
// machine file issued before it, so a stale file cannot revive a license
// Keygen has refused. Only a newer signed answer saying valid (a
// validation, or an imported machine file issued after it) clears it.
type verdictRecord struct {
	State     State     `json:"state"`
	Code      string    `json:"code,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	LicenseID string    `json:"license_id,omitempty"`
	At        time.Time `json:"at"`
}

// recordVerdict persists an invalid verified view, or clears the record on
// a valid one.
func (a *Agent) recordVerdict(v licenseView) {
	if a.store == nil {
		return
	}
	if v.Valid {
		a.clearVerdict()
		return
	}
	// At orders the refusal against machine files: it is received now, so
	// it is newer than every file already in the cache and than the
	// refusal it repeats, whatever the clocks say. Measured on corrected
	// time alone it could fall before the cached file's issued time (a
	// Keygen whose signed Date disagrees with its files, or an offset
	// relearned since), and offline the older file would win over it
	// (model test, I4/status-valid-after-signed-invalid-offline, seed 27).
	//
	// Nor may a file the agent has never seen, issued before the refusal
	// arrived, beat it when imported later: when the learned offset puts
	// corrected time behind the local clock (a Keygen whose signed Date
	// disagrees with the clock its files are stamped with), the local
	// reading stands for "now" too (model test seed 225: suspend;
	// date-skew(-1h10m); a validation; outage; importing a file checked
	// out before the suspension revived the license offline). Taking the
	// later clock only makes the refusal newer; a validation that says
	// valid still clears it.
	at, _ := a.trustedNow()
	if local := a.now(); local.After(at) {
		at = local
	}
	if ds := a.cachedDataset(a.offlineCertKind()); ds != nil && ds.Issued.After(at) {
		at = ds.Issued
	}
	rec := verdictRecord{State: v.State, Code: v.Code, Detail: v.Detail}
	if v.License != nil {
		rec.LicenseID = v.License.ID
	}
	if prev := a.verdict(); prev != nil && prev.LicenseID == rec.LicenseID && prev.At.After(at) {
		at = prev.At
	}
	rec.At = at
	b, err := json.Marshal(rec)
	if err == nil {
		err = a.store.PutMeta(metaVerdict, b)
	}
	if err != nil {
		a.log.Warn("persisting Keygen's verdict", "err", err)
	}
}

func (a *Agent) clearVerdict() {
	if a.store == nil {
		return
	}
	if b, err := a.store.Meta(metaVerdict); err == nil && len(b) == 0 {
		return
	}
	if err := a.store.PutMeta(metaVerdict, nil); err != nil {
		a.log.Warn("clearing Keygen's verdict", "err", err)
	}
}

// verdict is the persisted refusal, nil when there is none (or it does not
// decode: a damaged record cannot be trusted either way, and offline
// validation still needs a verified machine file).
func (a *Agent) verdict() *verdictRecord {
	if a.store == nil {
		return nil
	}
	b, err := a.store.Meta(metaVerdict)
	if err != nil || len(b) == 0 {
		return nil
	}
	var rec verdictRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.State == "" {
		a.log.Warn("ignoring an unreadable persisted verdict", "err", err)
		return nil
	}
	return &rec
}

// observeAnswer looks at the outcome of every Keygen call (agent.call): a
// verified answer that the license may no longer be used (a login refused
// because the license is suspended, banned or expired: concerns/
// authentication.rb answers 403 on every authenticated route) changes the
// state at once, whichever call got it, and has the license loop revalidate
// now, which ends the leases.
func (a *Agent) observeAnswer(err error) {
	if err == nil || !errors.Is(err, keygen.ErrLoginRefused) {
		return
	}
	cur := a.view()
	a.lic.mu.Lock()
	stored := a.lic.view
	a.lic.mu.Unlock()
	// Only a stored online refusal makes this one old news (and stops a
	// revalidation loop). A view invalid only as evaluated on read
	// (clock_tampered, the offline window's end) still records it:
	// otherwise, the clock put right, the older machine file ran the
	// license offline again (model test seed 239).
	if !stored.Valid && stored.Online {
		return
	}
	_ = a.refusal(err, licenseView{Online: true, License: cur.License, Policy: cur.Policy, Machine: cur.Machine})
	a.kickLicenseLoop()
}

// kickLicenseLoop has the license loop sync now, without waiting for it.
func (a *Agent) kickLicenseLoop() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// vetKey checks a license key Keygen has not yet seen from this agent
// before the agent lets go of the current one: the key must be known and
// valid, or only lack this machine's activation, in which case the machine
// is activated for it now. It uses a client of its own and never touches
// the license state: a refused key changes nothing.
func (a *Agent) vetKey(ctx context.Context, key, token string) error {
	c, err := a.newClientFor(key, token)
	if err != nil {
		return err
	}
	cfg := a.config()
	fp := a.fp.Load()
	opts := keygen.ValidateOptions{Fingerprint: fp.Fingerprint, Product: cfg.Product, Environment: cfg.Environment}
	for _, comp := range fp.Components {
		opts.Components = append(opts.Components, comp.Fingerprint)
	}
	v, err := c.ValidateKey(ctx, key, opts)
	if err != nil {
		return err
	}
	if v.License == nil || v.Code == "NOT_FOUND" {
		return &keyRefused{Code: nonEmpty(v.Code, "NOT_FOUND"), Detail: "Keygen does not know this license key"}
	}
	switch v.Code {
	case "NO_MACHINE", "NO_MACHINES", "FINGERPRINT_SCOPE_MISMATCH", "MACHINE_SCOPE_REQUIRED":
		return a.vetActivation(ctx, c, v.License)
	case "HEARTBEAT_NOT_STARTED", "HEARTBEAT_DEAD":
		return nil // this machine is activated for it; the sync pings it
	}
	if !v.Valid {
		return &keyRefused{Code: v.Code, Detail: withRemedy(v.Detail, v.Code)}
	}
	return nil
}

// vetActivation activates this machine for the vetted license. A
// fingerprint taken by the current license (a policy whose uniqueness
// spans licenses) is refused: the old license keeps its machine.
func (a *Agent) vetActivation(ctx context.Context, c *keygen.Client, lic *keygen.License) error {
	_, err := c.ActivateMachine(ctx, a.activateParams(lic))
	switch {
	case err == nil:
		a.log.Info("machine activated for the new license key")
		return nil
	case errors.Is(err, keygen.ErrFingerprintTaken):
		if _, lerr := c.Machine(ctx, a.fp.Load().Fingerprint); lerr == nil {
			return nil // already activated for this license
		} else if errors.Is(lerr, keygen.ErrNotFound) || errors.Is(lerr, keygen.ErrAccessDenied) {
			return &keyRefused{Code: "FINGERPRINT_TAKEN", Detail: "this machine is activated under another license " +
				"(the current one): run `keygen-agent deactivate` first, then activate the new key"}
		} else {
			return lerr
		}
	}
	var kerr *keygen.Error
	if errors.As(err, &kerr) {
		return &keyRefused{Code: kerr.Code, Detail: withRemedy("activation refused: "+nonEmpty(kerr.Detail, kerr.Title), kerr.Code)}
	}
	return err
}

// keyRefused: Keygen refused a new license key; nothing was changed.
type keyRefused struct{ Code, Detail string }

func (e *keyRefused) Error() string { return "license key refused (" + e.Code + "): " + e.Detail }
