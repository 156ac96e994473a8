package devserver

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestSeedOverHTTP seeds a product, policy, entitlements, license and a
// product token with the admin token, the way a non-Go CI would.
func TestSeedOverHTTP(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	r := admin.do("POST", "/products", jsonapi("products", map[string]any{"name": "App"}, nil))
	if r.Status != 201 {
		t.Fatalf("product: %d %s", r.Status, r.Raw)
	}
	prod := r.str("data", "id")
	r = admin.do("POST", "/policies", jsonapi("policies", map[string]any{
		"name": "Pro", "floating": true, "maxMachines": 3, "maxProcesses": 1, "authenticationStrategy": "LICENSE",
		"heartbeatDuration": 120, "processLeasingStrategy": "PER_LICENSE", "scheme": "ED25519_SIGN",
	}, map[string]any{"product": ref("products", prod)}))
	if r.Status != 201 || r.str("data", "attributes", "processLeasingStrategy") != "PER_LICENSE" ||
		r.str("data", "attributes", "heartbeatCullStrategy") != "DEACTIVATE_DEAD" || r.get("data", "attributes", "maxProcesses") != float64(1) {
		t.Fatalf("policy: %d %s", r.Status, r.Raw)
	}
	pol := r.str("data", "id")
	for _, code := range []string{"A", "B"} {
		if r := admin.do("POST", "/entitlements", jsonapi("entitlements", map[string]any{"code": code, "name": code}, nil)); r.Status != 201 {
			t.Fatalf("entitlement: %s", r.Raw)
		}
	}
	r = admin.do("POST", "/licenses", jsonapi("licenses", map[string]any{"name": "L", "maxProcesses": 2}, map[string]any{"policy": ref("policies", pol)}))
	if r.Status != 201 || r.Header.Get("Location") == "" || r.get("data", "attributes", "maxProcesses") != float64(2) {
		t.Fatalf("license: %d %s", r.Status, r.Raw)
	}
	lid, key := r.str("data", "id"), r.str("data", "attributes", "key")
	r = admin.do("POST", "/licenses/"+lid+"/entitlements", map[string]any{"data": []any{map[string]any{"type": "entitlements", "id": "A"}}})
	if r.Status != 200 || len(r.get("data").([]any)) != 1 {
		t.Fatalf("attach: %d %s", r.Status, r.Raw)
	}
	r = admin.do("POST", "/products/"+prod+"/tokens", nil)
	if r.Status != 201 || r.str("data", "attributes", "kind") != "product-token" {
		t.Fatalf("token: %d %s", r.Status, r.Raw)
	}
	pc := admin.with(bearerAuth(r.str("data", "attributes", "token")))
	if r := pc.do("GET", "/licenses", nil); len(r.get("data").([]any)) != 1 {
		t.Fatalf("product list: %s", r.Raw)
	}
	if r := pc.do("POST", "/products", jsonapi("products", map[string]any{"name": "X"}, nil)); r.Status != 403 {
		t.Fatalf("product creates product: %d", r.Status)
	}
	lc := admin.with(licenseAuth(key))
	if r := lc.do("POST", "/licenses", jsonapi("licenses", nil, map[string]any{"policy": ref("policies", pol)})); r.Status != 403 {
		t.Fatalf("license creates license: %d", r.Status)
	}
	if r := lc.do("GET", "/me", nil); r.str("data", "id") != lid {
		t.Fatalf("me: %s", r.Raw)
	}
	// PATCH and suspend.
	r = admin.do("PATCH", "/licenses/"+lid, jsonapi("licenses", map[string]any{"maxProcesses": nil, "name": "M"}, nil))
	if r.get("data", "attributes", "maxProcesses") != float64(1) || r.str("data", "attributes", "name") != "M" {
		t.Fatalf("patch: %s", r.Raw)
	}
	if r := admin.do("POST", "/licenses/"+lid+"/actions/suspend", nil); r.str("data", "attributes", "status") != "SUSPENDED" {
		t.Fatalf("suspend: %s", r.Raw)
	}
	if r := lc.do("GET", "/me", nil); r.code() != "LICENSE_SUSPENDED" {
		t.Fatalf("suspended me: %s", r.Raw)
	}
	// Invalid policy attributes are 422/400 with pointers.
	r = admin.do("POST", "/policies", jsonapi("policies", map[string]any{"overageStrategy": "NEVER"}, map[string]any{"product": ref("products", prod)}))
	if r.Status != 422 || r.get("errors", 0, "source", "pointer") != "/data/attributes/overageStrategy" {
		t.Fatalf("bad policy: %d %s", r.Status, r.Raw)
	}
	r = admin.do("POST", "/policies", jsonapi("policies", map[string]any{"maxMachines": "3"}, map[string]any{"product": ref("products", prod)}))
	if r.Status != 400 {
		t.Fatalf("mistyped policy: %d %s", r.Status, r.Raw)
	}
}

