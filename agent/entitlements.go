package agent

import (
	"context"
	"slices"
	"strings"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// maxRequiredEntitlements bounds the codes one lease.acquire may ask for.
const maxRequiredEntitlements = 64

// normaliseEntitlements trims, de-duplicates and sorts the codes an app
// asked for; a blank code is a bad request, not a silent pass.
func normaliseEntitlements(codes []string) ([]string, error) {
	if len(codes) > maxRequiredEntitlements {
		return nil, ipc.Errorf(ipc.CodeInvalidRequest, "at most %d entitlements per request", maxRequiredEntitlements)
	}
	out := make([]string, 0, len(codes))
	for _, c := range codes {
		c = strings.TrimSpace(c)
		if c == "" {
			return nil, ipc.Errorf(ipc.CodeInvalidRequest, "entitlements: blank entitlement code")
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// validateOptions is the scope the license loop validates with: every
// scope the agent knows (license_validation_service.rb checks each one a
// policy requires).
func (a *Agent) validateOptions() keygen.ValidateOptions {
	if a.licenseOnly() {
		return a.licenseOnlyValidateOptions() // no machine scopes (licenseonly.go)
	}
	cfg := a.config()
	fp := a.fp.Load()
	opts := keygen.ValidateOptions{Fingerprint: fp.Fingerprint, Product: cfg.Product, Environment: cfg.Environment}
	if rec, _ := a.store.Machine(); rec != nil && rec.Fingerprint == fp.Fingerprint && rec.ID != "" {
		opts.Machine = rec.ID
	}
	for _, c := range fp.Components {
		opts.Components = append(opts.Components, c.Fingerprint)
	}
	return opts
}

// requireEntitlements refuses a lease whose license lacks one of want
// (already normalised). Online it asks Keygen, validating with the
// entitlements scope, which Keygen checks right after the license's own
// state and before any machine scope (license_validation_service.rb:
// ENTITLEMENTS_MISSING when license.entitlements.where(code:) counts fewer
// than asked). Offline, or when Keygen cannot be reached, it decides from
// the machine file, verified again for this read.
func (a *Agent) requireEntitlements(ctx context.Context, want []string, v licenseView) error {
	if len(want) == 0 {
		return nil
	}
	if v.Online && v.License != nil {
		missing, known, err := a.entitlementsOnline(ctx, want)
		if err == nil && known {
			return entitlementsError(missing)
		}
		if err == nil {
			// Keygen answered about the license itself: a refusal it
			// signed now decides (applyLicenseRefusal), not the file.
			if lerr := a.leaseAllowed(a.view()); lerr != nil {
				return lerr
			}
		}
		if err != nil && !offline(err) {
			a.log.Warn("entitlement check with Keygen failed; deciding from the machine file", "err", err)
		}
	}
	have, err := a.certEntitlements()
	if err != nil {
		return &ipc.Error{Code: ipc.CodeEntitlementsMissing,
			Message: "the license's entitlements cannot be checked: " + err.Error(),
			Data:    map[string]any{"missing": want}}
	}
	return entitlementsError(missingFrom(want, have))
}

// entitlementsOnline validates with the entitlements scope. known is false
// when Keygen answered with a code decided before the entitlements (the
// license itself changed): the license loop is asked to sync and the
// caller decides from the machine file meanwhile.
func (a *Agent) entitlementsOnline(ctx context.Context, want []string) (missing []string, known bool, err error) {
	opts := a.validateOptions()
	opts.Entitlements = want
	key := a.licenseKey()
	var val *keygen.Validation
	err = a.call(withMaxBudgetWait(ctx, spawnWait), budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		val, err = c.ValidateKey(ctx, key, opts)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	local, _ := a.certEntitlements()
	switch {
	case val.Code == "ENTITLEMENTS_MISSING":
		// Which ones: the license's entitlements (entitlement.read is one
		// of a license's default permissions), else the machine file's.
		have := local
		var list []keygen.Entitlement
		lerr := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
			var err error
			list, err = c.LicenseEntitlements(ctx, val.License.ID)
			return err
		})
		if lerr == nil {
			have = entitlementCodes(list)
		}
		missing = missingFrom(want, have)
		if len(missing) == 0 { // the list raced a change: trust the validation
			missing = want
		}
		if len(missingFrom(want, local)) == 0 {
			// The machine file still grants them: entitlements were removed.
			a.noteLicenseChanged("entitlements removed")
		}
		return missing, true, nil
	case preEntitlementCode(val.Code):
		if val.Code != "OVERDUE" {
			// A signed refusal of the license itself applies at once, as
			// on any call (issue 14 item 4), not at the next sync (model
			// test seeds 7, 36, 37: a gated acquire learnt of a
			// suspension and the status stayed active). OVERDUE is left
			// to the sync, which checks the license in.
			a.observeLicenseRefusal(val)
		}
		a.noteLicenseChanged("validation answered " + val.Code)
		return nil, false, nil
	default:
		if len(missingFrom(want, local)) > 0 {
			// Keygen grants what the machine file lacks: entitlements added.
			a.noteLicenseChanged("entitlements added")
		}
		return nil, true, nil
	}
}

// preEntitlementCode: validation codes Keygen decides before the
// entitlements scope (license_validation_service.rb).
func preEntitlementCode(code string) bool {
	switch code {
	case "NOT_FOUND", "BANNED", "SUSPENDED", "EXPIRED", "OVERDUE", "ENTITLEMENTS_SCOPE_EMPTY":
		return true
	}
	return strings.HasPrefix(code, "ENVIRONMENT_SCOPE_") || strings.HasPrefix(code, "PRODUCT_SCOPE_") ||
		strings.HasPrefix(code, "POLICY_SCOPE_") || strings.HasPrefix(code, "USER_SCOPE_")
}

// certEntitlements reads the entitlement codes of the cached certificate,
// verifying it on this read.
func (a *Agent) certEntitlements() ([]string, error) {
	if a.licenseOnly() { // license-only mode: the license file alone (licenseonly.go)
		lds, err := a.openLicenseFile()
		if lds == nil {
			return nil, err
		}
		return entitlementCodes(lds.Entitlements), nil
	}
	ds, _, err := a.openMachineFile()
	if err != nil {
		if ds == nil {
			if lds, lerr := a.openLicenseFile(); lerr == nil {
				return entitlementCodes(lds.Entitlements), nil
			}
			return nil, err
		}
		// An expired file's entitlements are still authentic; whether the
		// license may be used at all is leaseAllowed's decision.
	}
	return entitlementCodes(ds.Entitlements), nil
}

func missingFrom(want, have []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			out = append(out, w)
		}
	}
	return out
}

func entitlementsError(missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	return &ipc.Error{Code: ipc.CodeEntitlementsMissing,
		Message: "the license lacks the required entitlements: " + strings.Join(missing, ", "),
		Data:    map[string]any{"missing": missing}}
}

// requireEntitlementsParam checks lease.acquire's entitlements param.
func (a *Agent) requireEntitlementsParam(ctx context.Context, p ipc.AcquireParams, v licenseView) error {
	if len(p.Entitlements) == 0 {
		return nil
	}
	want, err := normaliseEntitlements(p.Entitlements)
	if err != nil {
		return err
	}
	return a.requireEntitlements(ctx, want, v)
}
