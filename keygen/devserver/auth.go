package devserver

import (
	"net/http"
	"slices"
)

// authenticate resolves the request's credentials (s.mu held). No
// credentials gives a nil bearer; routes that need one call [call.need].
func (s *Server) authenticate(r *http.Request) (*bearer, error) {
	scheme, secret := credential(r)
	switch scheme {
	case "":
		return nil, nil
	case "license":
		l := s.licenseByKey(secret)
		if l == nil {
			return nil, unauthorized("License", "License key is invalid", "LICENSE_INVALID")
		}
		// keygen-api's concerns/authentication.rb (http_license_authenticator):
		// banned, suspended and REVOKE_ACCESS-expired licenses are refused
		// before the policy's strategy is looked at.
		pol := s.licensePolicy(l)
		switch {
		case s.licenseBanned(l):
			return nil, newError(403, "License is banned", "LICENSE_BANNED")
		case l.Suspended:
			return nil, newError(403, "License is suspended", "LICENSE_SUSPENDED")
		case pol.ExpirationStrategy == "REVOKE_ACCESS" && s.licenseExpired(l, s.now()):
			return nil, newError(403, "License is expired", "LICENSE_EXPIRED")
		case !pol.supportsLicenseAuth():
			return nil, newError(403, "License key authentication is not allowed by policy", "LICENSE_NOT_ALLOWED")
		}
		return &bearer{kind: "license", id: l.ID, viaKey: true}, nil
	case "token":
		t := s.tokens[secret]
		if t == nil {
			if isUUID(secret) {
				return nil, unauthorized("Bearer", "Token format is invalid (make sure that you're providing a token value, not a token's UUID identifier)", "TOKEN_FORMAT_INVALID")
			}
			return nil, unauthorized("Bearer", "Token is invalid", "TOKEN_INVALID")
		}
		// http_token_authenticator: a banned bearer (a license whose owner is
		// banned counts) is USER_BANNED, then a license's policy must allow
		// tokens. Suspension and expiry do not refuse a token login.
		switch t.Kind {
		case "license":
			l := s.license(t.ResourceID)
			if l == nil {
				return nil, unauthorized("Bearer", "Token is invalid", "TOKEN_INVALID")
			}
			if s.licenseBanned(l) {
				return nil, newError(403, "User is banned", "USER_BANNED")
			}
			if !s.licensePolicy(l).supportsTokenAuth() {
				return nil, newError(403, "Token authentication is not allowed by policy", "TOKEN_NOT_ALLOWED")
			}
		case "user":
			if u := s.user(t.ResourceID); u != nil && u.Banned {
				return nil, newError(403, "User is banned", "USER_BANNED")
			}
		}
		return &bearer{kind: t.Kind, id: t.ResourceID, tok: t}, nil
	}
	return nil, unauthorized("Bearer", "An authentication token is invalid", "TOKEN_INVALID")
}

// need requires an authenticated bearer.
func (c *call) need() *apiError {
	if c.auth == nil {
		return unauthorized("Bearer", "An authentication token is required", "TOKEN_MISSING")
	}
	return nil
}

// needAdmin requires an admin token (or a product token when product is
// true).
func (c *call) needAdmin(product bool) *apiError {
	if err := c.need(); err != nil {
		return err
	}
	if c.auth.kind == "admin" || (product && c.auth.kind == "product") {
		return nil
	}
	return forbidden()
}

// canLicense reports whether the bearer may act on the license.
func (c *call) canLicense(l *License) bool {
	if c.auth == nil || l == nil {
		return false
	}
	switch c.auth.kind {
	case "admin":
		return true
	case "product":
		return l.ProductID == c.auth.id
	case "license":
		return l.ID == c.auth.id
	case "user":
		return l.OwnerID == c.auth.id || slices.Contains(l.UserIDs, c.auth.id)
	}
	return false
}

// canMachine reports whether the bearer may act on the machine; manage is
// true for writes (protected policies bar user tokens from managing).
func (c *call) canMachine(m *machine, manage bool) bool {
	l := c.s.license(m.LicenseID)
	if !c.canLicense(l) {
		return false
	}
	if manage && c.auth.kind == "user" && c.s.licensePolicy(l).Protected {
		return false
	}
	return true
}
