package devserver

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultCheckoutTTL is Keygen's default certificate TTL in seconds (one
// ActiveSupport month, added by the calendar).
const DefaultCheckoutTTL = 2629746

var (
	licenseIncludes = []string{"entitlements", "environment", "product", "policy", "group", "owner", "users"}
	machineIncludes = []string{"license", "license.entitlements", "license.product", "license.policy", "license.owner", "license.users", "components", "environment", "group", "owner"}
)

type checkoutOpts struct {
	alg      string
	ttl      *int
	includes []string
}

// checkoutOptions merges query and POST meta options (meta wins) and
// validates them (keygen-api app/services/abstract_checkout_service.rb).
func (c *call) checkoutOptions(kind, scheme string) (checkoutOpts, *apiError) {
	q := c.r.URL.Query()
	var (
		encrypt  = q.Get("encrypt") == "true" || q.Get("encrypt") == "1"
		alg      = q.Get("algorithm")
		ttl      = intp(DefaultCheckoutTTL)
		includes []string
	)
	if q.Has("ttl") {
		if v := q.Get("ttl"); v == "" || v == "null" {
			ttl = nil
		} else if n, err := strconv.Atoi(v); err == nil {
			ttl = &n
		} else {
			return checkoutOpts{}, badRequest("must be an integer", "CHECKOUT_TTL_INVALID").parameter("ttl")
		}
	}
	if v := q.Get("include"); v != "" {
		includes = strings.Split(v, ",")
	}
	if c.r.Method == http.MethodPost {
		doc, err := decodeBody(c.body)
		if err != nil {
			return checkoutOpts{}, err
		}
		var b bool
		if present, isNull, err := doc.metaValue("encrypt", "boolean", &b); err != nil {
			return checkoutOpts{}, err
		} else if present && !isNull {
			encrypt = b
		}
		var a string
		if present, isNull, err := doc.metaValue("algorithm", "string", &a); err != nil {
			return checkoutOpts{}, err
		} else if present && !isNull {
			alg = a
		}
		var n int
		if present, isNull, err := doc.metaValue("ttl", "integer", &n); err != nil {
			return checkoutOpts{}, err
		} else if present {
			if isNull {
				ttl = nil
			} else {
				ttl = &n
			}
		}
		var inc []string
		if present, isNull, err := doc.metaValue("include", "array", &inc); err != nil {
			return checkoutOpts{}, err
		} else if present && !isNull {
			includes = inc
		}
	}
	if alg == "" {
		enc := "base64"
		if encrypt {
			enc = "aes-256-gcm"
		}
		alg = enc + "+" + schemeSigningAlg(scheme)
	} else {
		enc, sig, _ := strings.Cut(alg, "+")
		if enc != "base64" && enc != "aes-256-gcm" {
			return checkoutOpts{}, badRequest("invalid encoding algorithm", "CHECKOUT_ALGORITHM_INVALID").parameter("algorithm")
		}
		if !validSigningAlg(sig) {
			return checkoutOpts{}, badRequest("invalid signing algorithm", "CHECKOUT_ALGORITHM_INVALID").parameter("algorithm")
		}
	}
	if ttl != nil && *ttl < 3600 {
		return checkoutOpts{}, badRequest("must be greater than or equal to 3600 (1 hour)", "CHECKOUT_TTL_INVALID").parameter("ttl")
	}
	allowed := licenseIncludes
	if kind == "machine" {
		allowed = machineIncludes
	}
	out := make([]string, 0, len(includes))
	for _, inc := range includes {
		inc = strings.TrimSpace(inc)
		switch inc {
		case "user":
			inc = "owner"
		case "license.user":
			inc = "license.owner"
		}
		if !slices.Contains(allowed, inc) {
			return checkoutOpts{}, badRequest("invalid includes", "CHECKOUT_INCLUDE_INVALID").parameter("include")
		}
		if !slices.Contains(out, inc) {
			out = append(out, inc)
		}
	}
	return checkoutOpts{alg: alg, ttl: ttl, includes: out}, nil
}

