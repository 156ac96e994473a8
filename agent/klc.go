package agent

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// metaOtherSeats persists the seats other machines hold against this
// machine's process limit (PER_LICENSE / PER_USER leasing), so that the
// offline limit after a restart is the last one Keygen's counts gave.
const metaOtherSeats = "other_seats"

// deepCheckEvery is how often a sync also compares what validation answers
// do not carry (the license's entitlements, its policy) with the machine
// file, re-checking it out when they differ. Two GETs an hour, instead of a
// check-out at every revalidation.
const deepCheckEvery = time.Hour

// klcState is the state of the license-model features in this file and
// entitlements.go, checkin.go, usage.go, licensefile.go.
type klcState struct {
	mu sync.Mutex
	// refreshCert: something showed the license changed; the next sync
	// checks out a new certificate whatever its age.
	refreshCert bool
	// others: processes of this license on other machines that count
	// against this machine's limit (PER_LICENSE: all; PER_USER: those on
	// machines with this machine's owner). -1: never counted.
	others     int
	othersInit bool
	// lastLimit is the effective limit last applied (limitSeen: set).
	lastLimit *int
	limitSeen bool
	lastDeep  time.Time
	// check-in state (checkin.go).
	nextCheckIn *time.Time
	checkInErr  string
	// licenseFileRefused: Keygen refused a license check-out
	// (licensefile.go); not asked again until the next start.
	licenseFileRefused bool
}

// noteLicenseChanged marks the certificate stale and has the license loop
// sync soon.
func (a *Agent) noteLicenseChanged(why string) {
	a.klc.mu.Lock()
	a.klc.refreshCert = true
	a.klc.mu.Unlock()
	a.log.Info("the license changed; refreshing", "why", why)
	a.wakeLicenseLoop()
}

// takeCertRefresh reports and clears a pending forced certificate refresh.
func (a *Agent) takeCertRefresh() bool {
	a.klc.mu.Lock()
	defer a.klc.mu.Unlock()
	r := a.klc.refreshCert
	a.klc.refreshCert = false
	return r
}

// certNeedsRefresh decides whether the cached certificate must be checked
// out again: past half its life, or it no longer describes what matters —
// the license's policy, limits, expiry or suspension, the machine's limits
// and heartbeat, its components. Not the license's `updated`: Keygen moves
// it at every validation (LicenseValidationService#touch! saves
// last_validated_at), so comparing it would re-check-out at every
// revalidation. Entitlement and policy edits, which a validation does not
// show, are found by deepCheck.
func (a *Agent) certNeedsRefresh(ds *keygen.Dataset, lic *keygen.License, now time.Time) bool {
	if needsRefresh(ds, lic, now) {
		return true
	}
	if m, cm := a.lastMachine(), ds.Machine; m != nil && cm != nil {
		if m.ID != cm.ID || !equalPtr(m.MaxProcesses, cm.MaxProcesses) || m.HeartbeatDuration != cm.HeartbeatDuration ||
			m.RequireHeartbeat != cm.RequireHeartbeat {
			return true
		}
	}
	if len(ds.Components) > 0 {
		var inCert, now []string
		for _, c := range ds.Components {
			inCert = append(inCert, c.Fingerprint)
		}
		for _, c := range a.fp.Load().Components {
			now = append(now, c.Fingerprint)
		}
		slices.Sort(inCert)
		slices.Sort(now)
		if !slices.Equal(inCert, now) {
			return true
		}
	}
	return false
}

// needsRefresh: past half the file's life, or the license it carries
// differs from lic in what matters (not `updated`; see certNeedsRefresh).
// lic nil: the half-life test alone.
func needsRefresh(ds *keygen.Dataset, lic *keygen.License, now time.Time) bool {
	if ds.Expiry != nil {
		half := ds.Issued.Add(ds.Expiry.Sub(ds.Issued) / 2)
		if !now.Before(half) {
			return true
		}
	}
	if lic == nil {
		return false
	}
	c := ds.License
	if c == nil {
		return true
	}
	return c.PolicyID != lic.PolicyID || !equalPtr(c.MaxProcesses, lic.MaxProcesses) || !equalPtr(c.MaxMachines, lic.MaxMachines) ||
		!equalPtr(c.MaxCores, lic.MaxCores) || !equalPtr(c.MaxUsers, lic.MaxUsers) ||
		!licenseExpiry(c).Equal(licenseExpiry(lic)) || c.Suspended != lic.Suspended || c.RequireHeartbeat != lic.RequireHeartbeat
}

