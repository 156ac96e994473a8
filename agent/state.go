package agent

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// State is the agent's licensing state, as reported by license.status.
type State string

// The states. Valid (may apps run?) is reported next to the state: for
// example an EXPIRED license under ALLOW_ACCESS is "expired" and valid.
const (
	StateStarting        State = "starting"         // Run has not finished initialising
	StateUnlicensed      State = "unlicensed"       // no license key configured or activated
	StateNotActivated    State = "not_activated"    // deactivated by an admin; `keygen-agent activate` to resume
	StateActive          State = "active"           // validated online
	StateOffline         State = "offline"          // Keygen unreachable; running from the verified machine file
	StateOfflineExpired  State = "offline_expired"  // Keygen unreachable and the offline window is over (or there is no usable machine file)
	StateHardwareChanged State = "hardware_changed" // Keygen rejected this machine's components
	StateExpired         State = "expired"          // the license has expired
	StateSuspended       State = "suspended"        // the license is suspended or its owner banned
	StateInvalid         State = "invalid"          // any other refusal from Keygen
	StateAuthRefused     State = "auth_refused"     // Keygen refused the agent's credential (LICENSE_NOT_ALLOWED, TOKEN_NOT_ALLOWED, a bad token); see Detail
	StateClockTampered   State = "clock_tampered"   // the local clock is behind trusted time
	StateError           State = "error"            // the agent could not initialise (cache, fingerprint)
)

// licenseView is everything the agent knows about the license at one moment.
type licenseView struct {
	State        State
	Code, Detail string
	Valid        bool
	Online       bool
	License      *keygen.License
	Policy       *keygen.Policy
	// PolicyAssumed: the license may not read its policy; Policy holds
	// the machine record's heartbeat settings and the config's strategies.
	PolicyAssumed bool
	Machine       *keygen.Machine
	Entitlements  []string
	CertExpiry    *time.Time
	CertIssued    time.Time
	OfflineUntil  *time.Time
	Changes       []ipc.ComponentChange
	// OfflineSource is the certificate offline use rests on
	// (sourceMachineFile, sourceLicenseFile); "" when there is none.
	OfflineSource string
}

// licenseState guards the current view and the last successful sync.
// Trusted time (watermark, clock offset) is agentClock's, in clock.go.
type licenseState struct {
	mu       sync.Mutex
	view     licenseView
	lastSync time.Time

	// keyAuthOnly: the policy refused the token; authenticate with the key.
	keyAuthOnly bool
	// authRefusals counts consecutive syncs ended by errAuthRefused.
	authRefusals int
	// refused holds the check-out includes Keygen refused (nil: not loaded).
	refused map[string]bool
	// machine is the last machine record read from Keygen (activation,
	// lookup, ping): it carries requireHeartbeat, heartbeatDuration and
	// maxProcesses, which a license may read without policy.read.
	machine *keygen.Machine
	// badTransitions counts view changes missing from lifecycleTable.
	badTransitions atomic.Int64
}

// view returns the current license view with time-dependent parts (clock
// tampering, the end of the offline window) evaluated now.
func (a *Agent) view() licenseView {
	a.lic.mu.Lock()
	v := a.lic.view
	a.lic.mu.Unlock()
	if v.State == StateStarting || v.State == StateError {
		return v
	}
	now, behind := a.trustedNow()
	// Online, Keygen's signed answers rule: a wrong local clock is absorbed
	// by the learned offset (clock_skew in status). Offline, corrected time
	// behind trusted time is a clock rolled back (clock.go).
	// The offset's own uncertainty is not a clock set back: with
	// clock_tolerance 0 a signed Date a fraction of a second ahead of
	// corrected time read as clock_tampered (model test seed 239).
	if tol := a.config().ClockTolerance.D() + a.clock.slack(); behind > tol && !v.Online {
		v.State, v.Valid, v.Code = StateClockTampered, false, "CLOCK_TAMPERED"
		v.Detail = "the system clock is " + behind.Round(time.Second).String() +
			" behind the last trusted time seen from Keygen; correct the clock, or connect to Keygen"
		return v
	}
	if v.State == StateOffline && v.OfflineUntil != nil && !now.Before(*v.OfflineUntil) {
		v.State, v.Valid, v.Code = StateOfflineExpired, false, "OFFLINE_EXPIRED"
		v.Detail = "offline use ended at " + v.OfflineUntil.UTC().Format(time.RFC3339) + "; connect to the internet to continue"
	}
	a.overdueView(&v, now)
	return v
}

