package devserver

import "fmt"

// DemoOptions shape the account seeded by [Server.Demo]. Zero values give
// what a vendor most likely has: a floating, non-strict ED25519_SIGN policy
// with Keygen's default TOKEN authentication, a license with Keygen's
// default permissions (no policy.read, product.read, user.read,
// account.read), no machine limit, 600 s heartbeats and PER_MACHINE
// process leasing.
type DemoOptions struct {
	ProductName            string // default "Demo App"
	MaxProcesses           *int
	MaxMachines            *int
	HeartbeatDuration      int    // seconds; 0 = Keygen's default (600)
	Leasing                string // processLeasingStrategy: PER_MACHINE (default), PER_LICENSE, PER_USER
	Strict                 bool
	RequireHeartbeat       bool
	NodeLocked             bool   // floating=false (maxMachines forced to 1)
	Scheme                 string // default ED25519_SIGN
	AuthenticationStrategy string // TOKEN (default, as Keygen's), LICENSE, MIXED or NONE
	OverageStrategy        string
	CullStrategy           string   // heartbeatCullStrategy
	ResurrectionStrategy   string   // heartbeatResurrectionStrategy
	Entitlements           []string // codes; default DEMO_BASIC, DEMO_PRO
	LicenseKey             string   // optional fixed key
	// Permissions are the demo license's permissions; nil gives Keygen's
	// defaults ([DefaultLicensePermissions]); [LicensePermissions] or
	// {"*"} grant everything a license may hold.
	Permissions []string
	// MaxActivations and MaxDeactivations limit the demo license token.
	MaxActivations, MaxDeactivations *int
}

// Demo is what [Server.Demo] created.
type Demo struct {
	Product      Product
	Policy       Policy
	License      License // License.Key is the license key
	Entitlements []Entitlement
	// LicenseToken is a license (activation) token for the license, as
	// POST /licenses/{id}/tokens issues it; empty when the policy's
	// strategy does not allow tokens (LICENSE, NONE).
	LicenseToken string
}

// Demo seeds one product, policy, license and entitlements (attached to the
// license). It is what `keygen-agent devserver` and `keygen-agent dev` serve.
func (s *Server) Demo(o DemoOptions) (Demo, error) {
	spec := PolicySpec{
		Name:                          "Demo Policy",
		Scheme:                        o.Scheme,
		Floating:                      !o.NodeLocked,
		Strict:                        o.Strict,
		RequireHeartbeat:              o.RequireHeartbeat,
		MaxMachines:                   o.MaxMachines,
		MaxProcesses:                  o.MaxProcesses,
		AuthenticationStrategy:        o.AuthenticationStrategy,
		ProcessLeasingStrategy:        o.Leasing,
		OverageStrategy:               o.OverageStrategy,
		HeartbeatCullStrategy:         o.CullStrategy,
		HeartbeatResurrectionStrategy: o.ResurrectionStrategy,
	}
	if spec.Scheme == "" {
		spec.Scheme = "ED25519_SIGN"
	}
	if o.HeartbeatDuration != 0 {
		spec.HeartbeatDuration = intp(o.HeartbeatDuration)
	}
	name := o.ProductName
	if name == "" {
		name = "Demo App"
	}
	codes := o.Entitlements
	if codes == nil {
		codes = []string{"DEMO_BASIC", "DEMO_PRO"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prod := s.createProduct(name, nil)
	spec.ProductID = prod.ID
	pol, err := s.createPolicy(spec)
	if err != nil {
		return Demo{}, fmt.Errorf("demo policy: %s", err.Detail)
	}
	lic, err := s.createLicense(LicenseSpec{PolicyID: pol.ID, Name: "Demo License", Key: o.LicenseKey, Permissions: o.Permissions})
	if err != nil {
		return Demo{}, fmt.Errorf("demo license: %s", err.Detail)
	}
	d := Demo{Product: *prod, Policy: *pol}
	for _, code := range codes {
		e := s.entitlementByCode(code)
		if e == nil {
			if e, err = s.createEntitlement(code, code, nil); err != nil {
				return Demo{}, fmt.Errorf("demo entitlement: %s", err.Detail)
			}
		}
		d.Entitlements = append(d.Entitlements, *e)
	}
	if err := s.attachEntitlements(lic.ID, codes); err != nil {
		return Demo{}, fmt.Errorf("demo entitlements: %s", err.Detail)
	}
	d.License = *lic
	if pol.supportsTokenAuth() {
		d.LicenseToken = s.newLicenseToken(lic.ID, o.MaxActivations, o.MaxDeactivations).Token
	}
	return d, nil
}