// afterSync runs after a successful online sync: it counts the seats
// other machines hold, compares entitlements and policy now and then,
// checks in when due, and applies a changed limit at once.
func (a *Agent) afterSync(ctx context.Context, v licenseView) {
	if v.License == nil || !v.Online {
		return
	}
	a.countOtherSeats(ctx, v)
	a.deepCheck(ctx, v)
	a.checkInIfDue(ctx, v)
	a.applyLimitChange()
}

// leasingLimit turns the license-wide allowance n (after overage) into
// this machine's share: under PER_LICENSE and PER_USER leasing Keygen
// counts the license's processes on every machine (PER_USER: those of the
// same owner, a nil owner being its own group) against max processes
// (machine_process.rb), so the seats held elsewhere are not this
// machine's to give.
func (a *Agent) leasingLimit(v licenseView, n int) int {
	if a.licenseOnly() {
		return n // no Keygen processes anywhere to count (licenseonly.go)
	}
	if v.Policy == nil || (v.Policy.ProcessLeasingStrategy != "PER_LICENSE" && v.Policy.ProcessLeasingStrategy != "PER_USER") {
		return n
	}
	return max(0, n-a.otherSeats())
}

// leasingMax is the max processes Keygen applies under the policy's
// leasing strategy: the machine's (its override, else the license's) for
// PER_MACHINE, the license's otherwise (machine_process.rb).
func leasingMax(v licenseView) *int {
	perMachine := v.Policy == nil || v.Policy.ProcessLeasingStrategy == "" || v.Policy.ProcessLeasingStrategy == "PER_MACHINE"
	if perMachine && v.Machine != nil && v.Machine.MaxProcesses != nil {
		return v.Machine.MaxProcesses
	}
	if v.License != nil {
		return v.License.MaxProcesses
	}
	return nil
}

func (a *Agent) otherSeats() int {
	a.klc.mu.Lock()
	defer a.klc.mu.Unlock()
	if !a.klc.othersInit {
		a.klc.othersInit = true
		if a.store != nil {
			if b, err := a.store.Meta(metaOtherSeats); err == nil && len(b) > 0 {
				a.klc.others, _ = strconv.Atoi(string(b))
			}
		}
	}
	return a.klc.others
}

func (a *Agent) setOtherSeats(n int) {
	old := a.otherSeats()
	a.klc.mu.Lock()
	a.klc.others = n
	a.klc.mu.Unlock()
	if old != n && a.store != nil {
		if err := a.store.PutMeta(metaOtherSeats, []byte(strconv.Itoa(n))); err != nil {
			a.log.Warn("persisting the seats held elsewhere", "err", err)
		}
	}
}

// countOtherSeats counts the license's processes on other machines that
// Keygen counts against this machine's seats.
func (a *Agent) countOtherSeats(ctx context.Context, v licenseView) {
	strategy := ""
	if v.Policy != nil {
		strategy = v.Policy.ProcessLeasingStrategy
	}
	if strategy != "PER_LICENSE" && strategy != "PER_USER" || leasingMax(v) == nil {
		return
	}
	self := a.machineID()
	var procs []keygen.Process
	var machines []keygen.Machine
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		procs, err = c.LicenseProcesses(ctx, v.License.ID)
		if err != nil || strategy != "PER_USER" {
			return err
		}
		machines, err = c.LicenseMachines(ctx, v.License.ID)
		return err
	})
	if err != nil {
		a.log.Warn("counting the license's processes on other machines", "err", err)
		return
	}
	owner := map[string]string{}
	selfOwner := ""
	for _, m := range machines {
		owner[m.ID] = m.OwnerID
		if m.ID == self {
			selfOwner = m.OwnerID
		}
	}
	n := 0
	for _, p := range procs {
		if p.MachineID == self {
			continue
		}
		if strategy == "PER_USER" && owner[p.MachineID] != selfOwner {
			continue
		}
		n++
	}
	a.setOtherSeats(n)
}

