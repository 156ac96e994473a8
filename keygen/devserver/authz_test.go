package devserver

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// authzSeed makes a product, a policy with the given strategy and a
// license with the given permissions (nil: Keygen's defaults), plus a
// license token for it.
func authzSeed(t *testing.T, s *Server, pol PolicySpec, perms []string) (Policy, License, string) {
	t.Helper()
	p := s.CreatePolicy(pol)
	l := s.CreateLicense(LicenseSpec{PolicyID: p.ID, Permissions: perms})
	return p, l, s.CreateLicenseToken(l.ID, nil, nil)
}

// Matches keygen-api's app/controllers/concerns/authentication.rb (license
// key only under LICENSE/MIXED, tokens only under TOKEN/MIXED) and
// app/models/policy.rb (supports_token_auth?, supports_license_auth?,
// before_create 'TOKEN'), on every authenticated route.
func TestAuthenticationStrategies(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	type cred struct{ key, token bool }
	for _, tc := range []struct {
		strategy string
		allowed  cred
	}{
		{"", cred{key: false, token: true}}, // Keygen's default is TOKEN
		{"TOKEN", cred{key: false, token: true}},
		{"LICENSE", cred{key: true, token: false}},
		{"MIXED", cred{key: true, token: true}},
		{"NONE", cred{key: false, token: false}},
	} {
		t.Run("strategy="+tc.strategy, func(t *testing.T) {
			pol, l, tok := authzSeed(t, s, PolicySpec{Floating: true, AuthenticationStrategy: tc.strategy}, LicensePermissions)
			if tc.strategy == "" && pol.AuthenticationStrategy != "TOKEN" {
				t.Fatalf("default strategy %q, want TOKEN", pol.AuthenticationStrategy)
			}
			fp := "fp-" + newID()
			mid := admin.activate(l.ID, fp)
			routes := []struct{ method, path string }{
				{"GET", "/me"},
				{"GET", "/licenses/" + l.ID},
				{"POST", "/licenses/" + l.ID + "/actions/validate"},
				{"GET", "/machines"},
				{"GET", "/machines/" + mid},
				{"POST", "/machines/" + mid + "/actions/ping"},
				{"POST", "/machines/" + mid + "/actions/check-out"},
				{"GET", "/processes"},
			}
			for _, cr := range []struct {
				name, auth, code string
				ok               bool
			}{
				{"key", licenseAuth(l.Key), "LICENSE_NOT_ALLOWED", tc.allowed.key},
				{"token", bearerAuth(tok), "TOKEN_NOT_ALLOWED", tc.allowed.token},
			} {
				for _, rt := range routes {
					r := newClient(t, s, cr.auth).do(rt.method, rt.path, nil)
					if cr.ok && r.Status >= 300 {
						t.Errorf("%s %s %s: %d %s", cr.name, rt.method, rt.path, r.Status, r.Raw)
					}
					if !cr.ok && (r.Status != 403 || r.code() != cr.code) {
						t.Errorf("%s %s %s: %d %s, want 403 %s", cr.name, rt.method, rt.path, r.Status, r.Raw, cr.code)
					}
				}
			}
		})
	}
}