func TestComponentsAndMachines(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp", "c1", "c2")
	r := c.do("POST", "/components", jsonapi("components", map[string]any{"fingerprint": "c3", "name": "disk"}, map[string]any{"machine": ref("machines", mid)}))
	if r.Status != 201 {
		t.Fatalf("add: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/components", jsonapi("components", map[string]any{"fingerprint": "c3", "name": "disk"}, map[string]any{"machine": ref("machines", mid)})); r.code() != "FINGERPRINT_TAKEN" {
		t.Fatalf("dup component: %s", r.Raw)
	}
	if r := c.do("GET", "/machines/"+mid+"/components", nil); len(r.get("data").([]any)) != 3 {
		t.Fatalf("list: %s", r.Raw)
	}
	// Inline component errors.
	dup := []any{
		map[string]any{"type": "components", "attributes": map[string]any{"fingerprint": "x", "name": "a"}},
		map[string]any{"type": "components", "attributes": map[string]any{"fingerprint": "x", "name": "b"}},
	}
	r = c.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "fp2"}, map[string]any{"license": ref("licenses", d.License.ID), "components": map[string]any{"data": dup}}))
	if r.code() != "COMPONENTS_FINGERPRINT_CONFLICT" || r.get("errors", 0, "source", "pointer") != "/data/relationships/components/data/1/attributes/fingerprint" {
		t.Fatalf("conflict: %s", r.Raw)
	}
	var many []any
	for i := range 21 {
		many = append(many, map[string]any{"type": "components", "attributes": map[string]any{"fingerprint": fmt.Sprint(i), "name": "n"}})
	}
	r = c.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "fp2"}, map[string]any{"license": ref("licenses", d.License.ID), "components": map[string]any{"data": many}}))
	if r.Status != 422 {
		t.Fatalf("21 components: %d %s", r.Status, r.Raw)
	}
	// Read by fingerprint, list with filters, deactivate.
	if r := c.do("GET", "/machines/fp", nil); r.str("data", "id") != mid || r.str("data", "attributes", "heartbeatStatus") != "NOT_STARTED" {
		t.Fatalf("by fingerprint: %s", r.Raw)
	}
	if r := c.do("GET", "/machines?fingerprint=fp&license="+d.License.ID, nil); len(r.get("data").([]any)) != 1 {
		t.Fatalf("filter: %s", r.Raw)
	}
	if r := c.do("GET", "/licenses/"+d.License.ID+"/machines", nil); len(r.get("data").([]any)) != 1 {
		t.Fatalf("license machines: %s", r.Raw)
	}
	c.spawn(mid, "1")
	if r := c.do("DELETE", "/machines/fp", nil); r.Status != 204 {
		t.Fatalf("deactivate: %d", r.Status)
	}
	if len(s.Machines())+len(s.Components())+len(s.Processes()) != 0 {
		t.Fatalf("leftovers")
	}
	if r := c.do("GET", "/machines/"+mid, nil); r.Status != 404 {
		t.Fatalf("gone: %d", r.Status)
	}
}

