package devserver

import (
	"net/url"
	"testing"
	"time"
)

func TestValidationCodes(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	type setup struct {
		pol   PolicySpec
		lic   LicenseSpec
		fps   []string // machines to activate (with components "c1","c2")
		post  func(*License)
		scope map[string]any
	}
	for _, tc := range []struct {
		name  string
		setup setup
		valid bool
		code  string
	}{
		{"valid", setup{}, true, "VALID"},
		{"suspended", setup{lic: LicenseSpec{Suspended: true}}, false, "SUSPENDED"},
		{"expired restrict", setup{lic: LicenseSpec{Expiry: &past}}, false, "EXPIRED"},
		{"expired maintain", setup{pol: PolicySpec{ExpirationStrategy: "MAINTAIN_ACCESS"}, lic: LicenseSpec{Expiry: &past}}, true, "EXPIRED"},
		{"expired allow", setup{pol: PolicySpec{ExpirationStrategy: "ALLOW_ACCESS"}, lic: LicenseSpec{Expiry: &past}}, true, "EXPIRED"},
		{"product mismatch", setup{scope: map[string]any{"product": "x"}}, false, "PRODUCT_SCOPE_MISMATCH"},
		{"product required", setup{pol: PolicySpec{RequireProductScope: true}}, false, "PRODUCT_SCOPE_REQUIRED"},
		{"policy mismatch", setup{scope: map[string]any{"policy": "x"}}, false, "POLICY_SCOPE_MISMATCH"},
		{"entitlements empty", setup{scope: map[string]any{"entitlements": []string{}}}, false, "ENTITLEMENTS_SCOPE_EMPTY"},
		{"entitlements missing", setup{scope: map[string]any{"entitlements": []string{"E1", "NOPE"}}}, false, "ENTITLEMENTS_MISSING"},
		{"entitlements ok", setup{scope: map[string]any{"entitlements": []string{"E1", "E2"}}}, true, "VALID"},
		{"fingerprints empty", setup{scope: map[string]any{"fingerprints": []string{}}}, false, "FINGERPRINT_SCOPE_EMPTY"},
		{"no machines floating", setup{scope: map[string]any{"fingerprint": "a"}}, false, "NO_MACHINES"},
		{"no machine node-locked", setup{pol: PolicySpec{Floating: false}, scope: map[string]any{"fingerprint": "a"}}, false, "NO_MACHINE"},
		{"fingerprint mismatch", setup{fps: []string{"a"}, scope: map[string]any{"fingerprint": "b"}}, false, "FINGERPRINT_SCOPE_MISMATCH"},
		{"fingerprint ok", setup{fps: []string{"a"}, scope: map[string]any{"fingerprint": "a"}}, true, "VALID"},
		{"fingerprint required", setup{pol: PolicySpec{RequireFingerprintScope: true}}, false, "FINGERPRINT_SCOPE_REQUIRED"},
		{"fingerprints match any", setup{fps: []string{"a"}, scope: map[string]any{"fingerprints": []string{"a", "b", "c"}}}, true, "VALID"},
		{"fingerprints match all", setup{pol: PolicySpec{MachineMatchingStrategy: "MATCH_ALL"}, fps: []string{"a", "b"}, scope: map[string]any{"fingerprints": []string{"a", "b", "c"}}}, false, "FINGERPRINT_SCOPE_MISMATCH"},
		{"fingerprints match most", setup{pol: PolicySpec{MachineMatchingStrategy: "MATCH_MOST"}, fps: []string{"a", "b"}, scope: map[string]any{"fingerprints": []string{"a", "b", "c"}}}, true, "VALID"},
		{"components need fingerprint", setup{fps: []string{"a"}, scope: map[string]any{"components": []string{"c1"}}}, false, "FINGERPRINT_SCOPE_REQUIRED"},
		{"components empty", setup{fps: []string{"a"}, scope: map[string]any{"fingerprint": "a", "components": []string{}}}, false, "COMPONENTS_SCOPE_EMPTY"},
		{"components mismatch", setup{fps: []string{"a"}, scope: map[string]any{"fingerprint": "a", "components": []string{"zz"}}}, false, "COMPONENTS_SCOPE_MISMATCH"},
		{"components any", setup{fps: []string{"a"}, scope: map[string]any{"fingerprint": "a", "components": []string{"c1", "zz"}}}, true, "VALID"},
		{"components all", setup{pol: PolicySpec{ComponentMatchingStrategy: "MATCH_ALL"}, fps: []string{"a"}, scope: map[string]any{"fingerprint": "a", "components": []string{"c1", "zz"}}}, false, "COMPONENTS_SCOPE_MISMATCH"},
		{"components two", setup{pol: PolicySpec{ComponentMatchingStrategy: "MATCH_TWO"}, fps: []string{"a"}, scope: map[string]any{"fingerprint": "a", "components": []string{"c1", "c2", "zz"}}}, true, "VALID"},
		{"components required", setup{pol: PolicySpec{RequireComponentsScope: true}, fps: []string{"a"}, scope: map[string]any{"fingerprint": "a"}}, false, "COMPONENTS_SCOPE_REQUIRED"},
		{"machine mismatch", setup{fps: []string{"a"}, scope: map[string]any{"machine": "00000000-0000-4000-8000-000000000000"}}, false, "MACHINE_SCOPE_MISMATCH"},
		{"checksum", setup{scope: map[string]any{"checksum": "abc"}}, false, "CHECKSUM_SCOPE_MISMATCH"},
		{"version required", setup{pol: PolicySpec{RequireVersionScope: true}}, false, "VERSION_SCOPE_REQUIRED"},
		{"non-strict no machines", setup{}, true, "VALID"},
		{"strict floating no machines", setup{pol: PolicySpec{Strict: true}}, false, "NO_MACHINES"},
		{"strict node-locked no machine", setup{pol: PolicySpec{Strict: true, Floating: false}}, false, "NO_MACHINE"},
		{"strict ok", setup{pol: PolicySpec{Strict: true}, fps: []string{"a"}}, true, "VALID"},
		{"too many machines", setup{pol: PolicySpec{Strict: true, MaxMachines: intp(4)}, post: maxMachines1, fps: []string{"a", "b"}}, false, "TOO_MANY_MACHINES"},
		{"too many machines overage", setup{pol: PolicySpec{Strict: true, MaxMachines: intp(4), OverageStrategy: "ALLOW_2X_OVERAGE"}, post: maxMachines1, fps: []string{"a", "b"}}, true, "TOO_MANY_MACHINES"},
		{"non-strict ignores machines", setup{pol: PolicySpec{MaxMachines: intp(4)}, post: maxMachines1, fps: []string{"a", "b"}}, true, "VALID"},
		{"too many cores", setup{pol: PolicySpec{Strict: true}, post: func(l *License) { l.MaxCores = intp(4) }, fps: []string{"a", "b"}}, false, "TOO_MANY_CORES"},
		{"strict expired", setup{pol: PolicySpec{Strict: true}, lic: LicenseSpec{Expiry: &past}, fps: []string{"a"}}, false, "EXPIRED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{CullInterval: -1})
			prod := s.CreateProduct("p")
			spec := tc.setup.pol
			spec.ProductID = prod.ID
			spec.AuthenticationStrategy = "MIXED"
			if tc.name != "no machine node-locked" && tc.name != "strict node-locked no machine" {
				spec.Floating = true
			}
			pol := s.CreatePolicy(spec)
			s.CreateEntitlement("E1", "")
			s.CreateEntitlement("E2", "")
			ls := tc.setup.lic
			ls.PolicyID = pol.ID
			l := s.CreateLicense(ls)
			s.AttachEntitlements(l.ID, "E1", "E2")
			admin := newClient(t, s, bearerAuth(s.AdminToken()))
			for _, fp := range tc.setup.fps {
				admin.activate(l.ID, fp, "c1", "c2")
			}
			if tc.setup.post != nil {
				s.UpdateLicense(l.ID, tc.setup.post)
			}
			meta := map[string]any{"key": l.Key, "nonce": 4242}
			if tc.setup.scope != nil {
				meta["scope"] = tc.setup.scope
			}
			r := newClient(t, s, "").do("POST", "/licenses/actions/validate-key", map[string]any{"meta": meta})
			if r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			if r.get("meta", "valid") != tc.valid || r.str("meta", "code") != tc.code {
				t.Fatalf("got valid=%v code=%v detail=%v, want %v %s", r.get("meta", "valid"), r.get("meta", "code"), r.get("meta", "detail"), tc.valid, tc.code)
			}
			if r.get("meta", "nonce") != float64(4242) {
				t.Errorf("nonce not echoed: %s", r.Raw)
			}
			if tc.setup.scope != nil && r.get("meta", "scope") == nil {
				t.Errorf("scope not echoed: %s", r.Raw)
			}
			if r.str("data", "id") != l.ID || r.str("meta", "ts") == "" {
				t.Errorf("data/ts: %s", r.Raw)
			}
		})
	}
}

