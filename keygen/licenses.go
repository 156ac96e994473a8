package keygen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

func esc(s string) string { return url.PathEscape(s) }

// Ping checks connectivity with GET /v1/ping. That route is not scoped to
// an account, so Keygen cannot sign it: Ping proves reachability only.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/ping", noAcct: true, unsigned: true})
	return err
}

type validateMeta struct {
	Key   string         `json:"key,omitempty"`
	Nonce int64          `json:"nonce"`
	Scope map[string]any `json:"scope,omitempty"`
}

func (o ValidateOptions) scope() map[string]any {
	s := map[string]any{}
	if o.Fingerprint != "" {
		s["fingerprint"] = o.Fingerprint
	}
	if len(o.Fingerprints) > 0 {
		s["fingerprints"] = o.Fingerprints
	}
	if len(o.Components) > 0 {
		s["components"] = o.Components
	}
	if len(o.Entitlements) > 0 {
		s["entitlements"] = o.Entitlements
	}
	if o.Product != "" {
		s["product"] = o.Product
	}
	if o.Policy != "" {
		s["policy"] = o.Policy
	}
	if o.Machine != "" {
		s["machine"] = o.Machine
	}
	if o.Environment != "" {
		s["environment"] = o.Environment
	}
	if len(s) == 0 {
		return nil
	}
	return s
}

// newNonce returns a random positive integer that survives a round trip
// through any JSON implementation (< 2^53).
func newNonce() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:])&(1<<53-1)) | 1
}

// ValidateKey validates a license key (POST /licenses/actions/validate-key).
// The key travels in the body and no Authorization is sent: neither a
// configured license key nor a token, which Keygen would check (and could
// refuse) although the validation needs no login.
// An unknown key is a Validation with Valid false and code NOT_FOUND, not an
// error.
func (c *Client) ValidateKey(ctx context.Context, key string, o ValidateOptions) (*Validation, error) {
	return c.validate(ctx, request{path: "/licenses/actions/validate-key", anonymous: true}, validateMeta{Key: key, Scope: o.scope()})
}

// Validate validates a license by id (POST /licenses/{id}/actions/validate).
func (c *Client) Validate(ctx context.Context, licenseID string, o ValidateOptions) (*Validation, error) {
	return c.validate(ctx, request{path: "/licenses/" + esc(licenseID) + "/actions/validate"}, validateMeta{Scope: o.scope()})
}

func (c *Client) validate(ctx context.Context, r request, m validateMeta) (*Validation, error) {
	m.Nonce = newNonce()
	r.method, r.body, r.nonceBound = http.MethodPost, map[string]any{"meta": m}, true
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	d, err := decodeDocument(resp.body)
	if err != nil {
		return nil, err
	}
	v, err := decodeValidation(d, m.Nonce)
	if err != nil {
		return nil, err
	}
	if resp.info.Verified {
		v.Date, v.Sent, v.Received = resp.info.Date, resp.sent, resp.received
	}
	return v, nil
}

func decodeValidation(d *document, nonce int64) (*Validation, error) {
	var meta struct {
		TS     time.Time `json:"ts"`
		Valid  *bool     `json:"valid"`
		Detail string    `json:"detail"`
		Code   string    `json:"code"`
		Nonce  *int64    `json:"nonce"`
	}
	if isNull(d.Meta) {
		return nil, malformed("validation without meta")
	}
	if err := json.Unmarshal(d.Meta, &meta); err != nil {
		return nil, malformed("decode validation meta: %v", err)
	}
	if meta.Valid == nil {
		return nil, malformed("validation meta without valid")
	}
	if meta.Nonce == nil || *meta.Nonce != nonce {
		return nil, ErrNonceMismatch
	}
	v := &Validation{Valid: *meta.Valid, Code: meta.Code, Detail: meta.Detail, Timestamp: meta.TS, Nonce: *meta.Nonce}
	if !isNull(d.Data) {
		r, err := d.one("licenses")
		if err != nil {
			return nil, err
		}
		if v.License, err = toLicense(r); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Me returns the license the client authenticates as (GET /me). It fails
// with ErrMalformedResponse if the bearer is not a license.
func (c *Client) Me(ctx context.Context) (*License, error) {
	return c.getLicense(ctx, "/me")
}

// License reads a license by id or key (GET /licenses/{id}).
func (c *Client) License(ctx context.Context, id string) (*License, error) {
	return c.getLicense(ctx, "/licenses/"+esc(id))
}

func (c *Client) getLicense(ctx context.Context, path string) (*License, error) {
	return c.licenseDoc(ctx, request{method: http.MethodGet, path: path})
}

// licenseDoc sends req and reads the license its answer carries.
func (c *Client) licenseDoc(ctx context.Context, req request) (*License, error) {
	d, err := c.doc(ctx, req)
	if err != nil {
		return nil, err
	}
	r, err := d.one("licenses")
	if err != nil {
		return nil, err
	}
	return toLicense(r)
}

// LicenseEntitlements lists a license's entitlements.
func (c *Client) LicenseEntitlements(ctx context.Context, id string) ([]Entitlement, error) {
	rs, err := c.list(ctx, "/licenses/"+esc(id)+"/entitlements", "entitlements")
	if err != nil {
		return nil, err
	}
	out := make([]Entitlement, 0, len(rs))
	for i := range rs {
		e, err := toEntitlement(&rs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *e)
	}
	return out, nil
}

// LicensePolicy reads a license's policy (GET /licenses/{id}/policy).
func (c *Client) LicensePolicy(ctx context.Context, licenseID string) (*Policy, error) {
	d, err := c.doc(ctx, request{method: http.MethodGet, path: "/licenses/" + esc(licenseID) + "/policy"})
	if err != nil {
		return nil, err
	}
	r, err := d.one("policies")
	if err != nil {
		return nil, err
	}
	return toPolicy(r)
}

// CheckoutLicense checks out a license file
// (POST /licenses/{id}/actions/check-out).
func (c *Client) CheckoutLicense(ctx context.Context, id string, o CheckoutOptions) (*Checkout, error) {
	co, err := c.checkout(ctx, "/licenses/"+esc(id)+"/actions/check-out", "license-files", o)
	if err != nil {
		return nil, err
	}
	if err := checkCheckout(co, "license", id); err != nil {
		return nil, err
	}
	return co, nil
}

// pageSize and maxPages bound list calls.
const (
	pageSize = 100
	maxPages = 100
)

// list fetches every page of a collection of typ (at most maxPages pages).
func (c *Client) list(ctx context.Context, path, typ string) ([]resource, error) {
	var all []resource
	for page := 1; page <= maxPages; page++ {
		q := url.Values{"page[size]": {strconv.Itoa(pageSize)}, "page[number]": {strconv.Itoa(page)}}
		d, err := c.doc(ctx, request{method: http.MethodGet, path: path, query: q})
		if err != nil {
			return nil, err
		}
		rs, err := d.many(typ)
		if err != nil {
			return nil, err
		}
		all = append(all, rs...)
		// Keygen sets links.next until the last page; a server without
		// pagination links returned everything at once.
		if len(rs) == 0 || !d.hasNext() {
			break
		}
	}
	return all, nil
}
