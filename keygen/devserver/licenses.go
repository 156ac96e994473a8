package devserver

import (
	"encoding/json"
	"net/http"
	"time"
)

func (c *call) hMe() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	switch c.auth.kind {
	case "license":
		if err := c.can("license.read"); err != nil { // license_policy.rb me?
			return nil, err
		}
		return ok(data(c.s.renderLicense(c.s.license(c.auth.id), c.now)))
	case "product":
		if p := c.s.product(c.auth.id); p != nil {
			return ok(data(c.s.renderProduct(p)))
		}
	case "user":
		if u := c.s.user(c.auth.id); u != nil {
			return ok(data(c.s.renderUser(u)))
		}
	case "admin":
		return ok(data(obj{"id": c.s.account, "type": "users", "attributes": obj{"email": "admin@devserver.invalid", "role": "admin", "status": "ACTIVE"},
			"relationships": obj{"account": c.s.accountRel()}}))
	}
	return nil, notFound("resource")
}

func (c *call) hLicense() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "license.read")
	if err != nil {
		return nil, err
	}
	return ok(data(c.s.renderLicense(l, c.now)))
}

func (c *call) hLicenses() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	if err := c.can("license.read"); err != nil {
		return nil, err
	}
	q := c.r.URL.Query()
	var out []*License
	for _, l := range c.s.licenses {
		if !c.canLicense(l) {
			continue
		}
		if v := q.Get("policy"); v != "" && l.PolicyID != v {
			continue
		}
		if v := q.Get("product"); v != "" && l.ProductID != v {
			continue
		}
		if v := q.Get("status"); v != "" && c.s.licenseStatus(l, c.now) != v {
			continue
		}
		out = append(out, l)
	}
	return ok(page(c, out, func(l *License) obj { return c.s.renderLicense(l, c.now) }))
}

// licenseSpecFrom reads license attributes shared by create and update.
func licenseAttrs(d *reqData, spec *LicenseSpec) *apiError {
	var err *apiError
	if spec.Name, err = d.str("name"); err != nil {
		return err
	}
	if spec.Key, err = d.str("key"); err != nil {
		return err
	}
	var exp string
	if present, e := d.attr("expiry", "string", &exp); e != nil {
		return e
	} else if present && exp != "" {
		t, perr := time.Parse(time.RFC3339Nano, exp)
		if perr != nil {
			return badRequest("type mismatch (received string expected datetime)", "").pointer("/data/attributes/expiry")
		}
		spec.Expiry = &t
	}
	for _, f := range []struct {
		name string
		dst  **int
	}{{"maxMachines", &spec.MaxMachines}, {"maxProcesses", &spec.MaxProcesses}, {"maxCores", &spec.MaxCores}, {"maxUsers", &spec.MaxUsers}, {"maxUses", &spec.MaxUses}} {
		if *f.dst, err = d.intp(f.name); err != nil {
			return err
		}
		if *f.dst != nil && **f.dst < 0 {
			return unprocessable("/data/attributes/"+f.name, "must be greater than or equal to 0", snake(f.name)+"_INVALID")
		}
	}
	var susp bool
	if _, err = d.attr("suspended", "boolean", &susp); err != nil {
		return err
	}
	spec.Suspended = susp
	if spec.Metadata, err = d.metadata(); err != nil {
		return err
	}
	return nil
}

func (c *call) hCreateLicense() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("licenses")
	if err != nil {
		return nil, err
	}
	var spec LicenseSpec
	if err := licenseAttrs(d, &spec); err != nil {
		return nil, err
	}
	if spec.PolicyID, err = d.relID("policy"); err != nil {
		return nil, err
	}
	if spec.OwnerID, err = d.relID("owner"); err != nil {
		return nil, err
	}
	if spec.OwnerID == "" {
		if spec.OwnerID, err = d.relID("user"); err != nil {
			return nil, err
		}
	}
	if pol := c.s.policy(spec.PolicyID); pol != nil && c.auth.kind == "product" && pol.ProductID != c.auth.id {
		return nil, forbidden()
	}
	l, err := c.s.createLicense(spec)
	if err != nil {
		return nil, err
	}
	return &reply{status: 201, body: data(c.s.renderLicense(l, c.now)), header: http.Header{"Location": {c.s.link("licenses", l.ID)}}}, nil
}

