package devserver

import "slices"

// LicensePermissions is every permission a license can hold
// (Permission::LICENSE_PERMISSIONS in keygen-api's app/models/permission.rb).
var LicensePermissions = []string{
	"account.read", "arch.read", "artifact.read",
	"component.create", "component.delete", "component.read", "component.update",
	"channel.read", "constraint.read", "engine.read", "entitlement.read",
	"group.owners.read", "group.read",
	"license.check-in", "license.check-out", "license.read", "license.usage.increment", "license.validate",
	"machine.check-out", "machine.create", "machine.delete", "machine.heartbeat.ping", "machine.proofs.generate",
	"machine.read", "machine.update",
	"package.read", "platform.read", "policy.read",
	"process.create", "process.delete", "process.heartbeat.ping", "process.read", "process.update",
	"product.read", "release.download", "release.read", "release.upgrade",
	"token.read", "token.regenerate", "token.revoke", "user.read",
}

// DefaultLicensePermissions are the permissions a new license gets when
// neither it nor the account says otherwise: every license permission
// except account.read, product.read, policy.read and user.read (keygen-api's
// app/models/license.rb, "omitting some for backwards compatibility").
var DefaultLicensePermissions = slices.DeleteFunc(slices.Clone(LicensePermissions), func(p string) bool {
	return p == "account.read" || p == "product.read" || p == "policy.read" || p == "user.read"
})

// SetDefaultLicensePermissions is the account setting
// default_license_permissions: the permissions of licenses created
// afterwards without their own. Empty restores Keygen's defaults. Unknown
// permissions panic (a test's typo).
func (s *Server) SetDefaultLicensePermissions(perms []string) {
	for _, p := range perms {
		if p != "*" && !slices.Contains(LicensePermissions, p) {
			panic("devserver: SetDefaultLicensePermissions: unknown license permission " + p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultLicensePerms = slices.Clone(perms)
}

// licensePermsFor resolves a new license's permissions (s.mu held).
func (s *Server) licensePermsFor(perms []string) ([]string, *apiError) {
	if perms == nil {
		if len(s.defaultLicensePerms) > 0 {
			return slices.Clone(s.defaultLicensePerms), nil
		}
		return slices.Clone(DefaultLicensePermissions), nil
	}
	for _, p := range perms {
		if p != "*" && !slices.Contains(LicensePermissions, p) {
			return nil, unprocessable("/data/attributes/permissions", "unsupported permissions", "PERMISSIONS_NOT_ALLOWED")
		}
	}
	return slices.Clone(perms), nil
}

func hasPerm(have []string, p string) bool {
	return slices.Contains(have, "*") || slices.Contains(have, p)
}

// can is ApplicationPolicy#verify_permissions! for license bearers (by key
// or by license token): a license missing one of perms is refused with
// Keygen's codeless 403 (app/policies/application_policy.rb). Other
// bearers are not restricted here.
func (c *call) can(perms ...string) *apiError {
	if c.auth == nil || c.auth.kind != "license" {
		return nil
	}
	l := c.s.license(c.auth.id)
	if l == nil {
		return forbidden()
	}
	for _, p := range perms {
		if !hasPerm(l.Permissions, p) {
			return denied("license lacks permission to perform action")
		}
	}
	return nil
}

// denied is an ActionPolicy denial with its reason, rendered the way
// keygen-api's application_controller.rb does: 403, no code.
func denied(reason string) *apiError {
	return newError(403, "You do not have permission to complete the request ("+reason+")", "")
}