// deepCheck compares the license's entitlements and (when the license may
// read it) its policy with the machine file, at most once per
// deepCheckEvery, and re-checks out on a difference.
func (a *Agent) deepCheck(ctx context.Context, v licenseView) {
	if !a.deepCheckDue() {
		return
	}
	ds, _, err := a.openMachineFile()
	if err != nil || ds == nil {
		return
	}
	changed := a.certificateOutdated(ctx, v.License.ID, ds, !a.refusedIncludes()["license.policy"])
	if changed == "" {
		return
	}
	a.log.Info("the license changed since the machine file was issued; checking out a new one", "what", changed)
	if err := a.ensureCertificate(ctx, v.License, true); err != nil {
		a.log.Warn("refreshing the machine file", "err", err)
		return
	}
	a.applyRefreshedCertificate(nil)
}

// deepCheckDue reports whether the hourly comparison of a certificate with
// what a validation does not show is due, and if so marks it done.
func (a *Agent) deepCheckDue() bool {
	now := a.now()
	a.klc.mu.Lock()
	defer a.klc.mu.Unlock()
	if !a.klc.lastDeep.IsZero() && now.Sub(a.klc.lastDeep) < deepCheckEvery {
		return false
	}
	a.klc.lastDeep = now
	return true
}

// certificateOutdated compares a verified certificate's entitlements and,
// when askPolicy is set and the file carries one, its policy with what
// Keygen says now: it names what changed, or "" (also when Keygen could
// not be asked).
func (a *Agent) certificateOutdated(ctx context.Context, licenseID string, ds *keygen.Dataset, askPolicy bool) string {
	var ents []keygen.Entitlement
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		ents, err = c.LicenseEntitlements(ctx, licenseID)
		return err
	})
	if err == nil && !slices.Equal(entitlementCodes(ents), entitlementCodes(ds.Entitlements)) {
		return "entitlements"
	}
	if !askPolicy || ds.Policy == nil {
		return ""
	}
	var p *keygen.Policy
	err = a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		p, err = c.LicensePolicy(ctx, licenseID)
		return err
	})
	if err == nil && p != nil && policyDiffers(p, ds.Policy) {
		return "policy"
	}
	return ""
}

// applyRefreshedCertificate refills the stored view from the certificate
// just checked out, while it is online and valid; adjust, when set, edits
// the view before it is applied.
func (a *Agent) applyRefreshedCertificate(adjust func(*licenseView)) {
	a.lic.mu.Lock()
	nv := a.lic.view // the stored view, not view()'s time-evaluated copy
	a.lic.mu.Unlock()
	if !nv.Online || !nv.Valid {
		return
	}
	a.fillFromCertificate(&nv)
	if adjust != nil {
		adjust(&nv)
	}
	a.setView(nv)
}

func policyDiffers(a, b *keygen.Policy) bool {
	return a.ID != b.ID || a.OverageStrategy != b.OverageStrategy || a.ProcessLeasingStrategy != b.ProcessLeasingStrategy ||
		a.ExpirationStrategy != b.ExpirationStrategy || a.RequireHeartbeat != b.RequireHeartbeat ||
		a.HeartbeatCullStrategy != b.HeartbeatCullStrategy || a.HeartbeatResurrectionStrategy != b.HeartbeatResurrectionStrategy ||
		!equalPtr(a.MaxProcesses, b.MaxProcesses) || !equalPtr(a.HeartbeatDuration, b.HeartbeatDuration)
}

// applyLimitChange tells every connection when the effective limit moved
// (license.changed) and enforces it.
func (a *Agent) applyLimitChange() {
	v := a.view()
	lim := a.effectiveLimit(v)
	a.klc.mu.Lock()
	changed := a.klc.limitSeen && !equalPtr(a.klc.lastLimit, lim)
	a.klc.lastLimit, a.klc.limitSeen = lim, true
	a.klc.mu.Unlock()
	if !changed {
		return
	}
	a.log.Info("process limit changed", "limit", fmtLimit(lim))
	a.conns.broadcast(ipc.NotifyLicenseChanged, a.status())
	a.enforceLimit(a.view())
}

func fmtLimit(p *int) string {
	if p == nil {
		return "unlimited"
	}
	return strconv.Itoa(*p)
}
