package agent

import (
	"context"
	"math"
	"strings"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// License-only mode (activation = "none"): for licenses that are not tied
// to a machine activation, the use Keygen intends license files for.
//
//   - The agent never creates a machine. It validates the key without any
//     machine scope (fingerprint, components, machine): Keygen then checks
//     the license alone, unless the policy requires one of those scopes
//     (FINGERPRINT_SCOPE_REQUIRED, COMPONENTS_SCOPE_REQUIRED,
//     MACHINE_SCOPE_REQUIRED) or is strict and the license has no machine
//     (NO_MACHINE, NO_MACHINES): license_validation_service.rb. Those are
//     an invalid state whose detail says to set activation = "machine".
//   - Offline use rests on a license file (license.check-out is one of a
//     license's default permissions: permission.rb), checked out with
//     entitlements and policy when the license may read them, refreshed at
//     half its TTL and when the license changed in what matters, verified
//     on every read, and bounded like machine files (expiry, offline
//     grace, trusted time). A persisted signed refusal still wins over an
//     older file (lifecycle.go).
//   - Keygen processes belong to machines, so there are none: leases are
//     local, limited by the license's maxProcesses (nil: unlimited; the
//     policy's overage allowance applies), with no heartbeats, kills or
//     outbox entries. Keygen cannot count them across machines: every
//     agent running the license grants up to the limit on its own.
//   - Check-ins and metered uses are license-scoped and work as in
//     machine mode.
//
// The mode is chosen at start (the setting needs a restart). Hooks in
// the shared code are marked "license-only mode".

// The activation modes (Config.Activation).
const (
	ActivationMachine = "machine"
	ActivationNone    = "none"
)

// localLeaseCapacity is the lease capacity reported in license-only mode:
// leases cost no Keygen requests, so the request budget does not bound
// them; only the license's limit does.
const localLeaseCapacity = math.MaxInt32

// licenseOnly reports whether the agent runs in license-only mode.
func (a *Agent) licenseOnly() bool { return a.config().Activation == ActivationNone }

// offlineCertKind is the cache slot of the certificate offline use rests on
// in this mode.
func (a *Agent) offlineCertKind() string {
	if a.licenseOnly() {
		return certLicense
	}
	return certMachine
}

// licenseOnlyValidateOptions are the scopes of a license-only validation:
// product and environment, never a machine, fingerprint or components.
func (a *Agent) licenseOnlyValidateOptions() keygen.ValidateOptions {
	cfg := a.config()
	return keygen.ValidateOptions{Product: cfg.Product, Environment: cfg.Environment}
}

// needsMachine maps the validation codes that mean "this policy needs a
// machine activation" to why (license_validation_service.rb).
var needsMachine = map[string]string{
	"FINGERPRINT_SCOPE_REQUIRED": "the license's policy requires a fingerprint scope (requireFingerprintScope)",
	"COMPONENTS_SCOPE_REQUIRED":  "the license's policy requires a components scope (requireComponentsScope)",
	"MACHINE_SCOPE_REQUIRED":     "the license's policy requires a machine scope (requireMachineScope)",
	"NO_MACHINE":                 "the license's policy is strict: Keygen counts the license valid only with an activated machine",
	"NO_MACHINES":                "the license's policy is strict: Keygen counts the license valid only with an activated machine",
}

// needsMachineDetail is the detail of a refusal in needsMachine.
func needsMachineDetail(code, keygenDetail string) string {
	return nonEmpty(keygenDetail, code) + ": " + needsMachine[code] + ", so it needs machine activation; " +
		`set activation = "machine" in the agent's config (license-only mode never activates a machine)`
}

// syncLicenseOnly is syncOnce for license-only mode: validate the key
// without machine scopes and act on the answer; again is true when a
// check-in calls for another validation.
func (a *Agent) syncLicenseOnly(ctx context.Context, key string) (again bool, err error) {
	opts := a.licenseOnlyValidateOptions()
	v, err := a.validateAndRecord(ctx, key, opts)
	if err != nil || v == nil {
		return false, err
	}
	if _, ok := needsMachine[v.Code]; ok && !v.Valid {
		a.fire(evVerdict, licenseView{State: StateInvalid, Code: v.Code, Online: true, License: v.License,
			Detail: needsMachineDetail(v.Code, v.Detail)})
		return false, nil
	}
	if v.Code == "OVERDUE" {
		return true, a.refusalOr(a.checkIn(ctx, v.License), licenseView{Online: true, License: v.License})
	}
	view := verdictView(v)
	if !view.Valid {
		a.fire(evVerdict, view)
		return false, nil
	}
	a.refreshLicenseFile(ctx, v.License, a.takeCertRefresh())
	a.fillFromCertificate(&view)
	view.Machine = nil // a license file has none; status shows the fingerprint only
	a.fire(evVerdict, view)
	a.replayOutbox(ctx) // metered uses queued offline
	a.enforceLimit(a.view())
	if view.License != nil {
		a.licenseFileDeepCheck(ctx, view)
		a.checkInIfDue(ctx, view)
		a.applyLimitChange()
	}
	return false, nil
}

// refreshLicenseFile keeps the cached license file current: checked out
// when missing, unusable, past half its TTL, or when the license differs
// from it in what matters (policy, limits, expiry, suspension: the
// validation shows those; not `updated`, which Keygen moves at every
// validation), or when force says entitlements or the policy changed.
func (a *Agent) refreshLicenseFile(ctx context.Context, lic *keygen.License, force bool) {
	if !force {
		if ds, err := a.openLicenseFile(); err == nil && !needsRefresh(ds, lic, a.now()) {
			return
		}
	}
	a.checkoutLicenseFile(ctx, lic)
}

// licenseFileDeepCheck compares what a validation does not show (the
// license's entitlements and policy) with the license file, at most once
// per deepCheckEvery, and checks out a new file on a difference. Reading
// the entitlements and including them in the file need the same
// permission (entitlement.read), so a file without them is compared only
// when Keygen lists them; the policy only when the file carries one.
func (a *Agent) licenseFileDeepCheck(ctx context.Context, v licenseView) {
	if !a.deepCheckDue() {
		return
	}
	ds, err := a.openLicenseFile()
	if err != nil || ds == nil {
		return
	}
	changed := a.certificateOutdated(ctx, v.License.ID, ds, true)
	if changed == "" {
		return
	}
	a.log.Info("the license changed since the license file was issued; checking out a new one", "what", changed)
	a.checkoutLicenseFile(ctx, v.License)
	a.applyRefreshedCertificate(func(nv *licenseView) { nv.Machine = nil })
}

// licenseOnlyWording adjusts an offline view's detail in license-only
// mode, where the license file, not a machine file, is what offline use
// rests on.
func (a *Agent) licenseOnlyWording(v *licenseView) {
	if !a.licenseOnly() {
		return
	}
	v.Machine = nil
	if v.State == StateOffline {
		v.Detail = "Keygen is unreachable; running from the verified license file (license-only mode)"
		return
	}
	v.Detail = strings.ReplaceAll(v.Detail, "import a machine file", "import a license file")
	v.Detail = strings.ReplaceAll(v.Detail, "cached machine file", "cached license file")
	v.Detail = strings.ReplaceAll(v.Detail, "the machine file", "the license file")
	v.Detail = strings.ReplaceAll(v.Detail, "no machine file", "no license file")
}

// vetKeyLicenseOnly is vetKey for license-only mode: the new key must be
// known and valid without machine scopes. No machine is activated.
func (a *Agent) vetKeyLicenseOnly(ctx context.Context, key, token string) error {
	c, err := a.newClientFor(key, token)
	if err != nil {
		return err
	}
	v, err := c.ValidateKey(ctx, key, a.licenseOnlyValidateOptions())
	if err != nil {
		return err
	}
	if v.License == nil || v.Code == "NOT_FOUND" {
		return &keyRefused{Code: nonEmpty(v.Code, "NOT_FOUND"), Detail: "Keygen does not know this license key"}
	}
	if _, ok := needsMachine[v.Code]; ok && !v.Valid {
		return &keyRefused{Code: v.Code, Detail: needsMachineDetail(v.Code, v.Detail)}
	}
	if v.Code == "OVERDUE" {
		return nil // the sync checks in
	}
	if !v.Valid {
		return &keyRefused{Code: v.Code, Detail: withRemedy(v.Detail, v.Code)}
	}
	return nil
}

// deactivateLicenseOnly is license.deactivate in license-only mode: there
// is no machine to delete in Keygen, so only the local state goes (leases,
// the license file) and the agent stays not_activated until the next
// `activate`.
func (a *Agent) deactivateLicenseOnly(ctx context.Context) (any, error) {
	if err := a.store.PutMeta(metaDeactivated, []byte("1")); err != nil {
		return nil, ipc.Errorf(ipc.CodeInternal, "%v", err)
	}
	a.revokeAll("deactivated", "DEACTIVATED", "the license was deactivated on this machine")
	_ = a.store.DeleteCertificate(certLicense)
	a.log.Info("license-only mode: local license state dropped (there is no machine to deactivate in Keygen)")
	_ = a.requestSync(ctx)
	return a.status(), nil
}

// checkoutLicenseOnly is license.checkout in license-only mode: the next
// sync checks out a new license file whatever the cached one's age.
func (a *Agent) checkoutLicenseOnly(ctx context.Context) (any, error) {
	a.klc.mu.Lock()
	a.klc.refreshCert = true
	a.klc.mu.Unlock()
	if err := a.requestSync(ctx); err != nil {
		return nil, syncError(err)
	}
	return a.status(), nil
}