// Matches http_license_authenticator and http_token_authenticator in
// keygen-api's app/controllers/concerns/authentication.rb: a license key
// of a banned, suspended or REVOKE_ACCESS-expired license is refused on
// every authenticated route (deactivation included), before the strategy
// is looked at; a license token is refused only when the owner is banned
// (USER_BANNED).
func TestLoginRefusals(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name     string
		pol      PolicySpec
		lic      func(*License)
		ban      bool
		keyCode  string // "" = allowed
		tokCode  string
		strategy string
	}{
		{name: "banned", ban: true, keyCode: "LICENSE_BANNED", tokCode: "USER_BANNED"},
		{name: "suspended", lic: func(l *License) { l.Suspended = true }, keyCode: "LICENSE_SUSPENDED"},
		{name: "expired revoke", pol: PolicySpec{ExpirationStrategy: "REVOKE_ACCESS"}, lic: func(l *License) { l.Expiry = &past }, keyCode: "LICENSE_EXPIRED"},
		{name: "expired restrict", lic: func(l *License) { l.Expiry = &past }},
		// Refusals come before the strategy: a suspended key under TOKEN
		// is LICENSE_SUSPENDED, not LICENSE_NOT_ALLOWED.
		{name: "suspended under TOKEN", strategy: "TOKEN", lic: func(l *License) { l.Suspended = true }, keyCode: "LICENSE_SUSPENDED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
			admin := newClient(t, s, bearerAuth(s.AdminToken()))
			ps := tc.pol
			ps.Floating = true
			ps.AuthenticationStrategy = "MIXED"
			if tc.strategy != "" {
				ps.AuthenticationStrategy = tc.strategy
			}
			owner := s.CreateUser("owner@example.com")
			p := s.CreatePolicy(ps)
			l := s.CreateLicense(LicenseSpec{PolicyID: p.ID, OwnerID: owner.ID, Permissions: []string{"*"}})
			tok := s.CreateLicenseToken(l.ID, nil, nil)
			mid := admin.activate(l.ID, "fp-1")
			if tc.lic != nil {
				s.UpdateLicense(l.ID, tc.lic)
			}
			if tc.ban {
				s.BanUser(owner.ID, true)
			}
			routes := []struct{ method, path string }{
				{"GET", "/me"}, {"GET", "/licenses/" + l.ID}, {"GET", "/machines/" + mid},
				{"POST", "/machines/" + mid + "/actions/ping"}, {"DELETE", "/machines/" + mid},
			}
			for _, cr := range []struct{ name, auth, code string }{{"key", licenseAuth(l.Key), tc.keyCode}, {"token", bearerAuth(tok), tc.tokCode}} {
				if cr.name == "token" && ps.AuthenticationStrategy == "TOKEN" {
					continue
				}
				for _, rt := range routes {
					if rt.method == "DELETE" && cr.code == "" {
						continue // would free the seat for the next credential
					}
					r := newClient(t, s, cr.auth).do(rt.method, rt.path, nil)
					switch {
					case cr.code == "" && r.Status >= 300:
						t.Errorf("%s %s %s: %d %s", cr.name, rt.method, rt.path, r.Status, r.Raw)
					case cr.code != "" && (r.Status != 403 || r.code() != cr.code):
						t.Errorf("%s %s %s: %d %s, want 403 %s", cr.name, rt.method, rt.path, r.Status, r.Raw, cr.code)
					}
				}
			}
		})
	}
}

