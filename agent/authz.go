package agent

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// How the agent authenticates to Keygen, and what it does when Keygen's
// defaults refuse it. A policy's authenticationStrategy defaults to TOKEN
// (keygen-api models/policy.rb), under which a license key may not log in
// (concerns/authentication.rb: 403 LICENSE_NOT_ALLOWED); a license lacks
// policy.read by default (models/license.rb), so a check-out including
// license.policy is 403 without a code (policies/machine_file_policy.rb).

const (
	metaLicenseToken    = "license_token"
	metaRefusedIncludes = "refused_includes"
)

// licenseToken is the bearer token for authenticated calls: one given with
// `keygen-agent activate --token` (kept in the cache) wins over the config.
func (a *Agent) licenseToken() string {
	if a.store != nil {
		if b, err := a.store.Meta(metaLicenseToken); err == nil && len(b) > 0 {
			return string(b)
		}
	}
	return a.config().LicenseToken
}

// bearerToken is the token the Keygen client sends: none once the policy
// refused token authentication and a license key can be used instead.
func (a *Agent) bearerToken() string {
	a.lic.mu.Lock()
	keyOnly := a.lic.keyAuthOnly
	a.lic.mu.Unlock()
	if keyOnly {
		return ""
	}
	return a.licenseToken()
}

// setLicense stores a license key and, when given, a license token, then
// switches the client to them (see setLicenseKey).
func (a *Agent) setLicense(key, token string) error {
	if token != "" {
		if err := a.store.PutMeta(metaLicenseToken, []byte(token)); err != nil {
			return err
		}
		a.resetAuth()
	}
	return a.setLicenseKey(key)
}

// resetAuth forgets what earlier refusals taught (a new credential may be
// allowed where the old one was not).
func (a *Agent) resetAuth() {
	a.lic.mu.Lock()
	a.lic.keyAuthOnly = false
	a.lic.authRefusals = 0
	a.lic.mu.Unlock()
}

// rebuildClient replaces the Keygen client after a change of credentials or
// of a setting the client is built from (environment, api_version,
// insecure_skip_verify).
func (a *Agent) rebuildClient() {
	a.resetAuth()
	api, err := a.newClient(a.licenseKey())
	if err != nil {
		a.log.Error("rebuilding the Keygen client; keeping the previous one", "err", err)
		return
	}
	a.apiMu.Lock()
	a.api = api
	a.apiMu.Unlock()
	a.log.Info("Keygen client rebuilt with the new settings")
}

// authenticated runs one Keygen call. When the policy refuses token
// authentication (TOKEN_NOT_ALLOWED, a LICENSE policy) and a license key is
// known, it switches to the key once and retries: the token is used only
// where the policy allows tokens.
func (a *Agent) authenticated(ctx context.Context, f func(ctx context.Context, c *keygen.Client) error) error {
	err := f(ctx, a.client())
	if !errors.Is(err, keygen.ErrTokenNotAllowed) || a.licenseKey() == "" || a.bearerToken() == "" {
		return err
	}
	a.lic.mu.Lock()
	a.lic.keyAuthOnly = true
	a.lic.mu.Unlock()
	a.log.Warn("the policy does not allow token authentication; using the license key instead")
	api, nerr := a.newClient(a.licenseKey())
	if nerr != nil {
		return err
	}
	a.apiMu.Lock()
	a.api = api
	a.apiMu.Unlock()
	return f(ctx, api)
}

// errAuthRefused: Keygen refused to authenticate the agent in a way that
// retrying cannot fix; the view says why and what to do.
var errAuthRefused = errors.New("Keygen refused the agent's credentials")

// Remedies for authentication refusals, shared by status, doctor and the
// README's troubleshooting section.
const (
	remedyLicenseNotAllowed = "the license's policy does not allow license-key authentication (Keygen's default authenticationStrategy is TOKEN): " +
		"give the agent a license token (license_token, KEYGEN_LICENSE_TOKEN or `keygen-agent activate --token`), " +
		"or set the policy's authenticationStrategy to LICENSE or MIXED"
	remedyTokenNotAllowed = "the license's policy does not allow token authentication: " +
		"set the policy's authenticationStrategy to TOKEN or MIXED, or remove the license token and use the license key under LICENSE"
	remedyTokenInvalid = "Keygen does not accept the license token (invalid, expired or revoked): " +
		"create a new license token for this license and set license_token or run `keygen-agent activate --token`"
	remedyLoginRefused = "Keygen refuses every authenticated call for this license (%s): the seat cannot be freed or used from this machine; " +
		"reinstate the license in Keygen (unsuspend, unban, or renew it; under REVOKE_ACCESS an expired license may not log in)"
	remedyTokenActivations = "the license token has used all its activations (maxActivations): " +
		"create a new token or raise its limit; deactivating and re-activating spends one each time"
)

