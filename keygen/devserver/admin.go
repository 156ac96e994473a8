package devserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func (c *call) hCreateProduct() (*reply, error) {
	if err := c.needAdmin(false); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("products")
	if err != nil {
		return nil, err
	}
	name, err := d.str("name")
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, unprocessable("/data/attributes/name", "can't be blank", "NAME_BLANK")
	}
	md, err := d.metadata()
	if err != nil {
		return nil, err
	}
	p := c.s.createProduct(name, md)
	return &reply{status: 201, body: data(c.s.renderProduct(p)), header: http.Header{"Location": {c.s.link("products", p.ID)}}}, nil
}

func (c *call) hProducts() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	var out []*Product
	for _, p := range c.s.products {
		if c.auth.kind == "admin" || p.ID == c.auth.id {
			out = append(out, p)
		}
	}
	return ok(page(c, out, c.s.renderProduct))
}

func (c *call) hProduct() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	p := c.s.product(c.r.PathValue("id"))
	if p == nil {
		return nil, notFound("product")
	}
	if c.auth.kind != "admin" && !(c.auth.kind == "product" && c.auth.id == p.ID) {
		return nil, forbidden()
	}
	return ok(data(c.s.renderProduct(p)))
}

func (c *call) hCreatePolicy() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("policies")
	if err != nil {
		return nil, err
	}
	var spec PolicySpec
	if len(d.Attributes) > 0 {
		raw, _ := json.Marshal(d.Attributes)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(&spec); derr != nil {
			var te *json.UnmarshalTypeError
			if asType(derr, &te) {
				return nil, typeMismatch("/data/attributes/"+te.Field, te.Value, te.Type.String())
			}
			return nil, badRequest("unpermitted parameter ("+derr.Error()+")", "").pointer("/data/attributes")
		}
	}
	spec.ProductID, err = d.relID("product")
	if err != nil {
		return nil, err
	}
	if spec.ProductID == "" {
		return nil, unprocessable("/data/relationships/product", "must exist", "PRODUCT_NOT_FOUND")
	}
	if c.auth.kind == "product" && c.auth.id != spec.ProductID {
		return nil, forbidden()
	}
	p, err := c.s.createPolicy(spec)
	if err != nil {
		return nil, err
	}
	return &reply{status: 201, body: data(c.s.renderPolicy(p)), header: http.Header{"Location": {c.s.link("policies", p.ID)}}}, nil
}

func asType(err error, te **json.UnmarshalTypeError) bool {
	t, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*te = t
	}
	return ok
}

func (c *call) hPolicies() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	var out []*Policy
	for _, p := range c.s.policies {
		if c.auth.kind == "admin" || p.ProductID == c.auth.id {
			out = append(out, p)
		}
	}
	return ok(page(c, out, c.s.renderPolicy))
}

func (c *call) hPolicy() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	p := c.s.policy(c.r.PathValue("id"))
	if p == nil {
		return nil, notFound("policy")
	}
	allowed := c.auth.kind == "admin" || (c.auth.kind == "product" && c.auth.id == p.ProductID)
	if c.auth.kind == "license" {
		allowed = c.s.license(c.auth.id).PolicyID == p.ID
	}
	if !allowed {
		return nil, notFound("policy")
	}
	if err := c.can("policy.read"); err != nil {
		return nil, err
	}
	return ok(data(c.s.renderPolicy(p)))
}

func (c *call) hCreateEntitlement() (*reply, error) {
	if err := c.needAdmin(false); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("entitlements")
	if err != nil {
		return nil, err
	}
	code, err := d.str("code")
	if err != nil {
		return nil, err
	}
	name, err := d.str("name")
	if err != nil {
		return nil, err
	}
	md, err := d.metadata()
	if err != nil {
		return nil, err
	}
	e, err := c.s.createEntitlement(code, name, md)
	if err != nil {
		return nil, err
	}
	return created(data(c.s.renderEntitlement(e)))
}

func (c *call) hEntitlements() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	return ok(page(c, c.s.entitlements, c.s.renderEntitlement))
}

func (c *call) hCreateUser() (*reply, error) {
	if err := c.needAdmin(true); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("users")
	if err != nil {
		return nil, err
	}
	email, err := d.str("email")
	if err != nil {
		return nil, err
	}
	if email == "" {
		return nil, unprocessable("/data/attributes/email", "can't be blank", "EMAIL_BLANK")
	}
	if c.s.user(email) != nil {
		return nil, unprocessable("/data/attributes/email", "has already been taken", "EMAIL_TAKEN")
	}
	u := &User{ID: newID(), Email: email, Created: c.now.UTC()}
	c.s.users = append(c.s.users, u)
	return created(data(c.s.renderUser(u)))
}

// hCreateToken serves POST /products/{id}/tokens and /licenses/{id}/tokens.
func (c *call) hCreateToken(kind string) (*reply, error) {
	if err := c.needAdmin(kind == "license"); err != nil {
		return nil, err
	}
	id := c.r.PathValue("id")
	switch kind {
	case "product":
		if c.s.product(id) == nil {
			return nil, notFound("product")
		}
	case "license":
		l, err := c.findLicense(id)
		if err != nil {
			return nil, err
		}
		id = l.ID
	}
	if kind == "license" {
		// licenses/tokens_controller.rb permits maxActivations and
		// maxDeactivations (token.rb: >= 0).
		var maxAct, maxDeact *int
		if doc, derr := decodeBody(c.body); derr != nil {
			return nil, derr
		} else if doc.Data != nil {
			for _, f := range []struct {
				name string
				dst  **int
			}{{"maxActivations", &maxAct}, {"maxDeactivations", &maxDeact}} {
				v, err := doc.Data.intp(f.name)
				if err != nil {
					return nil, err
				}
				if v != nil && *v < 0 {
					return nil, unprocessable("/data/attributes/"+f.name, "must be greater than or equal to 0", snake(f.name)+"_INVALID")
				}
				*f.dst = v
			}
		}
		return created(data(c.s.renderToken(c.s.newLicenseToken(id, maxAct, maxDeact))))
	}
	// CreateToken locks s.mu, which the request already holds.
	t := &token{Token: "prod-" + randomHex(32) + "v3", ID: newID(), Kind: kind, ResourceID: id, Created: c.now.UTC()}
	c.s.tokens[t.Token] = t
	return created(data(c.s.renderToken(t)))
}