// Matches keygen-api's app/models/license.rb (default permissions omit
// account.read, product.read, policy.read, user.read), the
// default_license_permissions account setting, and permissions_for_includes
// of app/policies/machine_file_policy.rb and license_file_policy.rb: a
// refused include is a codeless 403 "Access denied".
func TestLicensePermissions(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	_, l, _ := authzSeed(t, s, PolicySpec{Floating: true, AuthenticationStrategy: "LICENSE"}, nil)
	if got, _ := s.License(l.ID); strings.Join(got.Permissions, ",") != strings.Join(DefaultLicensePermissions, ",") {
		t.Fatalf("default permissions %v", got.Permissions)
	}
	mid := admin.activate(l.ID, "fp-perm")
	lc := newClient(t, s, licenseAuth(l.Key))
	const deniedDetail = "You do not have permission to complete the request (license lacks permission to perform action)"
	for _, tc := range []struct {
		method, path string
		body         any
		ok           bool
	}{
		{"GET", "/licenses/" + l.ID, nil, true},
		{"GET", "/licenses/" + l.ID + "/entitlements", nil, true},
		{"GET", "/licenses/" + l.ID + "/policy", nil, false},
		{"GET", "/licenses/" + l.ID + "/product", nil, false},
		{"POST", "/machines/" + mid + "/actions/check-out", nil, true},
		{"POST", "/machines/" + mid + "/actions/check-out?include=license.entitlements,license,components", nil, true},
		{"POST", "/machines/" + mid + "/actions/check-out?include=license.policy", nil, false},
		{"POST", "/machines/" + mid + "/actions/check-out?include=license.product", nil, false},
		{"POST", "/machines/" + mid + "/actions/check-out?include=license.owner", nil, false},
		{"POST", "/machines/" + mid + "/actions/check-out", map[string]any{"meta": map[string]any{"include": []string{"license.policy"}}}, false},
		{"GET", "/machines/" + mid + "/actions/check-out?include=license.policy", nil, false},
		{"POST", "/licenses/" + l.ID + "/actions/check-out?include=entitlements", nil, true},
		{"POST", "/licenses/" + l.ID + "/actions/check-out?include=policy", nil, false},
		{"POST", "/licenses/" + l.ID + "/actions/check-out?include=product", nil, false},
	} {
		r := lc.do(tc.method, tc.path, tc.body)
		if tc.ok && r.Status >= 300 {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, r.Status, r.Raw)
		}
		if !tc.ok && (r.Status != 403 || r.code() != "" || r.detail() != deniedDetail || r.str("errors", 0, "title") != "Access denied") {
			t.Errorf("%s %s: %d %s, want Keygen's codeless 403", tc.method, tc.path, r.Status, r.Raw)
		}
	}

	// A license without machine.create cannot activate; without
	// component.create it cannot activate with components.
	noCreate := s.CreateLicense(LicenseSpec{PolicyID: l.PolicyID, Permissions: []string{"license.read", "license.validate"}})
	r := newClient(t, s, licenseAuth(noCreate.Key)).do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "x1"}, map[string]any{"license": ref("licenses", noCreate.ID)}))
	if r.Status != 403 || r.code() != "" {
		t.Errorf("activate without machine.create: %d %s", r.Status, r.Raw)
	}
	noComp := s.CreateLicense(LicenseSpec{PolicyID: l.PolicyID, Permissions: []string{"machine.create"}})
	body := jsonapi("machines", map[string]any{"fingerprint": "x2"}, map[string]any{"license": ref("licenses", noComp.ID),
		"components": map[string]any{"data": []any{map[string]any{"type": "components", "attributes": map[string]any{"fingerprint": "c", "name": "disk"}}}}})
	if r := newClient(t, s, licenseAuth(noComp.Key)).do("POST", "/machines", body); r.Status != 403 {
		t.Errorf("activate with components without component.create: %d %s", r.Status, r.Raw)
	}

	// The account setting changes what later licenses get.
	s.SetDefaultLicensePermissions(append(slicesClone(DefaultLicensePermissions), "policy.read"))
	l2 := s.CreateLicense(LicenseSpec{PolicyID: l.PolicyID})
	mid2 := admin.activate(l2.ID, "fp-perm-2")
	if r := newClient(t, s, licenseAuth(l2.Key)).do("POST", "/machines/"+mid2+"/actions/check-out?include=license.policy", nil); r.Status != 200 {
		t.Errorf("policy.read by account setting: %d %s", r.Status, r.Raw)
	}
	s.SetDefaultLicensePermissions(nil)
	if l3 := s.CreateLicense(LicenseSpec{PolicyID: l.PolicyID}); hasPerm(l3.Permissions, "policy.read") {
		t.Errorf("cleared setting still grants policy.read")
	}
	// Admins are not restricted by license permissions.
	if r := admin.do("POST", "/machines/"+mid+"/actions/check-out?include=license.policy", nil); r.Status != 200 {
		t.Errorf("admin check-out: %d %s", r.Status, r.Raw)
	}
}

func slicesClone(xs []string) []string { return append([]string(nil), xs...) }