// refusal turns an authentication or login refusal into the license view
// and returns errAuthRefused (nil when err is not such a refusal).
func (a *Agent) refusal(err error, v licenseView) error {
	var kerr *keygen.Error
	if !errors.As(err, &kerr) {
		return nil
	}
	v.Online, v.Valid, v.Code = true, false, kerr.Code
	switch {
	case errors.Is(err, keygen.ErrLicenseNotAllowed):
		v.State, v.Detail = StateAuthRefused, remedyLicenseNotAllowed
	case errors.Is(err, keygen.ErrTokenNotAllowed):
		v.State, v.Detail = StateAuthRefused, remedyTokenNotAllowed
	case errors.Is(err, keygen.ErrTokenInvalid):
		v.State, v.Detail = StateAuthRefused, remedyTokenInvalid
	case errors.Is(err, keygen.ErrLoginRefused):
		v.State = StateSuspended
		if kerr.Code == "LICENSE_EXPIRED" {
			v.State = StateExpired
		}
		v.Detail = strings.Replace(remedyLoginRefused, "%s", kerr.Code, 1)
	case tokenActivationsExhausted(kerr):
		v.State, v.Code, v.Detail = StateAuthRefused, "TOKEN_ACTIVATIONS_EXCEEDED", remedyTokenActivations
	default:
		return nil
	}
	a.setView(v)
	return errAuthRefused
}

// tokenActivationsExhausted: an activation token past its maxActivations
// (machines_controller.rb renders the token's validation error on
// /data/attributes/activations).
func tokenActivationsExhausted(e *keygen.Error) bool {
	return strings.Contains(e.Source.Pointer, "/activations") || e.Code == "ACTIVATIONS_LIMIT_EXCEEDED"
}

// authBackoff is how long the license loop waits after consecutive
// authentication refusals: the revalidation interval, doubling up to 6h.
// A changed credential (reload, activate) syncs at once regardless.
func authBackoff(interval time.Duration, refusals int) time.Duration {
	d := interval
	for i := 1; i < refusals && d < 6*time.Hour; i++ {
		d *= 2
	}
	return min(d, 6*time.Hour)
}

// Includes of a machine check-out, most wanted first, and the permission
// each needs (machine_file_policy.rb permissions_for_includes). On a 403
// without a code the agent drops them from the end of dropOrder, one at a
// time, and remembers what was refused.
var (
	checkoutIncludes = []string{"license", "license.entitlements", "license.policy", "components"}
	dropOrder        = []string{"license.policy", "components", "license.entitlements", "license"}
)

func (a *Agent) refusedIncludes() map[string]bool {
	a.lic.mu.Lock()
	defer a.lic.mu.Unlock()
	if a.lic.refused == nil {
		a.lic.refused = map[string]bool{}
		if a.store != nil {
			if b, err := a.store.Meta(metaRefusedIncludes); err == nil {
				for _, s := range strings.Split(string(b), ",") {
					if s != "" {
						a.lic.refused[s] = true
					}
				}
			}
		}
	}
	out := make(map[string]bool, len(a.lic.refused))
	for k, v := range a.lic.refused {
		out[k] = v
	}
	return out
}

func (a *Agent) refuseInclude(inc string) {
	refused := a.refusedIncludes()
	refused[inc] = true
	var list []string
	for _, i := range dropOrder {
		if refused[i] {
			list = append(list, i)
		}
	}
	a.lic.mu.Lock()
	a.lic.refused = refused
	a.lic.mu.Unlock()
	if a.store != nil {
		if err := a.store.PutMeta(metaRefusedIncludes, []byte(strings.Join(list, ","))); err != nil {
			a.log.Warn("remembering a refused include", "err", err)
		}
	}
}

// checkout checks out this machine's file with every include the bearer may
// read.
func (a *Agent) checkout(ctx context.Context, opts keygen.CheckoutOptions) (*keygen.Checkout, error) {
	for {
		refused := a.refusedIncludes()
		opts.Include = opts.Include[:0]
		for _, inc := range checkoutIncludes {
			if !refused[inc] {
				opts.Include = append(opts.Include, inc)
			}
		}
		var co *keygen.Checkout
		err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
			var err error
			co, err = c.CheckoutMachine(ctx, a.fp.Load().Fingerprint, opts)
			return err
		})
		if !errors.Is(err, keygen.ErrAccessDenied) || len(opts.Include) == 0 {
			return co, err
		}
		for _, inc := range dropOrder {
			if !refused[inc] {
				a.log.Warn("Keygen refused a machine-file include (the license lacks the permission); checking out without it",
					"include", inc)
				a.refuseInclude(inc)
				break
			}
		}
	}
}

// Where the leasing, overage and component-matching strategies in
// ipc.LicenseInfo come from (PolicySource).
const (
	PolicySourceKeygen = "policy" // the policy, read from Keygen
	PolicySourceConfig = "config" // assumed from the config: the license lacks policy.read
)