func TestValidateEndpoints(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, "")
	r := c.do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": "nope"}})
	if r.Status != 200 || r.get("data") != nil || r.str("meta", "code") != "NOT_FOUND" || r.get("meta", "valid") != false {
		t.Fatalf("unknown key: %s", r.Raw)
	}
	if r := c.do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": d.License.Key, "nonce": "abc"}}); r.Status != 400 {
		t.Fatalf("string nonce: %d %s", r.Status, r.Raw)
	}
	lc := c.with(licenseAuth(d.License.Key))
	// By id and by key, POST with scope, GET quick (scope skipped, no nonce).
	for _, id := range []string{d.License.ID, d.License.Key} {
		r := lc.do("POST", "/licenses/"+url.PathEscape(id)+"/actions/validate", map[string]any{"meta": map[string]any{"nonce": 7, "scope": map[string]any{"product": d.Product.ID}}})
		if r.str("meta", "code") != "VALID" || r.get("meta", "nonce") != float64(7) {
			t.Fatalf("validate %s: %s", id, r.Raw)
		}
	}
	if r := lc.do("GET", "/licenses/"+d.License.ID+"/actions/validate", nil); r.str("meta", "code") != "VALID" || r.get("meta", "nonce") != nil {
		t.Fatalf("quick: %s", r.Raw)
	}
	if r := c.do("POST", "/licenses/"+d.License.ID+"/actions/validate", nil); r.Status != 401 {
		t.Fatalf("no auth: %d", r.Status)
	}
	if r := lc.do("POST", "/licenses/"+newID()+"/actions/validate", nil); r.Status != 404 {
		t.Fatalf("unknown id: %d", r.Status)
	}
	if r := lc.do("GET", "/licenses/"+d.License.ID+"/entitlements", nil); len(r.get("data").([]any)) != 2 {
		t.Fatalf("entitlements: %s", r.Raw)
	}
	if r := lc.do("GET", "/licenses/"+d.License.ID+"/policy", nil); r.str("data", "attributes", "authenticationStrategy") != "LICENSE" {
		t.Fatalf("policy: %s", r.Raw)
	}
}