// Matches keygen-api's app/controllers/api/v1/machines_controller.rb
// (activation tokens count activations and deactivations) and
// app/models/token.rb (past maxActivations the token is invalid:
// "exceeds maximum allowed (N)", code ACTIVATIONS_LIMIT_EXCEEDED).
func TestActivationTokenLimits(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	p := s.CreatePolicy(PolicySpec{Floating: true})
	l := s.CreateLicense(LicenseSpec{PolicyID: p.ID})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	r := admin.do("POST", "/licenses/"+l.ID+"/tokens", map[string]any{"data": map[string]any{"type": "tokens", "attributes": map[string]any{"maxActivations": 2, "maxDeactivations": 1}}})
	if r.Status != 201 || r.str("data", "attributes", "kind") != "activation-token" || r.get("data", "attributes", "maxActivations") != float64(2) {
		t.Fatalf("create token: %d %s", r.Status, r.Raw)
	}
	tc := newClient(t, s, bearerAuth(r.str("data", "attributes", "token")))
	activate := func(fp string) *resp {
		return tc.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": fp}, map[string]any{"license": ref("licenses", l.ID)}))
	}
	steps := []struct {
		name   string
		do     func() *resp
		status int
		code   string
	}{
		{"activate 1", func() *resp { return activate("a") }, 201, ""},
		{"activate 2", func() *resp { return activate("b") }, 201, ""},
		{"activate 3", func() *resp { return activate("c") }, 422, "ACTIVATIONS_LIMIT_EXCEEDED"},
		{"deactivate 1", func() *resp { return tc.do("DELETE", "/machines/a", nil) }, 204, ""},
		{"deactivate 2", func() *resp { return tc.do("DELETE", "/machines/b", nil) }, 422, "DEACTIVATIONS_LIMIT_EXCEEDED"},
		{"activate after freeing", func() *resp { return activate("d") }, 422, "ACTIVATIONS_LIMIT_EXCEEDED"},
	}
	for _, st := range steps {
		r := st.do()
		if r.Status != st.status || r.code() != st.code {
			t.Fatalf("%s: %d %s, want %d %s", st.name, r.Status, r.Raw, st.status, st.code)
		}
		if st.code == "ACTIVATIONS_LIMIT_EXCEEDED" && (r.detail() != "exceeds maximum allowed (2)" || r.get("errors", 0, "source", "pointer") != "/data/attributes/activations") {
			t.Fatalf("%s: %s", st.name, r.Raw)
		}
	}
	if a, d, _ := s.TokenCounts(r.str("data", "attributes", "token")); a != 2 || d != 1 {
		t.Fatalf("counts %d/%d, want 2/1", a, d)
	}
	// A license key (no token) is not counted.
	pk := s.CreatePolicy(PolicySpec{Floating: true, AuthenticationStrategy: "MIXED"})
	lk := s.CreateLicense(LicenseSpec{PolicyID: pk.ID})
	limited := s.CreateLicenseToken(lk.ID, intp(0), nil)
	if r := newClient(t, s, licenseAuth(lk.Key)).do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "k"}, map[string]any{"license": ref("licenses", lk.ID)})); r.Status != 201 {
		t.Fatalf("key activation: %d %s", r.Status, r.Raw)
	}
	if a, _, _ := s.TokenCounts(limited); a != 0 {
		t.Fatalf("key activation counted on a token")
	}
}