// setView replaces the license view and, when what apps see changed, tells
// every connected app with license.changed (enforceView revokes leases).
// It is fire with the event inferred from v (authz.go's refusals: a
// verdict, or a refused credential).
func (a *Agent) setView(v licenseView) {
	ev := evVerdict
	if v.State == StateAuthRefused {
		ev = evAuthRefused
	}
	a.fire(ev, v)
}

// applyView stores v and broadcasts license.changed when it matters.
func (a *Agent) applyView(v licenseView) {
	a.lic.mu.Lock()
	old := a.lic.view
	a.lic.view = v
	a.lic.mu.Unlock()
	if old.State != v.State || old.Code != v.Code {
		a.log.Info("license state", "state", v.State, "code", v.Code, "valid", v.Valid, "online", v.Online)
	}
	if significantChange(old, v) {
		st := a.status()
		a.conns.broadcast(ipc.NotifyLicenseChanged, st)
	}
}

// enforceView revokes every lease when the license is no longer valid.
func (a *Agent) enforceView() {
	v := a.view()
	if !v.Valid && v.State != StateStarting {
		a.revokeAll(string(v.State), v.Code, v.Detail)
	}
}

func significantChange(a, b licenseView) bool {
	if a.State != b.State || a.Code != b.Code || a.Valid != b.Valid || a.Online != b.Online {
		return true
	}
	if !slices.Equal(a.Entitlements, b.Entitlements) {
		return true
	}
	ea, eb := licenseExpiry(a.License), licenseExpiry(b.License)
	return !ea.Equal(eb)
}

func licenseExpiry(l *keygen.License) time.Time {
	if l == nil || l.Expiry == nil {
		return time.Time{}
	}
	return *l.Expiry
}

// status builds the license.status result.
func (a *Agent) status() *ipc.Status {
	v := a.view()
	st := &ipc.Status{
		State:        string(v.State),
		Code:         v.Code,
		Detail:       v.Detail,
		Valid:        v.Valid,
		Online:       v.Online,
		Entitlements: v.Entitlements,
		OfflineUntil: v.OfflineUntil,
		// OfflineSource names the certificate the offline state comes from.
		OfflineSource: v.OfflineSource,
		Activation:    a.config().Activation,
	}
	if st.Entitlements == nil {
		st.Entitlements = []string{}
	}
	if v.License != nil {
		st.License = &ipc.LicenseInfo{
			ID: v.License.ID, Name: v.License.Name, Expiry: v.License.Expiry,
			MaxProcesses: v.License.MaxProcesses, MaxMachines: v.License.MaxMachines,
		}
		if v.Policy != nil {
			st.License.Strategy = v.Policy.ProcessLeasingStrategy
			st.License.Overage = v.Policy.OverageStrategy
			st.License.ComponentMatching = v.Policy.ComponentMatchingStrategy
			st.License.PolicySource = PolicySourceKeygen
			if v.PolicyAssumed {
				st.License.PolicySource = PolicySourceConfig
			}
		}
	}
	if v.Machine != nil {
		st.Machine = &ipc.MachineInfo{ID: v.Machine.ID, Fingerprint: v.Machine.Fingerprint}
	} else if fp := a.fp.Load(); fp != nil {
		st.Machine = &ipc.MachineInfo{Fingerprint: fp.Fingerprint}
	}
	a.lic.mu.Lock()
	if !a.lic.lastSync.IsZero() {
		ls := a.lic.lastSync
		st.LastSync = &ls
	}
	a.lic.mu.Unlock()
	st.Leases = a.leaseUsage(v)
	st.HardwareChanges = v.Changes
	st.NextCheckIn = a.nextCheckIn(v)
	st.OtherAgents = a.leases.otherAgents()
	st.ClockSkew = a.clockSkew()
	return st
}