// includePermissions is permissions_for_includes of keygen-api's
// machine_file_policy.rb (kind "machine") and license_file_policy.rb.
func includePermissions(kind string, includes []string) []string {
	var m map[string]string
	if kind == "machine" {
		m = map[string]string{"license.entitlements": "entitlement.read", "license.owner": "user.read", "license.users": "user.read",
			"license.product": "product.read", "license.policy": "policy.read", "environment": "environment.read",
			"license": "license.read", "owner": "user.read", "components": "component.read", "group": "group.read"}
	} else {
		m = map[string]string{"entitlements": "entitlement.read", "environment": "environment.read", "group": "group.read",
			"owner": "user.read", "users": "user.read", "product": "product.read", "policy": "policy.read"}
	}
	var out []string
	for _, inc := range includes {
		if p, ok := m[inc]; ok && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// included renders the resources named by includes, without duplicates.
func (c *call) included(l *License, m *machine, includes []string) []any {
	s := c.s
	var out []any
	seen := map[string]bool{}
	add := func(o obj) {
		k := o["type"].(string) + "/" + o["id"].(string)
		if !seen[k] {
			seen[k] = true
			out = append(out, o)
		}
	}
	for _, inc := range includes {
		switch strings.TrimPrefix(inc, "license.") {
		case "license":
			add(s.renderLicense(l, c.now))
		case "entitlements":
			for _, e := range s.licenseEntitlements(l.ID) {
				add(s.renderEntitlement(e))
			}
		case "product":
			if p := s.product(l.ProductID); p != nil {
				add(s.renderProduct(p))
			}
		case "policy":
			add(s.renderPolicy(s.licensePolicy(l)))
		case "owner":
			owner := l.OwnerID
			if m != nil && inc == "owner" {
				owner = m.OwnerID
			}
			if u := s.user(owner); u != nil {
				add(s.renderUser(u))
			}
		case "users":
			for _, id := range l.UserIDs {
				if u := s.user(id); u != nil {
					add(s.renderUser(u))
				}
			}
		case "components":
			for _, cp := range s.componentsOf(m.ID) {
				add(s.renderComponent(cp))
			}
		}
	}
	return out
}

// issue builds the certificate and the API answer for a check-out.
func (c *call) issue(kind string, l *License, m *machine) (*reply, error) {
	s := c.s
	o, err := c.checkoutOptions(kind, s.licensePolicy(l).Scheme)
	if err != nil {
		return nil, err
	}
	// The file itself is then authorized: <kind>.read plus what each
	// include needs (permissions_for_includes in keygen-api's
	// machine_file_policy.rb and license_file_policy.rb).
	if err := c.can(append([]string{kind + ".read"}, includePermissions(kind, o.includes)...)...); err != nil {
		return nil, err
	}
	issued := c.now.UTC().Truncate(time.Millisecond)
	var expiry *time.Time
	if o.ttl != nil {
		e := calendarAdd(issued, *o.ttl)
		expiry = &e
	}
	doc := obj{"meta": obj{"issued": isoTime(issued), "expiry": isoTimePtr(expiry), "ttl": nullInt(o.ttl)}}
	secret := l.Key
	id := l.ID
	if kind == "machine" {
		doc["data"] = s.renderMachine(m, c.now, "")
		secret += m.Fingerprint
		id = m.ID
		m.LastCheckOut = &issued
	} else {
		doc["data"] = s.renderLicense(l, c.now)
		l.LastCheckOut = &issued
	}
	if inc := c.included(l, m, o.includes); len(inc) > 0 {
		doc["included"] = inc
	}
	payload, jerr := json.Marshal(doc)
	if jerr != nil {
		return nil, jerr
	}
	cert, cerr := s.keys.certificate(kind, o.alg, payload, secret)
	if cerr != nil {
		return nil, cerr
	}
	if c.r.Method == http.MethodGet {
		return &reply{status: 200, body: []byte(cert), contentType: "application/octet-stream",
			header: http.Header{"Content-Disposition": {`attachment; filename="` + id + `.lic"`}}}, nil
	}
	rels := obj{"account": s.accountRel(), "environment": obj{"data": nil}, "license": rel("licenses", l.ID)}
	if m != nil {
		rels["machine"] = rel("machines", m.ID)
	}
	return ok(data(obj{
		"id":   newID(),
		"type": kind + "-files",
		"attributes": obj{"certificate": cert, "algorithm": o.alg, "includes": o.includes, "ttl": nullInt(o.ttl),
			"expiry": isoTimePtr(expiry), "issued": isoTime(issued)},
		"relationships": rels,
	}))
}

func (c *call) hLicenseCheckout() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "license.check-out")
	if err != nil {
		return nil, err
	}
	return c.issue("license", l, nil)
}

func (c *call) hMachineCheckout() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), false, "machine.check-out")
	if err != nil {
		return nil, err
	}
	return c.issue("machine", c.s.license(m.LicenseID), m)
}