// Matches keygen-api's app/services/license_validation_service.rb
// (*_SCOPE_REQUIRED, product compared with the product's id, fingerprint
// OR fingerprints, HEARTBEAT_DEAD only when every supplied fingerprint is
// dead) and the typed_params of validations_controller.rb,
// machines_controller.rb and machine_processes_controller.rb (a blank
// required string is 400 "cannot be blank", not a 422 code).
func TestScopesAndBlankParams(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	prod := s.CreateProduct("Scoped App")
	for _, tc := range []struct {
		name   string
		pol    PolicySpec
		scope  map[string]any
		status int
		code   string // meta.code for 200, else the pointer of the 400
	}{
		{"product required", PolicySpec{RequireProductScope: true}, map[string]any{}, 200, "PRODUCT_SCOPE_REQUIRED"},
		{"product by id", PolicySpec{RequireProductScope: true}, map[string]any{"product": prod.ID}, 200, "VALID"},
		{"product by name", PolicySpec{RequireProductScope: true}, map[string]any{"product": prod.Name}, 200, "PRODUCT_SCOPE_MISMATCH"},
		{"product blank", PolicySpec{}, map[string]any{"product": ""}, 400, "/meta/scope/product"},
		{"policy required", PolicySpec{RequirePolicyScope: true}, map[string]any{}, 200, "POLICY_SCOPE_REQUIRED"},
		{"user required", PolicySpec{RequireUserScope: true}, map[string]any{}, 200, "USER_SCOPE_REQUIRED"},
		{"machine required", PolicySpec{RequireMachineScope: true}, map[string]any{}, 200, "MACHINE_SCOPE_REQUIRED"},
		{"fingerprint required", PolicySpec{RequireFingerprintScope: true}, map[string]any{}, 200, "FINGERPRINT_SCOPE_REQUIRED"},
		{"components required", PolicySpec{RequireComponentsScope: true}, map[string]any{}, 200, "COMPONENTS_SCOPE_REQUIRED"},
		{"checksum required", PolicySpec{RequireChecksumScope: true}, map[string]any{}, 200, "CHECKSUM_SCOPE_REQUIRED"},
		{"version required", PolicySpec{RequireVersionScope: true}, map[string]any{}, 200, "VERSION_SCOPE_REQUIRED"},
		{"environment required", PolicySpec{RequireEnvironmentScope: true}, map[string]any{}, 200, "ENVIRONMENT_SCOPE_REQUIRED"},
		{"environment null", PolicySpec{RequireEnvironmentScope: true}, map[string]any{"environment": nil}, 200, "VALID"},
		{"fingerprint blank", PolicySpec{}, map[string]any{"fingerprint": ""}, 400, "/meta/scope/fingerprint"},
		{"machine blank", PolicySpec{}, map[string]any{"machine": ""}, 400, "/meta/scope/machine"},
		// fingerprint wins over fingerprints: "alive" is ignored.
		{"fingerprint over fingerprints", PolicySpec{}, map[string]any{"fingerprint": "nope", "fingerprints": []string{"alive"}}, 200, "FINGERPRINT_SCOPE_MISMATCH"},
		{"one of two dead", PolicySpec{}, map[string]any{"fingerprints": []string{"alive", "dead"}}, 200, "VALID"},
		{"all supplied dead", PolicySpec{}, map[string]any{"fingerprints": []string{"dead"}}, 200, "HEARTBEAT_DEAD"},
		{"dead and unknown", PolicySpec{}, map[string]any{"fingerprints": []string{"dead", "unknown"}}, 200, "FINGERPRINT_SCOPE_MISMATCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.pol
			ps.ProductID, ps.Floating = prod.ID, true
			p := s.CreatePolicy(ps)
			l := s.CreateLicense(LicenseSpec{PolicyID: p.ID})
			admin.activate(l.ID, "alive")
			dead := admin.activate(l.ID, "dead")
			s.mu.Lock()
			old := time.Now().Add(-time.Hour).UTC()
			s.machine(dead).LastHeartbeat = &old
			s.mu.Unlock()
			r := newClient(t, s, "").do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": l.Key, "scope": tc.scope}})
			if r.Status != tc.status {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			if tc.status == 200 && r.str("meta", "code") != tc.code {
				t.Fatalf("code %s (%s), want %s", r.str("meta", "code"), r.str("meta", "detail"), tc.code)
			}
			if tc.status == 400 && (r.get("errors", 0, "source", "pointer") != tc.code || r.detail() != "cannot be blank" || r.code() != "") {
				t.Fatalf("%s", r.Raw)
			}
		})
	}
	p := s.CreatePolicy(PolicySpec{ProductID: prod.ID, Floating: true})
	l := s.CreateLicense(LicenseSpec{PolicyID: p.ID})
	mid := admin.activate(l.ID, "m1")
	for _, tc := range []struct {
		name, path string
		body       any
		pointer    string
	}{
		{"machine fingerprint", "/machines", jsonapi("machines", map[string]any{"fingerprint": ""}, map[string]any{"license": ref("licenses", l.ID)}), "/data/attributes/fingerprint"},
		{"process pid", "/processes", jsonapi("processes", map[string]any{"pid": ""}, map[string]any{"machine": ref("machines", mid)}), "/data/attributes/pid"},
		{"component name", "/components", jsonapi("components", map[string]any{"fingerprint": "c", "name": ""}, map[string]any{"machine": ref("machines", mid)}), "/data/attributes/name"},
	} {
		if r := admin.do("POST", tc.path, tc.body); r.Status != 400 || r.code() != "" || r.get("errors", 0, "source", "pointer") != tc.pointer {
			t.Errorf("%s: %d %s", tc.name, r.Status, r.Raw)
		}
	}
}

// Matches keygen-api's typed_params `depth: { maximum: 2 }` on metadata
// (machines_controller.rb, machine_processes_controller.rb; the messages
// in features/api/v1/licenses/create.feature): two nested levels below
// metadata pass, a third is 400 "maximum depth of 2 exceeded" pointing at it.
func TestMetadataDepth(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	p := s.CreatePolicy(PolicySpec{Floating: true})
	l := s.CreateLicense(LicenseSpec{PolicyID: p.ID})
	mid := admin.activate(l.ID, "m1")
	for i, tc := range []struct {
		md      map[string]any
		pointer string // "" = accepted
	}{
		{map[string]any{"object": map[string]any{"nested": map[string]any{"key": "value"}}}, ""},
		{map[string]any{"object": map[string]any{"nested": []any{map[string]any{"key": "value"}}}}, "/data/attributes/metadata/object/nested/0"},
		{map[string]any{"array": []any{[]any{0}, []any{map[string]any{"foo": 1}, 2, []any{3}}}}, "/data/attributes/metadata/array/1/0"},
		{map[string]any{"app": "demo", "lease": map[string]any{"seat": 1}}, ""},
	} {
		r := admin.do("POST", "/processes", jsonapi("processes", map[string]any{"pid": fmt.Sprint("p", i), "metadata": tc.md}, map[string]any{"machine": ref("machines", mid)}))
		switch {
		case tc.pointer == "" && r.Status != 201:
			t.Errorf("%d: %d %s", i, r.Status, r.Raw)
		case tc.pointer != "" && (r.Status != 400 || r.detail() != "maximum depth of 2 exceeded" || r.get("errors", 0, "source", "pointer") != tc.pointer):
			t.Errorf("%d: %d %s", i, r.Status, r.Raw)
		}
	}
}

