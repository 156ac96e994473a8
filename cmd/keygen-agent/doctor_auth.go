package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// checkAuth makes one authenticated call (GET /v1/accounts/:account/me)
// with the credential the agent uses (the license token when set, else the
// license key) and explains a refusal: a policy's authenticationStrategy
// (TOKEN by default) or a license that may not log in refuses every call
// the agent needs besides validation (concerns/authentication.rb).
func (d *doctor) checkAuth() (auth, settings doctorCheck) {
	auth = doctorCheck{Check: "auth"}
	settings = doctorCheck{Check: "settings", Status: checkWarn, Detail: "not checked (no authenticated call succeeded)",
		Fix: "fix the auth check first"}
	if d.cfg == nil {
		auth.Status, auth.Detail, auth.Fix = checkWarn, "not checked (the configuration does not load)", "fix the config check first"
		return auth, settings
	}
	cred, kind := d.cfg.LicenseToken, "license token"
	if cred == "" {
		cred, kind = d.cfg.LicenseKey, "license key"
	}
	if cred == "" {
		auth.Status, auth.Detail = checkWarn, "not checked (no license key or token in the configuration)"
		auth.Fix = "set license_key (and license_token under a TOKEN policy); a credential given with `activate` is in the agent's cache, which doctor does not read"
		return auth, settings
	}
	hc, _ := newDoctorHTTPClient(d.timeout)
	kcfg := d.keygenConfig(d.cfg.PublicKey, hc)
	if d.cfg.LicenseToken != "" {
		kcfg.Token = cred
	} else {
		kcfg.LicenseKey = cred
	}
	kc, err := keygen.NewClient(kcfg)
	if err != nil {
		auth.Status, auth.Detail, auth.Fix = checkFail, err.Error(), "correct api_url, account and public_key"
		return auth, settings
	}
	ctx, cancel := d.ctx()
	defer cancel()
	lic, err := kc.Me(ctx)
	if err != nil {
		auth.Status, auth.Detail = checkFail, fmt.Sprintf("GET /me with the %s: %v", kind, err)
		var kerr *keygen.Error
		switch {
		case keygen.IsOffline(err) || errors.Is(err, keygen.ErrRateLimited):
			auth.Status, auth.Fix = checkWarn, "see the keygen and signature checks"
		case errors.As(err, &kerr) && agent.Explain(kerr.Code) != "":
			auth.Fix = agent.Explain(kerr.Code)
		default:
			auth.Fix = "check that the " + kind + " belongs to account " + d.cfg.Account
		}
		return auth, settings
	}
	auth.Status = checkOK
	auth.Detail = fmt.Sprintf("the %s logs in as license %s", kind, lic.ID)
	if lic.Suspended {
		auth.Status, auth.Fix = checkFail, agent.Explain("LICENSE_SUSPENDED")
		auth.Detail += ", which is suspended"
	}
	settings = d.checkSettings(kc, lic)
	if d.cfg.Product != "" || d.cfg.Environment != "" {
		if v, err := kc.ValidateKey(ctx, d.cfg.LicenseKey, keygen.ValidateOptions{Product: d.cfg.Product, Environment: d.cfg.Environment}); err == nil &&
			!v.Valid && agent.Explain(v.Code) != "" && strings.Contains(v.Code, "SCOPE") {
			auth.Status, auth.Fix = checkFail, agent.Explain(v.Code)
			auth.Detail += "; validation: " + v.Code
		}
	}
	return auth, settings
}

// checkSettings says which policy settings the license may read and which
// the agent assumes from its configuration.
func (d *doctor) checkSettings(kc *keygen.Client, lic *keygen.License) doctorCheck {
	c := doctorCheck{Check: "settings"}
	ctx, cancel := d.ctx()
	defer cancel()
	read := "read: requireHeartbeat, heartbeatDuration and maxProcesses from the machine record; limits and expiry from the license"
	p, err := kc.LicensePolicy(ctx, lic.ID)
	switch {
	case err == nil:
		c.Status = checkOK
		c.Detail = fmt.Sprintf("%s; from the policy (readable): processLeasingStrategy %s, overageStrategy %s, componentMatchingStrategy %s, authenticationStrategy %s",
			read, p.ProcessLeasingStrategy, p.OverageStrategy, p.ComponentMatchingStrategy, p.AuthenticationStrategy)
	case errors.Is(err, keygen.ErrForbidden):
		c.Status = checkOK
		c.Detail = fmt.Sprintf("%s; assumed (the license lacks policy.read, Keygen's default): process_leasing_strategy %s, overage_strategy %s, component_matching_strategy %s",
			read, d.cfg.ProcessLeasingStrategy, d.cfg.OverageStrategy, d.cfg.ComponentMatchingStrategy)
		c.Fix = "set these config keys to the policy's values, or grant the license policy.read"
	default:
		c.Status, c.Detail = checkWarn, "the policy could not be read: "+err.Error()
		c.Fix = "see the keygen check; until the policy is readable the agent assumes the config's strategies"
	}
	return c
}