func TestPaginationAndHeaders(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp")
	for i := range 12 {
		c.spawn(mid, fmt.Sprint(i))
	}
	if r := c.do("GET", "/processes", nil); len(r.get("data").([]any)) != 10 {
		t.Fatalf("default limit: %d", len(r.get("data").([]any)))
	}
	r := c.do("GET", "/machines/"+mid+"/processes?page[size]=5&page[number]=3", nil)
	if len(r.get("data").([]any)) != 2 || r.get("links", "next") != nil || r.get("links", "meta", "pages") != float64(3) {
		t.Fatalf("page 3: %s", r.Raw)
	}
	r = c.do("GET", "/processes?page[size]=5&page[number]=1", nil)
	if next, _ := r.get("links", "next").(string); next == "" {
		t.Fatalf("page 1 next: %s", r.Raw)
	}
	if r.Header.Get("Keygen-Version") != "1.8" || r.Header.Get("X-Request-Id") == "" || r.Header.Get("Keygen-Account") != s.AccountID() {
		t.Errorf("headers: %v", r.Header)
	}
	c.header = http.Header{"Keygen-Version": {"v1.7"}}
	if r := c.do("GET", "/me", nil); r.Header.Get("Keygen-Version") != "1.7" {
		t.Errorf("version echo: %v", r.Header)
	}
	c.header = http.Header{"Keygen-Version": {"9"}}
	if r := c.do("GET", "/me", nil); r.code() != "INVALID_API_VERSION" {
		t.Errorf("bad version: %s", r.Raw)
	}
	c.header = http.Header{"Keygen-Environment": {"staging"}}
	if r := c.do("GET", "/me", nil); r.code() != "ENVIRONMENT_NOT_SUPPORTED" {
		t.Errorf("environment: %s", r.Raw)
	}
	c.header = nil
	if r := c.do("GET", "/nowhere", nil); r.Status != 404 || r.code() != "NOT_FOUND" {
		t.Errorf("unknown route: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/machines", `{"data":`); r.Status != 400 || r.code() != "JSON_INVALID" {
		t.Errorf("bad json: %d %s", r.Status, r.Raw)
	}
	// Single-tenant paths work too.
	c.base = "http://devserver.invalid/v1"
	if r := c.do("GET", "/me", nil); r.Status != 200 {
		t.Errorf("single-tenant: %d", r.Status)
	}
}

func TestMachineProcessOverride(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{MaxProcesses: intp(5)})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp")
	body := jsonapi("machines", map[string]any{"maxProcesses": 1, "name": "box"}, nil)
	if r := c.do("PATCH", "/machines/"+mid, body); r.Status != 403 {
		t.Fatalf("license sets maxProcesses: %d", r.Status)
	}
	r := c.with(bearerAuth(s.AdminToken())).do("PATCH", "/machines/"+mid, body)
	if r.Status != 200 || r.get("data", "attributes", "maxProcesses") != float64(1) || r.str("data", "attributes", "name") != "box" {
		t.Fatalf("admin patch: %d %s", r.Status, r.Raw)
	}
	c.spawn(mid, "1")
	if r := c.spawn(mid, "2"); r.detail() != "process count has exceeded maximum allowed for machine (1)" {
		t.Fatalf("override: %s", r.Raw)
	}
}

func TestExpiryAndNodeLocked(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	prod := s.CreateProduct("p")
	past := time.Now().Add(-time.Minute)
	revoke := s.CreatePolicy(PolicySpec{ProductID: prod.ID, AuthenticationStrategy: "LICENSE", ExpirationStrategy: "REVOKE_ACCESS"})
	l := s.CreateLicense(LicenseSpec{PolicyID: revoke.ID, Expiry: &past})
	c := newClient(t, s, licenseAuth(l.Key))
	if r := c.do("GET", "/me", nil); r.Status != 403 || r.code() != "LICENSE_EXPIRED" {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	if r := c.with("").do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": l.Key}}); r.str("meta", "code") != "EXPIRED" || r.get("meta", "valid") != false {
		t.Fatalf("validate revoked: %s", r.Raw)
	}
	// Node-locked: one machine; expiry does not block activation under RESTRICT_ACCESS.
	nl := s.CreatePolicy(PolicySpec{ProductID: prod.ID, AuthenticationStrategy: "MIXED"})
	if nl.MaxMachines == nil || *nl.MaxMachines != 1 {
		t.Fatalf("node-locked maxMachines %v", nl.MaxMachines)
	}
	l2 := s.CreateLicense(LicenseSpec{PolicyID: nl.ID, Expiry: &past})
	c2 := newClient(t, s, licenseAuth(l2.Key))
	c2.activate(l2.ID, "one")
	r := c2.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "two"}, map[string]any{"license": ref("licenses", l2.ID)}))
	if r.code() != "MACHINE_LIMIT_EXCEEDED" || r.detail() != "machine count has exceeded maximum allowed for license (1)" {
		t.Fatalf("node-locked: %s", r.Raw)
	}
	lt := s.CreateToken("license", l2.ID)
	if r := c2.with(bearerAuth(lt)).do("GET", "/me", nil); r.str("data", "id") != l2.ID {
		t.Fatalf("license token: %s", r.Raw)
	}
}