// Matches keygen-api's app/services/abstract_checkout_service.rb ("must be
// greater than or equal to 3600 (1 hour)", ttl.present? so 0 is refused)
// and the CHECKOUT_TTL_INVALID rescue of the check-out controllers.
func TestCheckoutTTLFloor(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	p := s.CreatePolicy(PolicySpec{Floating: true})
	l := s.CreateLicense(LicenseSpec{PolicyID: p.ID})
	mid := admin.activate(l.ID, "m1")
	for _, tc := range []struct {
		ttl    string
		status int
	}{{"0", 400}, {"60", 400}, {"3599", 400}, {"3600", 200}, {"86400", 200}} {
		for _, path := range []string{"/machines/" + mid + "/actions/check-out", "/licenses/" + l.ID + "/actions/check-out"} {
			r := admin.do("POST", path+"?ttl="+tc.ttl, nil)
			if r.Status != tc.status {
				t.Errorf("%s ttl=%s: %d %s", path, tc.ttl, r.Status, r.Raw)
			}
			if tc.status == 400 && (r.code() != "CHECKOUT_TTL_INVALID" || r.detail() != "must be greater than or equal to 3600 (1 hour)" || r.get("errors", 0, "source", "parameter") != "ttl") {
				t.Errorf("%s ttl=%s: %s", path, tc.ttl, r.Raw)
			}
		}
	}
}

// Matches keygen-api's scoped lookups (authorized_scope + FindByAliasService
// in the machines, processes and licenses controllers: another license's
// records are 404), LicensePolicy#validate_key? (credentials of another
// license: 403), and the uniqueness strategies of app/models/machine.rb
// (FINGERPRINT_TAKEN across licenses of the same product/policy/account).
func TestBearerScopingAndUniqueness(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))
	for _, tc := range []struct {
		strategy  string
		samePol   bool
		sameProd  bool
		wantTaken bool
	}{
		{"UNIQUE_PER_LICENSE", true, true, false},
		{"UNIQUE_PER_POLICY", true, true, true},
		{"UNIQUE_PER_POLICY", false, true, false},
		{"UNIQUE_PER_PRODUCT", false, true, true},
		{"UNIQUE_PER_PRODUCT", false, false, false},
		{"UNIQUE_PER_ACCOUNT", false, false, true},
	} {
		name := fmt.Sprintf("%s/samePolicy=%v/sameProduct=%v", tc.strategy, tc.samePol, tc.sameProd)
		t.Run(name, func(t *testing.T) {
			prodA := s.CreateProduct("A")
			pa := s.CreatePolicy(PolicySpec{ProductID: prodA.ID, Floating: true, AuthenticationStrategy: "LICENSE", MachineUniquenessStrategy: tc.strategy})
			pb := pa
			switch {
			case !tc.samePol && tc.sameProd:
				pb = s.CreatePolicy(PolicySpec{ProductID: prodA.ID, Floating: true, AuthenticationStrategy: "LICENSE", MachineUniquenessStrategy: tc.strategy})
			case !tc.sameProd:
				pb = s.CreatePolicy(PolicySpec{ProductID: s.CreateProduct("B").ID, Floating: true, AuthenticationStrategy: "LICENSE", MachineUniquenessStrategy: tc.strategy})
			}
			la := s.CreateLicense(LicenseSpec{PolicyID: pa.ID, Permissions: []string{"*"}})
			lb := s.CreateLicense(LicenseSpec{PolicyID: pb.ID, Permissions: []string{"*"}})
			fp := "shared-" + newID()
			mid := admin.activate(la.ID, fp)
			bc := newClient(t, s, licenseAuth(lb.Key))
			r := bc.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": fp}, map[string]any{"license": ref("licenses", lb.ID)}))
			if tc.wantTaken && (r.Status != 422 || r.code() != "FINGERPRINT_TAKEN") {
				t.Fatalf("activation: %d %s", r.Status, r.Raw)
			}
			if !tc.wantTaken && r.Status != 201 {
				t.Fatalf("activation: %d %s", r.Status, r.Raw)
			}
			// License B never sees license A's machine: by id, and by
			// fingerprint only when it has none of its own.
			if r := bc.do("GET", "/machines/"+mid, nil); r.Status != 404 {
				t.Errorf("other license's machine by id: %d", r.Status)
			}
			if tc.wantTaken {
				if r := bc.do("GET", "/machines/"+fp, nil); r.Status != 404 {
					t.Errorf("other license's machine by fingerprint: %d", r.Status)
				}
			}
			pid := admin.spawn(mid, "p-"+newID()).str("data", "id")
			for _, path := range []string{"/processes/" + pid, "/machines/" + mid + "/actions/check-out", "/licenses/" + la.ID, "/licenses/" + la.ID + "/actions/validate"} {
				if r := bc.do("POST", path, nil); r.Status != 404 && r.Status != 405 {
					t.Errorf("POST %s: %d", path, r.Status)
				}
				if r := bc.do("GET", path, nil); r.Status != 404 {
					t.Errorf("GET %s: %d %s", path, r.Status, r.Raw)
				}
			}
			r = bc.do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": la.Key}})
			if r.Status != 403 || r.detail() != "You do not have permission to complete the request (ensure the token or license is allowed to access all resources)" {
				t.Errorf("validate-key with another license's credentials: %d %s", r.Status, r.Raw)
			}
		})
	}
}