// assumedPolicy stands in for a policy the license may not read: what
// Keygen puts on the machine and license records, and, for what only the
// policy holds, the config's strict defaults.
func (a *Agent) assumedPolicy(m *keygen.Machine, lic *keygen.License) *keygen.Policy {
	cfg := a.config()
	p := &keygen.Policy{
		ProcessLeasingStrategy:    cfg.ProcessLeasingStrategy,
		OverageStrategy:           cfg.OverageStrategy,
		ComponentMatchingStrategy: cfg.ComponentMatchingStrategy,
	}
	if m != nil {
		p.RequireHeartbeat = m.RequireHeartbeat
		if m.HeartbeatDuration > 0 {
			d := m.HeartbeatDuration
			p.HeartbeatDuration = &d
		}
		p.MaxProcesses = m.MaxProcesses
	}
	if lic != nil {
		p.RequireHeartbeat = p.RequireHeartbeat || lic.RequireHeartbeat
		p.MaxMachines, p.Floating, p.Strict = lic.MaxMachines, lic.Floating, lic.Strict
		if p.MaxProcesses == nil {
			p.MaxProcesses = lic.MaxProcesses
		}
	}
	return p
}

// scopeRemedies explain each *_SCOPE_REQUIRED validation code
// (license_validation_service.rb) with what fixes it.
var scopeRemedies = map[string]string{
	"PRODUCT_SCOPE_REQUIRED":     "the policy requires the product scope: set product (KEYGEN_PRODUCT) to the product's id",
	"PRODUCT_SCOPE_MISMATCH":     "the license belongs to another product: set product to the id of the license's product",
	"ENVIRONMENT_SCOPE_REQUIRED": "the policy requires the environment scope: set environment (KEYGEN_ENVIRONMENT) to the license's environment",
	"ENVIRONMENT_SCOPE_MISMATCH": "the license belongs to another environment: set environment to the license's environment",
	"POLICY_SCOPE_REQUIRED":      "the policy requires a policy scope, which the agent does not send: turn requirePolicyScope off for this policy",
	"USER_SCOPE_REQUIRED":        "the policy requires a user scope, which the agent does not send: turn requireUserScope off for this policy",
	"CHECKSUM_SCOPE_REQUIRED":    "the policy requires a checksum scope (meant for release artifacts), which the agent does not send: turn requireChecksumScope off",
	"VERSION_SCOPE_REQUIRED":     "the policy requires a version scope (meant for release artifacts), which the agent does not send: turn requireVersionScope off",
	"MACHINE_SCOPE_REQUIRED":     "the policy requires the machine scope: the agent sends it once this machine is activated; activate it (`keygen-agent activate`)",
	"FINGERPRINT_SCOPE_REQUIRED": "the policy requires the fingerprint scope, which the agent always sends: check that nothing strips the request body",
	"COMPONENTS_SCOPE_REQUIRED":  "the policy requires the components scope: the agent found no hardware components to send; run `keygen-agent fingerprint`",
}

// withRemedy appends Explain(code), when there is one, to detail.
func withRemedy(detail, code string) string {
	if remedy := Explain(code); remedy != "" {
		return detail + ": " + remedy
	}
	return detail
}

// Explain returns the remedy for a Keygen code shown in the agent's
// status, or "" when the code needs no explanation.
func Explain(code string) string {
	switch code {
	case "LICENSE_NOT_ALLOWED":
		return remedyLicenseNotAllowed
	case "TOKEN_NOT_ALLOWED":
		return remedyTokenNotAllowed
	case "TOKEN_INVALID", "TOKEN_EXPIRED", "TOKEN_FORMAT_INVALID", "TOKEN_MISSING":
		return remedyTokenInvalid
	case "TOKEN_ACTIVATIONS_EXCEEDED":
		return remedyTokenActivations
	case "LICENSE_SUSPENDED", "LICENSE_BANNED", "USER_BANNED", "LICENSE_EXPIRED":
		return strings.Replace(remedyLoginRefused, "%s", code, 1)
	case "FINGERPRINT_TAKEN_ELSEWHERE":
		return remedyFingerprintElsewhere
	}
	return scopeRemedies[code]
}

const remedyFingerprintElsewhere = "this machine is activated under another license; deactivate it there " +
	"(`keygen-agent deactivate` with that license, or delete the machine in Keygen) and activate again"

// explainKeygenError is mapKeygenError with the remedy for authentication
// and login refusals: a suspended, banned or (under REVOKE_ACCESS) expired
// license is refused on every authenticated call, deactivation included.
func explainKeygenError(what string, err error) error {
	var kerr *keygen.Error
	if errors.As(err, &kerr) {
		remedy := Explain(kerr.Code)
		if remedy == "" && tokenActivationsExhausted(kerr) {
			remedy = remedyTokenActivations
		}
		if remedy != "" {
			return &ipc.Error{Code: ipc.CodeLicenseInvalid, Message: what + ": " + remedy,
				Data: map[string]any{"reason": kerr.Code, "keygen_code": kerr.Code}}
		}
	}
	return mapKeygenError(err)
}