func (c *call) hUpdateLicense() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	l, err := c.findLicense(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("licenses")
	if err != nil {
		return nil, err
	}
	var spec LicenseSpec
	if err := licenseAttrs(d, &spec); err != nil {
		return nil, err
	}
	if _, has := d.Attributes["name"]; has {
		l.Name = spec.Name
	}
	if _, has := d.Attributes["expiry"]; has {
		l.Expiry = spec.Expiry
	}
	for name, pair := range map[string][2]**int{
		"maxMachines": {&l.MaxMachines, &spec.MaxMachines}, "maxProcesses": {&l.MaxProcesses, &spec.MaxProcesses},
		"maxCores": {&l.MaxCores, &spec.MaxCores}, "maxUsers": {&l.MaxUsers, &spec.MaxUsers}, "maxUses": {&l.MaxUses, &spec.MaxUses},
	} {
		if _, has := d.Attributes[name]; has {
			*pair[0] = *pair[1]
		}
	}
	if _, has := d.Attributes["suspended"]; has {
		l.Suspended = spec.Suspended
	}
	if _, has := d.Attributes["metadata"]; has {
		l.Metadata = spec.Metadata
	}
	l.Updated = c.now.UTC()
	return ok(data(c.s.renderLicense(l, c.now)))
}

func (c *call) hDeleteLicense() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	l, err := c.findLicense(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	for _, m := range c.s.machinesOf(l.ID) {
		c.s.deleteMachine(m.ID)
	}
	c.s.licenses = deleteWhere(c.s.licenses, func(x *License) bool { return x.ID == l.ID })
	delete(c.s.licenseEnts, l.ID)
	return noContent()
}

func (c *call) hSuspend(suspend bool) (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	l, err := c.findLicense(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if l.Suspended == suspend {
		if suspend {
			return nil, unprocessableEntity("is already suspended", "LICENSE_SUSPENDED")
		}
		return nil, unprocessableEntity("is not suspended", "LICENSE_NOT_SUSPENDED")
	}
	l.Suspended = suspend
	l.Updated = c.now.UTC()
	return ok(data(c.s.renderLicense(l, c.now)))
}

func (c *call) hCheckIn() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "license.check-in")
	if err != nil {
		return nil, err
	}
	if !c.s.licensePolicy(l).RequireCheckIn {
		return nil, unprocessableEntity("cannot be checked in because the policy does not require it", "CHECK_IN_NOT_REQUIRED")
	}
	t := c.now.UTC()
	l.LastCheckIn = &t
	return ok(data(c.s.renderLicense(l, c.now)))
}

func (c *call) hLicenseEntitlements() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "entitlement.read")
	if err != nil {
		return nil, err
	}
	return ok(page(c, c.s.licenseEntitlements(l.ID), c.s.renderEntitlement))
}

func (c *call) hAttachEntitlements() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	l, err := c.findLicense(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	var doc struct {
		Data []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"data"`
	}
	if _, derr := decodeBody(c.body); derr != nil && derr.Code != "" {
		return nil, derr
	}
	if json.Unmarshal(c.body, &doc) != nil || len(doc.Data) == 0 {
		return nil, badRequest("type mismatch (expected array of entitlement identifiers)", "").pointer("/data")
	}
	var codes []string
	for i, ref := range doc.Data {
		e := c.s.entitlement(ref.ID)
		if e == nil {
			e = c.s.entitlementByCode(ref.ID)
		}
		if e == nil {
			return nil, unprocessable("/data/"+itoa(i), "must exist", "ENTITLEMENT_NOT_FOUND")
		}
		codes = append(codes, e.Code)
	}
	if err := c.s.attachEntitlements(l.ID, codes); err != nil {
		return nil, err
	}
	return ok(page(c, c.s.licenseEntitlements(l.ID), c.s.renderEntitlement))
}

func (c *call) hLicensePolicy() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "policy.read")
	if err != nil {
		return nil, err
	}
	return ok(data(c.s.renderPolicy(c.s.licensePolicy(l))))
}

func (c *call) hLicenseProduct() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "product.read")
	if err != nil {
		return nil, err
	}
	p := c.s.product(l.ProductID)
	if p == nil {
		return nil, notFound("product")
	}
	return ok(data(c.s.renderProduct(p)))
}