// Matches keygen-api: Keygen-Bearer holds the bearer's id, Location is an
// absolute URL (Rails' *_url helpers), and every validation touches the
// license (LicenseValidationService#touch! moves lastValidated and updated).
func TestHeadersAndTouch(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true, Now: func() time.Time { return now }})
	d, err := s.Demo(DemoOptions{AuthenticationStrategy: "MIXED"})
	if err != nil {
		t.Fatal(err)
	}
	if d.LicenseToken == "" {
		t.Fatal("MIXED demo without a license token")
	}
	lc := newClient(t, s, bearerAuth(d.LicenseToken))
	r := lc.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "h1"}, map[string]any{"license": ref("licenses", d.License.ID)}))
	if r.Status != 201 || r.Header.Get("Keygen-Bearer") != d.License.ID {
		t.Fatalf("bearer header %q: %s", r.Header.Get("Keygen-Bearer"), r.Raw)
	}
	if want := "http://devserver.invalid/v1/accounts/" + s.AccountID() + "/machines/" + r.str("data", "id"); r.Header.Get("Location") != want {
		t.Fatalf("Location %q, want %q", r.Header.Get("Location"), want)
	}
	before := r.str("data", "attributes", "updated")
	_ = before
	now = now.Add(time.Minute)
	for _, path := range []string{"/licenses/" + d.License.ID + "/actions/validate"} {
		for _, method := range []string{"POST", "GET"} {
			now = now.Add(time.Minute)
			r := lc.do(method, path, nil)
			if r.str("data", "attributes", "updated") != isoTime(now) || r.str("data", "attributes", "lastValidated") != isoTime(now) {
				t.Errorf("%s validate: updated %s lastValidated %s, want %s", method, r.str("data", "attributes", "updated"), r.str("data", "attributes", "lastValidated"), isoTime(now))
			}
		}
	}
	// The default demo (TOKEN) prints a token; LICENSE does not.
	if d2, _ := s.Demo(DemoOptions{}); d2.LicenseToken == "" || d2.Policy.AuthenticationStrategy != "TOKEN" {
		t.Errorf("default demo: strategy %s token %q", d2.Policy.AuthenticationStrategy, d2.LicenseToken)
	}
	if d3, _ := s.Demo(DemoOptions{AuthenticationStrategy: "LICENSE"}); d3.LicenseToken != "" {
		t.Errorf("LICENSE demo has a token")
	}
}