func TestTooManyProcessesValidation(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{Strict: true, MaxProcesses: intp(1)})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp")
	c.spawn(mid, "1")
	// Raise the machine's process count behind the API's back.
	s.UpdateLicense(d.License.ID, func(l *License) { l.MaxProcesses = intp(5) })
	c.spawn(mid, "2")
	s.UpdateLicense(d.License.ID, func(l *License) { l.MaxProcesses = intp(1) })
	body := map[string]any{"meta": map[string]any{"scope": map[string]any{"fingerprint": "fp"}}}
	if r := c.do("POST", "/licenses/"+d.License.ID+"/actions/validate", body); r.str("meta", "code") != "TOO_MANY_PROCESSES" {
		t.Fatalf("%s", r.Raw)
	}
	// PER_MACHINE only counts when a machine or fingerprint is in scope.
	if r := c.do("POST", "/licenses/"+d.License.ID+"/actions/validate", nil); r.str("meta", "code") != "VALID" {
		t.Fatalf("%s", r.Raw)
	}
}

func maxMachines1(l *License) { l.MaxMachines = intp(1) }

func TestCheckInOverdue(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	s := newTestServer(t, Options{Now: func() time.Time { return now }, CullInterval: -1, DisableRateLimit: true})
	prod := s.CreateProduct("p")
	pol := s.CreatePolicy(PolicySpec{ProductID: prod.ID, Floating: true, AuthenticationStrategy: "LICENSE", RequireCheckIn: true, CheckInInterval: "day", CheckInIntervalCount: 2})
	l := s.CreateLicense(LicenseSpec{PolicyID: pol.ID})
	c := newClient(t, s, licenseAuth(l.Key))
	code := func() string {
		return c.do("POST", "/licenses/"+l.ID+"/actions/validate", nil).str("meta", "code")
	}
	if got := code(); got != "VALID" {
		t.Fatalf("fresh: %s", got)
	}
	now = now.Add(49 * time.Hour)
	if got := code(); got != "OVERDUE" {
		t.Fatalf("overdue: %s", got)
	}
	if r := c.do("POST", "/licenses/"+l.ID+"/actions/check-in", nil); r.Status != 200 || r.str("data", "attributes", "nextCheckIn") == "" {
		t.Fatalf("check-in: %d %s", r.Status, r.Raw)
	}
	if got := code(); got != "VALID" {
		t.Fatalf("after check-in: %s", got)
	}
}
