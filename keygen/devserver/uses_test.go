package devserver

import "testing"

// Metered usage as keygen-api answers it (features/api/v1/licenses/actions/
// uses.feature; uses_controller.rb; Licenses::UsagePolicy; license.rb's
// uses validations).
func TestUsage(t *testing.T) {
	five := 5
	for _, tc := range []struct {
		name      string
		bearer    string // admin | license | product-less user is not seeded
		action    string
		meta      map[string]any
		uses      int
		maxUses   *int
		status    int
		code      string
		detail    string
		wantUses  int
		protected bool
		locked    bool // another update holds the row (LockUses)
	}{
		{name: "license increments by the default 1", bearer: "license", action: "increment-usage", uses: 4, maxUses: &five, status: 200, wantUses: 5},
		{name: "license increments by 3", bearer: "license", action: "increment-usage", meta: map[string]any{"increment": 3}, uses: 1, maxUses: &five, status: 200, wantUses: 4},
		{name: "license past maxUses", bearer: "license", action: "increment-usage", uses: 5, maxUses: &five, status: 422, code: "USES_LIMIT_EXCEEDED", detail: "usage exceeds maximum allowed for license (5)", wantUses: 5},
		{name: "no maxUses: unlimited", bearer: "license", action: "increment-usage", meta: map[string]any{"increment": 1000}, uses: 5, status: 200, wantUses: 1005},
		{name: "increment 0 at the limit is no change", bearer: "license", action: "increment-usage", meta: map[string]any{"increment": 0}, uses: 5, maxUses: &five, status: 200, wantUses: 5},
		{name: "license may not decrement", bearer: "license", action: "decrement-usage", uses: 4, maxUses: &five, status: 403, wantUses: 4},
		{name: "admin decrements", bearer: "admin", action: "decrement-usage", meta: map[string]any{"decrement": 2}, uses: 4, status: 200, wantUses: 2},
		{name: "admin decrements below zero", bearer: "admin", action: "decrement-usage", uses: 0, status: 422, code: "USES_INVALID", detail: "must be greater than or equal to 0", wantUses: 0},
		{name: "admin past maxUses", bearer: "admin", action: "increment-usage", uses: 5, maxUses: &five, status: 422, code: "USES_LIMIT_EXCEEDED", wantUses: 5},
		{name: "integer too large", bearer: "admin", action: "increment-usage", meta: map[string]any{"increment": 1 << 40}, status: 400, detail: "integer is too large", wantUses: 0},
		{name: "not an integer", bearer: "license", action: "increment-usage", meta: map[string]any{"increment": "2"}, status: 400, wantUses: 0},
		// uses_controller.rb: with_lock 'FOR UPDATE NOWAIT' on a row another
		// update holds -> render_conflict, the same detail for a decrement.
		{name: "row locked: increment conflicts", bearer: "license", action: "increment-usage", uses: 1, maxUses: &five, locked: true, status: 409, detail: "failed to increment due to another conflicting update", wantUses: 1},
		{name: "row locked: decrement conflicts", bearer: "admin", action: "decrement-usage", uses: 1, locked: true, status: 409, detail: "failed to increment due to another conflicting update", wantUses: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{})
			d := demo(t, s, DemoOptions{})
			s.UpdatePolicy(d.Policy.ID, func(p *Policy) { p.MaxUses = tc.maxUses })
			s.UpdateLicense(d.License.ID, func(l *License) { l.Uses = tc.uses })
			auth := licenseAuth(d.License.Key)
			if tc.bearer == "admin" {
				auth = bearerAuth(s.AdminToken())
			}
			var body any
			if tc.meta != nil {
				body = map[string]any{"meta": tc.meta}
			}
			if tc.locked {
				defer s.LockUses(d.License.ID)()
			}
			c := newClient(t, s, auth)
			r := c.do("POST", "/licenses/"+d.License.ID+"/actions/"+tc.action, body)
			if r.Status != tc.status || r.code() != tc.code {
				t.Fatalf("%d %q %s, want %d %q", r.Status, r.code(), r.Raw, tc.status, tc.code)
			}
			if tc.detail != "" && r.detail() != tc.detail {
				t.Errorf("detail %q, want %q", r.detail(), tc.detail)
			}
			if tc.status == 200 {
				if got := r.get("data", "attributes", "uses"); got != float64(tc.wantUses) {
					t.Errorf("answered uses %v, want %d", got, tc.wantUses)
				}
			} else if (tc.code != "" || tc.locked) && r.str("errors", 0, "source", "pointer") != "/data/attributes/uses" {
				t.Errorf("pointer %q", r.str("errors", 0, "source", "pointer"))
			}
			l, _ := s.License(d.License.ID)
			if l.Uses != tc.wantUses {
				t.Errorf("stored uses %d, want %d", l.Uses, tc.wantUses)
			}
		})
	}
}

// A license's maxUses override wins over the policy's (license.rb max_uses).
func TestUsageLicenseOverride(t *testing.T) {
	s := newTestServer(t, Options{})
	d := demo(t, s, DemoOptions{})
	five, ten := 5, 10
	s.UpdatePolicy(d.Policy.ID, func(p *Policy) { p.MaxUses = &five })
	s.UpdateLicense(d.License.ID, func(l *License) { l.Uses = 5; l.MaxUses = &ten })
	c := newClient(t, s, licenseAuth(d.License.Key))
	if r := c.do("POST", "/licenses/"+d.License.ID+"/actions/increment-usage", nil); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	r := c.do("POST", "/licenses/"+d.License.ID+"/actions/increment-usage", map[string]any{"meta": map[string]any{"increment": 5}})
	if r.Status != 422 || r.detail() != "usage exceeds maximum allowed for license (10)" {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
}