// Matches keygen-api's app/models/machine.rb: resurrection_period_passed?
// (a machine that never pinged cannot be revived, except ALWAYS_REVIVE),
// requires_heartbeat? (recomputed: policy or a last heartbeat, so a reset
// clears it), and the PER_USER machine limit ("nil owner is significant").
func TestMachineHeartbeatAndPerUserRules(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true, Now: func() time.Time { return now }})
	admin := newClient(t, s, bearerAuth(s.AdminToken()))

	revive := s.CreatePolicy(PolicySpec{Floating: true, RequireHeartbeat: true, HeartbeatDuration: intp(60), HeartbeatBasis: "FROM_FIRST_PING", HeartbeatResurrectionStrategy: "15_MINUTE_REVIVE"})
	l := s.CreateLicense(LicenseSpec{PolicyID: revive.ID})
	never := admin.activate(l.ID, "never")
	pinged := admin.activate(l.ID, "pinged")
	if r := admin.do("POST", "/machines/"+pinged+"/actions/ping", nil); r.Status != 200 {
		t.Fatalf("ping: %s", r.Raw)
	}
	now = now.Add(2 * time.Minute) // both dead, inside the revive window
	if r := admin.do("POST", "/machines/"+never+"/actions/ping", nil); r.Status != 422 || r.code() != "MACHINE_HEARTBEAT_DEAD" {
		t.Errorf("never-pinged machine revived: %d %s", r.Status, r.Raw)
	}
	if r := admin.do("POST", "/machines/"+pinged+"/actions/ping", nil); r.Status != 200 || r.str("data", "attributes", "heartbeatStatus") != "RESURRECTED" {
		t.Errorf("pinged machine not revived: %d %s", r.Status, r.Raw)
	}

	plain := s.CreatePolicy(PolicySpec{Floating: true})
	l2 := s.CreateLicense(LicenseSpec{PolicyID: plain.ID})
	m := admin.activate(l2.ID, "hb")
	for _, st := range []struct {
		path string
		want bool
	}{{"/machines/" + m, false}, {"/machines/" + m + "/actions/ping", true}, {"/machines/" + m + "/actions/reset", false}} {
		method := "POST"
		if !strings.Contains(st.path, "actions") {
			method = "GET"
		}
		if r := admin.do(method, st.path, nil); r.get("data", "attributes", "requireHeartbeat") != st.want {
			t.Errorf("%s: requireHeartbeat %v, want %v", st.path, r.get("data", "attributes", "requireHeartbeat"), st.want)
		}
	}

	u1, u2 := s.CreateUser("u1@example.com"), s.CreateUser("u2@example.com")
	perUser := s.CreatePolicy(PolicySpec{Floating: true, Strict: true, MaxMachines: intp(1), MachineLeasingStrategy: "PER_USER"})
	l3 := s.CreateLicense(LicenseSpec{PolicyID: perUser.ID, OwnerID: u1.ID, UserIDs: []string{u2.ID}})
	act := func(fp, owner string) *resp {
		rels := map[string]any{"license": ref("licenses", l3.ID)}
		if owner != "" {
			rels["owner"] = ref("users", owner)
		}
		return admin.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": fp}, rels))
	}
	for _, st := range []struct {
		fp, owner string
		status    int
	}{
		{"u1-a", u1.ID, 201},
		{"none-a", "", 201}, // unowned machines are their own group, not the license owner's
		{"u2-a", u2.ID, 201},
		{"u1-b", u1.ID, 422},
		{"none-b", "", 422},
	} {
		if r := act(st.fp, st.owner); r.Status != st.status {
			t.Errorf("activate %s: %d %s, want %d", st.fp, r.Status, r.Raw, st.status)
		}
	}
	// Three machines, one per group: TOO_MANY_MACHINES counts per user.
	for _, sc := range []map[string]any{{"user": u1.ID}, {"user": "u2@example.com"}, {}} {
		r := newClient(t, s, "").do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": l3.Key, "scope": sc}})
		if r.str("meta", "code") == "TOO_MANY_MACHINES" {
			t.Errorf("scope %v: %s", sc, r.Raw)
		}
	}
	s.UpdateLicense(l3.ID, func(l *License) { l.MaxMachines = intp(1) })
	s.mu.Lock()
	for _, x := range s.machines {
		if x.Fingerprint == "u2-a" {
			x.OwnerID = u1.ID
		}
	}
	s.mu.Unlock()
	r := newClient(t, s, "").do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": l3.Key, "scope": map[string]any{"user": u1.ID}}})
	if r.str("meta", "code") != "TOO_MANY_MACHINES" {
		t.Errorf("two machines of u1 with a limit of 1: %s", r.Raw)
	}
}
